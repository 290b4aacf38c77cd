"""Optional bearer-token authentication: with ``API_TOKENS`` set, every route requires
``Authorization: Bearer <token>`` except the probes (``/livez``, ``/readyz``) and ``/metrics`` when
``METRICS_PUBLIC`` is on. CORS preflights from allowed origins, which browsers send without credentials, are
answered before this check (flowline/api/cors.py); any other ``OPTIONS`` needs the token like a ``GET``, so an
anonymous client cannot map the API's paths and methods.

A presented token is compared with every configured one, in constant time and without stopping at a match, so
neither the time taken nor anything else tells which token matched or how much of one did. Tokens are never
logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable

from flask import Flask, Response, request

from ..core.config import settings_of
from .errors import error_response

log = logging.getLogger("flowline.auth")

# Paths that answer without a token: load balancers and orchestrators probe them without credentials.
PUBLIC_PATHS = frozenset({"/livez", "/readyz"})
# Public only with METRICS_PUBLIC=1 (a Prometheus scraper inside the network); otherwise like any other route.
METRICS_PATH = "/metrics"
REALM = "flowline"


def token_digest(token: str) -> bytes:
    """Return the SHA-256 of ``token``: what tokens are compared by (and what a console session keeps)."""
    # Comparing fixed-length digests keeps the comparison's time independent of the tokens' lengths too.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def presented_token(authorization: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` header value, or None (no header, another
    scheme, no token). The scheme is case-insensitive (RFC 7235)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def token_matches(token: str, digests: Iterable[bytes]) -> bool:
    """Return whether ``token`` is one of the tokens whose digests are ``digests``, comparing with all of them."""
    return digest_matches(token_digest(token), digests)


def digest_matches(presented: bytes, digests: Iterable[bytes]) -> bool:
    """Return whether the digest ``presented`` is one of ``digests``, comparing with all of them."""
    matched = False
    for digest in digests:
        matched |= hmac.compare_digest(presented, digest)
    return matched


def unauthorized(token_given: bool) -> Response:
    """Return the 401 answer: the error shape, with the challenge RFC 6750 describes."""
    if token_given:
        response = error_response(401, "The bearer token is not valid.")
        response.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}", error="invalid_token"'
    else:
        response = error_response(401, "Authentication required: send 'Authorization: Bearer <token>'.")
        response.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
    return response


def install(app: Flask, exempt_blueprints: tuple[str, ...] = ()) -> None:
    """Require a bearer token on ``app``'s routes when ``API_TOKENS`` is set; do nothing otherwise. Routes of
    ``exempt_blueprints`` (the console, which signs its visitors in itself) are left to their own check."""
    tokens = settings_of(app).api_tokens
    if not tokens:
        return
    digests = tuple(token_digest(token) for token in tokens)
    public = PUBLIC_PATHS | ({METRICS_PATH} if settings_of(app).metrics_public else set())

    @app.before_request
    def require_bearer_token() -> Response | None:
        # The matched route, not the raw path: /livez/ or //livez match no public route. A path that matches no
        # route needs a token too, so an anonymous client learns nothing about which paths exist.
        rule = request.url_rule
        if rule is not None and (rule.rule in public or request.blueprint in exempt_blueprints):
            return None
        token = presented_token(request.headers.get("Authorization"))
        if token is not None and token_matches(token, digests):
            return None
        log.info("unauthenticated request refused: %s", "invalid token" if token is not None else "no bearer token")
        return unauthorized(token is not None)

    log.info("bearer-token authentication on: %d token(s); public: %s", len(tokens), ", ".join(sorted(public)))
