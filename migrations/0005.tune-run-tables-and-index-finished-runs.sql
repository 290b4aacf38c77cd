-- Tunes autovacuum (and fillfactor) for the high-churn tables runs, run_steps and run_events, and adds
-- runs_finished_idx, which `flask --app app prune-runs` walks to delete old finished runs in small batches.
-- Rollback (0005.tune-run-tables-and-index-finished-runs.rollback.sql) resets the settings and drops the index;
-- no data is lost.
--
-- Not transactional: CREATE INDEX CONCURRENTLY cannot run inside a transaction block. Each statement commits on
-- its own; every one of them can be run again. If the index build fails (cancelled, deadlock), PostgreSQL leaves
-- an INVALID runs_finished_idx behind: run `DROP INDEX CONCURRENTLY runs_finished_idx;` and apply again.
-- transactional: false

-- For DBAs. The defaults (autovacuum_vacuum_scale_factor 0.2, autovacuum_analyze_scale_factor 0.1) wait for a
-- fifth of a table to be dead before vacuuming it. These three tables keep every run ever made, so that fifth
-- grows with the history: at a million runs the queue would carry 200,000 dead row versions before vacuum ran.
-- Every setting below is per table (pg_class.reloptions: `\d+ runs` shows them); the server-wide autovacuum
-- settings are unchanged. ALTER TABLE … SET takes a SHARE UPDATE EXCLUSIVE lock: reads and writes go on.
--
-- runs is the queue. A run row is updated in place several times (claimed, its lease renewed every
-- RUN_LEASE_SECONDS / 3 while it works, finished), so it leaves dead row versions behind at the rate work is
-- done, and the claim scans runs_pending_queue_idx, which those dead versions bloat.
--   autovacuum_vacuum_scale_factor 0.01 (+ the default threshold of 50 rows): vacuum once about 1 % is dead.
--   autovacuum_analyze_scale_factor 0.02: the planner sees the Pending/Running/finished mix as it shifts.
--   autovacuum_vacuum_cost_delay 1 ms (default 2 ms): each vacuum of the queue throttles itself half as much
--     and finishes sooner; it runs often and on a table whose live part is small.
--   fillfactor 85: new pages are filled to 85 %, so a run's next row version usually fits on its own page.
--     Such an update dirties one page instead of two, and the page's dead versions are pruned in place on the
--     next visit. Updates that change no indexed column (a cancellation request) are also HOT: no new index
--     entries at all. Claims, lease renewals and finishes change status or lease_expires_at, which indexes
--     cover, so they are not HOT. fillfactor applies to pages written from now on; existing pages keep their
--     layout until the table is rewritten (VACUUM FULL, pg_repack), which this migration does not do.
ALTER TABLE runs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1,
    fillfactor = 85
);

-- run_steps gets one row per executed node, written twice: as Running before a slow node, then completed with
-- its output. The second write changes no indexed column (status and output are not indexed), so with room on
-- the page it is a HOT update.
--   fillfactor 90: that room.
--   autovacuum_vacuum_scale_factor 0.05: vacuum after 5 % dead (the first versions of completed steps, and the
--     rows prune-runs deletes).
--   autovacuum_vacuum_insert_scale_factor 0.05 (PostgreSQL 13+; default 0.2): the table is mostly inserted into;
--     vacuuming after 5 % new rows keeps the visibility map current (index-only scans) and spreads freezing out
--     instead of one large anti-wraparound vacuum later.
--   autovacuum_analyze_scale_factor 0.02: statistics follow the growth.
ALTER TABLE run_steps SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    fillfactor = 90
);

-- run_events is append-only (one row per status change of a run): dead rows come only from prune-runs and
-- deleted workflows. The same insert and analyze settings as run_steps; vacuum after 5 % dead so the space a
-- prune frees is reused soon. No fillfactor: its rows are never updated.
ALTER TABLE run_events SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);

-- prune-runs deletes, per status, the runs that finished before a cutoff, oldest first, in batches of
-- `SELECT … WHERE status = $1 AND finished_at < $2 AND (finished_at, id) > $cursor ORDER BY finished_at, id
-- LIMIT n FOR UPDATE SKIP LOCKED`: this index serves that select in its order, so a batch reads only the rows
-- it deletes. Partial: Pending and Running runs (finished_at NULL) are never in it. status and finished_at
-- change only when a run finishes, an update that is not HOT anyway, so the index costs the queue no HOT update.
-- CONCURRENTLY: the build does not block the queue's writes.
CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_finished_idx ON runs (status, finished_at, id)
    WHERE finished_at IS NOT NULL;
