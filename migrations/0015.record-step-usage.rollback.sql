-- Restores migration 0002's save_run_steps and drops run_steps' usage columns: every step's recorded model,
-- tokens and cost are lost (the steps are kept).
CREATE OR REPLACE FUNCTION save_run_steps(p_run_id uuid, p_attempt integer, p_steps jsonb)
RETURNS bigint
LANGUAGE sql
VOLATILE
AS $$
    -- p_steps is a JSON array of step objects (node_id, position, node_type, config_snapshot, status,
    -- started_at, finished_at, input_text, output_text, error_message, note). A step first saved as Running
    -- (before a slow node) is completed by a later call with the same (run, attempt, position).
    WITH saved AS (
        INSERT INTO run_steps (run_id, node_id, attempt, position, node_type, config_snapshot, status,
                               started_at, finished_at, input_text, output_text, error_message, note)
        SELECT p_run_id, s.node_id, p_attempt, s.position, s.node_type, s.config_snapshot, s.status,
               s.started_at, s.finished_at, s.input_text, s.output_text, s.error_message, s.note
        FROM jsonb_to_recordset(p_steps) AS s(
            node_id uuid, position integer, node_type text, config_snapshot jsonb, status text,
            started_at timestamptz, finished_at timestamptz, input_text text, output_text text,
            error_message text, note text)
        ON CONFLICT (run_id, attempt, position) DO UPDATE
        SET status = excluded.status,
            finished_at = excluded.finished_at,
            output_text = excluded.output_text,
            error_message = excluded.error_message,
            note = excluded.note
        RETURNING 1
    )
    SELECT count(*) FROM saved;
$$;

ALTER TABLE run_steps
    DROP COLUMN cost_usd,
    DROP COLUMN completion_tokens,
    DROP COLUMN prompt_tokens,
    DROP COLUMN model;
