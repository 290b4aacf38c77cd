-- Runs: the runs table (history and queue), run_steps (one row per executed node and attempt) and run_events
-- (every status transition of a run).
--
-- A run as the API lists it is the view run_list (migration 0013, schema.sql): every list of runs and
-- get_run_json read it, so its columns are written once; `SELECT *` from it is that list, not a table's columns.
-- Each filter combination of a list has a query of its own, so each plan keeps its index; flowline/api/runs.py
-- page() is the one place that picks one.

-- name: start_sync_run :one
-- Creates a Running sync run holding a lease, logs its first event, and returns it with the workflow's nodes in position order (configs as text).
WITH workflow AS (
    SELECT id, has_webhooks
    FROM workflows
    WHERE id = %(workflow_id)s
    -- Waits for a subscription being enabled, and reads its has_webhooks (migration 0020).
    FOR SHARE
), run AS (
    INSERT INTO runs (workflow_id, mode, status, input, attempt, max_attempts,
                      lease_token, lease_expires_at, worker_id, started_at, webhooks_wanted)
    SELECT workflow.id, 'sync', 'Running', %(input)s, 1, 1,
           %(lease_token)s, clock_timestamp() + make_interval(secs => %(lease_seconds)s), %(worker_id)s, clock_timestamp(),
           workflow.has_webhooks
    FROM workflow
    RETURNING id, attempt, worker_id, created_at
), event AS (
    INSERT INTO run_events (run_id, run_created_at, attempt, status, worker_id, note)
    SELECT id, created_at, attempt, 'Running', worker_id, 'started synchronously'
    FROM run
)
SELECT run.id,
       run.attempt,
       coalesce(
           (SELECT json_agg(json_build_object('id', n.id, 'position', n.position,
                                              'node_type', n.node_type, 'config_json', n.config::text)
                            ORDER BY n.position)
            FROM nodes AS n
            WHERE n.workflow_id = %(workflow_id)s),
           '[]'::json) AS nodes
FROM run;

-- name: save_run_steps :one
-- Upserts steps of the lease holder's current attempt and renews its lease (the heartbeat, with no steps); writes nothing once the lease is lost.
WITH run AS (
    UPDATE runs
    SET lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_seconds)s)
    WHERE id = %(run_id)s
      AND lease_token = %(lease_token)s
      AND status = 'Running'
    RETURNING id, attempt, cancel_requested_at
)
SELECT count(*) AS held,
       bool_or(run.cancel_requested_at IS NOT NULL) AS cancel_requested,
       coalesce(sum(save_run_steps(run.id, run.attempt, %(steps)s)), 0) AS saved
FROM run;

-- name: finish_run :one
-- Saves the last steps, sets the run's final status and logs the transition, in one statement fenced by the lease token.
WITH run AS (
    UPDATE runs
    SET status = %(status)s,
        final_output = %(final_output)s,
        error_message = %(error_message)s,
        finished_at = clock_timestamp(),
        nodes_snapshot = NULL,
        resume_index = NULL,
        lease_token = NULL,
        lease_expires_at = NULL
    WHERE id = %(run_id)s
      AND lease_token = %(lease_token)s
      AND status = 'Running'
    RETURNING id, attempt, worker_id, created_at
), event AS (
    INSERT INTO run_events (run_id, run_created_at, attempt, status, worker_id, note)
    SELECT id, created_at, attempt, %(status)s, worker_id, %(note)s
    FROM run
)
SELECT count(*) AS held,
       coalesce(sum(save_run_steps(run.id, run.attempt, %(steps)s)), 0) AS saved
FROM run;

-- name: list_workflow_runs_json :one
-- Returns all runs of one workflow (only those in status and of schedule_id, unless NULL), newest first, as the API's JSON body; no row when the workflow does not exist.
SELECT json_build_object(
           'runs', coalesce(
               (SELECT json_agg(r ORDER BY r.created_at DESC, r.id)
                FROM run_list AS r
                WHERE r.workflow_id = w.id
                  AND (%(status)s::text IS NULL OR r.status = %(status)s::text)
                  AND (%(schedule_id)s::uuid IS NULL OR r.schedule_id = %(schedule_id)s::uuid)),
               '[]'::json)
       )::text AS body
FROM workflows AS w
WHERE w.id = %(workflow_id)s;

