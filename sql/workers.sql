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
