"""Webhooks: a workflow's subscriptions to its runs' final statuses (create, list, read, change, delete, rotate
the signing secret), a subscription's delivery history, and sending a delivery again.

A subscription's secret is answered once, when it is created (or rotated), and never again: not in a read, a
list, a log line, a metric or an export. The deliveries themselves are written by the database (the trigger of
migration 0009) and sent by the workers (flowline/worker/webhooks.py).
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, jsonify
from psycopg import Connection
from psycopg.errors import ForeignKeyViolation

from ..core.statuses import DeliveryStatus
from ..core.webhook_signing import new_secret
from ..data import db
from . import contract, schemas
from .errors import ApiError, Conflict, NotFound
from .http import (
    DEFAULT_PAGE_SIZE,
    decode_cursor,
    etag,
    expected_versions,
    load_json,
    load_query,
    page_response,
    parse_id,
    precondition_failed,
    rows_of_workflow,
)

bp = Blueprint("webhooks", __name__)

_create_schema = schemas.WebhookCreateSchema()
_patch_schema = schemas.WebhookPatchSchema()
_page_schema = schemas.PageQuerySchema()

# How long a rotated-out secret goes on signing beside the new one: receivers have a day to switch.
ROTATION_OVERLAP_S = 24 * 3600


def _webhook_response(row: dict[str, Any], status: int = 200, **extra: str) -> Response:
    response = jsonify({**row, **extra})
    response.status_code = status
    response.headers["ETag"] = etag(row["version"])
    return response


def _write_refused(conn: Connection, webhook_id: uuid.UUID) -> ApiError:
    """Return the error for a conditional write to ``webhook_id`` that changed nothing: 404 or 412."""
    row = db.one(conn, "get_webhook", webhook_id=webhook_id)
    return NotFound("Webhook not found") if row is None else precondition_failed(row["version"])


@bp.post("/workflows/<workflow_id>/webhooks")
@contract.operation(
    "Subscribe a URL to a workflow's run.succeeded, run.failed, run.cancelled events (signed Standard Webhooks)",
    body=schemas.WebhookCreateSchema,
)
@contract.responds(
    201, schemas.WebhookCreatedSchema, "The subscription, with its secret (shown only here).", "ETag", "Location"
)
@contract.errors(400, 404, 413, 415, 422, 503)
def create_webhook(workflow_id: str) -> Response:
    """Subscribe ``url`` to a workflow's ``events`` (default: all three); 201 with the subscription and its
    ``secret``, the only time it is shown.

    :raise 404: unknown workflow.
    :raise 422: a URL that is not http(s), has no host or has a user:password part; an unknown event.
    """
    row, secret = create(parse_id(workflow_id, "Workflow"), load_json(_create_schema))
    response = _webhook_response(row, 201, secret=secret)
    response.headers["Location"] = f"/webhooks/{row['id']}"
    return response


def create(workflow_id: uuid.UUID, data: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Subscribe ``data``'s url to its events (loaded by WebhookCreateSchema) of ``workflow_id``; return the
    subscription's row and its secret (to be shown once, there).

    :raise NotFound: unknown workflow.
    """
    secret = new_secret()
    try:
        with db.connection() as conn:
            row = db.one(
                conn,
                "create_webhook",
                workflow_id=workflow_id,
                url=data["url"],
                events=data["events"],
                enabled=data["enabled"],
                secret=secret,
            )
    except ForeignKeyViolation:
        row = None  # the workflow was deleted meanwhile
    if row is None:
        raise NotFound("Workflow not found")
    return row, secret


@bp.get("/workflows/<workflow_id>/webhooks")
@contract.operation("A workflow's webhook subscriptions, newest first (never their secrets)")
@contract.responds(200, schemas.WebhookListSchema, "The subscriptions.")
@contract.errors(404, 503)
def list_webhooks(workflow_id: str) -> Response:
    """Return ``{webhooks: [...]}``, a workflow's subscriptions, newest first (without their secrets).

    :raise 404: unknown workflow.
    """
    return jsonify({"webhooks": of_workflow(parse_id(workflow_id, "Workflow"))})


def of_workflow(workflow_id: uuid.UUID) -> list[dict[str, Any]]:
    """Return the subscriptions of ``workflow_id``, newest first (without their secrets).

    :raise NotFound: unknown workflow.
    """
    with db.connection() as conn:
        return rows_of_workflow(conn, workflow_id, db.many(conn, "list_workflow_webhooks", workflow_id=workflow_id))


