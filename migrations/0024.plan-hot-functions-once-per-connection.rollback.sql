-- Makes save_run_steps, roll_up_llm_usage and add_lane_running LANGUAGE sql again, as migrations 0022, 0022 and
-- 0016 left them (their statements planned at every call). No data is lost: only the functions' definitions change.

CREATE OR REPLACE FUNCTION save_run_steps(p_run_id uuid, p_attempt integer, p_steps jsonb)
RETURNS bigint
LANGUAGE sql
AS $$
-- p_steps is a JSON array of step objects (node_id, position, node_type, config_snapshot, status,
-- started_at, finished_at, input_text, output_text, error_message, note, model, prompt_tokens,
-- completion_tokens). A step first saved as Running (before a slow node) is completed by a later
-- call with the same (run, attempt, position). Its cost is its tokens at its model's prices now
-- (NULL without both). Its run_created_at is its run's (the partition key).
WITH saved AS (
    INSERT INTO run_steps (run_id, run_created_at, node_id, attempt, position, node_type,
                           config_snapshot, status, started_at, finished_at, input_text,
                           output_text, error_message, note, model, prompt_tokens,
                           completion_tokens, cost_usd)
    SELECT p_run_id, r.created_at, s.node_id, p_attempt, s.position, s.node_type, s.config_snapshot,
           s.status, s.started_at, s.finished_at, s.input_text, s.output_text, s.error_message,
           s.note, s.model, s.prompt_tokens, s.completion_tokens,
           (s.prompt_tokens * m.usd_per_million_input_tokens
            + s.completion_tokens * m.usd_per_million_output_tokens) / 1000000
    FROM jsonb_to_recordset(p_steps) AS s(
        node_id uuid, position integer, node_type text, config_snapshot jsonb, status text,
        started_at timestamptz, finished_at timestamptz, input_text text, output_text text,
        error_message text, note text, model text, prompt_tokens integer, completion_tokens integer)
    JOIN runs AS r ON r.id = p_run_id
    LEFT JOIN llm_models AS m ON m.model = s.model
    ON CONFLICT (run_id, attempt, position, run_created_at) DO UPDATE
    SET status = excluded.status,
        finished_at = excluded.finished_at,
        output_text = excluded.output_text,
        error_message = excluded.error_message,
        note = excluded.note,
        model = excluded.model,
        prompt_tokens = excluded.prompt_tokens,
        completion_tokens = excluded.completion_tokens,
        cost_usd = excluded.cost_usd
    RETURNING 1
)
SELECT count(*) FROM saved;
$$;

CREATE OR REPLACE FUNCTION roll_up_llm_usage(p_steps jsonb, p_sign integer)
RETURNS void
LANGUAGE sql
AS $$
WITH step AS (
    SELECT s.run_id, s.model, s.prompt_tokens, s.completion_tokens, s.cost_usd,
           date_trunc('hour', s.finished_at, 'UTC') AS hour,
           r.workflow_id,
           -- The run's first LLM step, and its first with this model, as run_steps holds them now.
           NOT EXISTS (SELECT 1 FROM run_steps AS e
                       WHERE e.run_id = s.run_id AND e.run_created_at = r.created_at
                         AND e.model IS NOT NULL AND e.finished_at IS NOT NULL
                         AND (e.attempt, e.position) < (s.attempt, s.position)) AS first_of_run,
           NOT EXISTS (SELECT 1 FROM run_steps AS e
                       WHERE e.run_id = s.run_id AND e.run_created_at = r.created_at
                         AND e.model = s.model AND e.finished_at IS NOT NULL
                         AND (e.attempt, e.position) < (s.attempt, s.position)) AS first_of_model
    FROM jsonb_to_recordset(p_steps) AS s (run_id uuid, attempt integer, position integer, model text,
                                           prompt_tokens integer, completion_tokens integer,
                                           cost_usd numeric, finished_at timestamptz)
    JOIN runs AS r ON r.id = s.run_id
), hourly AS (
    INSERT INTO llm_usage_hourly AS u (hour, workflow_id, model, runs, model_runs, steps, prompt_tokens,
                                       completion_tokens, cost_usd, unpriced_steps)
    SELECT hour, workflow_id, model,
           p_sign * count(*) FILTER (WHERE first_of_run),
           p_sign * count(*) FILTER (WHERE first_of_model),
           p_sign * count(*),
           p_sign * coalesce(sum(prompt_tokens), 0),
           p_sign * coalesce(sum(completion_tokens), 0),
           p_sign * coalesce(sum(cost_usd), 0),
           p_sign * count(*) FILTER (WHERE cost_usd IS NULL)
    FROM step
    GROUP BY hour, workflow_id, model
    -- One order for every writer: concurrent savers lock the rows they share in the same order.
    ORDER BY hour, workflow_id, model
    ON CONFLICT (hour, workflow_id, model) DO UPDATE
    SET runs = u.runs + excluded.runs,
        model_runs = u.model_runs + excluded.model_runs,
        steps = u.steps + excluded.steps,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        cost_usd = u.cost_usd + excluded.cost_usd,
        unpriced_steps = u.unpriced_steps + excluded.unpriced_steps
), daily AS (
    INSERT INTO llm_usage_daily AS u (day, workflow_id, model, runs, model_runs, steps, prompt_tokens,
                                      completion_tokens, cost_usd, unpriced_steps)
    SELECT (hour AT TIME ZONE 'UTC')::date, workflow_id, model,
           p_sign * count(*) FILTER (WHERE first_of_run),
           p_sign * count(*) FILTER (WHERE first_of_model),
           p_sign * count(*),
           p_sign * coalesce(sum(prompt_tokens), 0),
           p_sign * coalesce(sum(completion_tokens), 0),
           p_sign * coalesce(sum(cost_usd), 0),
           p_sign * count(*) FILTER (WHERE cost_usd IS NULL)
    FROM step
    GROUP BY 1, workflow_id, model
    ORDER BY 1, workflow_id, model
    ON CONFLICT (day, workflow_id, model) DO UPDATE
    SET runs = u.runs + excluded.runs,
        model_runs = u.model_runs + excluded.model_runs,
        steps = u.steps + excluded.steps,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        cost_usd = u.cost_usd + excluded.cost_usd,
        unpriced_steps = u.unpriced_steps + excluded.unpriced_steps
)
INSERT INTO llm_usage_totals AS t (model, prompt_tokens, completion_tokens, cost_usd)
SELECT model, p_sign * coalesce(sum(prompt_tokens), 0), p_sign * coalesce(sum(completion_tokens), 0),
       p_sign * coalesce(sum(cost_usd), 0)
FROM step
GROUP BY model
ORDER BY model
ON CONFLICT (model) DO UPDATE
SET prompt_tokens = t.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = t.completion_tokens + excluded.completion_tokens,
    cost_usd = t.cost_usd + excluded.cost_usd;
$$;

CREATE OR REPLACE FUNCTION add_lane_running(p_workflow_id uuid, p_key text, p_delta integer)
RETURNS integer
LANGUAGE sql
AS $$
INSERT INTO run_lanes AS l (workflow_id, concurrency_key, running)
VALUES (p_workflow_id, p_key, greatest(p_delta, 0))
ON CONFLICT (workflow_id, concurrency_key) DO UPDATE SET running = greatest(l.running + p_delta, 0)
RETURNING running
$$;
