-- Workers: the workers table, one row per worker process with its heartbeat (written by flowline/worker/heartbeat.py,
-- read by GET /metrics through sql/metrics.sql).

-- name: register_worker :exec
-- Records a starting worker (a new process may reuse the id host:pid of an old one, e.g. pid 1 in a container: its row starts afresh).
INSERT INTO workers (id, hostname, pid, concurrency)
VALUES (%(worker_id)s, %(hostname)s, %(pid)s, %(concurrency)s)
ON CONFLICT (id) DO UPDATE
SET hostname = EXCLUDED.hostname,
    pid = EXCLUDED.pid,
    concurrency = EXCLUDED.concurrency,
    runs_in_progress = 0,
    started_at = clock_timestamp(),
    heartbeat_at = clock_timestamp(),
    stopped_at = NULL;

-- name: record_worker_heartbeat :exec
-- Refreshes a worker's heartbeat and its runs in progress (recreating its row if it was deleted meanwhile).
INSERT INTO workers (id, hostname, pid, concurrency, runs_in_progress)
VALUES (%(worker_id)s, %(hostname)s, %(pid)s, %(concurrency)s, %(runs_in_progress)s)
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = clock_timestamp(),
    runs_in_progress = EXCLUDED.runs_in_progress,
    stopped_at = NULL;

-- name: stop_worker :exec
-- Marks a worker stopped cleanly: GET /metrics no longer lists it.
UPDATE workers
SET stopped_at = clock_timestamp(),
    runs_in_progress = 0
WHERE id = %(worker_id)s;

-- name: forget_workers :exec
-- Deletes the rows of workers not heard from for forget_after_s seconds (stopped or killed long ago).
DELETE FROM workers
WHERE heartbeat_at < now() - make_interval(secs => %(forget_after_s)s);

-- name: list_workers_with_runs :many
-- Lists up to row_limit workers not stopped cleanly and heard from within shown_for_s seconds, with their heartbeat, whether it is within alive_within_s seconds, and the Running runs their threads hold (worker_id host:pid:thread).
SELECT w.id, w.hostname, w.pid, w.concurrency, w.runs_in_progress, w.started_at, w.heartbeat_at,
       w.heartbeat_at > now() - make_interval(secs => %(alive_within_s)s) AS alive,
       coalesce(
           (SELECT json_agg(json_build_object('id', r.id, 'workflow_id', r.workflow_id,
                                              'started_at', r.started_at, 'attempt', r.attempt)
                            ORDER BY r.started_at)
            FROM runs AS r
            -- Only Running rows (runs_running_lease_idx's), whose worker_id starts with this worker's id.
            WHERE r.status = 'Running'
              AND left(r.worker_id, char_length(w.id) + 1) = w.id || ':'),
           '[]'::json) AS runs
FROM workers AS w
WHERE w.stopped_at IS NULL
  AND w.heartbeat_at > now() - make_interval(secs => %(shown_for_s)s)
ORDER BY w.id
LIMIT %(row_limit)s;
