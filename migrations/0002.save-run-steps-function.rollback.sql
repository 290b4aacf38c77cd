-- Drops the save_run_steps function. No data is lost (run_steps rows stay), but queries in sql/runs.sql that
-- call it fail until 0002 is applied again.

DROP FUNCTION save_run_steps(uuid, integer, jsonb);
