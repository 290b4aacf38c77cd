"""Runs: execute a workflow synchronously or queue it for a worker, rerun a run, list a workflow's runs or all
runs, read a run with its steps and events, cancel a run."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from psycopg import Connection
from psycopg.errors import ForeignKeyViolation
from psycopg.types.json import Jsonb

from ..core import metrics
from ..core.config import settings_of
from ..core.statuses import RunStatus
from ..data import db, replica
from ..engine import runner
from ..engine.budget import budget_settings
from . import contract, prefer, schemas, waits
from .errors import Conflict, NotFound, Unprocessable, error_response
from .http import (
    DEFAULT_PAGE_SIZE,
    decode_cursor,
    load_json,
    load_query,
    page_response,
    parse_id,
    query_json_response,
    require_file,
    rows_of_workflow,
)
from .schemas import AllRunsQuerySchema, QueueRunRequestSchema, RunRequestSchema, RunsQuerySchema

bp = Blueprint("runs", __name__)

_run_schema = RunRequestSchema()
_queue_run_schema = QueueRunRequestSchema()
_runs_query_schema = RunsQuerySchema()
_all_runs_query_schema = AllRunsQuerySchema()
_WORKER_ID = f"api:{socket.gethostname()}:{os.getpid()}"
# What an Idempotency-Key may be: printable ASCII without spaces, as it travels in a header and is stored.
_KEY_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))


def _load_run_request(schema: RunRequestSchema = _run_schema) -> dict[str, Any]:
    """Return the validated run request body: ``input_text`` (default "") and ``file_id`` (default None), and
    what else ``schema`` takes.

    :raise 422: an invalid body, input_text over MAX_INPUT_CHARS, or a file_id that names no file.
    """
    data = load_json(schema, optional=True)
    check_run_input(data["input_text"], data["file_id"])
    return data


def check_run_input(input_text: str, file_id: uuid.UUID | None) -> None:
    """Check a run's input beyond its schema: ``input_text`` at most MAX_INPUT_CHARS, ``file_id`` (or None) an
    uploaded file.

    :raise Unprocessable: input_text over MAX_INPUT_CHARS.
    :raise ValidationError: a file_id that names no file (keyed ``file_id``).
    """
    limit = settings_of(current_app).max_input_chars
    if len(input_text) > limit:
        raise Unprocessable(f"input_text is longer than {limit} characters.")
    if file_id is not None:
        with db.connection() as conn:
            require_file(conn, file_id, "file_id")


@bp.post("/workflows/<workflow_id>/run")
@contract.operation("Run a workflow synchronously on input_text", body=schemas.RunRequestSchema, body_required=False)
@contract.responds(200, schemas.RunResultSchema, "The run succeeded.")
@contract.errors(400, 404, 409, 413, 415, 422, 500, 502, 503, 504)
def run_workflow(workflow_id: str) -> Response:
    """Run a workflow in the request on ``input_text`` (default "") and optionally a ``file_id`` that
    extract_text nodes without their own read; 200 ``{final_output, run_id}``.

    A failed run is persisted as Failed and answered with ``{detail, run_id}``: 422 when a node rejected its
    input or configuration, 502 when a provider failed, 504 when SYNC_RUN_TIMEOUT_S was hit, 500 for a bug.

    :raise 404: unknown workflow.
    :raise 422: an invalid body, input_text over MAX_INPUT_CHARS, or a file_id that names no file.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    data = _load_run_request()
    run_id, outcome = run_now(workflow_uuid, data["input_text"], data["file_id"])
    if outcome.status == RunStatus.SUCCEEDED:
        return jsonify({"final_output": outcome.final_output, "run_id": run_id, "status": outcome.status})
    assert outcome.error is not None  # every outcome but Succeeded carries its error (runner.execute_nodes)
    return error_response(outcome.error.http_status, str(outcome.error), run_id=run_id, status=outcome.status)


