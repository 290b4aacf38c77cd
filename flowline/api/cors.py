"""CORS for the JSON API, so browser front ends on other origins can call it (flask-cors does the headers).

Out of the box the earlier service's front end (``http://localhost:3000``, ``http://127.0.0.1:3000``) is allowed,
as the earlier service allowed it; ``CORS_ORIGINS`` replaces the list, and ``CORS_ORIGINS=none`` turns CORS off.
Never ``Access-Control-Allow-Credentials``: the API authenticates with bearer tokens, not cookies. Never the
console (``/console/``), whose pages are served to their own origin only.

A preflight from an allowed origin is answered here, before authentication and routing, the same way whatever
its path: a browser sends it without credentials, and its answer must not tell an anonymous client which paths
exist. Every other ``OPTIONS`` is an ordinary request (with API_TOKENS set it needs the token).
"""

from __future__ import annotations

import re
from collections.abc import Set

from flask import Flask, Response, request
from flask_cors import CORS
from werkzeug.wrappers import Request

from ..core.config import settings_of

# Request headers a script may send: the JSON body's type and every header Flowline reads.
ALLOW_HEADERS = ("Content-Type", "Authorization", "If-Match", "Idempotency-Key", "Prefer", "X-Request-ID")
# Response headers a script may read.
EXPOSE_HEADERS = ("ETag", "Location", "X-Request-ID", "Preference-Applied", "Retry-After", "Idempotent-Replayed")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# Every path but the console's.
API_PATHS = re.compile(r"^/(?!console(?:/|$))")
# How long a browser may reuse a preflight's answer.
PREFLIGHT_MAX_AGE_S = 600


def is_preflight(req: Request, allowed: Set[str]) -> bool:
    """Return True when ``req`` is a CORS preflight (``OPTIONS`` with ``Origin`` and
    ``Access-Control-Request-Method``) to the JSON API from an origin in ``allowed`` (casefolded; ``*``: any)."""
    origin = req.headers.get("Origin")
    return (
        req.method == "OPTIONS"
        and origin is not None
        and "Access-Control-Request-Method" in req.headers
        and API_PATHS.match(req.path) is not None
        and ("*" in allowed or origin.casefold() in allowed)
    )


def install(app: Flask) -> None:
    """Send CORS headers for ``app``'s CORS_ORIGINS (none: do nothing) and answer their preflights."""
    origins = settings_of(app).cors_origins
    if not origins:
        return
    CORS(
        app,
        resources={API_PATHS: {}},
        origins=list(origins),
        methods=list(METHODS),
        allow_headers=list(ALLOW_HEADERS),
        expose_headers=list(EXPOSE_HEADERS),
        supports_credentials=False,
        max_age=PREFLIGHT_MAX_AGE_S,
        # A request without Origin is not a cross-origin one: it gets no CORS headers (flask-cors would guess one).
        always_send=False,
    )
    # Origins compare case-insensitively, as flask-cors compares them.
    allowed = frozenset(origin.casefold() for origin in origins)

    @app.before_request
    def answer_preflight() -> Response | None:
        if is_preflight(request, allowed):
            # Empty; flask-cors adds the Access-Control-* headers on the way out.
            response = app.response_class(status=200)
            del response.headers["Content-Type"]
            return response
        return None
