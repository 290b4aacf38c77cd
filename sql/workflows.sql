-- Workflows: the workflows table, and the JSON bodies of reads that include their nodes.

-- name: create_workflow :one
-- Inserts a workflow; returns its version (the ETag) and the API's JSON body.
INSERT INTO workflows (name)
VALUES (%(name)s)
RETURNING version,
          json_build_object('id', id, 'name', name, 'created_at', created_at, 'updated_at', updated_at,
                            'version', version)::text AS body;

-- name: get_workflow_json :one
-- Returns one workflow with its nodes in position order, as the API's JSON body, and its version (the ETag).
SELECT w.version,
       json_build_object(
           'id', w.id,
           'name', w.name,
           'created_at', w.created_at,
           'updated_at', w.updated_at,
           'version', w.version,
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
-- Locks a workflow row until the transaction ends and bumps its version, before its nodes change.
UPDATE workflows
SET version = version + 1,
    updated_at = now()
WHERE id = %(workflow_id)s
RETURNING id, version;
