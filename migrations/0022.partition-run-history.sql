-- Partitions run_steps and run_events by time: each row gains run_created_at, its run's created_at, and the tables
-- become range-partitioned by it (PostgreSQL's native partitioning; partitions made by 0021's functions), so
-- prune-runs drops whole partitions instead of deleting rows, and a query by run id (which passes the run's
-- created_at) reads one partition. runs stays one table: its uniqueness must hold across all its rows.
-- Rollback (0022.partition-run-history.rollback.sql) copies every row back into plain tables; no data is lost.
--
-- Written for a live, large database (README, "History partitioned by time"). Not transactional: each statement
-- commits on its own and every one can be run again, so an interrupted apply resumes where it stopped:
--   1. run_steps_next and run_events_next are made, partitioned, with partitions from the oldest run's week to
--      3 weeks ahead; row triggers on run_steps and run_events copy every insert, update and delete into them from
--      then on (the version running meanwhile needs no change).
--   2. move_history_rows() copies the older rows over, 5,000 runs a transaction, newest runs first, its place kept
--      in history_move (resumable). Measured: bench/partition_bench.py, README.
--   3. The swap, one short transaction under lock_timeout 1 s (retried up to 60 times, 1 s apart, so it never
--      queues the queue's writes behind it): the plain tables step aside (emptied and dropped just after, each
--      in a short transaction of its own), the new ones take their names,
--      save_run_steps writes run_created_at, run_list's usage reads one partition, the roll-up triggers of 0019
--      move over, and the foreign keys' cascades become triggers (below). From here on the running code must be this
--      version's: stop the old one before this step (its INSERTs lack run_created_at), or run steps 1-2 by hand
--      beforehand (README) so that only the swap is left.
--   4. roll_up_llm_usage (0019) and reserve_llm_call (0018) read a run's steps in its one partition.
-- No foreign keys on the partitioned tables, a decision: PostgreSQL allows them (to runs, and to nodes), but each
-- partition's constraint ties it to the referenced table's catalog: attaching one takes a SHARE ROW EXCLUSIVE lock
-- on runs, and dropping a detached one an ACCESS EXCLUSIVE lock on runs (measured), which waits behind any long
-- transaction on runs (an export's) while the queue waits behind it. What they did is done by statement-level
-- triggers instead: runs_delete_history deletes a deleted run's steps and events (in the one partition holding
-- them), nodes_forget_run_steps sets node_id to NULL for a deleted node's steps. Every INSERT takes run_created_at
-- from the runs row it writes for (save_run_steps, the queries in sql/), which is what the key's correctness rests
-- on. Nothing references run_steps or run_events, whose primary keys are now (id, run_created_at).
-- transactional: false
-- depends: 0021.history-partition-upkeep

-- 1. What copies the rows written while the move goes on, one trigger function per table.
CREATE OR REPLACE FUNCTION move_history_step()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM run_steps_next WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO run_steps_next (id, run_id, run_created_at, node_id, attempt, position, node_type, config_snapshot,
                                status, started_at, finished_at, input_text, output_text, error_message, note,
                                model, prompt_tokens, completion_tokens, cost_usd)
    SELECT NEW.id, NEW.run_id, r.created_at, NEW.node_id, NEW.attempt, NEW.position, NEW.node_type,
           NEW.config_snapshot, NEW.status, NEW.started_at, NEW.finished_at, NEW.input_text, NEW.output_text,
           NEW.error_message, NEW.note, NEW.model, NEW.prompt_tokens, NEW.completion_tokens, NEW.cost_usd
    FROM runs AS r
    WHERE r.id = NEW.run_id
    ON CONFLICT (id, run_created_at) DO UPDATE
    SET node_id = excluded.node_id, status = excluded.status, started_at = excluded.started_at,
        finished_at = excluded.finished_at, input_text = excluded.input_text, output_text = excluded.output_text,
        error_message = excluded.error_message, note = excluded.note, model = excluded.model,
        prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
        cost_usd = excluded.cost_usd;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION move_history_event()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM run_events_next WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO run_events_next (id, run_id, run_created_at, attempt, status, at, worker_id, note)
    SELECT NEW.id, NEW.run_id, r.created_at, NEW.attempt, NEW.status, NEW.at, NEW.worker_id, NEW.note
    FROM runs AS r
    WHERE r.id = NEW.run_id
    ON CONFLICT (id, run_created_at) DO UPDATE
    SET attempt = excluded.attempt, status = excluded.status, at = excluded.at, worker_id = excluded.worker_id,
        note = excluded.note;
    RETURN NULL;
