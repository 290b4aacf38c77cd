"""Workflows: create, list, read (with nodes in position order), change (name, concurrency limits), delete."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response

from ..data import db
from . import contract, schemas
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

bp = Blueprint("workflows", __name__)

_create_schema = schemas.WorkflowCreateSchema()
_patch_schema = schemas.WorkflowPatchSchema()
_page_schema = schemas.PageQuerySchema()


@bp.post("/workflows")
@contract.operation("Create a workflow", body=schemas.WorkflowCreateSchema)
@contract.responds(200, schemas.WorkflowLimitsSchema, "The workflow.", "ETag")
@contract.errors(400, 413, 415, 422, 503)
def create_workflow() -> Response:
    """Create a workflow, optionally with ``max_concurrent_runs``, ``max_concurrent_runs_per_key`` and
    ``max_tokens_per_run`` (positive integers, null: no limit); 200 ``{id, name, created_at, updated_at, version,
    max_concurrent_runs, max_concurrent_runs_per_key, max_tokens_per_run}``.

    :raise 422: a missing, blank or over-long name; a limit that is not a positive integer or null.
    """
    data = load_json(_create_schema)
    return row_json_response(
        create(
            data["name"],
            max_concurrent_runs=data.get("max_concurrent_runs"),
            max_concurrent_runs_per_key=data.get("max_concurrent_runs_per_key"),
            max_tokens_per_run=data.get("max_tokens_per_run"),
        )
    )


def create(
    name: str,
    *,
    max_concurrent_runs: int | None = None,
    max_concurrent_runs_per_key: int | None = None,
    max_tokens_per_run: int | None = None,
) -> dict[str, Any]:
    """Create a workflow named ``name`` with its limits (already validated; None: no limit); return its row
    (``body``, ``id``, ``version``)."""
    with db.connection() as conn:
        row = db.one(
            conn,
            "create_workflow",
            name=name,
            max_concurrent_runs=max_concurrent_runs,
            max_concurrent_runs_per_key=max_concurrent_runs_per_key,
            max_tokens_per_run=max_tokens_per_run,
        )
    assert row is not None  # an INSERT ... RETURNING: always one row
    return row


@bp.get("/workflows/<workflow_id>")
@contract.operation("Read a workflow with its nodes in position order")
@contract.responds(200, schemas.WorkflowWithNodesSchema, "The workflow.", "ETag")
@contract.errors(404, 503)
def get_workflow(workflow_id: str) -> Response:
    """Return a workflow and its nodes in position order, with its version as ``ETag``.

    :raise 404: unknown workflow.
    """
    return query_json_response("get_workflow_json", "Workflow not found", workflow_id=parse_id(workflow_id, "Workflow"))


@bp.get("/workflows")
@contract.operation("List workflows, newest first (keyset pagination)", query=schemas.PageQuerySchema)
@contract.responds(200, schemas.WorkflowListSchema, "One page of workflows.")
@contract.errors(422, 503)
def list_workflows() -> Response:
    """Return ``{workflows: [...], next_cursor}``, newest first; ``limit`` 1..200 (default 50), ``cursor`` from
    the previous page; ``next_cursor`` is null on the last page.

    :raise 422: a limit out of range, a cursor this service did not make, an unknown parameter.
    """
    query = load_query(_page_schema)
    limit = query.get("limit", DEFAULT_PAGE_SIZE)
    return page_response("workflows", page(query.get("cursor"), limit), limit)


def page(cursor: str | None, limit: int) -> list[dict[str, Any]]:
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
@contract.operation(
    "Change a workflow's name or concurrency limits (any of them, at least one)",
    headers=(contract.IF_MATCH,),
    body=schemas.WorkflowPatchSchema,
)
@contract.responds(200, schemas.WorkflowLimitsSchema, "The changed workflow.", "ETag")
@contract.errors(400, 404, 412, 413, 415, 422, 503)
def patch_workflow(workflow_id: str) -> Response:
    """Change any of a workflow's ``name``, ``max_concurrent_runs``, ``max_concurrent_runs_per_key`` and
    ``max_tokens_per_run`` (null: no limit); 200 with the workflow and its new ``ETag``. With ``If-Match``, only if unchanged since. A new limit
    applies to the runs claimed after it; a lowered one stops no run, it lets none start until below it.

    :raise 404: unknown workflow.
    :raise 412: ``If-Match`` names a version that is no longer current (nothing changed).
    :raise 422: nothing to change; a blank or over-long name; a limit that is not a positive integer or null.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    return row_json_response(change(workflow_uuid, load_json(_patch_schema), expected_versions()))


