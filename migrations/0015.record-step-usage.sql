-- Records what each LLM step used and cost: run_steps gains model, prompt_tokens, completion_tokens and cost_usd,
-- and save_run_steps (migration 0002) writes them, pricing the usage with the model's prices in llm_models
-- (migration 0014) at the moment the step is saved: a later price change does not rewrite history.
-- Rollback (0015.record-step-usage.rollback.sql) restores 0002's function and drops the columns: every step's
-- recorded usage and cost is lost (the steps are kept).
--
-- For DBAs: the new columns are nullable without a default, so adding them changes only the catalog (no rewrite of
-- run_steps, a brief ACCESS EXCLUSIVE lock). A step that is not an LLM call has them all NULL; an LLM step has its
-- model, and NULL tokens where the provider reported no usage, NULL cost where the model has no price.
-- depends: 0014.create-llm-models

ALTER TABLE run_steps
    ADD COLUMN model text,
    ADD COLUMN prompt_tokens integer,
    ADD COLUMN completion_tokens integer,
    ADD COLUMN cost_usd numeric;

COMMENT ON COLUMN run_steps.model IS 'The LLM model this step called (NULL: not an LLM step).';
COMMENT ON COLUMN run_steps.cost_usd IS 'The usage priced with llm_models'' prices when the step was saved (NULL: no usage reported or no price).';

CREATE OR REPLACE FUNCTION save_run_steps(p_run_id uuid, p_attempt integer, p_steps jsonb)
RETURNS bigint
LANGUAGE sql
VOLATILE
AS $$
    -- p_steps is a JSON array of step objects (node_id, position, node_type, config_snapshot, status,
    -- started_at, finished_at, input_text, output_text, error_message, note, model, prompt_tokens,
    -- completion_tokens). A step first saved as Running (before a slow node) is completed by a later call with
    -- the same (run, attempt, position). Its cost is its tokens at its model's prices now (NULL without both).
    WITH saved AS (
        INSERT INTO run_steps (run_id, node_id, attempt, position, node_type, config_snapshot, status,
                               started_at, finished_at, input_text, output_text, error_message, note,
                               model, prompt_tokens, completion_tokens, cost_usd)
        SELECT p_run_id, s.node_id, p_attempt, s.position, s.node_type, s.config_snapshot, s.status,
               s.started_at, s.finished_at, s.input_text, s.output_text, s.error_message, s.note,
               s.model, s.prompt_tokens, s.completion_tokens,
               (s.prompt_tokens * m.usd_per_million_input_tokens
                + s.completion_tokens * m.usd_per_million_output_tokens) / 1000000
        FROM jsonb_to_recordset(p_steps) AS s(
            node_id uuid, position integer, node_type text, config_snapshot jsonb, status text,
            started_at timestamptz, finished_at timestamptz, input_text text, output_text text,
            error_message text, note text, model text, prompt_tokens integer, completion_tokens integer)
        LEFT JOIN llm_models AS m ON m.model = s.model
        ON CONFLICT (run_id, attempt, position) DO UPDATE
        SET status = excluded.status,
            finished_at = excluded.finished_at,
            output_text = excluded.output_text,
            error_message = excluded.error_message,
            note = excluded.note,
            model = excluded.model,
            prompt_tokens = excluded.prompt_tokens,
            completion_tokens = excluded.completion_tokens,
            cost_usd = excluded.cost_usd
        RETURNING 1
    )
    SELECT count(*) FROM saved;
$$;
