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
    return row_json_response(create(load_json(_create_schema)["name"]))


def create(name):
    """Create a workflow named ``name`` (already validated); return its row (``body``, ``id``, ``version``)."""
    with db.connection() as conn:
        return db.one(conn, "create_workflow", name=name)


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
    return page_response("workflows", page(query.get("cursor"), limit), limit)


def page(cursor, limit):
    """Return up to ``limit + 1`` workflows, newest first, after ``cursor`` (None: from the newest); one more than
    the page tells whether another page follows.

    :raise Unprocessable: a cursor this service did not make.
    """
    after_created_at, after_id = decode_cursor(cursor)
    with db.connection() as conn:
        return db.many(
            conn, "list_workflows_page", after_created_at=after_created_at, after_id=after_id, row_limit=limit + 1
        )


@bp.patch("/workflows/<workflow_id>")
def rename_workflow(workflow_id):
    """Rename a workflow; 200 with the workflow and its new ``ETag``. With ``If-Match``, only if unchanged since.

    :raise 404: unknown workflow.
    :raise 412: ``If-Match`` names a version that is no longer current (nothing changed).
    :raise 422: a missing, blank or over-long name.
    """
    workflow_id = parse_id(workflow_id, "Workflow")
    data = load_json(_patch_schema)
    return row_json_response(rename(workflow_id, data["name"], expected_versions()))


def rename(workflow_id, name, versions):
    """Rename ``workflow_id`` to ``name`` if its version is among ``versions`` (None: any); return its row.

    :raise NotFound: unknown workflow.
    :raise PreconditionFailed: the workflow's version is not among ``versions``.
    """
    with db.connection() as conn:
        row = db.one(conn, "rename_workflow", workflow_id=workflow_id, name=name, expected_versions=versions)
        if row is None:
            raise workflow_write_refused(conn, workflow_id)
    return row


@bp.delete("/workflows/<workflow_id>")
def delete_workflow(workflow_id):
    """Delete a workflow with its nodes and its whole run history; 204. With ``If-Match``, only if unchanged.

    :raise 404: unknown workflow.
    :raise 412: ``If-Match`` names a version that is no longer current (nothing deleted).
    """
    delete(parse_id(workflow_id, "Workflow"), expected_versions())
    return "", 204


def delete(workflow_id, versions):
    """Delete ``workflow_id`` with its nodes and runs if its version is among ``versions`` (None: any).

    :raise NotFound: unknown workflow.
    :raise PreconditionFailed: the workflow's version is not among ``versions``.
    """
    with db.connection() as conn:
        if db.one(conn, "delete_workflow", workflow_id=workflow_id, expected_versions=versions) is None:
            raise workflow_write_refused(conn, workflow_id)
