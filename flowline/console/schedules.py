"""Console pages for a workflow's schedules: add one from the workflow's page (with a preview of its next five fire
times, the API's own computation), edit it on a page of its own, pause or resume it, delete it after a
confirmation. Each action calls ``flowline.api.schedules``' operation, so the page refuses what the API refuses,
with its messages beside the fields."""

import functools
import zoneinfo
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from marshmallow import Schema, ValidationError
from werkzeug.datastructures import MultiDict

from ..api import schedules
from ..api.errors import PreconditionFailed, Unprocessable
from ..api.http import parse_id
from ..api.schemas import SCHEDULE_CATCHUPS, SCHEDULE_OVERLAPS, ScheduleCreateSchema, SchedulePatchSchema
from . import cron_words, forms
from .blueprint import bp
from .workflows import NEW_SCHEDULE, STALE, load_workflow, versions_of, workflow_page

_create_schema = ScheduleCreateSchema()
_patch_schema = SchedulePatchSchema()
# What a schedule's form holds, as its fields are named.
_FIELDS = ("cron", "timezone", "input_text", "overlap", "catchup")


@functools.cache
def time_zones() -> list[str]:
    """Return the IANA time zone names a schedule may use (the pinned tzdata's), sorted."""
    return sorted(zoneinfo.available_timezones())


@bp.app_template_filter("cron_words")
def cron_words_filter(expression: str, timezone: str) -> str | None:
    """Return a schedule's expression in words where that is unambiguous (cron_words.describe), else None."""
    return cron_words.describe(expression, timezone)


@bp.app_template_filter("zoned_time")
def zoned_time_filter(value: str) -> str:
    """Return the ISO 8601 time ``value`` as its own offset writes it: "Mon 14 Dec 2026, 09:00 (UTC+01:00)"."""
    when = datetime.fromisoformat(value)
    offset = when.strftime("%z")
    return f"{when:%a %d %b %Y, %H:%M} (UTC{offset[:3]}:{offset[3:]})"


@bp.app_context_processor
def schedule_form_context() -> dict[str, object]:
    """Return what the schedule form's template reads: the time zones and the policies' choices."""
    if request.blueprint != bp.name:
        return {}
    return {"time_zones": time_zones(), "overlaps": SCHEDULE_OVERLAPS, "catchups": SCHEDULE_CATCHUPS}


def _form_values(form: MultiDict[str, str]) -> dict[str, Any]:
    """Return the schedule form's values as typed (CRLF as LF; a field not sent: a new schedule's), for showing
    again and for loading."""
    values: dict[str, Any] = {name: form.get(name, NEW_SCHEDULE[name]) for name in _FIELDS}
    values["input_text"] = values["input_text"].replace("\r\n", "\n")
    values["enabled"] = "enabled" in form
    return values


