"""gunicorn's worker for Flowline: requests its HTTP parser refuses are answered in Flowline's error shape.

gunicorn answers a request it cannot parse (a NUL in a header, a request line over ``limit_request_line``...)
itself, before the app sees it, with an HTML page. ``JsonErrorThreadWorker`` (gunicorn.conf.py's
``worker_class``) keeps gunicorn's status for each of these and answers ``{"detail": "<human sentence>"}`` as
``application/json`` with a fresh ``X-Request-ID``, like every other error. The sentence says what was wrong,
never which bytes: they are the client's, unchecked.
"""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any

from gunicorn import util
from gunicorn.http import errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.gthread import ThreadWorker

_BAD_REQUEST = (400, "Bad Request")


def _invalid_header(exc: errors.InvalidHeader, cfg: Any) -> str:
    if exc.hdr == "CONTENT-LENGTH":
        return "Content-Length must be a single non-negative decimal number, and not sent with Transfer-Encoding."
    if exc.hdr == "TRANSFER-ENCODING":
        return "Transfer-Encoding must end with chunked, name it once, and needs HTTP/1.1."
    if exc.hdr == "bare LF as line terminator":
        return "A header line ends with a bare LF: HTTP lines end with CRLF."
    return (
        "A header is malformed: each is a name, a colon and a value on one line ending in CRLF, with no NUL, "
        "CR or LF inside it."
    )


def _too_many_headers(exc: errors.LimitRequestHeaders, cfg: Any) -> str:
    if cfg is None:  # trailers of a chunked body, read by the app
        return "The request's trailers are too large."
    return (
        f"The request headers are too large: at most {cfg.limit_request_fields} headers of at most "
        f"{cfg.limit_request_field_size} bytes each."
    )


# gunicorn 27's own statuses (gunicorn/workers/base.py, Worker.handle_error), the most specific class first:
# exception class -> (status, reason, the detail as a string or a function of the exception and gunicorn's cfg).
_ANSWERS: list[
    tuple[type[BaseException] | tuple[type[BaseException], ...], int, str, str | Callable[[Any, Any], str]]
] = [
    (
        errors.InvalidRequestLine,
        *_BAD_REQUEST,
        "The request line is malformed: it must be METHOD, a space, the path, a space and HTTP/1.1, ending in CRLF.",
    ),
    (
        errors.InvalidRequestMethod,
        *_BAD_REQUEST,
        "The request method is not a valid HTTP method (upper-case letters, such as GET or POST).",
    ),
    (errors.InvalidHTTPVersion, *_BAD_REQUEST, "The HTTP version is not supported: send HTTP/1.1 or HTTP/1.0."),
    (
        errors.UnsupportedTransferCoding,
        501,
        "Not Implemented",
        "The Transfer-Encoding is not supported: send the body with Content-Length or chunked.",
    ),
    (
        errors.ConfigurationProblem,
        500,
        "Internal Server Error",
        "The server is misconfigured; the request id identifies it in the logs.",
    ),
    (
        errors.ObsoleteFolding,
        *_BAD_REQUEST,
        "A header value continues on a line of its own (obsolete line folding): send each header on one line.",
    ),
    (
        errors.InvalidHeaderName,
        *_BAD_REQUEST,
        "A header name is malformed: it must be letters, digits and !#$%&'*+-.^_`|~ only.",
    ),
    (errors.InvalidHeader, *_BAD_REQUEST, _invalid_header),
    (
        errors.LimitRequestLine,
        414,
        "URI Too Long",
        lambda exc, cfg: (
            f"The request line (method, path and query string) is longer than {cfg.limit_request_line} bytes."
        ),
    ),
    (errors.ExpectationFailed, 417, "Expectation Failed", "The Expect header may only ask for 100-continue."),
    (errors.LimitRequestHeaders, 431, "Request Header Fields Too Large", _too_many_headers),
    (errors.InvalidProxyLine, *_BAD_REQUEST, "The PROXY protocol line is malformed."),
    (errors.ForbiddenProxyRequest, 403, "Forbidden", "PROXY protocol lines are not accepted from this address."),
    (errors.InvalidSchemeHeaders, *_BAD_REQUEST, "The request's scheme headers contradict each other."),
    (
        (errors.InvalidChunkSize, errors.ChunkMissingTerminator, errors.InvalidChunkExtension),
        *_BAD_REQUEST,
        "The chunked request body is malformed.",
    ),
    (errors.InvalidH2CPreface, *_BAD_REQUEST, "The HTTP/2 connection preface is malformed."),
    (ssl.SSLError, 403, "Forbidden", "The TLS handshake failed."),
]

_SERVER_ERROR = (500, "Internal Server Error", "Internal server error; the request id identifies it in the logs.")


def answer_for(exc: BaseException, cfg: Any = None) -> tuple[int, str, str]:
    """Return ``(status, reason, detail)`` for an error gunicorn's handling of a request raised; ``cfg`` is
    gunicorn's configuration (None where the app read the body: only trailers can then be too large)."""
    # gunicorn answers an invalid header the app sent as its own 500 (InvalidResponseHeader is an InvalidHeader).
    if isinstance(exc, (errors.InvalidResponseHeader, errors.InvalidResponseHeaderName)):  # type: ignore[attr-defined]  # types-gunicorn 26.2 predates these gunicorn 27 classes
        return _SERVER_ERROR
    for kind, status, reason, detail in _ANSWERS:
        if isinstance(exc, kind):
            return status, reason, detail if isinstance(detail, str) else detail(exc, cfg)
    return _SERVER_ERROR


def error_bytes(status: int, reason: str, detail: str, request_id: str) -> bytes:
    """Return the whole HTTP response for an error: the JSON error shape, then the connection closes."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class JsonErrorThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, answering what its HTTP parser refuses in Flowline's JSON error shape, and
    ending the requests that wait for a run (Prefer: wait=N) as soon as it is told to stop (SIGTERM)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # gunicorn lets requests in progress finish within graceful_timeout: a wait answers now instead. Imported
        # here, not at the top: gunicorn's master imports this module before it sets PROMETHEUS_MULTIPROC_DIR, and
        # the metrics module (which waits imports) must first be imported after that, in the workers.
        from . import waits

        extensions = getattr(getattr(self, "wsgi", None), "extensions", None)  # None: the app is not loaded
        if extensions is not None:
            extensions[waits.EXTENSION].stop()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        started = datetime.now()
        addr = addr or ("", -1)  # a unix socket
        status, reason, detail = answer_for(exc, self.cfg)
        request_id = uuid.uuid4().hex
        if status == 500:
            self.log.exception("Error handling request (request_id=%s)", request_id)
        else:
            # repr: the client's bytes, escaped, so the log line stays one line of text.
            self.log.warning(
                "Invalid request from ip=%s: %r (answered %s, request_id=%s)", addr[0], str(exc), status, request_id
            )
        if req is None and isinstance(exc, (errors.InvalidHeader, errors.InvalidHeaderName)):
            req = getattr(exc, "req", None)  # the request whose headers failed, for the access log
        if req is not None:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
            response = Response(req, client, self.cfg)
            response.status = f"{status} {reason}"
            response.headers = [("X-Request-ID", request_id)]
            self.log.access(response, req, environ, datetime.now() - started)
        try:
            util.write_nonblock(client, error_bytes(status, reason, detail, request_id))
        except Exception:
            self.log.debug("Failed to send error message.")