@bp.get("/webhooks/<webhook_id>")
@contract.operation("Read a webhook subscription (never its secret)")
@contract.responds(200, schemas.WebhookSchema, "The subscription.", "ETag")
@contract.errors(404, 503)
def get_webhook(webhook_id: str) -> Response:
    """Return one subscription (without its secret), with its version as ``ETag``.

    :raise 404: unknown subscription.
    """
    return _webhook_response(get(parse_id(webhook_id, "Webhook")))


def get(webhook_id: uuid.UUID) -> dict[str, Any]:
    """Return the subscription ``webhook_id`` (without its secret).

    :raise NotFound: unknown subscription.
    """
    with db.connection() as conn:
        row = db.one(conn, "get_webhook", webhook_id=webhook_id)
    if row is None:
        raise NotFound("Webhook not found")
    return row


@bp.patch("/webhooks/<webhook_id>")
@contract.operation(
    "Change a subscription's url, events or enabled", headers=(contract.IF_MATCH,), body=schemas.WebhookPatchSchema
)
@contract.responds(200, schemas.WebhookSchema, "The changed subscription.", "ETag")
@contract.errors(400, 404, 412, 413, 415, 422, 503)
def update_webhook(webhook_id: str) -> Response:
    """Change a subscription's ``url``, ``events`` or ``enabled``; 200 with it and its new ``ETag``. With
    ``If-Match``, only if unchanged since. Enabling clears ``disabled_reason``.

    :raise 404: unknown subscription.
    :raise 412: ``If-Match`` names a version that is no longer current (nothing changed).
    :raise 422: nothing to change, or an invalid url or event.
    """
    return _webhook_response(change(parse_id(webhook_id, "Webhook"), load_json(_patch_schema), expected_versions()))


def change(webhook_id: uuid.UUID, data: dict[str, Any], versions: list[int] | None) -> dict[str, Any]:
    """Change what ``data`` names (loaded by WebhookPatchSchema) of ``webhook_id`` if its version is among
    ``versions`` (None: any); return its row.

    :raise NotFound: unknown subscription.
    :raise PreconditionFailed: its version is not among ``versions`` (nothing changed).
    """
    with db.connection() as conn:
        row = db.one(
            conn,
            "update_webhook",
            webhook_id=webhook_id,
            expected_versions=versions,
            set_url="url" in data,
            url=data.get("url"),
            set_events="events" in data,
            events=data.get("events"),
            set_enabled="enabled" in data,
            enabled=data.get("enabled"),
        )
        if row is None:
            raise _write_refused(conn, webhook_id)
    return row


@bp.delete("/webhooks/<webhook_id>")
@contract.operation("Delete a subscription and its delivery history", headers=(contract.IF_MATCH,))
@contract.responds(204, None, "Deleted.")
@contract.errors(404, 412, 503)
def delete_webhook(webhook_id: str) -> tuple[str, int]:
    """Delete a subscription and its delivery history; 204. With ``If-Match``, only if unchanged since.

    :raise 404: unknown subscription.
    :raise 412: ``If-Match`` names a version that is no longer current (nothing deleted).
    """
    delete(parse_id(webhook_id, "Webhook"), expected_versions())
    return "", 204


def delete(webhook_id: uuid.UUID, versions: list[int] | None) -> None:
    """Delete ``webhook_id`` and its deliveries if its version is among ``versions`` (None: any).

    :raise NotFound: unknown subscription.
    :raise PreconditionFailed: its version is not among ``versions`` (nothing deleted).
    """
    with db.connection() as conn:
        if db.one(conn, "delete_webhook", webhook_id=webhook_id, expected_versions=versions) is None:
            raise _write_refused(conn, webhook_id)


@bp.post("/webhooks/<webhook_id>/rotate-secret")
@contract.operation(
    "Give a subscription a new secret; the old one goes on signing beside it for 24 hours",
    headers=(contract.IF_MATCH,),
)
@contract.responds(200, schemas.WebhookRotatedSchema, "The new secret (shown only here).", "ETag")
@contract.errors(404, 412, 503)
def rotate_secret(webhook_id: str) -> Response:
    """Give a subscription a new signing secret; 200 with it (shown only here). For 24 hours deliveries carry
    both signatures (``v1,<new> v1,<old>``), so receivers can switch without losing one. With ``If-Match``, only
    if unchanged since.

    :raise 404: unknown subscription.
    :raise 412: ``If-Match`` names a version that is no longer current (nothing changed).
    """
    row, secret = rotate(parse_id(webhook_id, "Webhook"), expected_versions())
    return _webhook_response(row, secret=secret)