END
$$;

-- 2. The copy of the rows written before the triggers, p_batch runs (their steps and events) per transaction.
-- Each batch locks its runs FOR KEY SHARE, so a run deleted meanwhile is either deleted before (skipped) or after
-- (its copies cascade away); a row the triggers copied first is kept (DO NOTHING: theirs is as new or newer).
CREATE OR REPLACE PROCEDURE move_history_rows(p_batch integer)
LANGUAGE plpgsql
AS $$
DECLARE
    v_until timestamptz;
    v_after_created_at timestamptz;
    v_after_id uuid;
    v_last record;
BEGIN
    IF to_regclass('history_move') IS NULL THEN
        RETURN;  -- already swapped: nothing to copy
    END IF;
    LOOP
        SELECT copy_until, after_created_at, after_id INTO v_until, v_after_created_at, v_after_id FROM history_move;
        WITH batch AS (
            SELECT id, created_at
            FROM runs
            -- runs_created_idx (created_at DESC, id), in its order: newest runs first.
            WHERE created_at <= coalesce(v_after_created_at, v_until)
              AND (v_after_created_at IS NULL OR created_at < v_after_created_at OR id > v_after_id)
            ORDER BY created_at DESC, id
            LIMIT p_batch
            FOR KEY SHARE
        ), steps AS (
            INSERT INTO run_steps_next (id, run_id, run_created_at, node_id, attempt, position, node_type,
                                        config_snapshot, status, started_at, finished_at, input_text, output_text,
                                        error_message, note, model, prompt_tokens, completion_tokens, cost_usd)
            SELECT s.id, s.run_id, b.created_at, s.node_id, s.attempt, s.position, s.node_type, s.config_snapshot,
                   s.status, s.started_at, s.finished_at, s.input_text, s.output_text, s.error_message, s.note,
                   s.model, s.prompt_tokens, s.completion_tokens, s.cost_usd
            FROM batch AS b
            JOIN run_steps AS s ON s.run_id = b.id
            ON CONFLICT DO NOTHING
        ), events AS (
            INSERT INTO run_events_next (id, run_id, run_created_at, attempt, status, at, worker_id, note)
            SELECT e.id, e.run_id, b.created_at, e.attempt, e.status, e.at, e.worker_id, e.note
            FROM batch AS b
            JOIN run_events AS e ON e.run_id = b.id
            ON CONFLICT DO NOTHING
        )
        SELECT created_at, id, count(*) OVER () AS runs INTO v_last
        FROM batch
        ORDER BY created_at, id DESC
        LIMIT 1;
        EXIT WHEN NOT FOUND;
        UPDATE history_move
        SET after_created_at = v_last.created_at, after_id = v_last.id, moved_runs = moved_runs + v_last.runs;
        COMMIT;
    END LOOP;
    COMMIT;
END
$$;

-- 1. The new tables (once: skipped when they, or the swap, exist), their partitions, and the triggers.
DO $$
DECLARE
    v_first timestamptz;
    v_week timestamptz;