def _load(schema: Schema, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Return ``(data, {})`` for form ``values`` that ``schema`` loads, else ``({}, errors by field)``; an empty
    time zone is UTC, the API's default."""
    given = {**values, "timezone": values["timezone"].strip() or "UTC"}
    try:
        return schema.load(given), {}
    except ValidationError as exc:
        return {}, forms.field_messages(exc)


def _check(operation: str, call: Callable[[], object]) -> dict[str, list[str]]:
    """Run ``call`` (a schedule operation); return {} or the errors it raised by field (the input's are
    ``input_text``'s)."""
    try:
        call()
    except ValidationError as exc:
        return forms.field_messages(exc)
    except Unprocessable as exc:
        return {"input_text": [f"{operation}: {exc.detail}"]}
    return {}


@bp.post("/workflows/<workflow_id>/schedules")
def add_schedule(workflow_id: str) -> ResponseReturnValue:
    """Add the form's schedule to the workflow (or, for ``action=preview``, show its next five fire times on the
    workflow's page); 422: the page with the API's errors beside the fields.

    :raise 404: unknown workflow.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    values = _form_values(request.form)
    data, errors = _load(_create_schema, values)
    if not errors and request.form.get("action") == "preview":
        preview = schedules.preview(data["cron"], data["timezone"])
        return workflow_page(workflow_uuid, schedule_form=values, schedule_preview=preview)
    errors = errors or _check("Not added", lambda: schedules.create(workflow_uuid, data))
    if errors:
        return workflow_page(workflow_uuid, 422, schedule_form=values, schedule_errors=errors)
    words = cron_words.describe(data["cron"], data["timezone"])
    flash(f"Schedule added: {words or data['cron']}" + ("." if data["enabled"] else " (paused)."))
    return redirect(url_for("console.workflow", workflow_id=workflow_uuid, _anchor="schedules"))


def _edit_page(schedule: dict[str, Any], values: dict[str, Any], status: int = 200, **extra: object) -> tuple[str, int]:
    """Return the edit page of ``schedule`` showing the form ``values``, with ``status``."""
    workflow = load_workflow(schedule["workflow_id"])
    return render_template(
        "console/schedule_form.html", workflow=workflow, schedule=schedule, values=values, **extra
    ), status


@bp.route("/schedules/<schedule_id>/edit", methods=["GET", "POST"])
def edit_schedule(schedule_id: str) -> ResponseReturnValue:
    """GET: a schedule's form; POST: preview its next fire times (``action=preview``) or save it (422: the form with
    the API's errors; 409: changed since), then back to the workflow's schedules.

    :raise 404: unknown schedule.
    """
    schedule_uuid = parse_id(schedule_id, "Schedule")
    schedule = schedules.get(schedule_uuid)
    if request.method == "GET":
        return _edit_page(schedule, {name: schedule[name] for name in (*_FIELDS, "enabled")})
    values = _form_values(request.form)
    data, errors = _load(_patch_schema, values)
    if not errors and request.form.get("action") == "preview":
        return _edit_page(schedule, values, preview=schedules.preview(data["cron"], data["timezone"]))
    try:
        errors = errors or _check(
            "Not saved", lambda: schedules.change(schedule_uuid, data, versions_of(request.form.get("version")))
        )
    except PreconditionFailed:
        return _edit_page(schedule, values, 409, stale=STALE)
    if errors:
        return _edit_page(schedule, values, 422, errors=errors)
    flash("Schedule saved.")
    return redirect(url_for("console.workflow", workflow_id=schedule["workflow_id"], _anchor="schedules"))


@bp.post("/schedules/<schedule_id>/enabled")
def pause_schedule(schedule_id: str) -> ResponseReturnValue:
    """Pause (``enabled=0``) or resume (``enabled=1``, from now on) a schedule (409: changed since); back to the
    workflow's schedules.

    :raise 404: unknown schedule.
    """
    schedule_uuid = parse_id(schedule_id, "Schedule")
    schedule = schedules.get(schedule_uuid)
    enabled = request.form.get("enabled") == "1"
    try:
        schedules.change(schedule_uuid, {"enabled": enabled}, versions_of(request.form.get("version")))
    except PreconditionFailed:
        return workflow_page(schedule["workflow_id"], 409, stale=STALE)
    flash("Schedule resumed: it fires from now on." if enabled else "Schedule paused: it fires no run until resumed.")
    return redirect(url_for("console.workflow", workflow_id=schedule["workflow_id"], _anchor="schedules"))


@bp.route("/schedules/<schedule_id>/delete", methods=["GET", "POST"])
def delete_schedule(schedule_id: str) -> ResponseReturnValue:
    """GET: the confirmation page; POST: delete the schedule (its runs are kept; 409: changed since), back to the
    workflow's schedules.

    :raise 404: unknown schedule.
    """
    schedule_uuid = parse_id(schedule_id, "Schedule")
    schedule = schedules.get(schedule_uuid)
    if request.method == "GET":
        workflow = load_workflow(schedule["workflow_id"])
        return render_template("console/confirm_delete_schedule.html", workflow=workflow, schedule=schedule)
    try:
        schedules.delete(schedule_uuid, versions_of(request.form.get("version")))
    except PreconditionFailed:
        return workflow_page(schedule["workflow_id"], 409, stale=STALE)
    flash(f"Schedule {schedule['cron']} deleted; its runs are kept.")
    return redirect(url_for("console.workflow", workflow_id=schedule["workflow_id"], _anchor="schedules"))