-- name: get_run_json :one
-- Returns one run with its steps in execution order (attempt, then position), as the API's JSON body.
SELECT json_build_object(
           'run', to_json(r),
           'steps', coalesce(
               (SELECT json_agg(s ORDER BY s.attempt, s.position)
                FROM (SELECT id, run_id, node_id, node_type, status, started_at, finished_at,
                             input_text, output_text, error_message, attempt, position, config_snapshot, note,
                             -- An LLM step's usage (null for other steps).
                             CASE WHEN model IS NOT NULL THEN
                                 json_build_object('model', model, 'prompt_tokens', prompt_tokens,
                                                   'completion_tokens', completion_tokens,
                                                   'cost_usd', cost_usd::float8)
                             END AS usage
                      FROM run_steps
                      -- run_created_at: the one partition that holds them.
                      WHERE run_id = r.id
                        AND run_created_at = r.created_at) AS s),
               '[]'::json)
       )::text AS body
FROM run_list AS r
WHERE r.id = %(run_id)s;

-- name: register_run_waiter :exec
-- Records that a request waits for a run, so that its finish sends NOTIFY flowline_run_finished (migration 0020 says why registering, then reading the run in a new statement, loses no wake-up); writes nothing when one already did or the run is final.
UPDATE runs
SET notify_finish = true
WHERE id = %(run_id)s
  AND status IN ('Pending', 'Running')
  AND NOT notify_finish;

-- name: get_run_outcome :one
-- Returns a run's status, final output and error message: what a waiting request (Prefer: wait=N) reads when woken; no row for an unknown run.
SELECT id, status, final_output, error_message
FROM runs
WHERE id = %(run_id)s;

-- name: list_workflow_runs_page :many
-- Lists up to row_limit runs of one workflow, newest first, after the keyset cursor (NULL: from the start); served by runs_workflow_created_idx.
SELECT *
FROM run_list
WHERE workflow_id = %(workflow_id)s
  -- The created_at bound limits the index scan; the next condition skips the rows up to the cursor among ties.
  AND created_at <= coalesce(%(after_created_at)s::timestamptz, 'infinity')
  AND (%(after_created_at)s::timestamptz IS NULL
       OR created_at < %(after_created_at)s::timestamptz
       OR id > %(after_id)s::uuid)
ORDER BY created_at DESC, id
LIMIT %(row_limit)s;

-- name: list_runs_page :many
-- Lists up to row_limit runs of every workflow, newest first, after the keyset cursor (NULL: from the start); served by runs_created_idx.
SELECT *
FROM run_list
-- The created_at bound limits the index scan; the next condition skips the rows up to the cursor among ties.
WHERE created_at <= coalesce(%(after_created_at)s::timestamptz, 'infinity')
  AND (%(after_created_at)s::timestamptz IS NULL
       OR created_at < %(after_created_at)s::timestamptz
       OR id > %(after_id)s::uuid)
ORDER BY created_at DESC, id
LIMIT %(row_limit)s;

-- name: list_runs_by_status_page :many
-- Lists up to row_limit runs of every workflow in one status, newest first, after the keyset cursor (NULL: from the start); served by runs_status_created_idx.
SELECT *
FROM run_list
WHERE status = %(status)s::text
  AND created_at <= coalesce(%(after_created_at)s::timestamptz, 'infinity')
  AND (%(after_created_at)s::timestamptz IS NULL
       OR created_at < %(after_created_at)s::timestamptz
       OR id > %(after_id)s::uuid)
ORDER BY created_at DESC, id
LIMIT %(row_limit)s;

-- name: list_workflow_runs_by_status_page :many
-- Lists up to row_limit runs of one workflow in one status, newest first, after the keyset cursor (NULL: from the start); served by runs_workflow_status_created_idx.
SELECT *
FROM run_list
WHERE workflow_id = %(workflow_id)s
  AND status = %(status)s::text
  AND created_at <= coalesce(%(after_created_at)s::timestamptz, 'infinity')
  AND (%(after_created_at)s::timestamptz IS NULL
       OR created_at < %(after_created_at)s::timestamptz
       OR id > %(after_id)s::uuid)
ORDER BY created_at DESC, id
LIMIT %(row_limit)s;

-- name: list_run_events_json :one
-- Returns every status transition of one run, oldest first, as the API's JSON body; no row when the run does not exist.
SELECT json_build_object(
           'events', coalesce(
               (SELECT json_agg(e ORDER BY e.at, e.id)
                FROM (SELECT id, status, at, attempt, worker_id, note
                      FROM run_events
                      WHERE run_id = r.id
                        AND run_created_at = r.created_at) AS e),
               '[]'::json)
       )::text AS body
FROM runs AS r
WHERE r.id = %(run_id)s;

