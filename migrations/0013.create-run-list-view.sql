-- Adds the view run_list: a run as the API lists it, its 13 columns in the API's order, defined once. Every list
-- of runs (GET /runs, a workflow's and a schedule's runs, the console's runs pages) and GET /runs/{id} read from it
-- instead of repeating the column list. Adding a column to what the API answers for a run is a new migration
-- that replaces this view (CREATE OR REPLACE VIEW may only add columns at the end).
-- Rollback (0013.create-run-list-view.rollback.sql) drops the view; no data is lost (a view holds none).
--
-- For DBAs: a plain view over runs, no join, no aggregate: PostgreSQL inlines it into each query that reads it,
-- so each list query keeps its own plan on the index made for its filters (tests/api/test_runs_list.py and
-- tests/api/test_console_runs.py EXPLAIN them). The app role reads it through 0006's default privileges.
-- depends: 0012.index-runs-by-schedule

CREATE VIEW run_list AS
SELECT id, workflow_id, status, started_at, finished_at, error_message, final_output,
       mode, attempt, max_attempts, created_at, schedule_id, scheduled_for
FROM runs;
