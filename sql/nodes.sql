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