def rename(workflow_id: uuid.UUID, name: str, versions: list[int] | None) -> dict[str, Any]:
    """Rename ``workflow_id`` to ``name`` if its version is among ``versions`` (None: any); return its row.

    :raise NotFound: unknown workflow.
    :raise PreconditionFailed: the workflow's version is not among ``versions``.
    """
    return change(workflow_id, {"name": name}, versions)


def change(workflow_id: uuid.UUID, fields: dict[str, Any], versions: list[int] | None) -> dict[str, Any]:
    """Set the workflow's ``fields`` (a validated subset of name, max_concurrent_runs, max_concurrent_runs_per_key,
    max_tokens_per_run)
    if its version is among ``versions`` (None: any), in one transaction; return its row. A change of a limit
    marks the workflow's unfinished runs as limited, then recounts and re-holds them under its concurrency lock.

    :raise NotFound: unknown workflow.
    :raise PreconditionFailed: the workflow's version is not among ``versions``.
    """
    with db.transaction() as conn:
        row = db.one(
            conn,
            "update_workflow",
            workflow_id=workflow_id,
            expected_versions=versions,
            set_name="name" in fields,
            name=fields.get("name"),
            set_max_concurrent_runs="max_concurrent_runs" in fields,
            max_concurrent_runs=fields.get("max_concurrent_runs"),
            set_max_concurrent_runs_per_key="max_concurrent_runs_per_key" in fields,
            max_concurrent_runs_per_key=fields.get("max_concurrent_runs_per_key"),
            set_max_tokens_per_run="max_tokens_per_run" in fields,
            max_tokens_per_run=fields.get("max_tokens_per_run"),
        )
        if row is None:
            raise workflow_write_refused(conn, workflow_id)
        if row["limits_changed"]:
            # The order matters (migration 0023's header): the row, then the runs, then the concurrency lock.
            db.execute(conn, "mark_limited_runs", workflow_id=workflow_id)
            db.execute(conn, "rebuild_run_holds", workflow_id=workflow_id)
    return row


@bp.delete("/workflows/<workflow_id>")
@contract.operation("Delete a workflow with its nodes and run history", headers=(contract.IF_MATCH,))
@contract.responds(204, None, "Deleted.")
@contract.errors(404, 412, 503)
def delete_workflow(workflow_id: str) -> tuple[str, int]:
    """Delete a workflow with its nodes and its whole run history; 204. With ``If-Match``, only if unchanged.

    :raise 404: unknown workflow.
    :raise 412: ``If-Match`` names a version that is no longer current (nothing deleted).
    """
    delete(parse_id(workflow_id, "Workflow"), expected_versions())
    return "", 204


def delete(workflow_id: uuid.UUID, versions: list[int] | None) -> None:
    """Delete ``workflow_id`` with its nodes and runs if its version is among ``versions`` (None: any).

    :raise NotFound: unknown workflow.
    :raise PreconditionFailed: the workflow's version is not among ``versions``.
    """
    with db.connection() as conn:
        if db.one(conn, "delete_workflow", workflow_id=workflow_id, expected_versions=versions) is None:
            raise workflow_write_refused(conn, workflow_id)
