-- Drops what 0018.llm-budgets added: the reservations and pauses of every model, the runs' node snapshots and
-- wait records, and every workflow's max_tokens_per_run are lost. Steps recorded as Waiting become Failed, so the
-- earlier status CHECK holds again. Runs waiting for a budget stay Pending and start a new attempt from the
-- first node when claimed.

DROP FUNCTION reserve_llm_call(text, integer, uuid, double precision, double precision);
UPDATE run_steps
SET status = 'Failed', error_message = coalesce(error_message, 'was waiting for an LLM budget when 0018 was rolled back')
WHERE status = 'Waiting';
ALTER TABLE run_steps
    DROP CONSTRAINT run_steps_status_valid,
    ADD CONSTRAINT run_steps_status_valid CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled'));
ALTER TABLE workflows
    DROP CONSTRAINT workflows_max_tokens_per_run_positive,
    DROP COLUMN max_tokens_per_run;
ALTER TABLE runs
    DROP COLUMN waiting_for,
    DROP COLUMN budget_wait_s,
    DROP COLUMN attempt_run_s,
    DROP COLUMN resume_index,
    DROP COLUMN nodes_snapshot;
DROP TABLE llm_model_state;
DROP TABLE llm_reservations;
