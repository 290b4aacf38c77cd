-- Workflows: the workflows table, and the JSON bodies of reads that include their nodes.

-- name: create_workflow :one
-- Inserts a workflow with its concurrency limits and its tokens per run (NULL: none); returns its version (the ETag) and the API's JSON body.
INSERT INTO workflows (name, max_concurrent_runs, max_concurrent_runs_per_key, max_tokens_per_run)
VALUES (%(name)s, %(max_concurrent_runs)s, %(max_concurrent_runs_per_key)s, %(max_tokens_per_run)s)
RETURNING version,
          json_build_object('id', id, 'name', name, 'created_at', created_at, 'updated_at', updated_at,
                            'version', version, 'max_concurrent_runs', max_concurrent_runs,
                            'max_concurrent_runs_per_key', max_concurrent_runs_per_key,
                            'max_tokens_per_run', max_tokens_per_run)::text AS body;

-- name: get_workflow_json :one
-- Returns one workflow with its nodes in position order, as the API's JSON body, and its version (the ETag).
SELECT w.version,
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
                FROM (SELECT id, node_type, config, position, created_at, updated_at, version
                      FROM nodes
                      WHERE workflow_id = w.id) AS n),
               '[]'::json)
       )::text AS body
FROM workflows AS w
WHERE w.id = %(workflow_id)s;

-- name: lock_workflow_for_node_change :one
-- Locks a workflow row until the transaction ends and bumps its version, before its nodes change; no row when it is missing or its version is not one of expected_versions (NULL: any).
UPDATE workflows
SET version = version + 1,
    updated_at = now()
WHERE id = %(workflow_id)s
  AND (%(expected_versions)s::integer[] IS NULL OR version = ANY (%(expected_versions)s::integer[]))
RETURNING id, version;

-- name: list_workflows_page :many
-- Lists up to row_limit workflows, newest first, after the keyset cursor (after_created_at, after_id; NULL: from the start).
SELECT id, name, created_at, updated_at, version
FROM workflows
-- The first condition bounds the index scan; the second skips the rows up to the cursor among equal created_at.
WHERE created_at <= coalesce(%(after_created_at)s::timestamptz, 'infinity')
  AND (%(after_created_at)s::timestamptz IS NULL
       OR created_at < %(after_created_at)s::timestamptz
       OR id > %(after_id)s::uuid)
ORDER BY created_at DESC, id
LIMIT %(row_limit)s;

-- name: update_workflow :one
-- Changes a workflow's name, concurrency limits and tokens per run (each kept where its set_ flag is false) and bumps its version, only while its version is one of expected_versions (NULL: any); returns its version, whether a limit changed, and its JSON body.
WITH old AS (
    SELECT id, max_concurrent_runs, max_concurrent_runs_per_key
    FROM workflows
    WHERE id = %(workflow_id)s
    -- Waits for the inserts of its runs in flight (FOR SHARE) and holds back later ones (migration 0023).
    FOR NO KEY UPDATE
)
UPDATE workflows AS w
SET name = CASE WHEN %(set_name)s THEN %(name)s ELSE w.name END,
    max_concurrent_runs = CASE WHEN %(set_max_concurrent_runs)s THEN %(max_concurrent_runs)s::integer
                               ELSE w.max_concurrent_runs END,
    max_concurrent_runs_per_key = CASE WHEN %(set_max_concurrent_runs_per_key)s
                                       THEN %(max_concurrent_runs_per_key)s::integer
                                       ELSE w.max_concurrent_runs_per_key END,
    max_tokens_per_run = CASE WHEN %(set_max_tokens_per_run)s THEN %(max_tokens_per_run)s::integer
                              ELSE w.max_tokens_per_run END,
    version = w.version + 1,
    updated_at = now()
FROM old
WHERE w.id = old.id
  AND (%(expected_versions)s::integer[] IS NULL OR w.version = ANY (%(expected_versions)s::integer[]))
RETURNING w.version,
          (w.max_concurrent_runs IS DISTINCT FROM old.max_concurrent_runs
           OR w.max_concurrent_runs_per_key IS DISTINCT FROM old.max_concurrent_runs_per_key) AS limits_changed,
          json_build_object('id', w.id, 'name', w.name, 'created_at', w.created_at, 'updated_at', w.updated_at,
                            'version', w.version, 'max_concurrent_runs', w.max_concurrent_runs,
                            'max_concurrent_runs_per_key', w.max_concurrent_runs_per_key,
                            'max_tokens_per_run', w.max_tokens_per_run)::text AS body;

-- name: mark_limited_runs :exec
-- Marks a workflow's Pending and Running async runs as concerned by its limits (runs.limited, migration 0023), after update_workflow changed them and before rebuild_run_holds recounts: their claims and finishes then count in run_lanes.
UPDATE runs
SET limited = true
WHERE workflow_id = %(workflow_id)s
  AND status IN ('Pending', 'Running')
  AND mode = 'async'
  AND NOT limited;

-- name: rebuild_run_holds :exec
-- Recounts a workflow's running runs and re-holds its Pending runs under its current limits (migration 0016's rebuild_run_holds), after they changed.
SELECT rebuild_run_holds(%(workflow_id)s);

-- name: delete_workflow :one
-- Deletes a workflow (its nodes, runs, steps and events cascade), only while its version is one of expected_versions (NULL: any).
DELETE FROM workflows
WHERE id = %(workflow_id)s
  AND (%(expected_versions)s::integer[] IS NULL OR version = ANY (%(expected_versions)s::integer[]))
RETURNING id;

-- name: get_workflow_version :one
-- Returns a workflow's current version (its ETag); no row when it does not exist.
SELECT version
FROM workflows
WHERE id = %(workflow_id)s;

-- name: list_workflow_names :many
-- Returns the name of each workflow of workflow_ids that still exists (the usage page names its rows with them).
SELECT id, name
FROM workflows
WHERE id = ANY (%(workflow_ids)s::uuid[]);
