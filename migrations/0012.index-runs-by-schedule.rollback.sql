-- Drops the two indexes of runs by schedule: ticks are then no longer guarded by the unique backstop and
-- GET /runs?schedule_id= scans. No data is lost, only the indexes.
-- Not transactional: DROP INDEX CONCURRENTLY cannot run inside a transaction block (it does not block the queue).
-- transactional: false

DROP INDEX CONCURRENTLY IF EXISTS runs_schedule_created_idx;

DROP INDEX CONCURRENTLY IF EXISTS runs_schedule_tick_key;
