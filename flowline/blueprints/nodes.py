"""Nodes: add a node to a workflow."""

from flask import Blueprint, jsonify
from psycopg.types.json import Jsonb

from .. import db
from ..errors import NotFound
from ..http import load_json, parse_id
from ..schemas import NodeCreateSchema

bp = Blueprint("nodes", __name__)

_create_schema = NodeCreateSchema()


@bp.post("/workflows/<workflow_id>/nodes")
def add_node(workflow_id):
    """Append a node at the workflow's next position; 200 ``{message: "Node added", node_id, position}``.

    :raise 404: unknown workflow.
    :raise 422: an unknown node type, or a config invalid for its type (errors keyed by field).
    """
    workflow_id = parse_id(workflow_id, "Workflow")
    data = load_json(_create_schema)
    with db.transaction() as conn:
        # Locking the workflow row serialises concurrent adds, so each reads the position the previous one took.
        if db.one(conn, "lock_workflow_for_node_change", workflow_id=workflow_id) is None:
            raise NotFound("Workflow not found")
        node = db.one(conn, "add_node", workflow_id=workflow_id, node_type=data["node_type"], config=Jsonb(data["config"]))
    return jsonify({"message": "Node added", "node_id": node["id"], "position": node["position"]})
