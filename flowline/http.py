"""Request and response helpers shared by the blueprints."""

import uuid

from flask import Response, current_app, request

from . import db
from .errors import ApiError, NotFound, Unprocessable, UnsupportedMediaType


def parse_id(value, what):
    """Return ``value`` as a UUID; an id that is not a UUID cannot exist, so it is a 404 like any unknown id.

    :raise NotFound: "<what> not found".
    """
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} not found") from None


def load_json(schema, *, optional=False):
    """Return the request's JSON body loaded by ``schema``.

    An empty body counts as ``{}`` when ``optional`` (so ``POST /workflows/{id}/run`` needs no body).

    :raise UnsupportedMediaType: a body that is not declared ``application/json``.
    :raise Unprocessable: a missing body (when not optional), or a body that is not a JSON object.
    :raise ApiError: 400 for malformed JSON, naming where it broke.
    :raise marshmallow.ValidationError: invalid fields (mapped to 422 with ``errors``).
    """
    if not request.content_length and not request.get_data(cache=True):
        if optional:
            return schema.load({})
        raise Unprocessable("A JSON object body is required.")
    if not request.is_json:
        raise UnsupportedMediaType("Content-Type must be application/json.")
    try:
        data = current_app.json.loads(request.get_data(cache=True))
    except ValueError as exc:
        raise ApiError(f"The request body is not valid JSON: {exc}.") from None
    if data is None and optional:
        data = {}
    if not isinstance(data, dict):
        raise Unprocessable("The request body must be a JSON object.")
    return schema.load(data)


def json_body_response(body, status=200, headers=None):
    """Return ``body``, JSON text built by PostgreSQL, as the response (no parse and re-serialise in Python)."""
    return Response(body, status=status, headers=headers, mimetype="application/json")


def query_json_response(query_name, not_found, /, **params):
    """Serve the JSON body the ``:one`` query ``query_name`` built (its ``body`` column), with its ``version``
    column, when it has one, as the ``ETag``.

    :raise NotFound: ``not_found`` when the query returned no row.
    """
    with db.connection() as conn:
        row = db.one(conn, query_name, **params)
    if row is None:
        raise NotFound(not_found)
    headers = {"ETag": f'"{row["version"]}"'} if "version" in row else None
    return json_body_response(row["body"], headers=headers)
