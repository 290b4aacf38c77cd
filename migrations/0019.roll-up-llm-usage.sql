-- Counts what LLM steps used where it outlives the runs: llm_usage_hourly and llm_usage_daily (per UTC hour, and
-- day, workflow and model: runs, steps, tokens, cost) and llm_usage_totals (per model, all time), kept by triggers on run_steps as steps are
-- saved (or imported) and never by deletes, so usage of runs removed by prune-runs (or with their workflow) stays
-- counted. GET /usage reads the hourly and daily roll-ups (llm_usage_between), /metrics the totals. The view run_list gains `usage`, a run's
-- tokens and cost summed over all its attempts; an index of recent LLM steps serves the console's "this minute".
-- Existing steps' usage is rolled up here, in the same transaction as the triggers that count the next ones.
-- Rollback (0019.roll-up-llm-usage.rollback.sql) drops the roll-ups, their triggers, the index and the view's
-- column: the usage counted there is lost, and with it that of every run pruned since (the steps keep theirs).
--
-- For DBAs: the triggers are statement-level with transition tables (one upsert per saving statement, never a
-- write to runs, whose row the saving statement itself updates); they touch only rows of LLM steps that are
-- finished. A step counts in the hour of its finished_at (UTC); a run counts once in `runs`, in the row of its
-- first LLM step (by attempt, position), and once per model in `model_runs`. Upserts lock the hour's and the day's
-- row of a workflow and model until commit (the saving statements are single-statement transactions). Building the partial
-- index reads run_steps once and blocks step writes meanwhile (seconds per million steps).
-- depends: 0018.llm-budgets

CREATE TABLE llm_usage_hourly (
    -- The UTC hour the steps finished in (date_trunc('hour', finished_at, 'UTC')).
    hour              timestamptz NOT NULL,
    -- No foreign key: the usage of a deleted workflow stays counted.
    workflow_id       uuid        NOT NULL,
    model             text        NOT NULL,
    -- Runs whose first LLM step finished here (any model), and runs whose first step with this model did.
    runs              integer     NOT NULL DEFAULT 0,
    model_runs        integer     NOT NULL DEFAULT 0,
    steps             integer     NOT NULL DEFAULT 0,
    prompt_tokens     bigint      NOT NULL DEFAULT 0,
    completion_tokens bigint      NOT NULL DEFAULT 0,
    -- The summed cost of the priced steps; unpriced_steps counts the others (no price or no usage reported).
    cost_usd          numeric     NOT NULL DEFAULT 0,
    unpriced_steps    integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, workflow_id, model)
);
COMMENT ON TABLE llm_usage_hourly IS 'LLM usage per UTC hour, workflow and model, kept by triggers on run_steps; deletes do not subtract.';

-- The same per UTC day: what a window's whole days read (GET /usage reads llm_usage_hourly for its partial days).
CREATE TABLE llm_usage_daily (
    day               date        NOT NULL,
    workflow_id       uuid        NOT NULL,
    model             text        NOT NULL,
    runs              integer     NOT NULL DEFAULT 0,
    model_runs        integer     NOT NULL DEFAULT 0,
    steps             integer     NOT NULL DEFAULT 0,
    prompt_tokens     bigint      NOT NULL DEFAULT 0,
    completion_tokens bigint      NOT NULL DEFAULT 0,
    cost_usd          numeric     NOT NULL DEFAULT 0,
    unpriced_steps    integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (day, workflow_id, model)
);
COMMENT ON TABLE llm_usage_daily IS 'LLM usage per UTC day, workflow and model, kept with llm_usage_hourly; deletes do not subtract.';

CREATE TABLE llm_usage_totals (
    model             text    PRIMARY KEY,
    prompt_tokens     bigint  NOT NULL DEFAULT 0,
    completion_tokens bigint  NOT NULL DEFAULT 0,
    cost_usd          numeric NOT NULL DEFAULT 0
);
COMMENT ON TABLE llm_usage_totals IS 'LLM usage per model since this migration (with the steps it found), the counters /metrics reads.';