-- name: enqueue_run :one
-- Queues an async run with its concurrency key (or NULL) and priority (unless the workflow already has a run with this idempotency key), logs its Pending event and wakes idle workers with NOTIFY on commit; no row when the workflow does not exist or the key is taken.
WITH run AS (
    INSERT INTO runs (workflow_id, mode, status, input, max_attempts, idempotency_key, request_hash,
                      concurrency_key, priority, webhooks_wanted, limited)
    SELECT id, 'async', 'Pending', %(input)s, %(max_attempts)s, %(idempotency_key)s, %(request_hash)s,
           %(concurrency_key)s, %(priority)s, has_webhooks,
           %(concurrency_key)s::text IS NOT NULL OR max_concurrent_runs IS NOT NULL
    FROM workflows
    WHERE id = %(workflow_id)s
    -- Waits for a subscription being enabled or a change of limits, and reads has_webhooks and the limit
    -- (migrations 0020, 0023).
    FOR SHARE
    -- The unique constraint decides between concurrent requests with one key: exactly one inserts.
    ON CONFLICT (workflow_id, idempotency_key) DO NOTHING
    RETURNING id, attempt, created_at
), event AS (
    INSERT INTO run_events (run_id, run_created_at, attempt, status, note)
    SELECT id, created_at, attempt, 'Pending', 'queued'
    FROM run
)
SELECT run.id
FROM run
CROSS JOIN LATERAL (SELECT pg_notify('flowline_runs', '')) AS wake;

-- name: get_run_input :one
-- Returns a run's workflow, input ({input_text, file_id}), concurrency key and priority, what a rerun queues again; no row for an unknown run.
SELECT workflow_id, input, concurrency_key, priority
FROM runs
WHERE id = %(run_id)s;

-- name: get_run_by_idempotency_key :one
-- Returns the run a workflow created for an idempotency key, with the hash of the request that created it.
SELECT id, request_hash
FROM runs
WHERE workflow_id = %(workflow_id)s
  AND idempotency_key = %(idempotency_key)s;

-- name: claim_run :one
-- Claims the available Pending run of highest priority, oldest first among equals, that no limit holds back (held_by NULL: migration 0016 keeps it), skipping rows other workers are claiming, under a fresh lease: a run that waited for an LLM budget resumes its attempt (resume_index, and resume_text: the output of its last finished step), any other starts its next one; returns it with the node list snapshotted at its first claim, or no row when nothing is available.
WITH run AS (
    UPDATE runs
    SET status = 'Running',
        attempt = CASE WHEN resume_index IS NULL THEN attempt + 1 ELSE attempt END,
        attempt_run_s = CASE WHEN resume_index IS NULL THEN 0 ELSE attempt_run_s END,
        waiting_for = NULL,
        nodes_snapshot = coalesce(
            nodes_snapshot,
            (SELECT coalesce(jsonb_agg(jsonb_build_object('id', n.id, 'position', n.position,
                                                          'node_type', n.node_type, 'config_json', n.config::text)
                                       ORDER BY n.position), '[]'::jsonb)
             FROM nodes AS n
             WHERE n.workflow_id = runs.workflow_id)),
        lease_token = %(lease_token)s,
        lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_seconds)s),
        worker_id = %(worker_id)s,
        started_at = coalesce(started_at, clock_timestamp())
    WHERE id = (
        -- A skip scan of runs_claim_idx (priority DESC, available_at, id; only runs no limit holds back):
        -- one probe finds each next lower priority, one more its oldest available run, so runs that wait (a
        -- future available_at: a retry's backoff, an LLM budget) and runs held back are never walked.
        WITH RECURSIVE priorities (priority) AS (
            (SELECT priority
             FROM runs
             WHERE status = 'Pending'
               AND held_by IS NULL
             ORDER BY priority DESC
             LIMIT 1)
            UNION ALL
            SELECT (SELECT lower.priority
                    FROM runs AS lower
                    WHERE lower.status = 'Pending'
                      AND lower.held_by IS NULL
                      AND lower.priority < higher.priority
                    ORDER BY lower.priority DESC
                    LIMIT 1)
            FROM priorities AS higher
            WHERE higher.priority IS NOT NULL
        )
        SELECT candidate.id
        FROM priorities
        CROSS JOIN LATERAL (SELECT id
                            FROM runs
                            WHERE status = 'Pending'
                              AND held_by IS NULL
                              AND priority = priorities.priority
                              AND available_at <= now()
                            -- runs_claim_idx's order (priority is one value here); runs_pending_queue_idx
                            -- (available_at, created_at) cannot give it, so the planner does not pick it.
                            ORDER BY priority DESC, available_at, id
                            LIMIT 1
                            FOR UPDATE SKIP LOCKED) AS candidate
        LIMIT 1)
      AND status = 'Pending'
    RETURNING id, workflow_id, input, attempt, max_attempts, worker_id, nodes_snapshot, resume_index,
              attempt_run_s, budget_wait_s, created_at
), event AS (
    INSERT INTO run_events (run_id, run_created_at, attempt, status, worker_id, note)
    SELECT id, created_at, attempt, 'Running', worker_id,
           CASE WHEN resume_index IS NULL THEN 'claimed: attempt ' || attempt || ' of ' || max_attempts
                ELSE 'resumed: attempt ' || attempt || ' of ' || max_attempts || ' at node ' || resume_index + 1
           END
    FROM run
)
SELECT run.id,
       run.input,
       run.attempt,
       run.max_attempts,
       run.nodes_snapshot AS nodes,
       run.resume_index,
       run.attempt_run_s,
       run.budget_wait_s,
       (SELECT s.output_text
        FROM run_steps AS s
        WHERE s.run_id = run.id
          AND s.run_created_at = run.created_at
          AND s.attempt = run.attempt
          AND s.status = 'Succeeded'
          AND run.resume_index IS NOT NULL
        ORDER BY s.position DESC
        LIMIT 1) AS resume_text
