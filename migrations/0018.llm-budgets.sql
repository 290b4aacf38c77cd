-- Keeps LLM calls within their models' per-minute budgets (llm_models, migration 0014), shared by every worker
-- and API process, and lets a queued run wait for a budget without holding a worker thread:
--   * llm_reservations: one row per HTTP attempt a generative_ai step makes (the request and its estimated
--     tokens, corrected to the reported usage after the answer): the sliding 60-second window a budget is
--     checked against. reserve_llm_call deletes a model's rows older than two minutes when it reserves.
--   * llm_model_state: per model, the pause a provider's 429 asked for and the one probe allowed after it, and
--     the last wake-up time handed to a waiting run (the next waiter's comes after it: staggered).
--   * reserve_llm_call(): locks the model's state row (a transaction-level row lock), sums the window and either
--     inserts a reservation or answers how long to wait and why; it refuses a call that can never fit the budget
--     or that would take its run past its workflow's max_tokens_per_run.
--   * runs: the node list snapshotted at the first claim, the node a waiting run resumes at, the seconds the
--     attempt ran before its waits (ASYNC_RUN_TIMEOUT_S counts only those), the run's total wait, and the model
--     it waits for; run_steps may be Waiting; workflows.max_tokens_per_run.
-- Rollback (0018.llm-budgets.rollback.sql) drops the tables, the function and the columns: reservations, pauses,
-- snapshots and every workflow's max_tokens_per_run are lost; Waiting steps become Failed.
--
-- For DBAs: the new columns are nullable or have constant defaults (catalog-only changes). Replacing the
-- run_steps status CHECK scans run_steps once, under the migration's lock.
-- depends: 0016.add-concurrency-limits-and-priorities

CREATE TABLE llm_reservations (
    id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model  text        NOT NULL,
    at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The step's estimate when reserved; what the provider reported once it answered.
    tokens integer     NOT NULL,
    CONSTRAINT llm_reservations_tokens_not_negative CHECK (tokens >= 0)
);
CREATE INDEX llm_reservations_model_at_idx ON llm_reservations (model, at);
COMMENT ON TABLE llm_reservations IS 'One row per LLM HTTP attempt of a model with a budget: the sliding window its budget is checked against.';

CREATE TABLE llm_model_state (
    model        text PRIMARY KEY,
    -- A 429 paused the model until then; once past, one request at a time probes it until one is answered.
    paused_until timestamptz,
    -- The probe in flight holds the model until then (NULL: none).
    probe_until  timestamptz,
    -- The latest wake-up handed to a run waiting for this model: the next waiter's comes after it.
    next_slot_at timestamptz
);
COMMENT ON TABLE llm_model_state IS 'Per model: the pause after a provider''s 429, its probe, and the staggered wake-ups of waiting runs.';

ALTER TABLE runs
    ADD COLUMN nodes_snapshot jsonb,
    ADD COLUMN resume_index integer,
    ADD COLUMN attempt_run_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN budget_wait_s double precision NOT NULL DEFAULT 0,
    ADD COLUMN waiting_for text;
COMMENT ON COLUMN runs.nodes_snapshot IS 'The workflow''s nodes as the run''s first claim read them: every attempt runs these (NULL once finished).';
COMMENT ON COLUMN runs.resume_index IS 'Index in nodes_snapshot of the node a run waiting for an LLM budget resumes at (NULL: the next claim starts a new attempt).';
COMMENT ON COLUMN runs.attempt_run_s IS 'Seconds the current attempt ran before its waits: what ASYNC_RUN_TIMEOUT_S counts.';
COMMENT ON COLUMN runs.budget_wait_s IS 'Seconds the run waited in total for LLM budgets (LLM_MAX_BUDGET_WAIT_S bounds it).';
COMMENT ON COLUMN runs.waiting_for IS 'The model a Pending run waits for (NULL: not waiting for a budget).';

ALTER TABLE workflows
    ADD COLUMN max_tokens_per_run integer,
    ADD CONSTRAINT workflows_max_tokens_per_run_positive CHECK (max_tokens_per_run > 0);
COMMENT ON COLUMN workflows.max_tokens_per_run IS 'Most tokens a run of this workflow may use (NULL: no limit); a step whose reservation would pass it fails unsent.';

ALTER TABLE run_steps
    DROP CONSTRAINT run_steps_status_valid,
    ADD CONSTRAINT run_steps_status_valid CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled', 'Waiting'));

CREATE FUNCTION reserve_llm_call(p_model text, p_tokens integer, p_run_id uuid, p_window_s double precision,
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
$$;

COMMENT ON FUNCTION reserve_llm_call(text, integer, uuid, double precision, double precision) IS
    'Reserves one LLM HTTP attempt within its model''s per-minute budget, or answers how long to wait and why.';
