"""One JSON error shape, ``{"detail": "..."}`` (plus ``"errors"`` on 422), and the one place that maps errors to HTTP."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from flask import Flask, Response, current_app, jsonify, request
from gunicorn.http.errors import ParseException
from marshmallow import ValidationError
from psycopg_pool import PoolTimeout, TooManyRequests
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from ..core.config import settings_of
from .serving import answer_for

log = logging.getLogger("flowline.errors")


class ApiError(Exception):
    """The request could not be served."""

    status = 400

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.__doc__)
        self.detail: str = detail or self.__doc__ or ""  # "" only under python -OO, which drops docstrings
        self.extra = extra


class NotFound(ApiError):
    """Not found."""

    status = 404


class Conflict(ApiError):
    """The request conflicts with the resource's current state."""

    status = 409


class PreconditionFailed(ApiError):
    """The resource changed since the client read it (If-Match)."""

    status = 412


class Unprocessable(ApiError):
    """The request body is invalid."""

    status = 422


class UnsupportedMediaType(ApiError):
    """Content-Type must be application/json."""

    status = 415


class PayloadTooLarge(ApiError):
    """The request body is too large."""

    status = 413


def body_too_large(limit_bytes: int | None) -> PayloadTooLarge:
    """Return the 413 for a body over ``limit_bytes`` (the request's max_content_length)."""
    if limit_bytes is None:
        return PayloadTooLarge()
    return PayloadTooLarge(
        f"The request body is larger than {limit_bytes // 1024} KiB, the most this route accepts "
        "(MAX_JSON_KB for JSON bodies)."
    )


def error_response(http_status: int, detail: str, /, **extra: Any) -> Response:
    """Return a Flask response with the error shape, any ``extra`` keys, and ``http_status``."""
    response = jsonify({"detail": detail, **extra})
    response.status_code = http_status
    return response


def unavailable_response(detail: str, /, retry_after_s: int = 1, **extra: Any) -> Response:
    """Return the 503 for a database (or another resource) that is down or busy, with ``Retry-After``
    (``retry_after_s``, whole seconds) so clients come back soon."""
    response = error_response(503, detail, **extra)
    response.headers["Retry-After"] = str(retry_after_s)
    return response


def _database_unavailable(exc: psycopg.OperationalError) -> Response:
    if (exc.sqlstate or "").startswith("54"):
        return _too_complex_for_the_database(exc)
    log.warning("database unavailable: %s", type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG))
    return unavailable_response("The database is unavailable or busy; retry shortly.")


def _pool_queue_full(exc: TooManyRequests) -> Response:
    # Every connection is busy and DB_POOL_MAX_WAITING requests already wait: refused at once, not queued.
    log.warning("database pool exhausted: %s", exc)
    return unavailable_response(
        "The service is at capacity: every database connection is busy and too many "
        "requests are waiting for one; retry shortly."
    )


def _statement_timed_out(exc: psycopg.errors.QueryCanceled) -> Response:
    # statement_timeout (STATEMENT_TIMEOUT_MS) cancelled the statement, often one waiting for a lock another
    # transaction held; the transaction was rolled back and the connection is back in the pool, usable.
    timeout_ms = settings_of(current_app).statement_timeout_ms
    log.warning(
        "statement cancelled after the %s ms statement timeout (%s %s)", timeout_ms, request.method, request.path
    )
    return unavailable_response(
        f"A database statement took longer than the {timeout_ms} ms statement timeout "
        "(the database is busy, or the data is locked by another request); nothing was "
        "changed; retry shortly."
    )


def _privilege_missing(exc: psycopg.errors.InsufficientPrivilege) -> Response:
    # The database role the service runs as lacks a grant (deploy/roles.sql, migration 0006): an operator's fix,
    # not the client's; the log names what was refused, the answer does not.
    log.error("the database refused a privilege: %s (see the README's 'Database roles')", exc.diag.message_primary)
    return unavailable_response(
        "The service's database role lacks a privilege it needs; an operator must grant it. Retry later."
    )


def _too_complex_for_the_database(exc: psycopg.OperationalError) -> Response:
    # SQLSTATE class 54, program limit exceeded (stack depth, index row size...): the request's data, not an
    # outage; a retry fails the same way, so this is no 503. psycopg gives each 54xxx its own OperationalError
    # subclass (StatementTooComplex is no ProgramLimitExceeded), hence the check on sqlstate.
    log.warning("the database refused the request's data: %s", type(exc).__name__)
    return error_response(422, "The request's data is too large or too deeply nested for the database to store.")


def register(app: Flask) -> None:
    """Install the error handlers on ``app``."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.detail, **exc.extra)

    @app.errorhandler(ValidationError)
    def validation_error(exc: ValidationError) -> Response:
        return error_response(422, "The request body is invalid; see 'errors'.", errors=exc.normalized_messages())

    @app.errorhandler(RequestEntityTooLarge)
    def request_too_large(exc: RequestEntityTooLarge) -> Response:
        return api_error(body_too_large(request.max_content_length))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        response = error_response(exc.code or 500, exc.description or exc.name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(ParseException)
    def unreadable_body(exc: ParseException) -> Response:
        # gunicorn parses a body while the view reads it (a malformed chunk, a bad trailer): the client's error,
        # answered as gunicorn answers a malformed request line or header; gunicorn then closes the connection.
        status, _, detail = answer_for(exc)
        log.warning("unreadable request body: %s", type(exc).__name__)
        return error_response(status, detail)

    # PoolTimeout (no free connection) subclasses OperationalError (server unreachable, connection lost);
    # both mean "try again soon", never a 500.
    app.register_error_handler(PoolTimeout, _database_unavailable)
    app.register_error_handler(psycopg.OperationalError, _database_unavailable)
    # More specific OperationalErrors, each with its own answer (Flask picks the most specific handler).
    app.register_error_handler(TooManyRequests, _pool_queue_full)
    app.register_error_handler(psycopg.errors.QueryCanceled, _statement_timed_out)
    app.register_error_handler(psycopg.errors.InsufficientPrivilege, _privilege_missing)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "Internal server error; the request id identifies it in the logs.")