FROM run;

-- name: wait_run :one
-- Saves the steps of an attempt that must wait for an LLM budget (its last one Waiting) and puts its run back in the queue for wait_s seconds, to resume at node resume_index in the same attempt (or cancels it when a client asked meanwhile); fenced by the lease token.
WITH run AS (
    UPDATE runs
    SET status = CASE WHEN cancel_requested_at IS NULL THEN 'Pending' ELSE 'Cancelled' END,
        finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE clock_timestamp() END,
        available_at = clock_timestamp() + make_interval(secs => %(wait_s)s),
        resume_index = CASE WHEN cancel_requested_at IS NULL THEN %(resume_index)s::integer END,
        nodes_snapshot = CASE WHEN cancel_requested_at IS NULL THEN nodes_snapshot END,
        waiting_for = CASE WHEN cancel_requested_at IS NULL THEN %(model)s::text END,
        attempt_run_s = attempt_run_s + %(ran_s)s,
        budget_wait_s = budget_wait_s + %(wait_s)s,
        lease_token = NULL,
        lease_expires_at = NULL
    WHERE id = %(run_id)s
      AND lease_token = %(lease_token)s
      AND status = 'Running'
    RETURNING id, attempt, status, worker_id, created_at
), event AS (
    INSERT INTO run_events (run_id, run_created_at, attempt, status, worker_id, note)
    SELECT id, created_at, attempt, status, worker_id,
           CASE WHEN status = 'Pending' THEN %(note)s ELSE 'cancelled by a client while it waited for an LLM budget' END
    FROM run
)
SELECT count(*) AS held,
       min(run.status) AS status,
       coalesce(sum(save_run_steps(run.id, run.attempt, %(steps)s)), 0) AS saved
FROM run;

-- name: requeue_run :one
-- Saves a failed attempt's steps and puts its run back in the queue after a backoff (or cancels it when a client asked meanwhile), logging why; fenced by the lease token.
WITH run AS (
    UPDATE runs
    SET status = CASE WHEN cancel_requested_at IS NULL THEN 'Pending' ELSE 'Cancelled' END,
        finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE clock_timestamp() END,
        available_at = clock_timestamp() + make_interval(secs => %(backoff_seconds)s),
        error_message = %(error_message)s,
        resume_index = NULL,
        nodes_snapshot = CASE WHEN cancel_requested_at IS NULL THEN nodes_snapshot END,
        lease_token = NULL,
        lease_expires_at = NULL
    WHERE id = %(run_id)s
      AND lease_token = %(lease_token)s
      AND status = 'Running'
    RETURNING id, attempt, status, worker_id, created_at
), event AS (
    INSERT INTO run_events (run_id, run_created_at, attempt, status, worker_id, note)
    SELECT id, created_at, attempt, status, worker_id,
           CASE WHEN status = 'Pending' THEN %(note)s ELSE 'cancelled by a client while its attempt failed' END
    FROM run
)
SELECT count(*) AS held,
       min(run.status) AS status,
       coalesce(sum(save_run_steps(run.id, run.attempt, %(steps)s)), 0) AS saved
FROM run;

