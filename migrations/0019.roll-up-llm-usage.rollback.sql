-- Drops the LLM usage roll-ups (llm_usage_hourly, llm_usage_daily, llm_usage_totals), their triggers and functions, the index of
-- recent LLM steps and run_list's `usage` column: the usage counted there is lost, and with it that of every run
-- pruned since (the remaining steps keep their own usage columns).

-- CREATE OR REPLACE VIEW cannot drop a column: the view is made again as 0016 left it.
DROP VIEW run_list;
CREATE VIEW run_list AS
SELECT id, workflow_id, status, started_at, finished_at, error_message, final_output,
       mode, attempt, max_attempts, created_at, schedule_id, scheduled_for, priority, concurrency_key
FROM runs;

DROP INDEX run_steps_llm_finished_idx;
DROP TRIGGER run_steps_roll_up_updated ON run_steps;
DROP TRIGGER run_steps_roll_up_inserted ON run_steps;
DROP FUNCTION run_steps_roll_up_usage();
DROP FUNCTION roll_up_llm_usage(jsonb, integer);
DROP FUNCTION llm_usage_between(timestamptz, timestamptz);
DROP TABLE llm_usage_totals;
DROP TABLE llm_usage_daily;
DROP TABLE llm_usage_hourly;
