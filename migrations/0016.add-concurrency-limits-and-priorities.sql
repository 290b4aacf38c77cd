-- Adds concurrency limits and priorities to the queue: workflows.max_concurrent_runs and
-- max_concurrent_runs_per_key (NULL: no limit), runs.priority (-100..100, higher first) and runs.concurrency_key
-- (1-200 characters, NULL: none), schedules.priority (the runs a schedule fires carry it); the table run_lanes
-- (running counts), runs.held_by (why a Pending run is not offered to the claim), the functions and triggers that
-- keep them, the claim's index, and priority and concurrency_key at the end of the view run_list.
-- Rollback (0016.add-concurrency-limits-and-priorities.rollback.sql) drops all of it: the limits, priorities and
-- keys are lost (queued runs go back to plain oldest-first order).
--
-- How the claim stays cheap (README, "Concurrency limits and priorities"): a Pending run that may not start now
-- because of a limit, or because its key's turn has not come, has held_by set, and the claim's index
-- (runs_claim_idx) holds only runs whose held_by is NULL, so the claim (claim_run, sql/runs.sql) never walks past
-- runs it may not take, however many wait behind a full key. The holds are kept eagerly, by triggers on runs,
-- one run at a time:
--   * held_by = 'key': a run with a concurrency_key waiting for its key's turn. Each key releases at most one run
--     at a time (with no per-key limit) or as many as its limit leaves room for; a released run's available_at
--     moves to the time of its release, so it queues behind the other keys' released runs: keys take turns.
--   * held_by = 'workflow': a run of a workflow with max_concurrent_runs, released (held_by NULL) only while the
--     workflow's running runs plus its released ones stay within the limit.
-- Releases happen in the triggers below on EVERY change of a run's status (claim, finish, requeue, lease sweep,
-- cancel, and any statement written later, such as a run going back to Pending to wait for an LLM budget), so
-- no statement has to call anything: a new statement that changes runs.status is covered as long as it sets
-- status. Counts of running runs (run_lanes) are kept by the same triggers. Sync runs are not limited.
-- A change of a workflow's limits (PATCH /workflows/{id}) takes the workflow's lock exclusively and calls
-- rebuild_run_holds, which recounts and re-holds that workflow's Pending runs; the triggers take it shared.
--
-- For DBAs: the new runs columns are NULL or constant defaults (no rewrite); their CHECKs and the five new
-- partial indexes each read runs once while this migration holds its lock (the indexes hold only Pending runs,
-- so they stay small). The claim's old index runs_pending_queue_idx stays: the queue metrics read it.
-- depends: 0015.record-step-usage

ALTER TABLE workflows
    ADD COLUMN max_concurrent_runs integer
        CONSTRAINT workflows_max_concurrent_runs_positive CHECK (max_concurrent_runs >= 1),
    ADD COLUMN max_concurrent_runs_per_key integer
        CONSTRAINT workflows_max_concurrent_runs_per_key_positive CHECK (max_concurrent_runs_per_key >= 1);

ALTER TABLE schedules
    ADD COLUMN priority integer NOT NULL DEFAULT 0
        CONSTRAINT schedules_priority_range CHECK (priority BETWEEN -100 AND 100);

ALTER TABLE runs
    ADD COLUMN priority integer NOT NULL DEFAULT 0
        CONSTRAINT runs_priority_range CHECK (priority BETWEEN -100 AND 100),
    ADD COLUMN concurrency_key text
        CONSTRAINT runs_concurrency_key_length CHECK (char_length(concurrency_key) BETWEEN 1 AND 200),
    ADD COLUMN held_by text
        CONSTRAINT runs_held_by_valid CHECK (held_by IN ('key', 'workflow'));

COMMENT ON COLUMN runs.held_by IS
    'Why this Pending run is not offered to the claim: key (its key''s turn or limit), workflow (its workflow''s max_concurrent_runs); NULL: offered. Kept by the triggers of migration 0016; meaningless once the run left Pending.';

-- Running async runs per workflow ('' : the whole workflow, counted while it has max_concurrent_runs) and per
-- (workflow, key) (counted always). Rows are locked while a run of theirs changes status, which serialises the
-- decisions about one workflow's and one key's runs.
CREATE TABLE run_lanes (
    workflow_id     uuid    NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    concurrency_key text    NOT NULL,
    running         integer NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow_id, concurrency_key),
    CONSTRAINT run_lanes_running_valid CHECK (running >= 0)
);

