-- Nodes: the nodes table, a workflow's ordered list of text-processing steps.

-- name: add_node :one
-- Appends a node at the workflow's next free position; run it after lock_workflow_for_node_change in the same transaction.
INSERT INTO nodes (workflow_id, position, node_type, config)
SELECT %(workflow_id)s,
       coalesce(max(position) + 1, 0),
       %(node_type)s,
       %(config)s
FROM nodes
WHERE workflow_id = %(workflow_id)s
RETURNING id, workflow_id, position, node_type, config, created_at, updated_at, version;

-- name: get_node_json :one
-- Returns one node of a workflow as the API's JSON body, and its version (the ETag).
SELECT version,
       json_build_object('id', id, 'workflow_id', workflow_id, 'node_type', node_type, 'config', config,
                         'position', position, 'created_at', created_at, 'updated_at', updated_at,
                         'version', version)::text AS body
FROM nodes
WHERE id = %(node_id)s
  AND workflow_id = %(workflow_id)s;

-- name: get_node_for_update :one
-- Locks one node of a workflow until the transaction ends and returns its type, config and version.
SELECT node_type, config, position, version
FROM nodes
WHERE id = %(node_id)s
  AND workflow_id = %(workflow_id)s
FOR UPDATE;

-- name: update_node :one
-- Replaces a node's type and config and bumps its version, only while its version is one of expected_versions (NULL: any).
UPDATE nodes
SET node_type = %(node_type)s,
    config = %(config)s,
    version = version + 1,
    updated_at = now()
WHERE id = %(node_id)s
  AND workflow_id = %(workflow_id)s
  AND (%(expected_versions)s::integer[] IS NULL OR version = ANY (%(expected_versions)s::integer[]))
RETURNING version,
          json_build_object('id', id, 'workflow_id', workflow_id, 'node_type', node_type, 'config', config,
                            'position', position, 'created_at', created_at, 'updated_at', updated_at,
                            'version', version)::text AS body;

-- name: delete_node :one
-- Deletes a node, only while its version is one of expected_versions (NULL: any); returns the position it held.
DELETE FROM nodes
WHERE id = %(node_id)s
  AND workflow_id = %(workflow_id)s
  AND (%(expected_versions)s::integer[] IS NULL OR version = ANY (%(expected_versions)s::integer[]))
RETURNING position;

-- name: close_position_gap :exec
-- Moves the nodes after a deleted position up by one, so positions stay 0..n-1 (the UNIQUE check runs at statement end).
UPDATE nodes
SET position = position - 1
WHERE workflow_id = %(workflow_id)s
  AND position > %(position)s;

-- name: list_node_ids :many
-- Lists the ids of a workflow's nodes in position order.
SELECT id
FROM nodes
WHERE workflow_id = %(workflow_id)s
ORDER BY position;

-- name: reorder_nodes :exec
-- Gives each listed node the position of its place in node_ids (0-based); the list must name every node of the workflow once.
UPDATE nodes
SET position = wanted.ordinality - 1,
    updated_at = now()
FROM unnest(%(node_ids)s::uuid[]) WITH ORDINALITY AS wanted (id, ordinality)
WHERE nodes.id = wanted.id
  AND nodes.workflow_id = %(workflow_id)s
  AND nodes.position <> wanted.ordinality - 1;
