-- Resets the autovacuum and fillfactor settings of runs, run_steps and run_events to the server's defaults and
-- drops runs_finished_idx (prune-runs then scans runs instead). No data is lost.
-- Not transactional: DROP INDEX CONCURRENTLY cannot run inside a transaction block (it does not block the queue).
-- transactional: false

DROP INDEX CONCURRENTLY IF EXISTS runs_finished_idx;

ALTER TABLE run_events RESET (
    autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_insert_scale_factor,
    autovacuum_analyze_scale_factor
);

ALTER TABLE run_steps RESET (
    autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_insert_scale_factor,
    autovacuum_analyze_scale_factor,
    fillfactor
);

ALTER TABLE runs RESET (
    autovacuum_vacuum_scale_factor,
    autovacuum_analyze_scale_factor,
    autovacuum_vacuum_cost_delay,
    fillfactor
);
