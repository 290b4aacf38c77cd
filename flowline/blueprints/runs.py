"""Runs: execute a workflow synchronously, list a workflow's runs, read a run with its steps."""

import os
import socket

from flask import Blueprint, current_app, jsonify
from psycopg.errors import ForeignKeyViolation

from .. import db, engine
from ..errors import NotFound, Unprocessable, error_response
from ..http import (DEFAULT_PAGE_SIZE, decode_cursor, load_json, load_query, page_response, parse_id,
                    query_json_response, require_file)
from ..schemas import RunRequestSchema, RunsQuerySchema

bp = Blueprint("runs", __name__)

_run_schema = RunRequestSchema()
_runs_query_schema = RunsQuerySchema()
_WORKER_ID = f"api:{socket.gethostname()}:{os.getpid()}"


@bp.post("/workflows/<workflow_id>/run")
def run_workflow(workflow_id):
    """Run a workflow in the request on ``input_text`` (default "") and optionally a ``file_id`` that
    extract_text nodes without their own read; 200 ``{final_output, run_id}``.

    A failed run is persisted as Failed and answered with ``{detail, run_id}``: 422 when a node rejected its
    input or configuration, 502 when a provider failed, 504 when SYNC_RUN_TIMEOUT_S was hit, 500 for a bug.

    :raise 404: unknown workflow.
    :raise 422: an invalid body, input_text over MAX_INPUT_CHARS, or a file_id that names no file.
    """
    workflow_id = parse_id(workflow_id, "Workflow")
    data = load_json(_run_schema, optional=True)
    config = current_app.config
    if len(data["input_text"]) > config["MAX_INPUT_CHARS"]:
        raise Unprocessable(f"input_text is longer than {config['MAX_INPUT_CHARS']} characters.")
    if data["file_id"] is not None:
        with db.connection() as conn:
            require_file(conn, data["file_id"], "file_id")
    try:
        result = engine.run_sync(
            db.app_pool(),
            workflow_id,
            data["input_text"],
            timeout_s=config["SYNC_RUN_TIMEOUT_S"],
            lease_seconds=config["RUN_LEASE_SECONDS"],
            provider=current_app.extensions["flowline.provider"],
            worker_id=_WORKER_ID,
            input_file_id=data["file_id"],
        )
    except ForeignKeyViolation:
        result = None  # the workflow was deleted while the run was being created
    if result is None:
        raise NotFound("Workflow not found")
    run_id, outcome = result
    if outcome.status == "Succeeded":
        return jsonify({"final_output": outcome.final_output, "run_id": run_id, "status": outcome.status})
    return error_response(outcome.error.http_status, str(outcome.error), run_id=run_id, status=outcome.status)


@bp.get("/workflows/<workflow_id>/runs")
def list_runs(workflow_id):
    """Return ``{runs: [Run]}``, newest first, optionally only those in ``status``.

    With ``limit`` (1..200) or ``cursor``, one page: ``{runs, next_cursor}`` (``limit`` defaults to 50 then;
    ``next_cursor`` is null on the last page). Without them, every run, as milestone-1 clients expect.

    :raise 404: unknown workflow.
    :raise 422: an unknown status, a limit out of range, a cursor this service did not make.
    """
    workflow_id = parse_id(workflow_id, "Workflow")
    query = load_query(_runs_query_schema)
    status = query.get("status")
    if "limit" not in query and "cursor" not in query:
        return query_json_response("list_workflow_runs_json", "Workflow not found", workflow_id=workflow_id,
                                   status=status)
    limit = query.get("limit", DEFAULT_PAGE_SIZE)
    after_created_at, after_id = decode_cursor(query.get("cursor"))
    with db.connection() as conn:
        rows = db.many(conn, "list_workflow_runs_page", workflow_id=workflow_id, status=status,
                       after_created_at=after_created_at, after_id=after_id, row_limit=limit + 1)
        if not rows and db.one(conn, "get_workflow_version", workflow_id=workflow_id) is None:
            raise NotFound("Workflow not found")
    return page_response("runs", rows, limit)


@bp.get("/runs/<run_id>")
def get_run(run_id):
    """Return ``{run: Run, steps: [Step]}``, steps in execution order.

    :raise 404: unknown run.
    """
    return query_json_response("get_run_json", "Run not found", run_id=parse_id(run_id, "Run"))


@bp.get("/runs/<run_id>/events")
def list_run_events(run_id):
    """Return ``{events: [{id, status, at, attempt, worker_id, note}]}``: every status transition, oldest first.

    :raise 404: unknown run.
    """
    return query_json_response("list_run_events_json", "Run not found", run_id=parse_id(run_id, "Run"))
