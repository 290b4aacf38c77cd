"""Request and response helpers shared by the blueprints."""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Response, current_app, jsonify, request
from marshmallow import Schema, ValidationError
from psycopg import Connection

from ..data import db
from .errors import ApiError, NotFound, PreconditionFailed, Unprocessable, UnsupportedMediaType, body_too_large

# The one spelling of an id in a URL, the one Flowline sends: lowercase hex, hyphenated (36 characters).
CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_id(value: str, what: str) -> uuid.UUID:
    """Return ``value``, an id in a URL, as a UUID; anything but its canonical spelling is a 404 like any unknown
    id, so each resource has one URL (no hyphenless, ``urn:uuid:``, braced or uppercase aliases).

    :raise NotFound: "<what> not found".
    """
    if not CANONICAL_ID.fullmatch(value):
        raise NotFound(f"{what} not found")
    return uuid.UUID(value)


# The shape of any JSON body a client may send. Flowline's own bodies nest three levels deep at most and hold at
# most the ~10,000 node ids of a reorder; past these bounds a body is refused before its schema sees it, so a
# hostile body cannot make validation slow or its list of errors huge (2 million bad list items took 20 s and
# made 67 MB of 422 errors), and a deep one cannot exhaust the parser's recursion or PostgreSQL's stack.
MAX_JSON_DEPTH = 32
MAX_JSON_VALUES = 20_000


def _shape_problem(data: dict[str, Any]) -> str | None:
    """Return why ``data`` (a parsed JSON body) is nested too deep or holds too many values, or None."""
    values = 0
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        values += len(children)
        if values > MAX_JSON_VALUES:
            return f"The request body holds more than {MAX_JSON_VALUES} JSON values."
        for child in children:
            if isinstance(child, (dict, list)):
                if depth >= MAX_JSON_DEPTH:
                    return f"The request body is nested more than {MAX_JSON_DEPTH} levels deep."
                stack.append((child, depth + 1))
    return None


def _body() -> bytes:
    """Return the request body, at most ``request.max_content_length`` (MAX_JSON_KB) bytes.

    :raise ApiError: 413 past the limit: refused unread when ``Content-Length`` says so.
    """
    limit = request.max_content_length
    if limit is not None and (request.content_length or 0) > limit:
        raise body_too_large(limit)
    raw = request.get_data(cache=True)
    # A body without Content-Length (chunked) is cut at the limit by werkzeug without a word: whether more
    # followed only the server's input stream can tell.
    if (
        limit is not None
        and request.content_length is None
        and len(raw) >= limit
        and request.environ["wsgi.input"].read(1)
    ):
        raise body_too_large(limit)
    return raw


