-- Metrics: what GET /metrics reads at each scrape, from the queue (runs, through its partial indexes) and from
-- the worker heartbeats (workers). Every query here is bounded by the queue or a cap, never by the run history.

-- name: set_local_statement_timeout :one
-- Bounds every later statement of the current transaction to timeout_ms milliseconds: a scrape must stay quick.
SELECT set_config('statement_timeout', %(timeout_ms)s::text, true) AS statement_timeout;

-- name: get_queue_stats :one
-- Returns the Pending, claimable and Running run counts (each at most count_cap) and the age in seconds of the oldest claimable Pending run (NULL: none).
SELECT
    -- Each count reads the partial index holding only Pending (runs_pending_queue_idx) or only Running
    -- (runs_running_lease_idx, or the Running entries of runs_status_created_idx) rows, and stops at count_cap:
    -- its cost follows the queue, not the history.
    (SELECT count(*)
     FROM (SELECT 1 FROM runs WHERE status = 'Pending' LIMIT %(count_cap)s) AS pending) AS pending,
    (SELECT count(*)
     FROM (SELECT 1 FROM runs WHERE status = 'Pending' AND available_at <= now() LIMIT %(count_cap)s) AS ready)
        AS claimable,
    (SELECT count(*)
     FROM (SELECT 1 FROM runs WHERE status = 'Running' LIMIT %(count_cap)s) AS running) AS running,
    -- min() of the index's leading column: the first entry of runs_pending_queue_idx.
    (SELECT extract(epoch FROM now() - min(available_at))
     FROM runs
     WHERE status = 'Pending'
       AND available_at <= now()) AS oldest_claimable_age_s;

-- name: list_worker_heartbeats :many
-- Lists up to row_limit workers not stopped cleanly and heard from within shown_for_s seconds, with their last heartbeat as Unix time and whether it is within alive_within_s seconds.
SELECT id,
       extract(epoch FROM heartbeat_at) AS heartbeat_at_s,
       heartbeat_at > now() - make_interval(secs => %(alive_within_s)s) AS alive
FROM workers
WHERE stopped_at IS NULL
  AND heartbeat_at > now() - make_interval(secs => %(shown_for_s)s)
ORDER BY id
LIMIT %(row_limit)s;