def run_now(workflow_id: uuid.UUID, input_text: str, file_id: uuid.UUID | None) -> tuple[uuid.UUID, runner.Outcome]:
    """Run ``workflow_id`` in this request on a checked input (check_run_input); return ``(run_id, outcome)``, the
    run persisted as Succeeded or Failed.

    :raise NotFound: unknown workflow, or one deleted while its run was being created.
    """
    config = settings_of(current_app)
    try:
        result = runner.run_sync(
            db.app_pool(),
            workflow_id,
            input_text,
            timeout_s=config.sync_run_timeout_s,
            lease_seconds=config.run_lease_seconds,
            provider=current_app.extensions["flowline.provider"],
            worker_id=_WORKER_ID,
            input_file_id=file_id,
            budget=budget_settings(config),
        )
    except ForeignKeyViolation:
        result = None  # the workflow was deleted while the run was being created
    if result is None:
        raise NotFound("Workflow not found")
    return result


def _idempotency_key() -> str | None:
    """Return the request's Idempotency-Key header, or None.

    :raise 422: a key that is empty, longer than 255 characters, or not printable ASCII.
    """
    return check_idempotency_key(request.headers.get("Idempotency-Key"))


def check_idempotency_key(key: str | None) -> str | None:
    """Return ``key``, an Idempotency-Key (or None), once checked.

    :raise Unprocessable: a key that is empty, longer than 255 characters, or not printable ASCII.
    """
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not set(key) <= _KEY_CHARS:
        raise Unprocessable("Idempotency-Key must be 1 to 255 printable ASCII characters without spaces.")
    return key


def _queued_response(run_id: uuid.UUID, replayed: bool) -> Response:
    response = jsonify({"run_id": run_id, "status": RunStatus.PENDING})
    response.status_code = 202
    response.headers["Location"] = f"/runs/{run_id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _outcome_reader(run_id: uuid.UUID) -> Callable[[bool], dict[str, Any] | None]:
    """Return a function reading run ``run_id``'s outcome (get_run_outcome's row, None for an unknown run) with a
    pooled connection it gives back at once: what a wait reads each time it is woken. ``read(True)``, a wait's
    first read, registers the waiter first (register_run_waiter, committed before the read), so that the run's
    finish sends the NOTIFY."""

    def read(register: bool) -> dict[str, Any] | None:
        with db.connection() as conn:
            if register:
                db.execute(conn, "register_run_waiter", run_id=run_id)
            return db.one(conn, "get_run_outcome", run_id=run_id)

    return read


def _wait_for(run_id: uuid.UUID) -> tuple[waits.Wait, int] | None:
    """Wait for run ``run_id`` as the request's ``Prefer: wait=N`` asks (capped at WAIT_MAX_S); return
    ``(Wait, seconds)``, or None when the request asks for no wait it can be granted."""
    seconds = waits.requested_seconds(request, settings_of(current_app).wait_max_s)
    if seconds is None:
        return None
    wait = waits.of_app().wait(run_id, seconds, _outcome_reader(run_id), waits.client_gone_check(request.environ))
    return wait, seconds


def _applied_wait(response: Response, waited: tuple[waits.Wait, int] | None) -> Response:
    """Mark ``response`` as varying on Prefer, and as having waited when the wait of ``waited`` (_wait_for's
    answer) did (RFC 7240 §3)."""
    response.vary.add("Prefer")
    if waited is not None:
        wait, seconds = waited
        if wait.waited:
            response.headers[prefer.APPLIED_HEADER] = waits.applied(seconds)
    return response


def _queued_or_finished(run_id: uuid.UUID, *, replayed: bool) -> Response:
    """Answer a queued run (or a repeat's): with ``Prefer: wait=N``, 200 with its outcome when it finished within
    N seconds, else (and without it) the 202 of _queued_response."""
    waited = _wait_for(run_id)
    if waited is not None and waited[0].final:
        row = waited[0].row
        assert row is not None  # a final wait read the run
        response = jsonify(
            {
                "run_id": row["id"],
                "status": row["status"],
                "final_output": row["final_output"],
                "error_message": row["error_message"],
            }
        )
        response.headers["Location"] = f"/runs/{run_id}"
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
    else:
        response = _queued_response(run_id, replayed=replayed)
    return _applied_wait(response, waited)


