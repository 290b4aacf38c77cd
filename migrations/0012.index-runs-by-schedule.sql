-- Adds the unique index on runs (schedule_id, scheduled_for), the backstop that makes a schedule's tick fire at
-- most once whatever the workers do; the index of GET /runs?schedule_id= in the list's order; and validates the
-- foreign key 0011 added NOT VALID. Both indexes are partial (only runs a schedule made), so they stay small.
-- Rollback (0012.index-runs-by-schedule.rollback.sql) drops the indexes; no data is lost.
--
-- Not transactional: CREATE INDEX CONCURRENTLY cannot run inside a transaction block. The builds and the
-- validation (SHARE UPDATE EXCLUSIVE) do not block the queue's writes. If a build fails, PostgreSQL leaves an
-- INVALID index behind: drop it with `DROP INDEX CONCURRENTLY <name>;` and apply again.
-- depends: 0011.create-schedules
-- transactional: false

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS runs_schedule_tick_key
    ON runs (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL;

CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_schedule_created_idx
    ON runs (schedule_id, created_at DESC, id) WHERE schedule_id IS NOT NULL;

ALTER TABLE runs VALIDATE CONSTRAINT runs_schedule_id_fkey;
