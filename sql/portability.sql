-- Portability: export and import of workflows, their nodes and their finished runs (run_steps, run_events),
-- for `flask --app app export` and `flask --app app import` (flowline/tools/). Files are never exported.
-- Export reads in keyset batches inside one REPEATABLE READ READ ONLY transaction (one consistent snapshot);
-- import writes in batches of JSON arrays expanded with jsonb_to_recordset, inside one transaction.

-- name: count_workflows_for_export :one
-- Counts the workflows an export writes (all, or those in workflow_ids), returns the ids of workflow_ids that name no workflow, and the snapshot's time.
SELECT (SELECT count(*)
        FROM workflows
        WHERE %(workflow_ids)s::uuid[] IS NULL OR id = ANY (%(workflow_ids)s::uuid[])) AS workflows,
       ARRAY(SELECT wanted.id
             FROM unnest(%(workflow_ids)s::uuid[]) AS wanted (id)
             WHERE NOT EXISTS (SELECT 1 FROM workflows WHERE workflows.id = wanted.id)
             ORDER BY wanted.id) AS missing,
       now() AS exported_at;

-- name: export_workflows_batch :many
-- Returns up to batch_size workflows (all, or those in workflow_ids) with ids above after_id, in id order, each as JSON text with its nodes in position order.
SELECT w.id,
       (SELECT count(*) FROM nodes WHERE nodes.workflow_id = w.id) AS node_count,
       -- Nodes naming an uploaded file (file_node_types[i] and file_config_keys[i]: a node type and a config key
       -- of its that names a file, from flowline/nodes/): the file's bytes are not exported.
       (SELECT count(*)
        FROM nodes
        WHERE nodes.workflow_id = w.id
          AND EXISTS (SELECT 1
                      FROM unnest(%(file_node_types)s::text[], %(file_config_keys)s::text[]) AS f (node_type, config_key)
                      WHERE f.node_type = nodes.node_type
                        AND jsonb_typeof(nodes.config -> f.config_key) = 'string')) AS file_references,
       json_build_object(
           'id', w.id,
           'name', w.name,
           'created_at', w.created_at,
           'updated_at', w.updated_at,
           'version', w.version,
           'max_concurrent_runs', w.max_concurrent_runs,
           'max_concurrent_runs_per_key', w.max_concurrent_runs_per_key,
           'max_tokens_per_run', w.max_tokens_per_run,
           'nodes', coalesce(
               (SELECT json_agg(n ORDER BY n.position)
                FROM (SELECT id, position, node_type, config, created_at, updated_at, version
                      FROM nodes
                      WHERE workflow_id = w.id) AS n),
               '[]'::json)
       )::text AS body
FROM workflows AS w
-- The nil uuid starts the walk; import refuses it as an id, so no workflow is ever skipped.
WHERE w.id > coalesce(%(after_id)s::uuid, '00000000-0000-0000-0000-000000000000')
  AND (%(workflow_ids)s::uuid[] IS NULL OR w.id = ANY (%(workflow_ids)s::uuid[]))
ORDER BY w.id
LIMIT %(batch_size)s;

-- name: export_runs_batch :many
-- Returns up to batch_size finished runs of one workflow, newest first, after the keyset cursor (after_created_at, after_id; NULL: from the start), each as JSON text with its steps and events.
SELECT r.id,
       r.created_at,
       -- Each reads the one partition of its table that holds the run's rows (run_created_at).
       (SELECT count(*) FROM run_steps WHERE run_steps.run_id = r.id AND run_steps.run_created_at = r.created_at)
           AS step_count,
       (SELECT count(*) FROM run_events WHERE run_events.run_id = r.id AND run_events.run_created_at = r.created_at)
           AS event_count,
       json_build_object(
           'id', r.id,
           'mode', r.mode,
           'status', r.status,
           'input', r.input,
           'final_output', r.final_output,
           'error_message', r.error_message,
           'attempt', r.attempt,
           'max_attempts', r.max_attempts,
           'worker_id', r.worker_id,
           'idempotency_key', r.idempotency_key,
           'request_hash', r.request_hash,
           'cancel_requested_at', r.cancel_requested_at,
           'created_at', r.created_at,
           'started_at', r.started_at,
           'finished_at', r.finished_at,
           'schedule_id', r.schedule_id,
           'scheduled_for', r.scheduled_for,
           'priority', r.priority,
           'concurrency_key', r.concurrency_key,
           'steps', coalesce(
               (SELECT json_agg(s ORDER BY s.attempt, s.position)
                FROM (SELECT id, node_id, attempt, position, node_type, config_snapshot, status, started_at,
                             finished_at, input_text, output_text, error_message, note,
                             model, prompt_tokens, completion_tokens, cost_usd
                      FROM run_steps
                      WHERE run_id = r.id
                        AND run_created_at = r.created_at) AS s),
               '[]'::json),
           'events', coalesce(
               (SELECT json_agg(e ORDER BY e.at, e.id)
                FROM (SELECT id, attempt, status, at, worker_id, note
                      FROM run_events
                      WHERE run_id = r.id
                        AND run_created_at = r.created_at) AS e),
               '[]'::json)
       )::text AS body
FROM runs AS r
WHERE r.workflow_id = %(workflow_id)s
  -- Only history: Pending and Running runs are queue state (leases, backoff), not exported.
  AND r.finished_at IS NOT NULL
  -- The created_at bound limits the scan of runs_workflow_created_idx; the next condition skips the rows up to
  -- the cursor among equal created_at.
  AND r.created_at <= coalesce(%(after_created_at)s::timestamptz, 'infinity')
  AND (%(after_created_at)s::timestamptz IS NULL
       OR r.created_at < %(after_created_at)s::timestamptz
       OR r.id > %(after_id)s::uuid)