@bp.post("/workflows/<workflow_id>/runs")
@contract.operation(
    "Queue a run for a worker (async); poll Location for its outcome, or wait for it with Prefer: wait=N",
    headers=(contract.IDEMPOTENCY_KEY, contract.PREFER_WAIT),
    body=schemas.QueueRunRequestSchema,
    body_required=False,
)
@contract.responds(
    200,
    schemas.RunFinishedSchema,
    "With `Prefer: wait=N`: the run finished within N seconds (Succeeded, Failed or Cancelled).",
    "Location",
    "Vary",
    "Preference-Applied",
)
@contract.responds(
    202,
    schemas.RunQueuedSchema,
    "Queued (or, for a repeated Idempotency-Key, the run it queued before: then "
    "with `Idempotent-Replayed: true`); with `Prefer: wait=N`, not finished within N seconds.",
    "Location",
    "Vary",
    "Preference-Applied",
)
@contract.errors(400, 404, 413, 415, 422, 503)
def queue_run(workflow_id: str) -> Response:
    """Queue a run of a workflow for a worker, on ``input_text`` (default "") and optionally a ``file_id``, with
    an optional ``concurrency_key`` and ``priority`` (default 0); 202 ``{run_id, status: "Pending"}`` with
    ``Location: /runs/{run_id}``.

    With an ``Idempotency-Key`` header, a repeat of the same request for the same workflow answers the same
    202 (with ``Idempotent-Replayed: true``) and queues nothing: the database's unique constraint on
    (workflow, key) decides between concurrent requests.

    With ``Prefer: wait=N`` (capped at WAIT_MAX_S), it waits up to N seconds for the run (a repeat's: the run
    it queued before) to finish: 200 ``{run_id, status, final_output, error_message}`` (also when it Failed or
    was Cancelled) with ``Preference-Applied: wait=N``, else the 202 (with Preference-Applied when it waited).

    :raise 404: unknown workflow.
    :raise 422: an invalid body or key, or a key already used with a different body.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    key = _idempotency_key()
    data = _load_run_request(_queue_run_schema)
    run_id, replayed = enqueue(
        workflow_uuid,
        data["input_text"],
        data["file_id"],
        key,
        "Workflow not found",
        concurrency_key=data["concurrency_key"],
        priority=data.get("priority", 0),
    )
    return _queued_or_finished(run_id, replayed=replayed)


@bp.post("/runs/<run_id>/rerun")
@contract.operation(
    "Queue a new run of a run's workflow (its current nodes) on the run's input; poll Location",
    headers=(contract.IDEMPOTENCY_KEY,),
)
@contract.responds(
    202,
    schemas.RunQueuedSchema,
    "Queued (or, for a repeated Idempotency-Key, the run it queued before: then with `Idempotent-Replayed: true`).",
    "Location",
)
@contract.errors(404, 422, 503)
def rerun(run_id: str) -> Response:
    """Queue a new async run of a run's workflow, with the nodes it has now, on the run's input (its input_text
    and file_id); answered as ``POST /workflows/{id}/runs``, whose Idempotency-Key rules apply (per workflow).

    :raise 404: unknown run (also when its workflow was deleted: its runs went with it).
    :raise 422: an invalid key, a key already used with a different input, or a file_id whose file was deleted.
    """
    return _queued_response(*rerun_of(parse_id(run_id, "Run"), _idempotency_key()))


def rerun_of(run_id: uuid.UUID, key: str | None) -> tuple[uuid.UUID, bool]:
    """Queue a new run of ``run_id``'s workflow on its input under the Idempotency-Key ``key`` (or None); return
    ``(new run id, replayed)`` as enqueue does.

    :raise NotFound: unknown run.
    :raise ValidationError: the run's file was deleted (keyed ``file_id``).
    :raise Unprocessable: a key already used for this workflow with a different input.
    """
    with db.connection() as conn:
        run = db.one(conn, "get_run_input", run_id=run_id)
        if run is None:
            raise NotFound("Run not found")
        file_id = run["input"].get("file_id") and uuid.UUID(run["input"]["file_id"])
        if file_id is not None:
            require_file(conn, file_id, "file_id")
    return enqueue(
        run["workflow_id"],
        run["input"].get("input_text", ""),
        file_id,
        key,
        "Run not found",
        concurrency_key=run["concurrency_key"],
        priority=run["priority"],
    )


def enqueue(
    workflow_id: uuid.UUID,
    input_text: str,
    file_id: uuid.UUID | None,
    key: str | None,
    not_found: str = "Workflow not found",
    *,
    concurrency_key: str | None = None,
    priority: int = 0,
) -> tuple[uuid.UUID, bool]:
    """Queue a run of ``workflow_id`` on ``input_text`` and ``file_id`` under the Idempotency-Key ``key`` (or
    None), with its ``concurrency_key`` (or None) and ``priority``; return ``(run_id, replayed)``: the new run, or
    the earlier run of a repeated key (replayed True).

    :raise 404: ``not_found``, when the workflow does not exist or was deleted meanwhile.
    :raise 422: a key already used for this workflow with a different input.
    """
    stored_input = {"input_text": input_text, "file_id": file_id and str(file_id)}
    # Where it queues is part of the request; left out at its defaults, so keys used before it existed still match.
    queued_as = {
        name: value
        for name, value in (("concurrency_key", concurrency_key), ("priority", priority))
        if value not in (None, 0)
    }
    request_hash = hashlib.sha256(json.dumps({**stored_input, **queued_as}, sort_keys=True).encode()).hexdigest()
    try:
        # Two autocommit statements, no transaction needed: when a concurrent request with the same key inserted
        # first, enqueue_run waits for it to commit and inserts nothing, and the next statement sees its run.
        with db.connection() as conn:
            row = db.one(
                conn,
                "enqueue_run",
                workflow_id=workflow_id,
                input=Jsonb(stored_input),
                max_attempts=settings_of(current_app).run_max_attempts,
                idempotency_key=key,
                request_hash=request_hash,
                concurrency_key=concurrency_key,
                priority=priority,
            )
            if row is not None:
                return row["id"], False
            existing = key and db.one(conn, "get_run_by_idempotency_key", workflow_id=workflow_id, idempotency_key=key)
    except ForeignKeyViolation:
        existing = None  # the workflow was deleted while the run was being queued
    if not existing:
        raise NotFound(not_found)
    if existing["request_hash"] != request_hash:
        raise Unprocessable(
            "This Idempotency-Key was already used for this workflow with a different request "
            "body; use a new key for a different request.",
            run_id=existing["id"],
        )
    return existing["id"], True


@bp.post("/runs/<run_id>/cancel")
@contract.operation("Cancel a run: Pending at once, Running at its next node boundary")
@contract.responds(200, schemas.RunCancelledSchema, "Cancelled: it was Pending and never starts.")
@contract.responds(202, schemas.RunCancelledSchema, "Requested: it was Running and stops at its next node boundary.")
@contract.errors(404, 409, 503)
def cancel_run(run_id: str) -> Response:
    """Cancel a run: a Pending one at once (200, status Cancelled: it never starts); a Running one at its next
    node boundary (202, status still Running: the remaining nodes do not run, and the run ends Cancelled).

    :raise 404: unknown run.
    :raise 409: the run already finished (Succeeded, Failed or Cancelled).
    """
    row = cancel(parse_id(run_id, "Run"))
    if row["previous_status"] == RunStatus.PENDING:
        return jsonify({"run_id": row["id"], "status": RunStatus.CANCELLED})
    response = jsonify(
        {
            "run_id": row["id"],
            "status": RunStatus.RUNNING,
            "note": "cancellation requested: the run stops at its next node boundary",
        }
    )
    response.status_code = 202
    return response


def cancel(run_id: uuid.UUID) -> dict[str, Any]:
    """Cancel ``run_id``: a Pending run at once, a Running one at its next node boundary; return the row with its
    ``previous_status`` (Pending or Running).

    :raise NotFound: unknown run.
    :raise Conflict: the run already finished.
    """
    with db.connection() as conn:
        row = db.one(conn, "cancel_run", run_id=run_id)
    if row is None:
        raise NotFound("Run not found")
    if row["previous_status"] == RunStatus.PENDING:
        metrics.run_finished("async", RunStatus.CANCELLED)  # only async runs wait in Pending
    elif row["previous_status"] != RunStatus.RUNNING:
        raise Conflict(
            f"Run already {row['status']}: only Pending or Running runs can be cancelled.",
            run_id=row["id"],
            status=row["status"],
        )
    return row


@bp.get("/workflows/<workflow_id>/runs")
@contract.operation(
    "List a workflow's runs, newest first (paginated with limit or cursor)", query=schemas.RunsQuerySchema
)
@contract.responds(200, schemas.RunListSchema, "The runs (one page when limit or cursor is given).")
@contract.errors(404, 422, 503)
def list_runs(workflow_id: str) -> Response:
    """Return ``{runs: [Run]}``, newest first, optionally only those in ``status``, of ``schedule_id``, or both.

    With ``limit`` (1..200) or ``cursor``, one page: ``{runs, next_cursor}`` (``limit`` defaults to 50 then;
    ``next_cursor`` is null on the last page). Without them, every run, as milestone-1 clients expect.

    :raise 404: unknown workflow.
    :raise 422: an unknown status, a limit out of range, a cursor this service did not make.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    query = load_query(_runs_query_schema)
    status, schedule_id = query.get("status"), query.get("schedule_id")
    if "limit" not in query and "cursor" not in query:
        return query_json_response(
            "list_workflow_runs_json",
            "Workflow not found",
            workflow_id=workflow_uuid,
            status=status,
            schedule_id=schedule_id,
        )
    limit = query.get("limit", DEFAULT_PAGE_SIZE)
    with db.connection() as conn:
        rows = page(conn, query.get("cursor"), limit, workflow_id=workflow_uuid, status=status, schedule_id=schedule_id)
        rows = rows_of_workflow(conn, workflow_uuid, rows)
    return page_response("runs", rows, limit)


