-- LLM models: the llm_models table, each model's per-minute budget and prices (migration 0014).

-- name: put_llm_model :one
-- Replaces one model's budget and prices (inserting its row the first time), and returns it.
INSERT INTO llm_models (model, requests_per_minute, tokens_per_minute,
                        usd_per_million_input_tokens, usd_per_million_output_tokens)
VALUES (%(model)s, %(requests_per_minute)s, %(tokens_per_minute)s,
        %(usd_per_million_input_tokens)s, %(usd_per_million_output_tokens)s)
ON CONFLICT (model) DO UPDATE
SET requests_per_minute = excluded.requests_per_minute,
    tokens_per_minute = excluded.tokens_per_minute,
    usd_per_million_input_tokens = excluded.usd_per_million_input_tokens,
    usd_per_million_output_tokens = excluded.usd_per_million_output_tokens,
    updated_at = now()
RETURNING model, requests_per_minute, tokens_per_minute,
          usd_per_million_input_tokens::float8 AS usd_per_million_input_tokens,
          usd_per_million_output_tokens::float8 AS usd_per_million_output_tokens, created_at, updated_at;

-- name: list_llm_models :many
-- Lists every model with a budget or a price, by name.
SELECT model, requests_per_minute, tokens_per_minute,
       usd_per_million_input_tokens::float8 AS usd_per_million_input_tokens,
       usd_per_million_output_tokens::float8 AS usd_per_million_output_tokens, created_at, updated_at
FROM llm_models
ORDER BY model;

-- name: get_llm_model :one
-- Returns one model's budget and prices; no row for a model without one.
SELECT model, requests_per_minute, tokens_per_minute,
       usd_per_million_input_tokens::float8 AS usd_per_million_input_tokens,
       usd_per_million_output_tokens::float8 AS usd_per_million_output_tokens, created_at, updated_at
FROM llm_models
WHERE model = %(model)s;

-- name: delete_llm_model :one
-- Deletes one model's budget and prices (it has none from then on); no row when it had none.
DELETE FROM llm_models
WHERE model = %(model)s
RETURNING model;

-- name: list_llm_use_last_minute :many
-- Sums, per model, the LLM steps that finished in the last 60 seconds (requests) and the tokens they reported; served by run_steps_llm_finished_idx.
SELECT model, count(*) AS requests,
       coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens
FROM run_steps
WHERE model IS NOT NULL
  AND finished_at > now() - interval '60 seconds'
GROUP BY model
ORDER BY model;