ORDER BY r.created_at DESC, r.id
LIMIT %(batch_size)s;

-- name: find_existing_ids :many
-- Returns which of the given ids are already taken, by kind (workflow, node, run, step, event), with the workflow holding each.
SELECT 'workflow' AS kind, id, id AS workflow_id
FROM workflows
WHERE id = ANY (%(workflow_ids)s::uuid[])
UNION ALL
SELECT 'node', id, workflow_id
FROM nodes
WHERE id = ANY (%(node_ids)s::uuid[])
UNION ALL
SELECT 'run', id, workflow_id
FROM runs
WHERE id = ANY (%(run_ids)s::uuid[])
UNION ALL
SELECT 'step', s.id, r.workflow_id
FROM run_steps AS s
JOIN runs AS r ON r.id = s.run_id
WHERE s.id = ANY (%(step_ids)s::uuid[])
UNION ALL
SELECT 'event', e.id, r.workflow_id
FROM run_events AS e
JOIN runs AS r ON r.id = e.run_id
WHERE e.id = ANY (%(event_ids)s::uuid[]);

-- name: find_existing_files :many
-- Returns which of the given file ids name an uploaded file.
SELECT id
FROM files
WHERE id = ANY (%(file_ids)s::uuid[]);

-- name: find_existing_schedules :many
-- Returns which of the given schedule ids name a schedule (an imported run's schedule_id that names none is imported null).
SELECT id
FROM schedules
WHERE id = ANY (%(schedule_ids)s::uuid[]);

-- name: import_workflows :exec
-- Inserts workflows from a JSON array of {id, name, created_at, updated_at, version, max_concurrent_runs, max_concurrent_runs_per_key, max_tokens_per_run}, keeping their ids.
INSERT INTO workflows (id, name, created_at, updated_at, version, max_concurrent_runs, max_concurrent_runs_per_key,
                       max_tokens_per_run)
SELECT id, name, created_at, updated_at, version, max_concurrent_runs, max_concurrent_runs_per_key, max_tokens_per_run
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS w (id uuid, name text, created_at timestamptz, updated_at timestamptz, version integer,
           max_concurrent_runs integer, max_concurrent_runs_per_key integer, max_tokens_per_run integer);

-- name: import_nodes :exec
-- Inserts nodes from a JSON array of {id, workflow_id, position, node_type, config, created_at, updated_at, version}, keeping their ids.
INSERT INTO nodes (id, workflow_id, position, node_type, config, created_at, updated_at, version)
SELECT id, workflow_id, position, node_type, config, created_at, updated_at, version
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS n (id uuid, workflow_id uuid, position integer, node_type text, config jsonb, created_at timestamptz,
           updated_at timestamptz, version integer);

-- name: import_runs :exec
-- Inserts finished runs from a JSON array of run objects (the export's run keys plus workflow_id), keeping their ids; no lease.
INSERT INTO runs (id, workflow_id, mode, status, input, final_output, error_message, attempt, max_attempts,
                  worker_id, idempotency_key, request_hash, cancel_requested_at, created_at, started_at,
                  finished_at, schedule_id, scheduled_for, priority, concurrency_key)
SELECT id, workflow_id, mode, status, input, final_output, error_message, attempt, max_attempts,
       worker_id, idempotency_key, request_hash, cancel_requested_at, created_at, started_at, finished_at,
       schedule_id, scheduled_for, priority, concurrency_key
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS r (id uuid, workflow_id uuid, mode text, status text, input jsonb, final_output text, error_message text,
           attempt integer, max_attempts integer, worker_id text, idempotency_key text, request_hash text,
           cancel_requested_at timestamptz, created_at timestamptz, started_at timestamptz,
           finished_at timestamptz, schedule_id uuid, scheduled_for timestamptz, priority integer,
           concurrency_key text);

-- name: import_run_steps :exec
-- Inserts run steps from a JSON array of step objects (the export's step keys plus run_id), keeping their ids and usage (which the roll-up of migration 0019 counts); run_created_at is their run's, imported first.
INSERT INTO run_steps (id, run_id, run_created_at, node_id, attempt, position, node_type, config_snapshot, status,
                       started_at, finished_at, input_text, output_text, error_message, note,
                       model, prompt_tokens, completion_tokens, cost_usd)
SELECT s.id, s.run_id, r.created_at, s.node_id, s.attempt, s.position, s.node_type, s.config_snapshot, s.status,
       s.started_at, s.finished_at, s.input_text, s.output_text, s.error_message, s.note,
       s.model, s.prompt_tokens, s.completion_tokens, s.cost_usd
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS s (id uuid, run_id uuid, node_id uuid, attempt integer, position integer, node_type text,
           config_snapshot jsonb, status text, started_at timestamptz, finished_at timestamptz, input_text text,
           output_text text, error_message text, note text,
           model text, prompt_tokens integer, completion_tokens integer, cost_usd numeric)
-- A step of no run has no partition: the insert fails, as its foreign key would.
LEFT JOIN runs AS r ON r.id = s.run_id;

-- name: import_run_events :exec
-- Inserts run events from a JSON array of {id, run_id, attempt, status, at, worker_id, note}, keeping their ids; run_created_at is their run's, imported first.
INSERT INTO run_events (id, run_id, run_created_at, attempt, status, at, worker_id, note)
SELECT e.id, e.run_id, r.created_at, e.attempt, e.status, e.at, e.worker_id, e.note
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS e (id uuid, run_id uuid, attempt integer, status text, at timestamptz, worker_id text, note text)
LEFT JOIN runs AS r ON r.id = e.run_id;