-- The claim: a skip scan over the distinct priorities, then the oldest available run of each (claim_run).
-- Ties of available_at (runs queued in one transaction) go by id, not created_at: an order no other index gives.
CREATE INDEX runs_claim_idx ON runs (priority DESC, available_at, id)
    WHERE status = 'Pending' AND held_by IS NULL;
-- A workflow's released runs (counted against max_concurrent_runs).
CREATE INDEX runs_released_workflow_idx ON runs (workflow_id)
    WHERE status = 'Pending' AND held_by IS NULL;
-- A key's released runs (its turn).
CREATE INDEX runs_key_released_idx ON runs (workflow_id, concurrency_key, priority)
    WHERE status = 'Pending' AND concurrency_key IS NOT NULL AND held_by IS DISTINCT FROM 'key';
-- A key's waiting runs, best first.
CREATE INDEX runs_key_waiting_idx ON runs (workflow_id, concurrency_key, priority DESC, available_at, created_at)
    WHERE status = 'Pending' AND held_by = 'key';
-- A workflow's runs waiting for room under max_concurrent_runs, best first.
CREATE INDEX runs_workflow_waiting_idx ON runs (workflow_id, priority DESC, available_at, created_at)
    WHERE status = 'Pending' AND held_by = 'workflow';

-- Takes a workflow's concurrency lock (a transaction-level advisory lock: shared for the triggers, exclusive for a
-- change of its limits) and returns its limits.
CREATE FUNCTION lock_run_limits(p_workflow_id uuid, p_exclusive boolean,
                                OUT max_concurrent_runs integer, OUT max_concurrent_runs_per_key integer)
LANGUAGE plpgsql
AS $$
BEGIN
    IF p_exclusive THEN
        PERFORM pg_advisory_xact_lock(16, hashtext(p_workflow_id::text));
    ELSE
        PERFORM pg_advisory_xact_lock_shared(16, hashtext(p_workflow_id::text));
    END IF;
    SELECT w.max_concurrent_runs, w.max_concurrent_runs_per_key
    INTO max_concurrent_runs, max_concurrent_runs_per_key
    FROM workflows AS w
    WHERE w.id = p_workflow_id;
END
$$;

-- Adds p_delta to a lane's running count (creating its row), locks the row until the transaction ends, and returns
-- the new count (never below zero).
CREATE FUNCTION add_lane_running(p_workflow_id uuid, p_key text, p_delta integer)
RETURNS integer
LANGUAGE sql
AS $$
    INSERT INTO run_lanes AS l (workflow_id, concurrency_key, running)
    VALUES (p_workflow_id, p_key, greatest(p_delta, 0))
    ON CONFLICT (workflow_id, concurrency_key) DO UPDATE SET running = greatest(l.running + p_delta, 0)
    RETURNING running
$$;

-- Releases a key's waiting runs while it has room: one released run at a time without a per-key limit, else as
-- many as the limit leaves; a waiting run of higher priority than a released one takes its place. A released run
-- moves to the back of the line (available_at = now at the latest) and goes on to wait for its workflow's room
-- when the workflow has max_concurrent_runs.
CREATE FUNCTION release_key_runs(p_workflow_id uuid, p_key text, p_per_key integer, p_gated boolean)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    allowed integer;
    released integer;
    best record;
    worst record;
BEGIN
    IF p_per_key IS NULL THEN
        PERFORM add_lane_running(p_workflow_id, p_key, 0);
        allowed := 1;
    ELSE
        allowed := p_per_key - add_lane_running(p_workflow_id, p_key, 0);
    END IF;
    SELECT count(*) INTO released
    FROM runs
    WHERE workflow_id = p_workflow_id AND concurrency_key = p_key
      AND status = 'Pending' AND concurrency_key IS NOT NULL AND held_by IS DISTINCT FROM 'key';
    LOOP
        SELECT id, priority INTO best
        FROM runs
        WHERE workflow_id = p_workflow_id AND concurrency_key = p_key AND status = 'Pending' AND held_by = 'key'
        ORDER BY priority DESC, available_at, created_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        IF released >= allowed THEN
            -- No room: only a higher priority than the lowest released run's changes places with it.
            SELECT id, priority INTO worst
            FROM runs
            WHERE workflow_id = p_workflow_id AND concurrency_key = p_key
              AND status = 'Pending' AND concurrency_key IS NOT NULL AND held_by IS DISTINCT FROM 'key'
            ORDER BY priority
            LIMIT 1
            FOR UPDATE SKIP LOCKED;
            EXIT WHEN NOT FOUND OR worst.priority >= best.priority;
            UPDATE runs SET held_by = 'key' WHERE id = worst.id;
            released := released - 1;
        END IF;
        UPDATE runs
        SET held_by = CASE WHEN p_gated THEN 'workflow' END,
            available_at = greatest(available_at, clock_timestamp())
        WHERE id = best.id;
        released := released + 1;
        PERFORM pg_notify('flowline_runs', '');
    END LOOP;
