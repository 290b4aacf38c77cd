"""What every console request passes: SECRET_KEY present (else 503), a CSRF token on every state-changing form
(Flask-WTF), a signed-in session when API_TOKENS is set, and strict page headers (CSP) on every answer.

The session cookie (HttpOnly, SameSite=Lax, Secure over HTTPS, Path=/console) is Flask's: signed, not encrypted.
It holds the SHA-256 of the token signed in with and the sign-in time, never the token; each request checks that
the digest is still one of API_TOKENS' and that the sign-in is under SESSION_MAX_AGE_S old.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import RequestEntityTooLarge

from ..api import auth, files
from ..api.errors import ApiError
from ..core.config import settings_of
from .blueprint import bp

log = logging.getLogger("flowline.console")

SESSION_MAX_AGE_S = 12 * 3600
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
# Forms that carry a PDF upload ("Try it").
UPLOAD_ENDPOINTS = frozenset({"console.try_workflow"})
# Endpoints a visitor reaches before signing in.
_OPEN_ENDPOINTS = frozenset({"console.sign_in", "console.static"})

csrf = CSRFProtect()


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, its cookie Secure exactly when the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        """Return whether the session cookie is Secure: when this request came over HTTPS."""
        return request.is_secure


def install(app: Flask) -> None:
    """Configure the session cookie and CSRF for the console (the JSON API's views are never CSRF-checked)."""
    app.session_interface = ConsoleSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="flowline_console",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # CSRF is checked in this blueprint's before_request only, never app-wide: the JSON API is bearer-only.
        WTF_CSRF_CHECK_DEFAULT=False,
        # The token lives as long as the session; a sign-in starts a new session, hence a new token.
        WTF_CSRF_TIME_LIMIT=None,
    )
    csrf.init_app(app)


def _digests() -> tuple[bytes, ...]:
    """Return the SHA-256 digests of API_TOKENS, what a signed-in session's token is compared with."""
    return tuple(auth.token_digest(token) for token in settings_of(current_app).api_tokens)


def _signed_in() -> bool:
    """Return whether this session signed in with a token that is still among API_TOKENS, under 12 hours ago."""
    digest, signed_in_at = session.get("token_sha256"), session.get("signed_in_at")
    if not isinstance(digest, str) or not isinstance(signed_in_at, int):
        return False
    if not 0 <= time.time() - signed_in_at < SESSION_MAX_AGE_S:
        return False
    try:
        presented = bytes.fromhex(digest)
    except ValueError:
        return False
    return auth.digest_matches(presented, _digests())


def auth_required() -> bool:
    """Return whether the console needs a sign-in: API_TOKENS is set."""
    return bool(settings_of(current_app).api_tokens)


@bp.before_request
def guard() -> ResponseReturnValue | None:
    """Check every console request: 503 without SECRET_KEY, CSRF on every POST, the sign-in when API_TOKENS is
    set (else a redirect to it); return None to let the view answer.

    :raise RequestEntityTooLarge: a Try it form larger than an upload may be.
    """
    if not current_app.secret_key:
        return render_template("console/unavailable.html"), 503
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        if request.endpoint in UPLOAD_ENDPOINTS:
            # Before CSRF's check parses the body: a form with a PDF may be as large as an upload to POST /files.
            files.bound_upload_body()
        csrf.protect()
    if auth_required() and request.endpoint not in _OPEN_ENDPOINTS and not _signed_in():
        session.clear()
        return redirect(url_for("console.sign_in", next=request.full_path if request.method == "GET" else None))
    return None


@bp.after_request
def page_headers(response: Response) -> Response:
    """Return ``response`` with the console's CSP and safety headers (and no caching of HTML)."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(CSRFError)
def csrf_refused(exc: CSRFError) -> ResponseReturnValue:
    """Answer a form whose CSRF token is missing or stale: 400 with a page saying to reload."""
    log.info("console form refused: %s", exc.description)
    message = "This form was not sent from this console page, or its page is too old. Reload the page and try again."
    return render_template("console/error.html", title="Form refused", message=message), 400


def _local_next(target: str | None) -> str:
    """Return ``target`` when it is a path on the console (no scheme, no host), else the console's home."""
    parts = urlsplit(target or "")
    if target is None or parts.scheme or parts.netloc or not parts.path.startswith("/console/"):
        return url_for("console.workflows")
    return target


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> ResponseReturnValue:
    """The sign-in page, and its form: an API token starts a 12-hour session (401 for a wrong token); without
    API_TOKENS, a redirect to the console's home."""
    if not auth_required():
        return redirect(url_for("console.workflows"))
    error = None
    if request.method == "POST":
        token = request.form.get("token", "").strip()
        if token and auth.token_matches(token, _digests()):
            session.clear()
            session["token_sha256"] = auth.token_digest(token).hex()
            session["signed_in_at"] = int(time.time())
            log.info("console sign-in")
            return redirect(_local_next(request.form.get("next")))
        log.info("console sign-in refused: invalid token")
        error = "That token is not one of this server's API tokens."
    return render_template("console/sign_in.html", error=error, next=request.values.get("next", "")), (
        401 if error else 200
    )


@bp.post("/sign-out")
def sign_out() -> ResponseReturnValue:
    """End the session; redirect to the sign-in page."""
    session.clear()
    return redirect(url_for("console.sign_in"))


@bp.app_context_processor
def console_context() -> dict[str, object]:
    """Return what every console template may read: whether signed in, and the default LLM model."""
    if request.blueprint != bp.name:
        return {}
    return {
        "signed_in": auth_required() and _signed_in(),
        "default_model": settings_of(current_app).llm_model,
    }


@bp.errorhandler(ApiError)
def api_error(exc: ApiError) -> ResponseReturnValue:
    """Answer an API error raised by an operation a page called as an HTML page, with its status."""
    return render_template(
        "console/error.html", title=_TITLES.get(exc.status, "Refused"), message=exc.detail
    ), exc.status


@bp.errorhandler(RequestEntityTooLarge)
def too_large(exc: RequestEntityTooLarge) -> ResponseReturnValue:
    """Answer an upload over MAX_UPLOAD_MB: 413 with a page naming the limit."""
    limit = settings_of(current_app).max_upload_mb
    message = f"The upload is larger than {limit} MB, the most this server accepts (MAX_UPLOAD_MB); nothing was stored."
    return render_template("console/error.html", title="Too large", message=message), 413


_TITLES = {404: "Not found", 409: "Conflict", 412: "Changed meanwhile", 413: "Too large", 415: "Not a PDF", 503: "Busy"}
