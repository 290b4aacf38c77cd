-- Usage: what LLM steps used and cost, read from the roll-ups llm_usage_hourly and llm_usage_daily (migration 0019;
-- kept by triggers on run_steps, never decreased by prune-runs) through llm_usage_between, and the per-model totals
-- llm_usage_totals.
-- Every GET /usage grouping has a query of its own (flowline/api/usage.py picks one): each reads the whole days of
-- [since, until) from the daily roll-up and the hours of its partial days from the hourly one, through their
-- primary keys. A group's cost_usd is NULL while any of its steps lacks a price (or its usage).

-- name: sum_llm_usage_by_day :many
-- Sums the LLM usage of the hours overlapping [since, until) per UTC day (key YYYY-MM-DD), oldest first.
SELECT to_char(day, 'YYYY-MM-DD') AS key,
       sum(runs)::bigint AS runs,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       CASE WHEN sum(unpriced_steps) = 0 THEN sum(cost_usd)::float8 END AS cost_usd
FROM llm_usage_between(%(since)s, %(until)s)
GROUP BY day
ORDER BY day;

-- name: sum_llm_usage_by_workflow :many
-- Sums the LLM usage of the hours overlapping [since, until) per workflow (key its id, kept after it is deleted), by id.
SELECT workflow_id::text AS key,
       sum(runs)::bigint AS runs,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       CASE WHEN sum(unpriced_steps) = 0 THEN sum(cost_usd)::float8 END AS cost_usd
FROM llm_usage_between(%(since)s, %(until)s)
GROUP BY workflow_id
ORDER BY workflow_id;

-- name: sum_llm_usage_by_model :many
-- Sums the LLM usage of the hours overlapping [since, until) per model (key its name; runs: those that called it), by name.
SELECT model AS key,
       sum(model_runs)::bigint AS runs,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       CASE WHEN sum(unpriced_steps) = 0 THEN sum(cost_usd)::float8 END AS cost_usd
FROM llm_usage_between(%(since)s, %(until)s)
GROUP BY model
ORDER BY model;

-- name: sum_llm_usage_by_day_and_workflow :many
-- Sums the LLM usage of the hours overlapping [since, until) per UTC day and per workflow in one read of the roll-ups (the console's usage page shows both): rows grouped_by 'day' (key YYYY-MM-DD) oldest first, then 'workflow' (key its id) by id.
SELECT CASE WHEN GROUPING(day) = 0 THEN 'day' ELSE 'workflow' END AS grouped_by,
       coalesce(to_char(day, 'YYYY-MM-DD'), workflow_id::text) AS key,
       sum(runs)::bigint AS runs,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       CASE WHEN sum(unpriced_steps) = 0 THEN sum(cost_usd)::float8 END AS cost_usd
FROM llm_usage_between(%(since)s, %(until)s)
GROUP BY GROUPING SETS ((day), (workflow_id))
ORDER BY grouped_by, key;

-- name: list_llm_usage_totals :many
-- Lists up to row_limit models' all-time tokens and priced cost (what /metrics exposes as counters), by name.
SELECT model, prompt_tokens, completion_tokens, cost_usd::float8 AS cost_usd
FROM llm_usage_totals
ORDER BY model
LIMIT %(row_limit)s;
