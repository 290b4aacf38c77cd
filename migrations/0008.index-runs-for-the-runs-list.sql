-- Adds the indexes that serve GET /runs, the newest-first list of runs across all workflows: runs_created_idx
-- for the unfiltered list, runs_status_created_idx for ?status=, runs_workflow_status_created_idx for
-- ?workflow_id=&status= (?workflow_id= alone is served by runs_workflow_created_idx, from 0001). Each is in the
-- list's order, (created_at DESC, id), so a page starts at its cursor and reads only its own rows.
-- Rollback (0008.index-runs-for-the-runs-list.rollback.sql) drops the three indexes; no data is lost.
--
-- Not transactional: CREATE INDEX CONCURRENTLY cannot run inside a transaction block. The builds do not block
-- the queue's writes. If one fails (cancelled, deadlock), PostgreSQL leaves an INVALID index behind: drop it with
-- `DROP INDEX CONCURRENTLY <name>;` and apply again (IF NOT EXISTS would otherwise keep the invalid one).
-- transactional: false

CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_created_idx ON runs (created_at DESC, id);

CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_status_created_idx ON runs (status, created_at DESC, id);

CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_workflow_status_created_idx
    ON runs (workflow_id, status, created_at DESC, id);
