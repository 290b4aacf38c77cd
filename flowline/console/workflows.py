"""Console pages for workflows and their nodes, and "Try it": each action calls the JSON API's operation
(``flowline.api.workflows``, ``nodes``, ``runs``, ``files``), so a page refuses what the API refuses, with its
messages, shown beside the fields they are about."""

import json
import uuid
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from .. import nodes as node_types
from ..api import files, nodes, runs, schedules, webhooks, workflows
from ..api.errors import ApiError, NotFound, PreconditionFailed
from ..api.http import parse_id, split_page
from ..api.schemas import QueueRunRequestSchema, RunRequestSchema, WorkflowCreateSchema, WorkflowPatchSchema
from ..core.statuses import WEBHOOK_EVENTS
from ..data import db
from . import forms
from .blueprint import bp

PAGE_SIZE = 25
# How many uploaded files the file pickers offer, newest first.
FILE_CHOICES = 100
_name_schema = WorkflowCreateSchema()
_run_schema = RunRequestSchema()
_queue_schema = QueueRunRequestSchema()
_limits_schema = WorkflowPatchSchema()
# The limits form's fields, in the order it shows them: the workflow fields PATCH /workflows/{id} takes besides name.
LIMIT_FIELDS = ("max_concurrent_runs", "max_concurrent_runs_per_key", "max_tokens_per_run")

# The add-a-schedule form before anything is typed (an empty time zone: the browser's, filled in by console.js; UTC
# without script).
NEW_SCHEDULE = {"cron": "", "timezone": "", "input_text": "", "overlap": "skip", "catchup": "last", "enabled": True}

STALE = (
    "This workflow changed in another tab or by another client since this page was loaded, so nothing was saved "
    "(nothing was overwritten). Reload to see its current state, then make your change again."
)


def versions_of(form_value: str | None) -> list[int]:
    """Return the If-Match versions a form's hidden ``version`` carries, as the API's If-Match would."""
    if form_value is None:
        return []
    try:
        return [int(form_value)]
    except ValueError:
        return []


def load_workflow(workflow_id: uuid.UUID) -> dict[str, Any]:
    """Return the workflow with its nodes, as GET /workflows/{id} answers it.

    :raise NotFound: unknown workflow.
    """
    with db.connection() as conn:
        row = db.one(conn, "get_workflow_json", workflow_id=workflow_id)
    if row is None:
        raise NotFound("Workflow not found")
    return json.loads(row["body"])


def _recent_files() -> list[dict[str, Any]]:
    """Return the newest uploaded files (up to FILE_CHOICES), what the file pickers offer."""
    with db.connection() as conn:
        return db.many(conn, "list_recent_files", row_limit=FILE_CHOICES)


def _schedules(workflow_id: uuid.UUID) -> list[dict[str, Any]]:
    """The workflow's schedules, each with its next fire times, its latest run's status and its version: one
    query."""
    with db.connection() as conn:
        rows = db.many(conn, "list_workflow_schedules_with_last_run", workflow_id=workflow_id)
    return [{**row, "next_fire_times": schedules.next_fire_times(row)} for row in rows]


def _name_errors(name: str) -> tuple[list[str], str]:
    """Return ``(errors, "")`` for a workflow name the API refuses, else ``([], the name as loaded)``."""
    try:
        return [], _name_schema.load({"name": name})["name"]
    except ValidationError as exc:
        return exc.messages_dict.get("name", ["Invalid name."]), ""


def _workflows_list(cursor: str | None, status: int = 200, **extra: object) -> tuple[str, int]:
    """Return the workflows page after ``cursor`` with ``status``, ``extra`` passed to its template.

    :raise Unprocessable: a cursor this service did not make.
    """
    page, next_cursor = split_page(workflows.page(cursor, PAGE_SIZE), PAGE_SIZE)
    return render_template(
        "console/workflows.html", workflows=page, next_cursor=next_cursor, first=cursor is None, **extra
    ), status


@bp.get("/", endpoint="workflows")
def workflow_list() -> ResponseReturnValue:
    """The console's home: the workflows, newest first, a page after ``cursor``, and the create form."""
    return _workflows_list(request.args.get("cursor"))


@bp.post("/workflows")
def create_workflow() -> ResponseReturnValue:
    """Create a workflow from the form's name; go to its page (422: the list with the name's errors)."""
    errors, name = _name_errors(request.form.get("name", ""))
    if errors:
        return _workflows_list(None, 422, name_errors=errors, name_value=request.form.get("name", ""))
    row = workflows.create(name)
    flash(f"Workflow “{name}” created.")
    return redirect(url_for("console.workflow", workflow_id=json.loads(row["body"])["id"]))


