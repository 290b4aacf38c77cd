"""Schedules: a workflow's cron-triggered runs (create, list, read, change, delete). The workers fire them
(flowline/worker/schedules.py); the ticks and their daylight-saving rules are flowline/core/cron.py's.

A schedule's answer carries ``next_fire_times``, its next five ticks written ISO 8601 with the offset of the
schedule's own time zone (what its cron means), starting at ``next_fire_at`` (the tick the workers decide next;
it may be a moment past while due). A disabled schedule has no next tick: ``next_fire_at`` null and
``next_fire_times`` empty; enabling it again (or changing its cron or time zone) starts from now, by the
database's clock.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify
from psycopg import Connection
from psycopg.errors import ForeignKeyViolation

from ..core import cron
from ..data import db
from . import contract, schemas
from .errors import ApiError, NotFound
from .http import etag, expected_versions, load_json, parse_id, precondition_failed, rows_of_workflow
from .runs import check_run_input

bp = Blueprint("schedules", __name__)

_create_schema = schemas.ScheduleCreateSchema()
_patch_schema = schemas.SchedulePatchSchema()

# How many upcoming ticks an answer shows.
NEXT_FIRE_TIMES = 5
# The settings a client chooses: a change keeps those it does not name.
_FIELDS = ("cron", "timezone", "input_text", "file_id", "overlap", "catchup", "enabled", "priority")


def next_fire_times(row: dict[str, Any]) -> list[str]:
    """Return the schedule ``row``'s next NEXT_FIRE_TIMES ticks from its next_fire_at on, ISO 8601 in its time
    zone; [] while disabled."""
    first = row["next_fire_at"]
    if first is None:
        return []
    tz = cron.zone(row["timezone"])
    ticks = [first.astimezone(tz), *cron.next_ticks(row["cron"], row["timezone"], first, NEXT_FIRE_TIMES - 1)]
    return [tick.isoformat() for tick in ticks]


def _first_tick(settings: dict[str, Any], now: datetime) -> datetime | None:
    """Return the first tick after ``now`` of the schedule ``settings``, or None when it is disabled."""
    return cron.next_tick(settings["cron"], settings["timezone"], now) if settings["enabled"] else None


def _answer(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "next_fire_times": next_fire_times(row)}


def _schedule_response(row: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(_answer(row))
    response.status_code = status
    response.headers["ETag"] = etag(row["version"])
    return response


def _write_refused(conn: Connection, schedule_id: uuid.UUID) -> ApiError:
    """Return the error for a conditional write to ``schedule_id`` that changed nothing: 404 or 412."""
    row = db.one(conn, "get_schedule", schedule_id=schedule_id)
    return NotFound("Schedule not found") if row is None else precondition_failed(row["version"])


def _file_deleted_meanwhile(exc: ForeignKeyViolation) -> bool:
    return exc.diag.constraint_name == "schedules_file_id_fkey"


@bp.post("/workflows/<workflow_id>/schedules")
@contract.operation(
    "Schedule runs of a workflow on a cron expression in a time zone; the workers fire each tick once",
    body=schemas.ScheduleCreateSchema,
)
@contract.responds(201, schemas.ScheduleSchema, "The schedule, with its next five fire times.", "ETag", "Location")
@contract.errors(400, 404, 413, 415, 422, 503)
def create_schedule(workflow_id: str) -> Response:
    """Schedule runs of a workflow at the ticks of ``cron`` in ``timezone`` (default UTC), on ``input_text`` and
    ``file_id``; 201 with the schedule and its next five fire times.

    :raise 404: unknown workflow.
    :raise 422: a bad cron expression (keyed ``cron``) or time zone (``timezone``), an unknown overlap or
        catchup, input_text over MAX_INPUT_CHARS, a file_id that names no file.
    """
    row = create(parse_id(workflow_id, "Workflow"), load_json(_create_schema))
    response = _schedule_response(row, 201)
    response.headers["Location"] = f"/schedules/{row['id']}"
    return response


def create(workflow_id: uuid.UUID, data: dict[str, Any]) -> dict[str, Any]:
    """Create a schedule of ``workflow_id`` from ``data`` (loaded by ScheduleCreateSchema); return its row.

    :raise NotFound: unknown workflow.
    :raise ValidationError: input_text over MAX_INPUT_CHARS, a file_id that names no file.
    """
    check_run_input(data["input_text"], data["file_id"])
    try:
        with db.transaction() as conn:
            row = db.one(
                conn,
                "create_schedule",
                workflow_id=workflow_id,
                cron=data["cron"],
                timezone=data["timezone"],
                input_text=data["input_text"],
                file_id=data["file_id"],
                overlap=data["overlap"],
                catchup=data["catchup"],
                enabled=data["enabled"],
                priority=data.get("priority", 0),
                next_fire_at=_first_tick(data, _clock(conn)),
            )
    except ForeignKeyViolation as exc:
        if _file_deleted_meanwhile(exc):
            check_run_input(data["input_text"], data["file_id"])
        row = None  # the workflow was deleted meanwhile
    if row is None:
        raise NotFound("Workflow not found")
    return row


def _clock(conn: Connection) -> datetime:
    """Return the database's clock, what every schedule's ticks are judged by."""
    clock = db.one(conn, "get_clock")
    assert clock is not None  # a SELECT without FROM: always one row
    return clock["now"]


def preview(cron_expression: str, timezone: str) -> list[str]:
    """Return the next NEXT_FIRE_TIMES ticks a schedule of ``cron_expression`` in ``timezone`` (both already
    valid) created now would fire at, as its answer's ``next_fire_times`` would list them."""
    with db.connection() as conn:
        now = _clock(conn)
    settings = {"cron": cron_expression, "timezone": timezone, "enabled": True}
    return next_fire_times({**settings, "next_fire_at": _first_tick(settings, now)})