@bp.get("/runs")
@contract.operation(
    "List the runs of every workflow, newest first (keyset pagination); filter by status, workflow_id or both",
    query=schemas.AllRunsQuerySchema,
)
@contract.responds(200, schemas.RunPageSchema, "One page of runs (empty for a workflow_id that names no workflow).")
@contract.errors(422, 503)
@replica.reads
def list_all_runs() -> Response:
    """Return one page ``{runs: [Run], next_cursor}`` of the runs of every workflow, newest first, optionally only
    those in ``status``, of ``workflow_id``, of ``schedule_id``, or several; ``limit`` 1..200 (default 50); ``next_cursor`` is null on
    the last page. A workflow_id that names no workflow is a filter nothing matches: an empty page, not a 404.

    :raise 422: an unknown parameter or status, a workflow_id that is not a UUID, a limit out of range, a cursor
        this service did not make.
    """
    query = load_query(_all_runs_query_schema)
    limit = query.get("limit", DEFAULT_PAGE_SIZE)
    with db.connection() as conn:
        rows = page(
            conn,
            query.get("cursor"),
            limit,
            workflow_id=query.get("workflow_id"),
            status=query.get("status"),
            schedule_id=query.get("schedule_id"),
        )
    return page_response("runs", rows, limit)


def page(
    conn: Connection,
    cursor: str | None,
    limit: int,
    *,
    workflow_id: uuid.UUID | None = None,
    status: str | None = None,
    schedule_id: uuid.UUID | None = None,
    text_cut: int | None = None,
) -> list[dict[str, Any]]:
    """Return up to ``limit + 1`` runs, newest first, after ``cursor`` (None: from the newest), only those of
    ``workflow_id``, in ``status`` and of ``schedule_id`` (each None: any); one more than the page tells whether
    another page follows. Each run is a row of run_list (the API's Run) or, with ``text_cut`` (the console's
    lists, which filter by workflow and status only), its workflow's name and its output and error cut to
    ``text_cut`` characters beside their sizes.

    The one place that picks a list query from the filters: each combination has its own, so each plan keeps the
    index made for it (tests/api/test_runs_list.py and test_console_runs.py EXPLAIN them).

    :raise Unprocessable: a cursor this service did not make.
    :raise ValueError: ``schedule_id`` with ``text_cut``, a list no page shows.
    """
    after_created_at, after_id = decode_cursor(cursor)
    keyset = {"after_created_at": after_created_at, "after_id": after_id, "row_limit": limit + 1}
    if schedule_id is not None:
        if text_cut is not None:
            raise ValueError("the console's lists do not filter by schedule")
        # A schedule's runs are few beside all runs: its index, with the other filters applied on the way.
        return db.many(
            conn, "list_schedule_runs_page", schedule_id=schedule_id, workflow_id=workflow_id, status=status, **keyset
        )
    if workflow_id is not None and status is not None:
        if text_cut is None:
            return db.many(conn, "list_workflow_runs_by_status_page", workflow_id=workflow_id, status=status, **keyset)
        return db.many(
            conn,
            "list_workflow_runs_by_status_cut_page",
            workflow_id=workflow_id,
            status=status,
            text_cut=text_cut,
            **keyset,
        )
    if workflow_id is not None:
        if text_cut is None:
            return db.many(conn, "list_workflow_runs_page", workflow_id=workflow_id, **keyset)
        return db.many(conn, "list_workflow_runs_cut_page", workflow_id=workflow_id, text_cut=text_cut, **keyset)
    if status is not None:
        if text_cut is None:
            return db.many(conn, "list_runs_by_status_page", status=status, **keyset)
        return db.many(conn, "list_runs_by_status_cut_page", status=status, text_cut=text_cut, **keyset)
    if text_cut is None:
        return db.many(conn, "list_runs_page", **keyset)
    return db.many(conn, "list_runs_cut_page", text_cut=text_cut, **keyset)