BEGIN
    IF to_regclass('run_steps_next') IS NOT NULL
       OR (SELECT relkind FROM pg_class WHERE oid = to_regclass('run_steps')) = 'p' THEN
        RETURN;
    END IF;

    CREATE TABLE run_steps_next (
        id                uuid        NOT NULL DEFAULT gen_random_uuid(),
        run_id            uuid        NOT NULL,
        -- The run's created_at: the partition key.
        run_created_at    timestamptz NOT NULL,
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
        CONSTRAINT run_steps_next_pkey PRIMARY KEY (id, run_created_at),
        CONSTRAINT run_steps_next_run_attempt_position_key UNIQUE (run_id, attempt, position, run_created_at),
        CONSTRAINT run_steps_status_valid
            CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled', 'Waiting')),
        CONSTRAINT run_steps_attempt_position_valid CHECK (attempt >= 1 AND position >= 0)
    ) PARTITION BY RANGE (run_created_at);
    CREATE INDEX run_steps_next_node_id_idx ON run_steps_next (node_id);
    CREATE INDEX run_steps_next_llm_finished_idx ON run_steps_next (finished_at)
        INCLUDE (model, prompt_tokens, completion_tokens) WHERE model IS NOT NULL;

    CREATE TABLE run_events_next (
        id             uuid        NOT NULL DEFAULT gen_random_uuid(),
        run_id         uuid        NOT NULL,
        run_created_at timestamptz NOT NULL,
        attempt        integer     NOT NULL,
        status         text        NOT NULL,
        at             timestamptz NOT NULL DEFAULT clock_timestamp(),
        worker_id      text,
        note           text,
        CONSTRAINT run_events_next_pkey PRIMARY KEY (id, run_created_at),
        CONSTRAINT run_events_status_valid CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled'))
    ) PARTITION BY RANGE (run_created_at);
    CREATE INDEX run_events_next_run_at_idx ON run_events_next (run_id, at);

    -- Weekly partitions from the oldest run's week to 3 weeks ahead (workers keep them ahead from then on).
    v_first := date_trunc('week', coalesce((SELECT min(created_at) FROM runs), now()), 'UTC');
    FOR v_week IN SELECT generate_series(v_first, now() + interval '3 weeks', interval '1 week') LOOP
        PERFORM attach_history_partition('run_steps_next', v_week, v_week + interval '1 week');
        PERFORM attach_history_partition('run_events_next', v_week, v_week + interval '1 week');
    END LOOP;

    CREATE TRIGGER run_steps_move AFTER INSERT OR UPDATE OR DELETE ON run_steps
        FOR EACH ROW EXECUTE FUNCTION move_history_step();
    CREATE TRIGGER run_events_move AFTER INSERT OR UPDATE OR DELETE ON run_events
        FOR EACH ROW EXECUTE FUNCTION move_history_event();

    -- Where the copy is. Making the triggers waited for every transaction writing steps or events to end, and
    -- holds new ones back until this commits: a row written before now belongs to a run created before now (the
    -- copy's), a later one reaches the triggers.
    CREATE TABLE history_move (
        copy_until       timestamptz NOT NULL,
        after_created_at timestamptz,
        after_id         uuid,
        moved_runs       bigint      NOT NULL DEFAULT 0
    );
    INSERT INTO history_move (copy_until) VALUES (clock_timestamp());
END
$$;

-- 2. The copy (the long part; run it by hand ahead of a deploy to leave only the swap: README).
CALL move_history_rows(5000);

-- 3. The swap, and the removal of the move's own objects (also when a run before this one swapped already).
DO $$
DECLARE
    v_try integer := 0;
BEGIN
    WHILE to_regclass('run_steps_next') IS NOT NULL LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '1s', true);
            -- The plain tables step aside (emptied and dropped after this transaction: unlinking their files here
            -- would hold every lock as long), without their triggers and with their index names free.
            ALTER TABLE run_steps RENAME TO run_steps_legacy;
            ALTER TABLE run_events RENAME TO run_events_legacy;
            DROP TRIGGER run_steps_move ON run_steps_legacy;
            DROP TRIGGER run_events_move ON run_events_legacy;
            DROP TRIGGER run_steps_roll_up_inserted ON run_steps_legacy;
            DROP TRIGGER run_steps_roll_up_updated ON run_steps_legacy;
            ALTER TABLE run_steps_legacy RENAME CONSTRAINT run_steps_pkey TO run_steps_legacy_pkey;
            ALTER TABLE run_steps_legacy RENAME CONSTRAINT run_steps_run_attempt_position_key
                TO run_steps_legacy_run_attempt_position_key;
            ALTER INDEX run_steps_node_id_idx RENAME TO run_steps_legacy_node_id_idx;
            ALTER INDEX run_steps_llm_finished_idx RENAME TO run_steps_legacy_llm_finished_idx;
            ALTER TABLE run_events_legacy RENAME CONSTRAINT run_events_pkey TO run_events_legacy_pkey;
            ALTER INDEX run_events_run_at_idx RENAME TO run_events_legacy_run_at_idx;
            ALTER TABLE run_steps_next RENAME TO run_steps;
            ALTER TABLE run_events_next RENAME TO run_events;

            -- The view and the function that name the plain tables.
            CREATE OR REPLACE VIEW run_list AS
            SELECT id, workflow_id, status, started_at, finished_at, error_message, final_output,
                   mode, attempt, max_attempts, created_at, schedule_id, scheduled_for, priority, concurrency_key,
                   (SELECT json_build_object(
                               'prompt_tokens', coalesce(sum(s.prompt_tokens), 0),
                               'completion_tokens', coalesce(sum(s.completion_tokens), 0),
                               'cost_usd', CASE WHEN count(s.cost_usd) = count(*) THEN coalesce(sum(s.cost_usd), 0)::float8 END)
                    FROM run_steps AS s
                    WHERE s.run_id = runs.id
                      -- One partition.
                      AND s.run_created_at = runs.created_at
                      AND s.model IS NOT NULL) AS usage
            FROM runs;

            CREATE OR REPLACE FUNCTION save_run_steps(p_run_id uuid, p_attempt integer, p_steps jsonb)
            RETURNS bigint
            LANGUAGE sql
            VOLATILE
            AS $fn$
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
            $fn$;

            ALTER TABLE run_steps RENAME CONSTRAINT run_steps_next_pkey TO run_steps_pkey;
            ALTER TABLE run_steps RENAME CONSTRAINT run_steps_next_run_attempt_position_key
                TO run_steps_run_attempt_position_key;
            ALTER INDEX run_steps_next_node_id_idx RENAME TO run_steps_node_id_idx;
            ALTER INDEX run_steps_next_llm_finished_idx RENAME TO run_steps_llm_finished_idx;
            ALTER TABLE run_events RENAME CONSTRAINT run_events_next_pkey TO run_events_pkey;
            ALTER INDEX run_events_next_run_at_idx RENAME TO run_events_run_at_idx;
            COMMENT ON COLUMN run_steps.model IS 'The LLM model this step called (NULL: not an LLM step).';
            COMMENT ON COLUMN run_steps.cost_usd IS 'The usage priced with llm_models'' prices when the step was saved (NULL: no usage reported or no price).';
            COMMENT ON COLUMN run_steps.run_created_at IS 'Its run''s created_at: the partition key.';
            COMMENT ON COLUMN run_events.run_created_at IS 'Its run''s created_at: the partition key.';

            -- 0019's roll-ups, statement-level with transition tables: allowed on a partitioned table (they fire
            -- once per statement on it, with the rows of every partition the statement wrote).
            CREATE TRIGGER run_steps_roll_up_inserted
                AFTER INSERT ON run_steps
                REFERENCING NEW TABLE AS new_steps
                FOR EACH STATEMENT EXECUTE FUNCTION run_steps_roll_up_usage();
            CREATE TRIGGER run_steps_roll_up_updated
                AFTER UPDATE ON run_steps
                REFERENCING OLD TABLE AS old_steps NEW TABLE AS new_steps
                FOR EACH STATEMENT EXECUTE FUNCTION run_steps_roll_up_usage();

            -- The foreign keys' cascades. A run at a time, as a key's cascade does: each DELETE is one plan with
            -- parameters, pruned to the run's partition and its index when it runs, where a join with the
            -- transition table (no statistics) may be planned as a scan of every partition.
            CREATE FUNCTION delete_run_history()
            RETURNS trigger
            LANGUAGE plpgsql
            AS $fn$
            DECLARE
                r record;
            BEGIN
                FOR r IN SELECT id, created_at FROM deleted_runs LOOP
                    DELETE FROM run_steps WHERE run_id = r.id AND run_created_at = r.created_at;
                    DELETE FROM run_events WHERE run_id = r.id AND run_created_at = r.created_at;
                END LOOP;
                RETURN NULL;
            END
            $fn$;
            COMMENT ON FUNCTION delete_run_history() IS 'Deletes the steps and events of deleted runs (what ON DELETE CASCADE did before migration 0022).';
            CREATE TRIGGER runs_delete_history
                AFTER DELETE ON runs
                REFERENCING OLD TABLE AS deleted_runs
                FOR EACH STATEMENT EXECUTE FUNCTION delete_run_history();

            CREATE FUNCTION forget_deleted_nodes()
            RETURNS trigger
            LANGUAGE plpgsql
            AS $fn$
            DECLARE
                n record;
            BEGIN
                -- A node at a time, through run_steps_node_id_idx in each partition.
                FOR n IN SELECT id FROM deleted_nodes LOOP
                    UPDATE run_steps SET node_id = NULL WHERE node_id = n.id;
                END LOOP;
                RETURN NULL;
            END
            $fn$;
            COMMENT ON FUNCTION forget_deleted_nodes() IS 'Sets run_steps.node_id to NULL for deleted nodes (what ON DELETE SET NULL did before migration 0022).';
            CREATE TRIGGER nodes_forget_run_steps
                AFTER DELETE ON nodes
                REFERENCING OLD TABLE AS deleted_nodes
                FOR EACH STATEMENT EXECUTE FUNCTION forget_deleted_nodes();
        EXCEPTION WHEN lock_not_available THEN
            v_try := v_try + 1;
            IF v_try >= 60 THEN
                RAISE;
            END IF;
            PERFORM pg_sleep(1);
        END;
    END LOOP;
    DROP TABLE IF EXISTS history_move;
    DROP PROCEDURE IF EXISTS move_history_rows(integer);
    DROP FUNCTION IF EXISTS move_history_step();
    DROP FUNCTION IF EXISTS move_history_event();
