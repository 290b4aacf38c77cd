"""Workflows: create, list, read (with nodes in position order), rename, delete."""

from flask import Blueprint

from ..data import db
from .http import (
    DEFAULT_PAGE_SIZE,
    decode_cursor,
    expected_versions,
    load_json,
    load_query,
    page_response,
    parse_id,
    query_json_response,
    row_json_response,
    workflow_write_refused,
)
from .schemas import PageQuerySchema, WorkflowCreateSchema, WorkflowPatchSchema

bp = Blueprint("workflows", __name__)

_create_schema = WorkflowCreateSchema()
_patch_schema = WorkflowPatchSchema()
_page_schema = PageQuerySchema()


@bp.post("/workflows")
def create_workflow():
    """Create a workflow; 200 ``{id, name, created_at, updated_at, version}``.

    :raise 422: a missing, blank or over-long name.
    """
    data = load_json(_create_schema)
    with db.connection() as conn:
        row = db.one(conn, "create_workflow", name=data["name"])
    return row_json_response(row)


@bp.get("/workflows/<workflow_id>")
def get_workflow(workflow_id):
    """Return a workflow and its nodes in position order, with its version as ``ETag``.

    :raise 404: unknown workflow.
    """
    return query_json_response("get_workflow_json", "Workflow not found", workflow_id=parse_id(workflow_id, "Workflow"))


@bp.get("/workflows")
def list_workflows():
    """Return ``{workflows: [...], next_cursor}``, newest first; ``limit`` 1..200 (default 50), ``cursor`` from
    the previous page; ``next_cursor`` is null on the last page.

    :raise 422: a limit out of range, a cursor this service did not make, an unknown parameter.
    """
    query = load_query(_page_schema)
    limit = query.get("limit", DEFAULT_PAGE_SIZE)
    after_created_at, after_id = decode_cursor(query.get("cursor"))
    with db.connection() as conn:
        rows = db.many(
            conn, "list_workflows_page", after_created_at=after_created_at, after_id=after_id, row_limit=limit + 1
        )
    return page_response("workflows", rows, limit)


@bp.patch("/workflows/<workflow_id>")
def rename_workflow(workflow_id):
    """Rename a workflow; 200 with the workflow and its new ``ETag``. With ``If-Match``, only if unchanged since.

    :raise 404: unknown workflow.
    :raise 412: ``If-Match`` names a version that is no longer current (nothing changed).
    :raise 422: a missing, blank or over-long name.
    """
    workflow_id = parse_id(workflow_id, "Workflow")
    data = load_json(_patch_schema)
    with db.connection() as conn:
        row = db.one(
            conn, "rename_workflow", workflow_id=workflow_id, name=data["name"], expected_versions=expected_versions()
        )
        if row is None:
            raise workflow_write_refused(conn, workflow_id)
    return row_json_response(row)


@bp.delete("/workflows/<workflow_id>")
def delete_workflow(workflow_id):
    """Delete a workflow with its nodes and its whole run history; 204. With ``If-Match``, only if unchanged.

    :raise 404: unknown workflow.
    :raise 412: ``If-Match`` names a version that is no longer current (nothing deleted).
    """
    workflow_id = parse_id(workflow_id, "Workflow")
    with db.connection() as conn:
        if db.one(conn, "delete_workflow", workflow_id=workflow_id, expected_versions=expected_versions()) is None:
            raise workflow_write_refused(conn, workflow_id)
    return "", 204