@bp.get("/workflows/<workflow_id>/schedules")
@contract.operation("A workflow's schedules, newest first, with their next five fire times")
@contract.responds(200, schemas.ScheduleListSchema, "The schedules.")
@contract.errors(404, 503)
def list_schedules(workflow_id: str) -> Response:
    """Return ``{schedules: [...]}``, a workflow's schedules, newest first, each with its next five fire times.

    :raise 404: unknown workflow.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    with db.connection() as conn:
        rows = rows_of_workflow(
            conn, workflow_uuid, db.many(conn, "list_workflow_schedules", workflow_id=workflow_uuid)
        )
    return jsonify({"schedules": [_answer(row) for row in rows]})


@bp.get("/schedules/<schedule_id>")
@contract.operation("Read a schedule with its next five fire times")
@contract.responds(200, schemas.ScheduleSchema, "The schedule.", "ETag")
@contract.errors(404, 503)
def get_schedule(schedule_id: str) -> Response:
    """Return one schedule with its next five fire times, its version as ``ETag``.

    :raise 404: unknown schedule.
    """
    return _schedule_response(get(parse_id(schedule_id, "Schedule")))


def get(schedule_id: uuid.UUID) -> dict[str, Any]:
    """Return the row of ``schedule_id``.

    :raise NotFound: unknown schedule.
    """
    with db.connection() as conn:
        row = db.one(conn, "get_schedule", schedule_id=schedule_id)
    if row is None:
        raise NotFound("Schedule not found")
    return row


@bp.patch("/schedules/<schedule_id>")
@contract.operation(
    "Change a schedule; enabling it again (or a new cron or time zone) starts it from now",
    headers=(contract.IF_MATCH,),
    body=schemas.SchedulePatchSchema,
)
@contract.responds(200, schemas.ScheduleSchema, "The changed schedule.", "ETag")
@contract.errors(400, 404, 412, 413, 415, 422, 503)
def update_schedule(schedule_id: str) -> Response:
    """Change any of a schedule's cron, timezone, input_text, file_id, overlap, catchup, enabled, priority; 200 with it
    and its new ``ETag``. With ``If-Match``, only if unchanged since. Enabling a disabled schedule, or changing
    its cron or time zone, starts it from now: the ticks it missed meanwhile are not caught up.

    :raise 404: unknown schedule.
    :raise 412: ``If-Match`` names a version that is no longer current (nothing changed).
    :raise 422: nothing to change, or an invalid field (named in ``errors``).
    """
    return _schedule_response(change(parse_id(schedule_id, "Schedule"), load_json(_patch_schema), expected_versions()))


def change(schedule_id: uuid.UUID, data: dict[str, Any], versions: list[int] | None) -> dict[str, Any]:
    """Change the settings ``data`` names (loaded by SchedulePatchSchema) of ``schedule_id`` if its version is
    among ``versions`` (None: any); return its row. Enabling it, or a new cron or time zone, starts it from now.

    :raise NotFound: unknown schedule.
    :raise PreconditionFailed: its version is not among ``versions`` (nothing changed).
    :raise ValidationError: input_text over MAX_INPUT_CHARS, a file_id that names no file.
    """
    check_run_input(data.get("input_text", ""), data.get("file_id"))
    try:
        with db.transaction() as conn:
            current = db.one(conn, "lock_schedule", schedule_id=schedule_id)
            if current is None:
                raise NotFound("Schedule not found")
            settings = {name: data.get(name, current[name]) for name in _FIELDS}
            restarts = not current["enabled"] or any(settings[k] != current[k] for k in ("cron", "timezone"))
            next_fire_at = _first_tick(settings, current["now"]) if restarts else current["next_fire_at"]
            row = db.one(
                conn,
                "update_schedule",
                schedule_id=schedule_id,
                expected_versions=versions,
                cron=settings["cron"],
                timezone=settings["timezone"],
                input_text=settings["input_text"],
                file_id=settings["file_id"],
                overlap=settings["overlap"],
                catchup=settings["catchup"],
                enabled=settings["enabled"],
                priority=settings["priority"],
                next_fire_at=next_fire_at if settings["enabled"] else None,
            )
            if row is None:
                raise _write_refused(conn, schedule_id)
    except ForeignKeyViolation:
        check_run_input("", data.get("file_id"))  # the file was deleted meanwhile: 422 naming file_id
        raise
    return row


@bp.delete("/schedules/<schedule_id>")
@contract.operation("Delete a schedule (its runs are kept, their schedule_id null)", headers=(contract.IF_MATCH,))
@contract.responds(204, None, "Deleted.")
@contract.errors(404, 412, 503)
def delete_schedule(schedule_id: str) -> tuple[str, int]:
    """Delete a schedule; 204. Its runs are kept (their ``schedule_id`` becomes null). With ``If-Match``, only
    if unchanged since.

    :raise 404: unknown schedule.
    :raise 412: ``If-Match`` names a version that is no longer current (nothing deleted).
    """
    delete(parse_id(schedule_id, "Schedule"), expected_versions())
    return "", 204


def delete(schedule_id: uuid.UUID, versions: list[int] | None) -> None:
    """Delete ``schedule_id`` (its runs are kept) if its version is among ``versions`` (None: any).

    :raise NotFound: unknown schedule.
    :raise PreconditionFailed: its version is not among ``versions`` (nothing deleted).
    """
    with db.connection() as conn:
        if db.one(conn, "delete_schedule", schedule_id=schedule_id, expected_versions=versions) is None:
            raise _write_refused(conn, schedule_id)