def rotate(webhook_id: uuid.UUID, versions: list[int] | None) -> tuple[dict[str, Any], str]:
    """Give ``webhook_id`` a new secret if its version is among ``versions`` (None: any); return its row (with
    ``previous_secret_expires_at``) and the new secret (to be shown once, there).

    :raise NotFound: unknown subscription.
    :raise PreconditionFailed: its version is not among ``versions`` (nothing changed).
    """
    secret = new_secret()
    with db.connection() as conn:
        row = db.one(
            conn,
            "rotate_webhook_secret",
            webhook_id=webhook_id,
            secret=secret,
            overlap_seconds=ROTATION_OVERLAP_S,
            expected_versions=versions,
        )
        if row is None:
            raise _write_refused(conn, webhook_id)
    return row, secret


@bp.get("/webhooks/<webhook_id>/deliveries")
@contract.operation(
    "A subscription's deliveries, newest first, with every attempt (keyset pagination)",
    query=schemas.PageQuerySchema,
)
@contract.responds(200, schemas.DeliveryPageSchema, "One page of deliveries.")
@contract.errors(404, 422, 503)
def list_deliveries(webhook_id: str) -> Response:
    """Return ``{deliveries: [...], next_cursor}``, a subscription's deliveries newest first, each with its
    status, attempts, last answer and latency, next attempt and every attempt's record; ``limit`` 1..200
    (default 50), ``cursor`` from the previous page.

    :raise 404: unknown subscription.
    :raise 422: a limit out of range, a cursor this service did not make, an unknown parameter.
    """
    query = load_query(_page_schema)
    limit = query.get("limit", DEFAULT_PAGE_SIZE)
    return page_response("deliveries", deliveries(parse_id(webhook_id, "Webhook"), query.get("cursor"), limit), limit)


def deliveries(webhook_id: uuid.UUID, cursor: str | None, limit: int) -> list[dict[str, Any]]:
    """Return up to ``limit + 1`` deliveries of ``webhook_id``, newest first, after ``cursor`` (None: from the
    newest), each with every attempt; one more than the page tells whether another page follows.

    :raise NotFound: unknown subscription.
    :raise Unprocessable: a cursor this service did not make.
    """
    after_created_at, after_id = decode_cursor(cursor)
    with db.connection() as conn:
        rows = db.many(
            conn,
            "list_webhook_deliveries_page",
            webhook_id=webhook_id,
            after_created_at=after_created_at,
            after_id=after_id,
            row_limit=limit + 1,
        )
        if not rows and db.one(conn, "get_webhook", webhook_id=webhook_id) is None:
            raise NotFound("Webhook not found")
    return rows


@bp.post("/deliveries/<delivery_id>/retry")
@contract.operation("Send a delivery again now (it keeps its webhook-id)")
@contract.responds(202, schemas.DeliveryRetriedSchema, "Due now.")
@contract.errors(404, 409, 503)
def retry_delivery(delivery_id: str) -> Response:
    """Send a delivery again now (Pending, due at once; also a Delivered or Dead one: it keeps its webhook-id);
    202 ``{delivery_id, status: "Pending"}``.

    :raise 404: unknown delivery.
    :raise 409: an attempt is in flight, or the subscription is disabled (enable it first).
    """
    response = jsonify({"delivery_id": retry(parse_id(delivery_id, "Delivery")), "status": DeliveryStatus.PENDING})
    response.status_code = 202
    return response


def retry(delivery_id: uuid.UUID) -> uuid.UUID:
    """Make ``delivery_id`` due now (Pending; it keeps its webhook-id); return its id.

    :raise NotFound: unknown delivery.
    :raise Conflict: an attempt is in flight, or the subscription is disabled.
    """
    with db.connection() as conn:
        row = db.one(conn, "retry_webhook_delivery", delivery_id=delivery_id)
    if row is None:
        raise NotFound("Delivery not found")
    if not row["enabled"]:
        raise Conflict("The subscription is disabled: enable it (PATCH /webhooks/{id} enabled=true) first.")
    if not row["retried"]:
        raise Conflict("An attempt of this delivery is in flight; its outcome is recorded shortly.")
    return row["id"]