-- Adds (sign 1) or takes back (sign -1) the usage of p_steps, finished LLM steps as JSON rows of run_steps.
CREATE FUNCTION roll_up_llm_usage(p_steps jsonb, p_sign integer)
RETURNS void
LANGUAGE sql
VOLATILE
AS $$
    WITH step AS (
        SELECT s.run_id, s.model, s.prompt_tokens, s.completion_tokens, s.cost_usd,
               date_trunc('hour', s.finished_at, 'UTC') AS hour,
               r.workflow_id,
               -- The run's first LLM step, and its first with this model, as run_steps holds them now.
               NOT EXISTS (SELECT 1 FROM run_steps AS e
                           WHERE e.run_id = s.run_id AND e.model IS NOT NULL AND e.finished_at IS NOT NULL
                             AND (e.attempt, e.position) < (s.attempt, s.position)) AS first_of_run,
               NOT EXISTS (SELECT 1 FROM run_steps AS e
                           WHERE e.run_id = s.run_id AND e.model = s.model AND e.finished_at IS NOT NULL
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

-- The usage of the UTC hours that overlap [p_since, p_until), per day, workflow and model: the window's whole days
-- from llm_usage_daily, the hours of its partial first and last days from llm_usage_hourly (both through their
-- primary keys). A SQL function PostgreSQL inlines into each query of sql/usage.sql.
CREATE FUNCTION llm_usage_between(p_since timestamptz, p_until timestamptz)
RETURNS TABLE (day date, workflow_id uuid, model text, runs integer, model_runs integer, prompt_tokens bigint,
               completion_tokens bigint, cost_usd numeric, unpriced_steps integer)
LANGUAGE sql
STABLE
AS $$
    WITH bounds AS (
        -- The hours overlapping the window are [lo, hi); its whole days are [day_lo, day_hi) (none when day_hi
        -- is not after day_lo).
        SELECT lo, hi,
               date_trunc('day', lo + interval '1 day' - interval '1 microsecond', 'UTC') AS day_lo,
               date_trunc('day', hi, 'UTC') AS day_hi
        FROM (SELECT date_trunc('hour', p_since, 'UTC') AS lo,
                     date_trunc('hour', p_until - interval '1 microsecond', 'UTC') + interval '1 hour' AS hi) AS w
    )
    SELECT d.day, d.workflow_id, d.model, d.runs, d.model_runs, d.prompt_tokens, d.completion_tokens, d.cost_usd,
           d.unpriced_steps
    FROM llm_usage_daily AS d, bounds AS b
    WHERE d.day >= (b.day_lo AT TIME ZONE 'UTC')::date
      AND d.day < (b.day_hi AT TIME ZONE 'UTC')::date
    UNION ALL
    SELECT (h.hour AT TIME ZONE 'UTC')::date, h.workflow_id, h.model, h.runs, h.model_runs, h.prompt_tokens,
           h.completion_tokens, h.cost_usd, h.unpriced_steps
    FROM llm_usage_hourly AS h, bounds AS b
    WHERE h.hour >= b.lo
      AND h.hour < b.hi
      AND (h.hour < b.day_lo OR h.hour >= b.day_hi);
$$;

-- The trigger function of run_steps_roll_up_inserted and run_steps_roll_up_updated: an update takes back what the
-- old rows counted and adds what the new ones count. Only finished LLM steps count.
CREATE FUNCTION run_steps_roll_up_usage()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- Only the columns counted: a row's long texts are never read.
        PERFORM roll_up_llm_usage(jsonb_agg(jsonb_build_object(
                    'run_id', o.run_id, 'attempt', o.attempt, 'position', o.position, 'model', o.model,
                    'prompt_tokens', o.prompt_tokens, 'completion_tokens', o.completion_tokens,
                    'cost_usd', o.cost_usd, 'finished_at', o.finished_at)), -1)
        FROM old_steps AS o
        WHERE o.model IS NOT NULL AND o.finished_at IS NOT NULL
        HAVING count(*) > 0;
    END IF;
    PERFORM roll_up_llm_usage(jsonb_agg(jsonb_build_object(
                'run_id', n.run_id, 'attempt', n.attempt, 'position', n.position, 'model', n.model,
                'prompt_tokens', n.prompt_tokens, 'completion_tokens', n.completion_tokens,
                'cost_usd', n.cost_usd, 'finished_at', n.finished_at)), 1)
    FROM new_steps AS n
    WHERE n.model IS NOT NULL AND n.finished_at IS NOT NULL
    HAVING count(*) > 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER run_steps_roll_up_inserted
    AFTER INSERT ON run_steps
    REFERENCING NEW TABLE AS new_steps
    FOR EACH STATEMENT EXECUTE FUNCTION run_steps_roll_up_usage();

CREATE TRIGGER run_steps_roll_up_updated
    AFTER UPDATE ON run_steps
    REFERENCING OLD TABLE AS old_steps NEW TABLE AS new_steps
    FOR EACH STATEMENT EXECUTE FUNCTION run_steps_roll_up_usage();

-- The usage of the steps saved before the triggers existed, a run at a time (the triggers' lock on run_steps holds
-- new saves back until this transaction commits).
SELECT roll_up_llm_usage(jsonb_agg(jsonb_build_object(
           'run_id', s.run_id, 'attempt', s.attempt, 'position', s.position, 'model', s.model,
           'prompt_tokens', s.prompt_tokens, 'completion_tokens', s.completion_tokens,
           'cost_usd', s.cost_usd, 'finished_at', s.finished_at)), 1)
FROM run_steps AS s
WHERE s.model IS NOT NULL AND s.finished_at IS NOT NULL
GROUP BY s.run_id;

-- The console's "this minute" per model (sql/llm_models.sql sum_llm_use_last_minute): recent LLM steps only.
CREATE INDEX run_steps_llm_finished_idx ON run_steps (finished_at) INCLUDE (model, prompt_tokens, completion_tokens)
    WHERE model IS NOT NULL;

-- A run as the API lists it gains `usage`: its LLM steps' tokens summed over every attempt (0 without any) and
-- their cost (null while one lacks a price or its usage). A scalar subquery on run_steps' (run_id, attempt,
-- position) key, computed only for the rows a list returns.
CREATE OR REPLACE VIEW run_list AS
SELECT id, workflow_id, status, started_at, finished_at, error_message, final_output,
       mode, attempt, max_attempts, created_at, schedule_id, scheduled_for, priority, concurrency_key,
       (SELECT json_build_object(
                   'prompt_tokens', coalesce(sum(s.prompt_tokens), 0),
                   'completion_tokens', coalesce(sum(s.completion_tokens), 0),
                   'cost_usd', CASE WHEN count(s.cost_usd) = count(*) THEN coalesce(sum(s.cost_usd), 0)::float8 END)
        FROM run_steps AS s
        WHERE s.run_id = runs.id
          AND s.model IS NOT NULL) AS usage
FROM runs;
