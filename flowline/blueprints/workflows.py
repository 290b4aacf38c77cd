"""Workflows: create and read (with nodes in position order)."""

from flask import Blueprint

from .. import db
from ..http import json_body_response, load_json, parse_id, query_json_response
from ..schemas import WorkflowCreateSchema

bp = Blueprint("workflows", __name__)

_create_schema = WorkflowCreateSchema()


@bp.post("/workflows")
def create_workflow():
    """Create a workflow; 200 ``{id, name, created_at, updated_at, version}``.

    :raise 422: a missing, blank or over-long name.
    """
    data = load_json(_create_schema)
    with db.connection() as conn:
        row = db.one(conn, "create_workflow", name=data["name"])
    return json_body_response(row["body"], headers={"ETag": f'"{row["version"]}"'})


@bp.get("/workflows/<workflow_id>")
def get_workflow(workflow_id):
    """Return a workflow and its nodes in position order, with its version as ``ETag``.

    :raise 404: unknown workflow.
    """
    return query_json_response("get_workflow_json", "Workflow not found", workflow_id=parse_id(workflow_id, "Workflow"))