-- name: cancel_run :one
-- Cancels a Pending run at once, or asks the holder of a Running run to stop at its next node boundary; returns the status before and after, or no row for an unknown run.
WITH target AS (
    SELECT id, status
    FROM runs
    WHERE id = %(run_id)s
    FOR UPDATE
), cancelled AS (
    UPDATE runs
    SET status = 'Cancelled',
        finished_at = clock_timestamp(),
        cancel_requested_at = clock_timestamp(),
        nodes_snapshot = NULL,
        resume_index = NULL,
        waiting_for = NULL
    FROM target
    WHERE runs.id = target.id
      AND target.status = 'Pending'
    RETURNING runs.id, runs.attempt, runs.created_at
), waiting_step AS (
    -- A run that waited for an LLM budget: its Waiting step will not resume.
    UPDATE run_steps
    SET status = 'Cancelled',
        finished_at = clock_timestamp()
    FROM cancelled
    WHERE run_steps.run_id = cancelled.id
      AND run_steps.run_created_at = cancelled.created_at
      AND run_steps.attempt = cancelled.attempt
      AND run_steps.status = 'Waiting'
), requested AS (
    UPDATE runs
    SET cancel_requested_at = coalesce(runs.cancel_requested_at, clock_timestamp())
    FROM target
    WHERE runs.id = target.id
      AND target.status = 'Running'
    RETURNING runs.id
), event AS (
    INSERT INTO run_events (run_id, run_created_at, attempt, status, note)
    SELECT id, created_at, attempt, 'Cancelled', 'cancelled by a client before it started'
    FROM cancelled
)
SELECT target.id,
       target.status AS previous_status,
       CASE WHEN target.status = 'Pending' THEN 'Cancelled' ELSE target.status END AS status
FROM target;

-- name: sweep_expired_leases :many
-- Takes back up to batch_size runs whose holder stopped renewing its lease: async runs with attempts left are re-queued, the rest fail (sync runs as interrupted) or, when a client asked, are cancelled; their in-progress steps are marked interrupted.
WITH expired AS (
    SELECT id, created_at, attempt, max_attempts, worker_id,
           CASE WHEN cancel_requested_at IS NOT NULL THEN 'Cancelled'
                WHEN mode = 'async' AND attempt < max_attempts THEN 'Pending'
                ELSE 'Failed' END AS next_status,
           CASE WHEN cancel_requested_at IS NOT NULL
                    THEN 'cancelled: its holder ' || worker_id || ' stopped before reaching a node boundary'
                WHEN mode = 'sync'
                    THEN 'interrupted: the API process ' || worker_id || ' running it synchronously stopped (lease expired); not retried'
                WHEN attempt < max_attempts
                    THEN 'lease of worker ' || worker_id || ' expired during attempt ' || attempt || ' of ' || max_attempts || '; re-queued'
                ELSE 'interrupted: lease of worker ' || worker_id || ' expired during attempt ' || attempt || ', the last of ' || max_attempts
           END AS note
    FROM runs
    -- Served by runs_running_lease_idx.
    WHERE status = 'Running'
      AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), swept AS (
    UPDATE runs
    SET status = expired.next_status,
        finished_at = CASE WHEN expired.next_status = 'Pending' THEN NULL ELSE clock_timestamp() END,
        error_message = CASE WHEN expired.next_status = 'Failed' THEN expired.note ELSE runs.error_message END,
        available_at = clock_timestamp(),
        resume_index = NULL,
        nodes_snapshot = CASE WHEN expired.next_status = 'Pending' THEN runs.nodes_snapshot END,
        lease_token = NULL,
        lease_expires_at = NULL
    FROM expired
    WHERE runs.id = expired.id
    RETURNING runs.id, runs.attempt, runs.status, runs.mode
), steps AS (
    UPDATE run_steps
    SET status = 'Failed',
        finished_at = clock_timestamp(),
        error_message = 'interrupted: the process running this step stopped (its lease expired)'
    FROM expired
    WHERE run_steps.run_id = expired.id
      AND run_steps.run_created_at = expired.created_at
      AND run_steps.attempt = expired.attempt
      AND run_steps.status = 'Running'
), event AS (
    INSERT INTO run_events (run_id, run_created_at, attempt, status, worker_id, note)
    SELECT id, created_at, attempt, next_status, worker_id, note
    FROM expired
)
SELECT swept.id, swept.attempt, swept.status, swept.mode, expired.note
FROM swept
JOIN expired USING (id)
-- Wakes idle workers for the re-queued runs.
LEFT JOIN LATERAL (SELECT pg_notify('flowline_runs', '') WHERE swept.status = 'Pending') AS wake ON true;

