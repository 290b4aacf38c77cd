"""Console pages for a workflow's webhook subscriptions: subscribe from the workflow's page (the secret is shown
once, on the page that answers), and a page per subscription with its deliveries newest first in keyset pages,
each with its attempts, "Retry now", enable or disable, rotate the secret, delete. Each action calls
``flowline.api.webhooks``' operation; what a receiver answered is shown as text (cut by the worker, escaped here).

Queries per subscription page, whatever the number of deliveries: 3 (``get_webhook``,
``list_webhook_deliveries_page``, ``get_workflow_json`` for its name; a page without deliveries checks the
subscription once more)."""

import hashlib
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from ..api import webhooks
from ..api.errors import PreconditionFailed
from ..api.http import parse_id, split_page
from ..api.schemas import WebhookCreateSchema
from ..api.webhooks import ROTATION_OVERLAP_S
from ..core.statuses import DeliveryStatus
from . import forms
from .blueprint import bp
from .runs import REFRESH_S
from .workflows import STALE, load_workflow, versions_of, workflow_page

PAGE_SIZE = 25
_create_schema = WebhookCreateSchema()
# A delivery not yet settled: the page checks for its outcome.
_UNSETTLED = frozenset({DeliveryStatus.PENDING, DeliveryStatus.DELIVERING})


@bp.post("/workflows/<workflow_id>/webhooks")
def add_webhook(workflow_id: str) -> ResponseReturnValue:
    """Subscribe the form's URL to its events; 201 with the subscription's page showing its secret, this once
    (422: the workflow's page with the API's errors beside the fields).

    :raise 404: unknown workflow.
    """
    workflow_uuid = parse_id(workflow_id, "Workflow")
    values = {"url": request.form.get("url", "").strip(), "events": request.form.getlist("events")}
    try:
        data = _create_schema.load(values)
    except ValidationError as exc:
        errors = forms.field_messages(exc)
        return workflow_page(workflow_uuid, 422, webhook_form=values, webhook_errors=errors)
    row, secret = webhooks.create(workflow_uuid, data)
    return _webhook_page(row, None, 201, secret=secret)


def _attempts_key(deliveries: list[dict[str, Any]]) -> str | None:
    """Return what the page's checking compares while a shown delivery is unsettled (None: nothing to wait for)."""
    if not any(d["status"] in _UNSETTLED for d in deliveries):
        return None
    seen = ",".join(f"{d['id']}:{d['status']}:{d['attempts']}" for d in deliveries)
    return hashlib.sha256(seen.encode()).hexdigest()[:16]


def _retryable(delivery: dict[str, Any]) -> bool:
    """Return whether ``delivery`` is offered "Retry now": Dead, or failed and waiting for its next attempt."""
    status = delivery["status"]
    return status == DeliveryStatus.DEAD or (status == DeliveryStatus.PENDING and delivery["attempts"] > 0)


def _webhook_page(webhook: dict[str, Any], cursor: str | None, status: int = 200, **extra: object) -> tuple[str, int]:
    """Return a subscription's page: its deliveries after ``cursor`` (None: the newest), with ``status``.

    :raise Unprocessable: a cursor this service did not make.
    """
    rows, next_cursor = split_page(webhooks.deliveries(webhook["id"], cursor, PAGE_SIZE), PAGE_SIZE)
    shown = [
        {**row, "delivered": row["status"] == DeliveryStatus.DELIVERED, "retryable": _retryable(row)} for row in rows
    ]
    workflow = load_workflow(webhook["workflow_id"])
    return render_template(
        "console/webhook.html",
        workflow=workflow,
        webhook=webhook,
        deliveries=shown,
        next_cursor=next_cursor,
        first=cursor is None,
        poll_key=_attempts_key(rows),
        refresh_s=REFRESH_S,
        overlap_hours=ROTATION_OVERLAP_S // 3600,
        **extra,
    ), status


@bp.get("/webhooks/<webhook_id>")
def webhook(webhook_id: str) -> ResponseReturnValue:
    """A subscription's page: its settings and its deliveries, newest first, a page after ``cursor``.

    :raise 404: unknown subscription.
    :raise 422: a cursor this service did not make.
    """
    row = webhooks.get(parse_id(webhook_id, "Webhook"))
    return _webhook_page(row, request.args.get("cursor") or None)


@bp.post("/webhooks/<webhook_id>/enabled")
def enable_webhook(webhook_id: str) -> ResponseReturnValue:
    """Enable (``enabled=1``) or disable (``enabled=0``) a subscription (409: changed since); back to its page.

    :raise 404: unknown subscription.
    """
    webhook_uuid = parse_id(webhook_id, "Webhook")
    enabled = request.form.get("enabled") == "1"
    try:
        webhooks.change(webhook_uuid, {"enabled": enabled}, versions_of(request.form.get("version")))
    except PreconditionFailed:
        return _webhook_page(webhooks.get(webhook_uuid), None, 409, stale=STALE)
    flash("Subscription enabled." if enabled else "Subscription disabled: runs that finish get no delivery.")
    return redirect(url_for("console.webhook", webhook_id=webhook_uuid))


@bp.post("/webhooks/<webhook_id>/rotate")
def rotate_webhook_secret(webhook_id: str) -> ResponseReturnValue:
    """Give a subscription a new secret; its page showing it, this once (409: changed since).

    :raise 404: unknown subscription.
    """
    webhook_uuid = parse_id(webhook_id, "Webhook")
    try:
        row, secret = webhooks.rotate(webhook_uuid, versions_of(request.form.get("version")))
    except PreconditionFailed:
        return _webhook_page(webhooks.get(webhook_uuid), None, 409, stale=STALE)
    return _webhook_page(row, None, secret=secret, previous_until=row["previous_secret_expires_at"])


@bp.route("/webhooks/<webhook_id>/delete", methods=["GET", "POST"])
def delete_webhook(webhook_id: str) -> ResponseReturnValue:
    """GET: the confirmation page; POST: delete the subscription and its deliveries (409: changed since), back to
    the workflow's webhooks.

    :raise 404: unknown subscription.
    """
    webhook_uuid = parse_id(webhook_id, "Webhook")
    row = webhooks.get(webhook_uuid)
    if request.method == "GET":
        workflow = load_workflow(row["workflow_id"])
        return render_template("console/confirm_delete_webhook.html", workflow=workflow, webhook=row)
    try:
        webhooks.delete(webhook_uuid, versions_of(request.form.get("version")))
    except PreconditionFailed:
        return _webhook_page(row, None, 409, stale=STALE)
    flash(f"Subscription of {row['url']} deleted, with its deliveries.")
    return redirect(url_for("console.workflow", workflow_id=row["workflow_id"], _anchor="webhooks"))


@bp.post("/webhooks/<webhook_id>/deliveries/<delivery_id>/retry")
def retry_delivery(webhook_id: str, delivery_id: str) -> ResponseReturnValue:
    """Send a delivery again now; back to its subscription's page.

    :raise 404: unknown subscription or delivery.
    :raise 409: an attempt is in flight, or the subscription is disabled.
    """
    webhook_uuid = parse_id(webhook_id, "Webhook")
    retried = webhooks.retry(parse_id(delivery_id, "Delivery"))
    flash(f"Delivery {retried} is due now: its outcome shows here shortly.")
    return redirect(url_for("console.webhook", webhook_id=webhook_uuid, _anchor=f"delivery-{retried}"))