def load_json(schema: Schema, *, optional: bool = False) -> dict[str, Any]:
    """Return the request's JSON body loaded by ``schema``.

    An empty body counts as ``{}`` when ``optional`` (so ``POST /workflows/{id}/run`` needs no body).

    :raise ApiError: 413 for a body over MAX_JSON_KB (refused unread when ``Content-Length`` says so); 400 for
        malformed JSON, naming where it broke.
    :raise UnsupportedMediaType: a body that is not declared ``application/json``.
    :raise Unprocessable: a missing body (when not optional), a body that is not a JSON object, or one nested
        deeper than MAX_JSON_DEPTH or holding more than MAX_JSON_VALUES values.
    :raise marshmallow.ValidationError: invalid fields (mapped to 422 with ``errors``).
    """
    raw = _body()
    if not raw:
        if optional:
            return schema.load({})
        raise Unprocessable("A JSON object body is required.")
    if not request.is_json:
        raise UnsupportedMediaType("Content-Type must be application/json.")
    try:
        data = current_app.json.loads(raw)
    except RecursionError:
        # The parser's own guard, hit near 1,000 levels: well past MAX_JSON_DEPTH.
        raise Unprocessable(f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.") from None
    except ValueError as exc:
        raise ApiError(f"The request body is not valid JSON: {exc}.") from None
    if data is None and optional:
        data = {}
    if not isinstance(data, dict):
        raise Unprocessable("The request body must be a JSON object.")
    problem = _shape_problem(data)
    if problem:
        raise Unprocessable(problem)
    return schema.load(data)


def json_body_response(body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Return ``body``, JSON text built by PostgreSQL, as the response (no parse and re-serialise in Python)."""
    return Response(body, status=status, headers=headers, mimetype="application/json")


def query_json_response(query_name: str, not_found: str, /, **params: Any) -> Response:
    """Serve the JSON body the ``:one`` query ``query_name`` built (its ``body`` column), with its ``version``
    column, when it has one, as the ``ETag``.

    :raise NotFound: ``not_found`` when the query returned no row.
    """
    with db.connection() as conn:
        row = db.one(conn, query_name, **params)
    if row is None:
        raise NotFound(not_found)
    return row_json_response(row)


def etag(version: int) -> str:
    """Return the ETag of a row at ``version``: what reads send and If-Match (expected_versions) sends back."""
    return f'"{version}"'


def row_json_response(row: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Serve ``row["body"]``, JSON text PostgreSQL built, with ``row["version"]`` (when present) as the ETag."""
    headers = dict(headers or {})
    if "version" in row:
        headers["ETag"] = etag(row["version"])
    return json_body_response(row["body"], status=status, headers=headers)


def load_query(schema: Schema) -> dict[str, Any]:
    """Return the query string loaded by ``schema`` (unknown parameters are a 422, like unknown body fields)."""
    try:
        return schema.load(request.args.to_dict())
    except ValidationError as exc:
        raise Unprocessable("The query string is invalid; see 'errors'.", errors=exc.normalized_messages()) from None


def encode_cursor(row: Mapping[str, Any]) -> str:
    """Return the opaque cursor that continues a newest-first list after ``row`` (its created_at and id)."""
    raw = json.dumps([row["created_at"].isoformat(), str(row["id"])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | tuple[None, None]:
    """Return ``(created_at, id)`` from a cursor made by encode_cursor, or ``(None, None)`` for no cursor.

    :raise Unprocessable: a cursor this service did not make.
    """
    if cursor is None:
        return None, None
    try:
        created_at, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created_at), uuid.UUID(row_id)
    except (ValueError, TypeError, binascii.Error):
        raise Unprocessable("cursor is not valid: pass the next_cursor of the previous page unchanged.") from None


DEFAULT_PAGE_SIZE = 50


def split_page(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Return ``(rows[:limit], next_cursor)`` from ``rows`` fetched with ``limit + 1``; next_cursor is None on the
    last page."""
    page = rows[:limit]
    return page, encode_cursor(page[-1]) if len(rows) > limit else None


def page_response(key: str, rows: list[dict[str, Any]], limit: int) -> Response:
    """Return ``{key: rows[:limit], "next_cursor"}`` from ``rows`` fetched with ``limit + 1``."""
    page, next_cursor = split_page(rows, limit)
    return jsonify({key: page, "next_cursor": next_cursor})


_ETAG = re.compile(r'^(?:W/)?"(\d{1,9})"$')


def expected_versions() -> list[int] | None:
    """Return the row versions the request's ``If-Match`` accepts, or None when any will do (no header, ``*``).

    A write without If-Match is allowed (last writer wins); an If-Match naming no version this service could
    have sent matches nothing.
    """
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    versions = []
    for tag in header.split(","):
        match = _ETAG.match(tag.strip())
        if match:
            versions.append(int(match[1]))
    return versions


def precondition_failed(current_version: int) -> PreconditionFailed:
    """Return the 412 error for a write whose If-Match did not name ``current_version``."""
    return PreconditionFailed(
        f"If-Match does not match the current ETag {etag(current_version)}: the resource changed since you read it.",
        etag=etag(current_version),
    )


def workflow_write_refused(conn: Connection, workflow_id: uuid.UUID) -> ApiError:
    """Return the error for a conditional write to ``workflow_id`` that changed nothing: 404 or 412."""
    row = db.one(conn, "get_workflow_version", workflow_id=workflow_id)
    return NotFound("Workflow not found") if row is None else precondition_failed(row["version"])


def rows_of_workflow(conn: Connection, workflow_id: uuid.UUID, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return ``rows``, what a list of one workflow's things found; none found is a 404 when the workflow itself does
    not exist (an empty list is only the answer for a workflow that has nothing).

    :raise NotFound: no rows, and no workflow ``workflow_id``.
    """
    if not rows and db.one(conn, "get_workflow_version", workflow_id=workflow_id) is None:
        raise NotFound("Workflow not found")
    return rows


def require_file(conn: Connection, file_id: uuid.UUID | str, *field_path: str) -> None:
    """Check that ``file_id`` (a UUID, or its text in a node's config) names an uploaded file.

    :raise marshmallow.ValidationError: 422 with the message nested under ``field_path`` (e.g. config, file_id).
    """
    if db.one(conn, "file_exists", file_id=file_id) is not None:
        return
    errors: list[str] | dict[str, Any] = [f"File {file_id} not found: upload it first (POST /files)."]
    for field in reversed(field_path):
        errors = {field: errors}
    raise ValidationError(errors)