-- The console's shapes (flowline/console/runs.py): lists and pages show long text cut here, to text_cut
-- characters, with whether it was cut and its full size in bytes beside it, so a page never reads a
-- million-character output into Python. Neither needs the whole value: left() detoasts only the slice it returns
-- and octet_length() reads the stored size, where char_length() would decompress all of it (a run of 15 steps
-- of 1M characters took 66 ms with char_length, most of it decompressing).

-- name: list_runs_cut_page :many
-- Lists up to row_limit runs of every workflow with their workflow's name, newest first, after the keyset cursor (NULL: from the start), their output and error cut to text_cut characters; served by runs_created_idx.
SELECT r.id, r.workflow_id, w.name AS workflow_name, r.status, r.mode, r.attempt, r.max_attempts,
       r.created_at, r.started_at, r.finished_at,
       left(r.final_output, %(text_cut)s) AS final_output,
       char_length(left(r.final_output, %(text_cut)s + 1)) > %(text_cut)s AS final_output_cut,
       octet_length(r.final_output) AS final_output_bytes,
       left(r.error_message, %(text_cut)s) AS error_message,
       char_length(left(r.error_message, %(text_cut)s + 1)) > %(text_cut)s AS error_message_cut,
       octet_length(r.error_message) AS error_message_bytes
FROM run_list AS r
JOIN workflows AS w ON w.id = r.workflow_id
-- The created_at bound limits the index scan; the next condition skips the rows up to the cursor among ties.
WHERE r.created_at <= coalesce(%(after_created_at)s::timestamptz, 'infinity')
  AND (%(after_created_at)s::timestamptz IS NULL
       OR r.created_at < %(after_created_at)s::timestamptz
       OR r.id > %(after_id)s::uuid)
ORDER BY r.created_at DESC, r.id
LIMIT %(row_limit)s;

-- name: list_runs_by_status_cut_page :many
-- Lists up to row_limit runs of every workflow in one status, as list_runs_cut_page does; served by runs_status_created_idx.
SELECT r.id, r.workflow_id, w.name AS workflow_name, r.status, r.mode, r.attempt, r.max_attempts,
       r.created_at, r.started_at, r.finished_at,
       left(r.final_output, %(text_cut)s) AS final_output,
       char_length(left(r.final_output, %(text_cut)s + 1)) > %(text_cut)s AS final_output_cut,
       octet_length(r.final_output) AS final_output_bytes,
       left(r.error_message, %(text_cut)s) AS error_message,
       char_length(left(r.error_message, %(text_cut)s + 1)) > %(text_cut)s AS error_message_cut,
       octet_length(r.error_message) AS error_message_bytes
FROM run_list AS r
JOIN workflows AS w ON w.id = r.workflow_id
WHERE r.status = %(status)s::text
  AND r.created_at <= coalesce(%(after_created_at)s::timestamptz, 'infinity')
  AND (%(after_created_at)s::timestamptz IS NULL
       OR r.created_at < %(after_created_at)s::timestamptz
       OR r.id > %(after_id)s::uuid)
ORDER BY r.created_at DESC, r.id
LIMIT %(row_limit)s;

-- name: list_workflow_runs_cut_page :many
-- Lists up to row_limit runs of one workflow, as list_runs_cut_page does; served by runs_workflow_created_idx.
SELECT r.id, r.workflow_id, w.name AS workflow_name, r.status, r.mode, r.attempt, r.max_attempts,
       r.created_at, r.started_at, r.finished_at,
       left(r.final_output, %(text_cut)s) AS final_output,
       char_length(left(r.final_output, %(text_cut)s + 1)) > %(text_cut)s AS final_output_cut,
       octet_length(r.final_output) AS final_output_bytes,
       left(r.error_message, %(text_cut)s) AS error_message,
       char_length(left(r.error_message, %(text_cut)s + 1)) > %(text_cut)s AS error_message_cut,
       octet_length(r.error_message) AS error_message_bytes
FROM run_list AS r
JOIN workflows AS w ON w.id = r.workflow_id
WHERE r.workflow_id = %(workflow_id)s
  AND r.created_at <= coalesce(%(after_created_at)s::timestamptz, 'infinity')
  AND (%(after_created_at)s::timestamptz IS NULL
       OR r.created_at < %(after_created_at)s::timestamptz
       OR r.id > %(after_id)s::uuid)
ORDER BY r.created_at DESC, r.id
LIMIT %(row_limit)s;

