-- Runs: the runs table (history and queue), run_steps (one row per executed node and attempt) and run_events
-- (every status transition of a run).

-- name: start_sync_run :one
-- Creates a Running sync run holding a lease, logs its first event, and returns it with the workflow's nodes in position order (configs as text).
WITH workflow AS (
    SELECT id
    FROM workflows
    WHERE id = %(workflow_id)s
), run AS (
    INSERT INTO runs (workflow_id, mode, status, input, attempt, max_attempts,
                      lease_token, lease_expires_at, worker_id, started_at)
    SELECT workflow.id, 'sync', 'Running', %(input)s, 1, 1,
           %(lease_token)s, clock_timestamp() + make_interval(secs => %(lease_seconds)s), %(worker_id)s, clock_timestamp()
    FROM workflow
    RETURNING id, attempt, worker_id
), event AS (
    INSERT INTO run_events (run_id, attempt, status, worker_id, note)
    SELECT id, attempt, 'Running', worker_id, 'started synchronously'
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
-- Upserts steps of the lease holder's current attempt and renews its lease; writes nothing once the lease is lost.
WITH run AS (
    UPDATE runs
    SET lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_seconds)s)
    WHERE id = %(run_id)s
      AND lease_token = %(lease_token)s
      AND status = 'Running'
    RETURNING id, attempt
)
SELECT count(*) AS held,
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
        lease_token = NULL,
        lease_expires_at = NULL
    WHERE id = %(run_id)s
      AND lease_token = %(lease_token)s
      AND status = 'Running'
    RETURNING id, attempt, worker_id
), event AS (
    INSERT INTO run_events (run_id, attempt, status, worker_id, note)
    SELECT id, attempt, %(status)s, worker_id, %(note)s
    FROM run
)
SELECT count(*) AS held,
       coalesce(sum(save_run_steps(run.id, run.attempt, %(steps)s)), 0) AS saved
FROM run;

-- name: list_workflow_runs_json :one
-- Returns all runs of one workflow (only those in status, unless NULL), newest first, as the API's JSON body; no row when the workflow does not exist.
SELECT json_build_object(
           'runs', coalesce(
               (SELECT json_agg(r ORDER BY r.created_at DESC, r.id)
                FROM (SELECT id, workflow_id, status, started_at, finished_at, error_message, final_output,
                             mode, attempt, max_attempts, created_at
                      FROM runs
                      WHERE workflow_id = w.id
                        AND (%(status)s::text IS NULL OR status = %(status)s::text)) AS r),
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
                             input_text, output_text, error_message, attempt, position, config_snapshot, note
                      FROM run_steps
                      WHERE run_id = r.id) AS s),
               '[]'::json)
       )::text AS body
FROM (SELECT id, workflow_id, status, started_at, finished_at, error_message, final_output,
             mode, attempt, max_attempts, created_at
      FROM runs
      WHERE id = %(run_id)s) AS r;

-- name: list_workflow_runs_page :many
-- Lists up to row_limit runs of one workflow (only those in status, unless NULL), newest first, after the keyset cursor (NULL: from the start).
SELECT id, workflow_id, status, started_at, finished_at, error_message, final_output,
       mode, attempt, max_attempts, created_at
FROM runs
WHERE workflow_id = %(workflow_id)s
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  -- The created_at bound limits the index scan; the next condition skips the rows up to the cursor among ties.
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
                      WHERE run_id = r.id) AS e),
               '[]'::json)
       )::text AS body
FROM runs AS r
WHERE r.id = %(run_id)s;