END
$$;

-- The plain tables, emptied (TRUNCATE: their own locks only, their files unlinked at its commit) ...
DO $$
BEGIN
    IF to_regclass('run_steps_legacy') IS NOT NULL THEN
        TRUNCATE run_steps_legacy, run_events_legacy;
    END IF;
END
$$;

-- ... then dropped: their foreign keys' triggers on runs and nodes go with them, under an ACCESS EXCLUSIVE lock
-- on both for an instant, taken under lock_timeout 1 s and retried (up to 60 times) rather than queued behind a
-- long transaction while the queue waits.
DO $$
DECLARE
    v_try integer := 0;
BEGIN
    WHILE to_regclass('run_steps_legacy') IS NOT NULL OR to_regclass('run_events_legacy') IS NOT NULL LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '1s', true);
            DROP TABLE IF EXISTS run_steps_legacy, run_events_legacy;
        EXCEPTION WHEN lock_not_available THEN
            v_try := v_try + 1;
            IF v_try >= 60 THEN
                RAISE;
            END IF;
            PERFORM pg_sleep(1);
        END;
    END LOOP;
END
$$;

-- 4. roll_up_llm_usage (0019) looks for a run's earlier LLM steps in the one partition holding them (run_created_at),
-- after the swap (its body names the new column); otherwise unchanged: adds (sign 1) or takes back (sign -1) the usage of p_steps, finished LLM steps as JSON rows
-- of run_steps.
CREATE OR REPLACE FUNCTION roll_up_llm_usage(p_steps jsonb, p_sign integer)
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

-- 5. reserve_llm_call (0018) sums a run's tokens in the one partition holding its steps; otherwise unchanged.
CREATE OR REPLACE FUNCTION reserve_llm_call(p_model text, p_tokens integer, p_run_id uuid, p_window_s double precision,
                                 p_probe_s double precision)
RETURNS TABLE (reservation_id bigint, wait_s double precision, reason text, probe boolean,
               run_tokens bigint, run_limit integer, tokens_per_minute integer)
LANGUAGE plpgsql
VOLATILE
AS $$
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
                         WHERE s.run_id = r.id
                           AND s.run_created_at = r.created_at), 0)
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
$$;