-- name: list_workflow_runs_by_status_cut_page :many
-- Lists up to row_limit runs of one workflow in one status, as list_runs_cut_page does; served by runs_workflow_status_created_idx.
SELECT r.id, r.workflow_id, w.name AS workflow_name, r.status, r.mode, r.attempt, r.max_attempts,
       r.created_at, r.started_at, r.finished_at,
       left(r.final_output, %(text_cut)s) AS final_output,
       char_length(left(r.final_output, %(text_cut)s + 1)) > %(text_cut)s AS final_output_cut,
       octet_length(r.final_output) AS final_output_bytes,
       left(r.error_message, %(text_cut)s) AS error_message,
       char_length(left(r.error_message, %(text_cut)s + 1)) > %(text_cut)s AS error_message_cut,
       octet_length(r.error_message) AS error_message_bytes
FROM run_list AS r
JOIN workflows AS w ON w.id = r.workflow_id
WHERE r.workflow_id = %(workflow_id)s
  AND r.status = %(status)s::text
  AND r.created_at <= coalesce(%(after_created_at)s::timestamptz, 'infinity')
  AND (%(after_created_at)s::timestamptz IS NULL
       OR r.created_at < %(after_created_at)s::timestamptz
       OR r.id > %(after_id)s::uuid)
ORDER BY r.created_at DESC, r.id
LIMIT %(row_limit)s;

-- name: count_runs_by_status_since :many
-- Counts the runs of every workflow created in the last since_s seconds, per status (a status without runs has no row); served by runs_created_idx.
SELECT status, count(*) AS runs
FROM runs
WHERE created_at >= now() - make_interval(secs => %(since_s)s)
GROUP BY status;

-- name: count_workflow_runs_by_status_since :many
-- Counts the runs of one workflow created in the last since_s seconds, per status (a status without runs has no row); served by runs_workflow_created_idx.
SELECT status, count(*) AS runs
FROM runs
WHERE workflow_id = %(workflow_id)s
  AND created_at >= now() - make_interval(secs => %(since_s)s)
GROUP BY status;

-- name: get_run_cut_json :one
-- Returns one run with its workflow's name, where it queues, its input, its usage and its steps (with theirs) in execution order, every long text cut to text_cut characters beside its size, as JSON; no row for an unknown run.
SELECT json_build_object(
           'run', json_build_object(
               'id', r.id, 'workflow_id', r.workflow_id, 'workflow_name', w.name, 'status', r.status,
               'mode', r.mode, 'attempt', r.attempt, 'max_attempts', r.max_attempts,
               'created_at', r.created_at, 'started_at', r.started_at, 'finished_at', r.finished_at,
               'available_at', r.available_at, 'cancel_requested_at', r.cancel_requested_at,
               'worker_id', r.worker_id, 'input_file_id', r.input ->> 'file_id',
               'schedule_id', r.schedule_id, 'scheduled_for', r.scheduled_for,
               'priority', r.priority, 'concurrency_key', r.concurrency_key, 'waiting_for', r.waiting_for,
               'input_text', left(r.input ->> 'input_text', %(text_cut)s),
               'input_text_cut', char_length(left(r.input ->> 'input_text', %(text_cut)s + 1)) > %(text_cut)s,
               'input_text_bytes', octet_length(r.input ->> 'input_text'),
               'final_output', left(r.final_output, %(text_cut)s),
               'final_output_cut', char_length(left(r.final_output, %(text_cut)s + 1)) > %(text_cut)s,
               'final_output_bytes', octet_length(r.final_output),
               'error_message', left(r.error_message, %(text_cut)s),
               'error_message_cut', char_length(left(r.error_message, %(text_cut)s + 1)) > %(text_cut)s,
               'error_message_bytes', octet_length(r.error_message),
               -- Its LLM steps' tokens and cost over every attempt, as the API's lists sum them.
               'usage', (SELECT l.usage FROM run_list AS l WHERE l.id = r.id)),
           'steps', coalesce(
               (SELECT json_agg(json_build_object(
                           'id', s.id, 'node_id', s.node_id, 'node_type', s.node_type, 'status', s.status,
                           'model', s.model, 'prompt_tokens', s.prompt_tokens,
                           'completion_tokens', s.completion_tokens, 'cost_usd', s.cost_usd::float8,
                           'attempt', s.attempt, 'position', s.position,
                           'started_at', s.started_at, 'finished_at', s.finished_at,
                           'config_snapshot', s.config_snapshot, 'note', s.note,
                           'input_text', left(s.input_text, %(text_cut)s),
                           'input_text_cut', char_length(left(s.input_text, %(text_cut)s + 1)) > %(text_cut)s,
                           'input_text_bytes', octet_length(s.input_text),
                           'output_text', left(s.output_text, %(text_cut)s),
                           'output_text_cut', char_length(left(s.output_text, %(text_cut)s + 1)) > %(text_cut)s,
                           'output_text_bytes', octet_length(s.output_text),
                           'error_message', left(s.error_message, %(text_cut)s),
                           'error_message_cut', char_length(left(s.error_message, %(text_cut)s + 1)) > %(text_cut)s,
                           'error_message_bytes', octet_length(s.error_message))
                        ORDER BY s.attempt, s.position)
                FROM run_steps AS s
                WHERE s.run_id = r.id
                  AND s.run_created_at = r.created_at),
               '[]'::json)
       )::text AS body