END
$$;

-- Releases a workflow's runs waiting for room under max_concurrent_runs while running plus released runs stay
-- within it (all of them once it has no limit); a waiting run of higher priority than a released one takes its
-- place.
CREATE FUNCTION release_workflow_runs(p_workflow_id uuid, p_limit integer)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    allowed integer;
    released integer;
    best record;
    worst record;
BEGIN
    IF p_limit IS NULL THEN
        UPDATE runs
        SET held_by = NULL
        WHERE id IN (SELECT id
                     FROM runs
                     WHERE workflow_id = p_workflow_id AND status = 'Pending' AND held_by = 'workflow'
                     FOR UPDATE SKIP LOCKED);
        RETURN;
    END IF;
    allowed := p_limit - add_lane_running(p_workflow_id, '', 0);
    SELECT count(*) INTO released
    FROM runs
    WHERE workflow_id = p_workflow_id AND status = 'Pending' AND held_by IS NULL;
    LOOP
        SELECT id, priority INTO best
        FROM runs
        WHERE workflow_id = p_workflow_id AND status = 'Pending' AND held_by = 'workflow'
        ORDER BY priority DESC, available_at, created_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        IF released >= allowed THEN
            SELECT id, priority INTO worst
            FROM runs
            WHERE workflow_id = p_workflow_id AND status = 'Pending' AND held_by IS NULL
            ORDER BY priority
            LIMIT 1
            FOR UPDATE SKIP LOCKED;
            EXIT WHEN NOT FOUND OR worst.priority >= best.priority;
            UPDATE runs SET held_by = 'workflow' WHERE id = worst.id;
            released := released - 1;
        END IF;
        UPDATE runs SET held_by = NULL WHERE id = best.id;
        released := released + 1;
        PERFORM pg_notify('flowline_runs', '');
    END LOOP;
END
$$;

-- BEFORE INSERT of an async Pending run, and BEFORE a run goes from Running back to Pending (a retry, a swept
-- lease, a wait): a run with a key waits for its key's turn, a run of a limited workflow for its room; the AFTER
-- trigger then releases what may go.
CREATE FUNCTION hold_pending_run()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    limits record;
BEGIN
    limits := lock_run_limits(NEW.workflow_id, false);
    NEW.held_by := CASE WHEN NEW.concurrency_key IS NOT NULL THEN 'key'
                        WHEN limits.max_concurrent_runs IS NOT NULL THEN 'workflow' END;
    RETURN NEW;
END
$$;

-- AFTER an async run is inserted held, or changes status: counts it into or out of its lanes when it starts or
-- stops Running, then releases what its key and its workflow have room for.
CREATE FUNCTION release_held_runs()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    limits record;
    gated boolean;
    key_running integer;
BEGIN
    limits := lock_run_limits(NEW.workflow_id, false);
    gated := limits.max_concurrent_runs IS NOT NULL;
    IF TG_OP = 'UPDATE' AND (OLD.status = 'Running') <> (NEW.status = 'Running') THEN
        -- Lock order: the workflow's row before the key's.
        IF gated THEN
            PERFORM add_lane_running(NEW.workflow_id, '', CASE WHEN NEW.status = 'Running' THEN 1 ELSE -1 END);
        END IF;
        IF NEW.concurrency_key IS NOT NULL THEN
            key_running := add_lane_running(NEW.workflow_id, NEW.concurrency_key,
                                            CASE WHEN NEW.status = 'Running' THEN 1 ELSE -1 END);
        END IF;
    END IF;
    IF NEW.concurrency_key IS NOT NULL THEN
        PERFORM release_key_runs(NEW.workflow_id, NEW.concurrency_key, limits.max_concurrent_runs_per_key, gated);
        IF key_running = 0 THEN
            DELETE FROM run_lanes
            WHERE workflow_id = NEW.workflow_id AND concurrency_key = NEW.concurrency_key AND running = 0;
        END IF;
    END IF;
    IF gated OR NEW.held_by = 'workflow' THEN
        PERFORM release_workflow_runs(NEW.workflow_id, limits.max_concurrent_runs);
    END IF;
    RETURN NULL;
