-- Makes run_steps and run_events plain tables again, copying every row back (no data is lost; run_created_at is
-- dropped), with their foreign keys instead of the triggers that did their work, 0019's roll_up_llm_usage and
-- 0018's reserve_llm_call.
-- One transaction holding ACCESS EXCLUSIVE locks on both tables while it copies: the time of a copy
-- (bench/partition_bench.py measures the forward one per million rows), so stop the service first.
--
-- yoyo pairs each statement of a migration with one of its rollback: the first of this file with the last of
-- 0022.partition-run-history.sql, and so on. The real rollback is that first statement; the empty DO blocks after
-- it belong to 0022's earlier statements, so that an apply failing half-way (a lock timeout in the swap) undoes
-- nothing and can be run again, resuming its copy.
DO $$
BEGIN
    ALTER TABLE run_steps RENAME TO run_steps_partitioned;
    ALTER TABLE run_events RENAME TO run_events_partitioned;
    ALTER TABLE run_steps_partitioned RENAME CONSTRAINT run_steps_pkey TO run_steps_partitioned_pkey;
    ALTER TABLE run_steps_partitioned RENAME CONSTRAINT run_steps_run_attempt_position_key
        TO run_steps_partitioned_run_attempt_position_key;
    ALTER TABLE run_events_partitioned RENAME CONSTRAINT run_events_pkey TO run_events_partitioned_pkey;
    ALTER INDEX run_steps_node_id_idx RENAME TO run_steps_partitioned_node_id_idx;
    ALTER INDEX run_steps_llm_finished_idx RENAME TO run_steps_partitioned_llm_finished_idx;
    ALTER INDEX run_events_run_at_idx RENAME TO run_events_partitioned_run_at_idx;

    CREATE TABLE run_steps (
        id                uuid        NOT NULL DEFAULT gen_random_uuid(),
        run_id            uuid        NOT NULL,
        node_id           uuid,
        attempt           integer     NOT NULL,
        position          integer     NOT NULL,
        node_type         text        NOT NULL,
        config_snapshot   jsonb       NOT NULL,
        status            text        NOT NULL,
        started_at        timestamptz,
        finished_at       timestamptz,
        input_text        text,
        output_text       text,
        error_message     text,
        note              text,
        model             text,
        prompt_tokens     integer,
        completion_tokens integer,
        cost_usd          numeric,
        CONSTRAINT run_steps_pkey PRIMARY KEY (id),
        CONSTRAINT run_steps_run_attempt_position_key UNIQUE (run_id, attempt, position),
        CONSTRAINT run_steps_status_valid
            CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled', 'Waiting')),
        CONSTRAINT run_steps_attempt_position_valid CHECK (attempt >= 1 AND position >= 0),
        CONSTRAINT run_steps_run_id_fkey FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE,
        CONSTRAINT run_steps_node_id_fkey FOREIGN KEY (node_id) REFERENCES nodes (id) ON DELETE SET NULL
    ) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.05,
            autovacuum_analyze_scale_factor = 0.02);
    CREATE TABLE run_events (
        id        uuid        NOT NULL DEFAULT gen_random_uuid(),
        run_id    uuid        NOT NULL,
        attempt   integer     NOT NULL,
        status    text        NOT NULL,
        at        timestamptz NOT NULL DEFAULT clock_timestamp(),
        worker_id text,
        note      text,
        CONSTRAINT run_events_pkey PRIMARY KEY (id),
        CONSTRAINT run_events_status_valid CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled')),
        CONSTRAINT run_events_run_id_fkey FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE
    ) WITH (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.05,
            autovacuum_analyze_scale_factor = 0.02);

    INSERT INTO run_steps (id, run_id, node_id, attempt, position, node_type, config_snapshot, status, started_at,
                           finished_at, input_text, output_text, error_message, note, model, prompt_tokens,
                           completion_tokens, cost_usd)
    SELECT id, run_id, node_id, attempt, position, node_type, config_snapshot, status, started_at, finished_at,
           input_text, output_text, error_message, note, model, prompt_tokens, completion_tokens, cost_usd
    FROM run_steps_partitioned;
    INSERT INTO run_events (id, run_id, attempt, status, at, worker_id, note)
    SELECT id, run_id, attempt, status, at, worker_id, note
    FROM run_events_partitioned;

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

    CREATE OR REPLACE FUNCTION save_run_steps(p_run_id uuid, p_attempt integer, p_steps jsonb)
    RETURNS bigint
    LANGUAGE sql
    VOLATILE
    AS $fn$
        -- p_steps is a JSON array of step objects (node_id, position, node_type, config_snapshot, status,
        -- started_at, finished_at, input_text, output_text, error_message, note, model, prompt_tokens,
        -- completion_tokens). A step first saved as Running (before a slow node) is completed by a later call with
        -- the same (run, attempt, position). Its cost is its tokens at its model's prices now (NULL without both).
        WITH saved AS (
            INSERT INTO run_steps (run_id, node_id, attempt, position, node_type, config_snapshot, status,
                                   started_at, finished_at, input_text, output_text, error_message, note,
                                   model, prompt_tokens, completion_tokens, cost_usd)
            SELECT p_run_id, s.node_id, p_attempt, s.position, s.node_type, s.config_snapshot, s.status,
                   s.started_at, s.finished_at, s.input_text, s.output_text, s.error_message, s.note,
                   s.model, s.prompt_tokens, s.completion_tokens,
                   (s.prompt_tokens * m.usd_per_million_input_tokens
                    + s.completion_tokens * m.usd_per_million_output_tokens) / 1000000
            FROM jsonb_to_recordset(p_steps) AS s(
                node_id uuid, position integer, node_type text, config_snapshot jsonb, status text,
                started_at timestamptz, finished_at timestamptz, input_text text, output_text text,
                error_message text, note text, model text, prompt_tokens integer, completion_tokens integer)
            LEFT JOIN llm_models AS m ON m.model = s.model
            ON CONFLICT (run_id, attempt, position) DO UPDATE
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
    $fn$;

    DROP TABLE run_steps_partitioned;
    DROP TABLE run_events_partitioned;

    CREATE INDEX run_steps_node_id_idx ON run_steps (node_id);
    CREATE INDEX run_steps_llm_finished_idx ON run_steps (finished_at) INCLUDE (model, prompt_tokens, completion_tokens)
        WHERE model IS NOT NULL;
    CREATE INDEX run_events_run_at_idx ON run_events (run_id, at);
    COMMENT ON COLUMN run_steps.model IS 'The LLM model this step called (NULL: not an LLM step).';
    COMMENT ON COLUMN run_steps.cost_usd IS 'The usage priced with llm_models'' prices when the step was saved (NULL: no usage reported or no price).';
    CREATE TRIGGER run_steps_roll_up_inserted
        AFTER INSERT ON run_steps
        REFERENCING NEW TABLE AS new_steps
        FOR EACH STATEMENT EXECUTE FUNCTION run_steps_roll_up_usage();
    CREATE TRIGGER run_steps_roll_up_updated
        AFTER UPDATE ON run_steps
        REFERENCING OLD TABLE AS old_steps NEW TABLE AS new_steps
        FOR EACH STATEMENT EXECUTE FUNCTION run_steps_roll_up_usage();
    -- 0018's reserve_llm_call again.
    CREATE OR REPLACE FUNCTION reserve_llm_call(p_model text, p_tokens integer, p_run_id uuid, p_window_s double precision,
                                     p_probe_s double precision)
    RETURNS TABLE (reservation_id bigint, wait_s double precision, reason text, probe boolean,
                   run_tokens bigint, run_limit integer, tokens_per_minute integer)
    LANGUAGE plpgsql
    VOLATILE
    AS $fn$
    -- Decides one HTTP attempt of an LLM step. reason is one of:
    --   'go'                   call now (reservation_id: its reservation, NULL for a model without a budget;
    --                          probe: this call probes a model a 429 paused, and whoever makes it ends the probe)
    --   'requests per minute', 'tokens per minute', 'paused after a 429', 'probing after a 429'
    --                          wait wait_s seconds (staggered after the model's other waiters)
    --   'never fits'           the estimate is larger than the whole tokens_per_minute
    --   'max_tokens_per_run'   the call would take the run past its workflow's limit (run_tokens used so far)
    -- Each statement of a VOLATILE function reads a fresh snapshot, so once the state row is locked the window's
    -- sum sees every reservation committed by the lock's previous holder.
    DECLARE
        v_rpm integer;
        v_paused timestamptz;
        v_probe timestamptz;
        v_next timestamptz;
        v_now timestamptz;
        v_window interval := make_interval(secs => p_window_s);
        v_requests bigint;
        v_tokens bigint;
        v_free timestamptz;
        v_tokens_free timestamptz;
        v_until timestamptz;
    BEGIN
        probe := false;
        IF p_run_id IS NOT NULL THEN
            SELECT w.max_tokens_per_run,
                   coalesce((SELECT sum(coalesce(s.prompt_tokens, 0) + coalesce(s.completion_tokens, 0))
                             FROM run_steps AS s
                             WHERE s.run_id = r.id), 0)
            INTO run_limit, run_tokens
            FROM runs AS r
            JOIN workflows AS w ON w.id = r.workflow_id
            WHERE r.id = p_run_id;
            IF run_limit IS NOT NULL AND run_tokens + p_tokens > run_limit THEN
                reason := 'max_tokens_per_run';
                RETURN NEXT;
                RETURN;
            END IF;
        END IF;
        SELECT m.requests_per_minute, m.tokens_per_minute INTO v_rpm, tokens_per_minute
        FROM llm_models AS m
        WHERE m.model = p_model;
        IF p_tokens > tokens_per_minute THEN
            reason := 'never fits';
            RETURN NEXT;
            RETURN;
        END IF;
        SELECT st.paused_until INTO v_paused FROM llm_model_state AS st WHERE st.model = p_model;
        IF v_rpm IS NULL AND tokens_per_minute IS NULL AND v_paused IS NULL THEN
            reason := 'go';
            RETURN NEXT;
            RETURN;
        END IF;

        -- Lock the model's state row (created the first time) until the transaction ends.
        INSERT INTO llm_model_state AS st (model) VALUES (p_model)
        ON CONFLICT (model) DO UPDATE SET model = excluded.model
        RETURNING st.paused_until, st.probe_until, st.next_slot_at INTO v_paused, v_probe, v_next;
        v_now := clock_timestamp();

        IF v_paused IS NOT NULL THEN
            IF v_now < v_paused THEN
                reason := 'paused after a 429';
                v_free := v_paused;
            ELSIF v_probe IS NOT NULL AND v_now < v_probe THEN
                reason := 'probing after a 429';
                v_free := v_now + interval '1 second';
            ELSE
                probe := true;
            END IF;
        END IF;

        IF reason IS NULL AND (v_rpm IS NOT NULL OR tokens_per_minute IS NOT NULL) THEN
            DELETE FROM llm_reservations AS lr
            WHERE lr.model = p_model
              AND lr.at < v_now - v_window - interval '1 minute';
            SELECT count(*), coalesce(sum(lr.tokens), 0) INTO v_requests, v_tokens
            FROM llm_reservations AS lr
            WHERE lr.model = p_model
              AND lr.at > v_now - v_window;
            IF v_requests >= v_rpm THEN
                -- Room for one more once the (v_requests - v_rpm + 1)th oldest leaves the window.
                SELECT lr.at + v_window INTO v_free
                FROM llm_reservations AS lr
                WHERE lr.model = p_model
                  AND lr.at > v_now - v_window
                ORDER BY lr.at, lr.id
                OFFSET v_requests - v_rpm
                LIMIT 1;
                reason := 'requests per minute';
            END IF;
            IF v_tokens + p_tokens > tokens_per_minute THEN
                -- Room once enough of the oldest reservations left for the estimate to fit.
                SELECT c.at + v_window INTO v_tokens_free
                FROM (SELECT lr.at, sum(lr.tokens) OVER (ORDER BY lr.at, lr.id) AS cumulative
                      FROM llm_reservations AS lr
                      WHERE lr.model = p_model
                        AND lr.at > v_now - v_window) AS c
                WHERE v_tokens - c.cumulative + p_tokens <= tokens_per_minute
                ORDER BY c.at
                LIMIT 1;
                IF v_free IS NULL OR v_tokens_free > v_free THEN
                    reason := 'tokens per minute';
                    v_free := v_tokens_free;
                END IF;
            END IF;
        END IF;

        IF reason IS NOT NULL THEN
            -- Staggered: after the model's last waiter by one request's share of the minute (at least 50 ms).
            v_until := greatest(v_free, v_next + make_interval(secs => greatest(
                0.05, coalesce(60.0 / v_rpm, 0), coalesce(60.0 * p_tokens / tokens_per_minute, 0))));
            UPDATE llm_model_state AS st SET next_slot_at = v_until WHERE st.model = p_model;
            wait_s := greatest(0, extract(epoch FROM v_until - v_now));
            probe := false;
            RETURN NEXT;
            RETURN;
        END IF;

        IF probe THEN
            UPDATE llm_model_state AS st
            SET probe_until = v_now + make_interval(secs => p_probe_s)
            WHERE st.model = p_model;
        END IF;
        IF v_rpm IS NOT NULL OR tokens_per_minute IS NOT NULL THEN
            INSERT INTO llm_reservations (model, at, tokens)
            VALUES (p_model, v_now, p_tokens)
            RETURNING id INTO reservation_id;
        END IF;
        reason := 'go';
        RETURN NEXT;
    END;
    $fn$;
    -- 0019's roll_up_llm_usage again.
    CREATE OR REPLACE FUNCTION roll_up_llm_usage(p_steps jsonb, p_sign integer)
    RETURNS void
    LANGUAGE sql
    VOLATILE
    AS $fn$
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
    $fn$;
    DROP TRIGGER runs_delete_history ON runs;
    DROP FUNCTION delete_run_history();
    DROP TRIGGER nodes_forget_run_steps ON nodes;
    DROP FUNCTION forget_deleted_nodes();
END
$$;
DO $$ BEGIN END $$;
DO $$ BEGIN END $$;
DO $$ BEGIN END $$;
DO $$ BEGIN END $$;
DO $$ BEGIN END $$;
DO $$ BEGIN END $$;
DO $$ BEGIN END $$;
DO $$ BEGIN END $$;
DO $$ BEGIN END $$;