def workflow_page(workflow_id: uuid.UUID, status: int = 200, **extra: object) -> tuple[str, int]:
    """Return a workflow's page (nodes, schedules, Try it) with ``status``, ``extra`` passed to its template.

    :raise NotFound: unknown workflow.
    """
    workflow = load_workflow(workflow_id)
    context: dict[str, object] = {
        "workflow": workflow,
        "node_types": node_types.ALL,
        "files": _recent_files(),
        "schedules": _schedules(workflow_id),
        # Made when the page is rendered: a double click on "Queue" sends it twice and queues one run.
        "idempotency_key": uuid.uuid4().hex,
        "input_text": "",
        "schedule_form": NEW_SCHEDULE,
        "webhooks": webhooks.of_workflow(workflow_id),
        "webhook_events": WEBHOOK_EVENTS,
        "webhook_form": {"url": "", "events": WEBHOOK_EVENTS},
    }
    context.update(extra)
    return render_template("console/workflow.html", **context), status


@bp.get("/workflows/<workflow_id>")
def workflow(workflow_id: str) -> ResponseReturnValue:
    """One workflow's page.

    :raise 404: unknown workflow.
    """
    return workflow_page(parse_id(workflow_id, "Workflow"))[0]


@bp.post("/workflows/<workflow_id>/rename")
def rename_workflow(workflow_id: str) -> ResponseReturnValue:
    """Rename the workflow (if unchanged since its page was loaded: else 409 with the page); back to its page.

    :raise 404: unknown workflow.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    errors, name = _name_errors(request.form.get("name", ""))
    if errors:
        return workflow_page(workflow_uuid, 422, name_errors=errors, name_value=request.form.get("name", ""))
    try:
        workflows.rename(workflow_uuid, name, versions_of(request.form.get("version")))
    except PreconditionFailed:
        return workflow_page(workflow_uuid, 409, stale=STALE)
    flash(f"Renamed to “{name}”.")
    return redirect(url_for("console.workflow", workflow_id=workflow_uuid))


def _number_or_none(form: dict[str, str], name: str) -> int | float | str | None:
    """Return form field ``name`` as the JSON value a client would send: None when empty, else
    :func:`forms.form_number` of it (the number it spells, or its text, which the API's schema then refuses)."""
    text = form.get(name, "").strip()
    return forms.form_number(text, integer=True) if text else None


def _limits_of(form: dict[str, str]) -> dict[str, Any]:
    """Return the limits a submitted limits form sets, as PATCH /workflows/{id} would load them (an empty field:
    null, no limit).

    :raise ValidationError: the API's refusal, by field.
    """
    return _limits_schema.load({name: _number_or_none(form, name) for name in LIMIT_FIELDS})


@bp.post("/workflows/<workflow_id>/limits")
def set_limits(workflow_id: str) -> ResponseReturnValue:
    """Set the workflow's concurrency and token limits (if unchanged since its page was loaded: else 409 with the
    page); back to its page (422: the page with the API's messages beside their fields).

    :raise 404: unknown workflow.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    try:
        fields = _limits_of(request.form)
    except ValidationError as exc:
        return workflow_page(workflow_uuid, 422, limit_errors=exc.messages_dict, limit_values=request.form)
    try:
        workflows.change(workflow_uuid, fields, versions_of(request.form.get("version")))
    except PreconditionFailed:
        return workflow_page(workflow_uuid, 409, stale=STALE)
    flash("Limits saved.")
    return redirect(url_for("console.workflow", workflow_id=workflow_uuid, _anchor="limits"))


@bp.route("/workflows/<workflow_id>/delete", methods=["GET", "POST"])
def delete_workflow(workflow_id: str) -> ResponseReturnValue:
    """GET: the confirmation page; POST: delete the workflow and its runs (409 when changed since), then home.

    :raise 404: unknown workflow.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    workflow = load_workflow(workflow_uuid)
    if request.method == "GET":
        return render_template("console/confirm_delete_workflow.html", workflow=workflow)
    try:
        workflows.delete(workflow_uuid, versions_of(request.form.get("version")))
    except PreconditionFailed:
        return workflow_page(workflow_uuid, 409, stale=STALE)
    flash(f"Workflow “{workflow['name']}” deleted, with its runs.")
    return redirect(url_for("console.workflows"))


def _node_type(name: str) -> str:
    """Return ``name``, a node type's.

    :raise ApiError: an unknown node type.
    """
    if name not in node_types.BY_NAME:
        raise ApiError(f"Unknown node type {name!r}: one of {', '.join(node_types.NAMES)}.")
    return name


def _node_form(
    workflow: dict[str, Any],
    node_type: str,
    config: dict[str, Any],
    *,
    node: dict[str, Any] | None = None,
    errors: dict[str, Any] | None = None,
    stale: str | None = None,
    status: int = 200,
) -> tuple[str, int]:
    """Return the form of a node of ``node_type`` (a new one, or ``node``) showing ``config`` and ``errors``, with ``status``."""
    return render_template(
        "console/node_form.html",
        workflow=workflow,
        node=node,
        node_type=node_types.BY_NAME[node_type],
        fields=forms.form_fields(node_type, config, errors),
        ignored=forms.ignored_keys(node_type, config),
        files=_recent_files(),
        errors=errors or {},
        stale=stale,
    ), status


@bp.get("/workflows/<workflow_id>/nodes/new")
def new_node(workflow_id: str) -> ResponseReturnValue:
    """The form of a new node of the type ``type``.

    :raise 404: unknown workflow.
    :raise 400: an unknown node type.
    """
    workflow = load_workflow(parse_id(workflow_id, "Workflow"))
    return _node_form(workflow, _node_type(request.args.get("type", "")), {})


@bp.post("/workflows/<workflow_id>/nodes")
def add_node(workflow_id: str) -> ResponseReturnValue:
    """Add the form's node at the end (422: the form with the API's errors; 409: changed since); back to the workflow.

    :raise 404: unknown workflow.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    node_type = _node_type(request.form.get("node_type", ""))
    config = forms.config_from_form(node_type, request.form)
    try:
        node, _ = nodes.add(workflow_uuid, node_type, config, versions_of(request.form.get("version")))
    except ValidationError as exc:
        return _node_form(
            load_workflow(workflow_uuid), node_type, config, errors=exc.messages_dict.get("config", {}), status=422
        )
    except PreconditionFailed:
        return _node_form(load_workflow(workflow_uuid), node_type, config, stale=STALE, status=409)
    flash(f"{node_type} node added at position {node['position'] + 1}.")
    return redirect(url_for("console.workflow", workflow_id=workflow_uuid))


def _find_node(workflow: dict[str, Any], node_id: uuid.UUID) -> dict[str, Any]:
    """Return the node ``node_id`` of ``workflow``.

    :raise NotFound: the workflow has no such node.
    """
    for node in workflow["nodes"]:
        if node["id"] == str(node_id):
            return node
    raise NotFound("Node not found")


@bp.get("/workflows/<workflow_id>/nodes/<node_id>/edit")
def edit_node(workflow_id: str, node_id: str) -> ResponseReturnValue:
    """The form of a node, showing its config.

    :raise 404: unknown workflow or node.
    """
    workflow = load_workflow(parse_id(workflow_id, "Workflow"))
    node = _find_node(workflow, parse_id(node_id, "Node"))
    return _node_form(workflow, node["node_type"], node["config"], node=node)


@bp.post("/workflows/<workflow_id>/nodes/<node_id>/edit")
def change_node(workflow_id: str, node_id: str) -> ResponseReturnValue:
    """Save the form's config of a node (422: the form with the API's errors; 409: changed since); back to the workflow.

    :raise 404: unknown workflow or node.
    """
    workflow_uuid, node_uuid = parse_id(workflow_id, "Workflow"), parse_id(node_id, "Node")
    workflow = load_workflow(workflow_uuid)
    node = _find_node(workflow, node_uuid)
    config = forms.config_from_form(node["node_type"], request.form, stored=node["config"])
    try:
        nodes.change(workflow_uuid, node_uuid, None, config, versions_of(request.form.get("version")))
    except ValidationError as exc:
        errors = exc.messages_dict.get("config", {})
        return _node_form(workflow, node["node_type"], config, node=node, errors=errors, status=422)
    except PreconditionFailed:
        return _node_form(workflow, node["node_type"], config, node=node, stale=STALE, status=409)
    flash(f"Node {node['position'] + 1} ({node['node_type']}) saved.")
    return redirect(url_for("console.workflow", workflow_id=workflow_uuid))


@bp.post("/workflows/<workflow_id>/nodes/<node_id>/move")
def move_node(workflow_id: str, node_id: str) -> ResponseReturnValue:
    """Move a node one place up or down (409: changed since); back to the workflow's nodes.

    :raise 404: unknown workflow or node.
    """
    workflow_uuid, node_uuid = parse_id(workflow_id, "Workflow"), parse_id(node_id, "Node")
    workflow = load_workflow(workflow_uuid)
    order = [node["id"] for node in workflow["nodes"]]
    at = order.index(_find_node(workflow, node_uuid)["id"])
    to = at - 1 if request.form.get("direction") == "up" else at + 1
    if 0 <= to < len(order):
        order[at], order[to] = order[to], order[at]
        try:
            nodes.reorder(workflow_uuid, [uuid.UUID(n) for n in order], versions_of(request.form.get("version")))
        except PreconditionFailed:
            return workflow_page(workflow_uuid, 409, stale=STALE)
    return redirect(url_for("console.workflow", workflow_id=workflow_uuid, _anchor="nodes"))


@bp.route("/workflows/<workflow_id>/nodes/<node_id>/delete", methods=["GET", "POST"])
def delete_node(workflow_id: str, node_id: str) -> ResponseReturnValue:
    """GET: the confirmation page; POST: delete the node (409: changed since), back to the workflow's nodes.

    :raise 404: unknown workflow or node.
    """
    workflow_uuid, node_uuid = parse_id(workflow_id, "Workflow"), parse_id(node_id, "Node")
    workflow = load_workflow(workflow_uuid)
    node = _find_node(workflow, node_uuid)
    if request.method == "GET":
        return render_template("console/confirm_delete_node.html", workflow=workflow, node=node)
    try:
        nodes.delete(workflow_uuid, node_uuid, versions_of(request.form.get("version")))
    except PreconditionFailed:
        return workflow_page(workflow_uuid, 409, stale=STALE)
    flash(f"Node {node['position'] + 1} ({node['node_type']}) deleted.")
    return redirect(url_for("console.workflow", workflow_id=workflow_uuid, _anchor="nodes"))


def _run_input() -> tuple[str, uuid.UUID | None]:
    """Return ``(input_text, file_id)`` of a submitted "Try it" form, storing its uploaded PDF first (if any).

    :raise ApiError: what the API would answer for this input (with ``field`` saying where it belongs).
    """
    input_text = request.form.get("input_text", "").replace("\r\n", "\n")
    upload = request.files.get("file")
    file_id = request.form.get("file_id") or None
    if upload is not None and upload.filename:
        stored = files.store_pdf(upload.filename, upload.mimetype, files.read_upload(upload))
        file_id = json.loads(stored["body"])["file_id"]
    try:
        data = _run_schema.load({"input_text": input_text, "file_id": file_id})
        runs.check_run_input(data["input_text"], data["file_id"])
    except ValidationError as exc:
        messages = exc.normalized_messages()
        raise ApiError("; ".join(f"{key}: {' '.join(map(str, value))}" for key, value in messages.items())) from None
    return data["input_text"], data["file_id"]


def _where_it_queues(form: dict[str, str]) -> dict[str, Any]:
    """Return the ``concurrency_key`` and ``priority`` a "Queue" submit asks for, as POST /workflows/{id}/runs
    would load them (empty fields: no key, priority 0).

    :raise ValidationError: the API's refusal, by field.
    """
    body: dict[str, Any] = {}
    if form.get("concurrency_key", ""):
        body["concurrency_key"] = form["concurrency_key"]
    priority = _number_or_none(form, "priority")
    if priority is not None:
        body["priority"] = priority
    data = _queue_schema.load(body)
    return {"concurrency_key": data["concurrency_key"], "priority": data.get("priority", 0)}


@bp.post("/workflows/<workflow_id>/try")
def try_workflow(workflow_id: str) -> ResponseReturnValue:
    """Try the workflow on the form's input: run it now and show the outcome on its page, or queue it and go to
    the run's page (the page with the API's refusal when the input is refused).

    :raise 404: unknown workflow.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    try:
        input_text, file_id = _run_input()
        key = runs.check_idempotency_key(request.form.get("idempotency_key") or None)
    except ApiError as exc:
        return workflow_page(workflow_uuid, exc.status, try_error=exc.detail, input_text=request.form.get("input_text"))
    if request.form.get("action") == "queue":
        try:
            where = _where_it_queues(request.form)
        except ValidationError as exc:
            return workflow_page(
                workflow_uuid,
                422,
                queue_errors=exc.messages_dict,
                queue_values=request.form,
                input_text=request.form.get("input_text"),
            )
        run_id, _ = runs.enqueue(workflow_uuid, input_text, file_id, key, **where)
        return redirect(url_for("console.run", run_id=run_id))
    run_id, outcome = runs.run_now(workflow_uuid, input_text, file_id)
    return workflow_page(
        workflow_uuid,
        200 if outcome.error is None else outcome.error.http_status,
        input_text=input_text,
        result={
            "run_id": str(run_id),
            "status": outcome.status,
            "output": outcome.final_output,
            "error": str(outcome.error) if outcome.error else None,
        },
    )