END
$$;

-- Recounts one workflow's running runs and re-holds its Pending runs under its current limits: what a change of
-- them (PATCH /workflows/{id}) calls, holding lock_run_limits(workflow, true). Runs being claimed meanwhile are
-- skipped (they start); a limit lowered below the running count stops nothing, it lets no run start until below.
CREATE FUNCTION rebuild_run_holds(p_workflow_id uuid)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    limits record;
    lane record;
BEGIN
    limits := lock_run_limits(p_workflow_id, true);
    DELETE FROM run_lanes WHERE workflow_id = p_workflow_id;
    -- One row per key with running runs, and the workflow's own ('') while it has max_concurrent_runs.
    INSERT INTO run_lanes (workflow_id, concurrency_key, running)
    SELECT p_workflow_id, CASE WHEN GROUPING(concurrency_key) = 1 THEN '' ELSE concurrency_key END, count(*)
    FROM runs
    WHERE workflow_id = p_workflow_id AND status = 'Running' AND mode = 'async'
    GROUP BY GROUPING SETS ((), (concurrency_key))
    HAVING (GROUPING(concurrency_key) = 1 AND limits.max_concurrent_runs IS NOT NULL)
        OR (GROUPING(concurrency_key) = 0 AND concurrency_key IS NOT NULL);
    UPDATE runs
    SET held_by = CASE WHEN runs.concurrency_key IS NOT NULL THEN 'key'
                       WHEN limits.max_concurrent_runs IS NOT NULL THEN 'workflow' END
    WHERE id IN (SELECT id
                 FROM runs
                 WHERE workflow_id = p_workflow_id AND status = 'Pending' AND mode = 'async'
                 FOR UPDATE SKIP LOCKED);
    FOR lane IN SELECT DISTINCT concurrency_key
                FROM runs
                WHERE workflow_id = p_workflow_id AND status = 'Pending' AND held_by = 'key'
    LOOP
        PERFORM release_key_runs(p_workflow_id, lane.concurrency_key, limits.max_concurrent_runs_per_key,
                                 limits.max_concurrent_runs IS NOT NULL);
    END LOOP;
    PERFORM release_workflow_runs(p_workflow_id, limits.max_concurrent_runs);
END
$$;

CREATE TRIGGER runs_hold_inserted
BEFORE INSERT ON runs
FOR EACH ROW
WHEN (NEW.mode = 'async' AND NEW.status = 'Pending')
EXECUTE FUNCTION hold_pending_run();

CREATE TRIGGER runs_hold_requeued
BEFORE UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.mode = 'async' AND OLD.status = 'Running' AND NEW.status = 'Pending')
EXECUTE FUNCTION hold_pending_run();

CREATE TRIGGER runs_release_inserted
AFTER INSERT ON runs
FOR EACH ROW
WHEN (NEW.mode = 'async' AND NEW.status = 'Pending' AND NEW.held_by IS NOT NULL)
EXECUTE FUNCTION release_held_runs();

-- Every status change of an async run out of Pending or into or out of Running; UPDATE OF status: the release's
-- own UPDATEs (held_by, available_at) do not fire it.
CREATE TRIGGER runs_release_on_status
AFTER UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.mode = 'async' AND OLD.status IS DISTINCT FROM NEW.status
      AND (OLD.status IN ('Pending', 'Running') OR NEW.status = 'Running'))
EXECUTE FUNCTION release_held_runs();

-- The run as the API lists it gains its priority and key (at the end: CREATE OR REPLACE VIEW may only add).
CREATE OR REPLACE VIEW run_list AS
SELECT id, workflow_id, status, started_at, finished_at, error_message, final_output,
       mode, attempt, max_attempts, created_at, schedule_id, scheduled_for, priority, concurrency_key
FROM runs;
