-- Creates workers: one row per worker process (`flask --app app worker`, on any host), whose heartbeat it
-- refreshes every third of RUN_LEASE_SECONDS, so the API's GET /metrics reports every worker's last heartbeat
-- (flowline_worker_last_heartbeat_timestamp_seconds, flowline_workers_alive) without scraping the workers.
-- Rollback (0007.create-workers-table.rollback.sql) drops it: only heartbeats are lost; runs are not touched.

-- For DBAs: each worker updates its row every few seconds, and the table holds one row per worker (rows not
-- heard from for a day are deleted when a worker starts). No index but the primary key, and pages left half
-- empty (fillfactor 50), so a heartbeat is a HOT update: no index write, and the page prunes its own dead versions.
CREATE TABLE workers (
    -- host:pid, the prefix of the worker_id its run threads write on runs and run_events.
    id               text        PRIMARY KEY,
    hostname         text        NOT NULL,
    pid              integer     NOT NULL,
    -- Its run threads.
    concurrency      integer     NOT NULL,
    runs_in_progress integer     NOT NULL DEFAULT 0,
    started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Set when the worker stopped cleanly (SIGTERM, drained); a killed worker's heartbeat just grows old.
    stopped_at       timestamptz,
    CONSTRAINT workers_id_length CHECK (char_length(id) BETWEEN 1 AND 300),
    CONSTRAINT workers_counts_valid CHECK (pid >= 0 AND concurrency >= 1 AND runs_in_progress >= 0)
) WITH (fillfactor = 50);
