"""One JSON error shape, ``{"detail": "..."}`` (plus ``"errors"`` on 422), and the one place that maps errors to HTTP."""

import logging

import psycopg
from flask import jsonify
from marshmallow import ValidationError
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger("flowline.errors")


class ApiError(Exception):
    """The request could not be served."""

    status = 400

    def __init__(self, detail=None, **extra):
        super().__init__(detail or self.__doc__)
        self.detail = detail or self.__doc__
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


def error_response(http_status, detail, /, **extra):
    """Return a Flask response with the error shape, any ``extra`` keys, and ``http_status``."""
    response = jsonify({"detail": detail, **extra})
    response.status_code = http_status
    return response


def unavailable_response(detail, /, **extra):
    """Return the 503 for a database that is down or busy, with ``Retry-After`` so clients come back soon."""
    response = error_response(503, detail, **extra)
    response.headers["Retry-After"] = "1"
    return response


def _database_unavailable(exc):
    log.warning("database unavailable: %s", type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG))
    return unavailable_response("The database is unavailable or busy; retry shortly.")


def register(app):
    """Install the error handlers on ``app``."""

    @app.errorhandler(ApiError)
    def api_error(exc):
        return error_response(exc.status, exc.detail, **exc.extra)

    @app.errorhandler(ValidationError)
    def validation_error(exc):
        return error_response(422, "The request body is invalid; see 'errors'.", errors=exc.normalized_messages())

    @app.errorhandler(HTTPException)
    def http_error(exc):
        response = error_response(exc.code or 500, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    # PoolTimeout (no free connection) subclasses OperationalError (server unreachable, connection lost);
    # both mean "try again soon", never a 500.
    app.register_error_handler(PoolTimeout, _database_unavailable)
    app.register_error_handler(psycopg.OperationalError, _database_unavailable)

    @app.errorhandler(Exception)
    def unexpected(exc):
        log.exception("unhandled error")
        return error_response(500, "Internal server error; the request id identifies it in the logs.")
