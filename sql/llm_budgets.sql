-- LLM budgets: the reservations of each model's per-minute window (llm_reservations) and its pause after a 429
-- (llm_model_state), both from migration 0018; flowline/engine/budget.py calls them before and after each HTTP
-- attempt of a generative_ai step.

-- name: reserve_llm_call :one
-- Reserves one HTTP attempt and its estimated tokens within the model's budget, or answers how long to wait and why, or that it can never fit (reserve_llm_call(), migration 0018).
SELECT reservation_id, wait_s, reason, probe, run_tokens, run_limit, tokens_per_minute
FROM reserve_llm_call(%(model)s, %(tokens)s, %(run_id)s, %(window_s)s, %(probe_s)s);

-- name: correct_llm_reservation :exec
-- Replaces a reservation's estimated tokens with the tokens the provider reported.
UPDATE llm_reservations
SET tokens = %(tokens)s
WHERE id = %(reservation_id)s;

-- name: pause_llm_model :exec
-- Pauses a model for pause_s seconds after the provider's 429 (never shortening a longer pause), ending any probe.
INSERT INTO llm_model_state AS st (model, paused_until)
VALUES (%(model)s, clock_timestamp() + make_interval(secs => %(pause_s)s))
ON CONFLICT (model) DO UPDATE
SET paused_until = greatest(st.paused_until, excluded.paused_until),
    probe_until = NULL;

-- name: end_llm_probe :exec
-- Ends a model's probe after a 429 pause: answered (the provider takes requests again: the pause is over) or failed otherwise (another request may probe).
UPDATE llm_model_state
SET paused_until = CASE WHEN %(answered)s THEN NULL ELSE paused_until END,
    probe_until = NULL
WHERE model = %(model)s
  AND paused_until <= clock_timestamp();

-- name: count_runs_waiting_for_budget :many
-- Counts the Pending runs waiting for each model's budget (up to count_cap runs looked at); read through runs_pending_queue_idx.
SELECT waiting_for AS model, count(*) AS runs
FROM (SELECT waiting_for
      FROM runs
      WHERE status = 'Pending'
        AND waiting_for IS NOT NULL
      LIMIT %(count_cap)s) AS waiting
GROUP BY waiting_for
ORDER BY waiting_for;