FROM runs AS r
JOIN workflows AS w ON w.id = r.workflow_id
WHERE r.id = %(run_id)s;

-- name: get_run_text :one
-- Returns one whole text of a run: part 'input' (its input_text), 'output' (final_output) or 'error' (error_message); no row for an unknown run.
SELECT id,
       CASE %(part)s::text
           WHEN 'input' THEN input ->> 'input_text'
           WHEN 'output' THEN final_output
           WHEN 'error' THEN error_message
       END AS text
FROM runs
WHERE id = %(run_id)s;

-- name: get_run_step_text :one
-- Returns one whole text of a run's step: part 'input' (input_text), 'output' (output_text) or 'error' (error_message), with the step's node type and attempt; no row for an unknown step of that run.
SELECT id, node_type, attempt, position,
       CASE %(part)s::text
           WHEN 'input' THEN input_text
           WHEN 'output' THEN output_text
           WHEN 'error' THEN error_message
       END AS text
FROM run_steps
WHERE id = %(step_id)s
  AND run_id = %(run_id)s
  -- The run's created_at (an InitPlan, so execution reads the one partition that holds it).
  AND run_created_at = (SELECT created_at FROM runs WHERE id = %(run_id)s);

-- name: list_recent_failures :many
-- Lists up to row_limit runs that failed in the last since_s seconds, most recent first, their error cut to text_cut characters beside its size; served by runs_finished_idx.
SELECT r.id, r.workflow_id, w.name AS workflow_name, r.attempt, r.max_attempts, r.finished_at,
       left(r.error_message, %(text_cut)s) AS error_message,
       char_length(left(r.error_message, %(text_cut)s + 1)) > %(text_cut)s AS error_message_cut,
       octet_length(r.error_message) AS error_message_bytes
FROM runs AS r
JOIN workflows AS w ON w.id = r.workflow_id
WHERE r.status = 'Failed'
  AND r.finished_at >= now() - make_interval(secs => %(since_s)s)
ORDER BY r.finished_at DESC, r.id
LIMIT %(row_limit)s;

-- name: count_runs_finished_per_minute :many
-- Counts the runs finished in each of the last minutes minutes (oldest first, a row for every minute, the current one last), per final status; served by runs_finished_idx.
WITH finished AS (
    SELECT date_trunc('minute', finished_at) AS at, status, count(*) AS runs
    FROM runs
    WHERE status IN ('Succeeded', 'Failed', 'Cancelled')
      AND finished_at >= date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1)
    GROUP BY 1, 2
)
SELECT minute.at,
       coalesce(sum(f.runs) FILTER (WHERE f.status = 'Succeeded'), 0)::bigint AS succeeded,
       coalesce(sum(f.runs) FILTER (WHERE f.status = 'Failed'), 0)::bigint AS failed,
       coalesce(sum(f.runs) FILTER (WHERE f.status = 'Cancelled'), 0)::bigint AS cancelled
FROM generate_series(date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1),
                     date_trunc('minute', now()), interval '1 minute') AS minute (at)
LEFT JOIN finished AS f ON f.at = minute.at
GROUP BY minute.at
ORDER BY minute.at;

-- name: list_schedule_runs_page :many
-- Lists up to row_limit runs of one schedule (only those of workflow_id and in status, unless NULL), newest first, after the keyset cursor (NULL: from the start); served by runs_schedule_created_idx.
SELECT *
FROM run_list
WHERE schedule_id = %(schedule_id)s::uuid
  AND (%(workflow_id)s::uuid IS NULL OR workflow_id = %(workflow_id)s::uuid)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND created_at <= coalesce(%(after_created_at)s::timestamptz, 'infinity')
  AND (%(after_created_at)s::timestamptz IS NULL
       OR created_at < %(after_created_at)s::timestamptz
       OR id > %(after_id)s::uuid)
ORDER BY created_at DESC, id
LIMIT %(row_limit)s;
