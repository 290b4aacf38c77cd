-- Drops the three indexes of GET /runs (the list then scans runs). No data is lost, only the indexes.
-- Not transactional: DROP INDEX CONCURRENTLY cannot run inside a transaction block (it does not block the queue).
-- transactional: false

DROP INDEX CONCURRENTLY IF EXISTS runs_workflow_status_created_idx;

DROP INDEX CONCURRENTLY IF EXISTS runs_status_created_idx;

DROP INDEX CONCURRENTLY IF EXISTS runs_created_idx;