@bp.get("/runs/<run_id>")
@contract.operation(
    "Read a run with its steps in execution order; with Prefer: wait=N, once it is final or N seconds passed",
    headers=(contract.PREFER_WAIT,),
)
@contract.responds(200, schemas.RunDetailSchema, "The run.", "Vary", "Preference-Applied")
@contract.errors(404, 503)
def get_run(run_id: str) -> Response:
    """Return ``{run: Run, steps: [Step]}``, steps in execution order.

    With ``Prefer: wait=N`` (capped at WAIT_MAX_S), answers as soon as the run is final or N seconds passed,
    with ``Preference-Applied: wait=N`` when it waited (not over WAIT_MAX_WAITERS). Answers carry ``Vary: Prefer``.

    :raise 404: unknown run.
    """
    run_uuid = parse_id(run_id, "Run")
    waited = _wait_for(run_uuid)
    return _applied_wait(query_json_response("get_run_json", "Run not found", run_id=run_uuid), waited)


@bp.get("/runs/<run_id>/events")
@contract.operation("A run's status transitions, oldest first")
@contract.responds(200, schemas.RunEventsSchema, "The events.")
@contract.errors(404, 503)
def list_run_events(run_id: str) -> Response:
    """Return ``{events: [{id, status, at, attempt, worker_id, note}]}``: every status transition, oldest first.

    :raise 404: unknown run.
    """
    return query_json_response("list_run_events_json", "Run not found", run_id=parse_id(run_id, "Run"))
