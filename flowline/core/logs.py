"""Logging: one line per record, as text (a terminal) or as one JSON object (``LOG_FORMAT=json``: collectors).

Every line of a request carries its ``request_id``; every line of a run carries its ``run_id`` and, where they
apply, ``node_id``, ``worker_id`` and ``attempt``. The run fields live in a context variable the engine and the
worker set (``with logs.context(run_id=...)``), so a line logged by anything the run calls (a provider, the
database layer) inherits them without being passed them. Context variables are per thread: a worker's run
threads never see each other's fields.

JSON lines hold ``ts`` (ISO-8601, UTC, milliseconds), ``level``, ``logger``, ``message``, then the context fields
that are set (``request_id``, ``run_id``, ``node_id``, ``worker_id``, ``attempt``), any ``extra=`` fields, and
``exception`` (the traceback) when there is one. gunicorn's own lines and its access log use the same format
(``GunicornLogger``, chosen by gunicorn.conf.py).

What is never logged: prompt bodies, input and output texts, file bytes, the LLM key, API tokens, passwords
(flowline.core.config.mask_url shows a DATABASE_URL). As a last line of defence, any line that would contain them
anyway has the configured secrets (the LLM key, the API tokens) and the password of any URL or libpq
``password=`` replaced by ``***``. A database password is masked by its place, not its value: it may well be an
ordinary word ("flowline") that must stay readable elsewhere.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from flask import g, has_request_context

if TYPE_CHECKING:
    from gunicorn.config import Config as GunicornConfig
    from gunicorn.http import Request as GunicornRequest
    from gunicorn.http.wsgi import Response as GunicornResponse

    from .config import Settings

FORMATS = ("text", "json")
# The context fields, in the order they are shown.
RUN_FIELDS = ("run_id", "node_id", "worker_id", "attempt")
_FIELDS = ("request_id", *RUN_FIELDS)
# A LogRecord's own attributes: anything else on a record came from ``extra=`` (or from a filter) and is shown.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# Secrets shorter than this are not searched for (API tokens have at least 16 characters; LLM keys more).
_MIN_SECRET_CHARS = 8
# A password where it can be recognised by its place: user:password@ in a URL, password=... in a libpq string.
_URL_PASSWORD = re.compile(r"(?P<keep>://[^\s/@:]*:)[^\s/@]*@")
_CONNINFO_PASSWORD = re.compile(r"(?P<keep>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s'&]+)", re.I)

_run_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("flowline_run_context", default={})  # noqa: B039 -- never mutated, only replaced


def _with(fields: dict[str, Any]) -> dict[str, Any]:
    """Return this thread's context fields plus ``fields`` (ids as strings, the attempt a number; None left out)."""
    added = {name: value if name == "attempt" else str(value) for name, value in fields.items() if value is not None}
    return {**_run_context.get(), **added}


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (run_id, node_id, worker_id, attempt) to every line logged in this block, in this thread.

    Nested blocks add to (and may override) the fields of the blocks around them; leaving a block restores them.
    """
    token = _run_context.set(_with(fields))
    try:
        yield
    finally:
        _run_context.reset(token)


def bind(**fields: Any) -> None:
    """Add ``fields`` to every later line of this thread (for a thread's whole life, e.g. a worker's worker_id)."""
    _run_context.set(_with(fields))


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` ("-" outside a request) and the run fields of ``context()`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        for name, value in _run_context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class _Redacting(logging.Formatter):
    """Masks the configured secrets and any URL or libpq password in the text it formats."""

    secrets: tuple[str, ...] = ()

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        if "password" in text.lower():
            text = _CONNINFO_PASSWORD.sub(r"\g<keep>***", text)
        if "://" in text:
            text = _URL_PASSWORD.sub(r"\g<keep>***@", text)
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.render(record)

    def render(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class TextFormatter(_Redacting):
    """``2026-01-02 03:04:05,678 INFO flowline.worker [request_id=- run_id=…] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(context)s] %(message)s")

    def render(self, record: logging.LogRecord) -> str:
        shown = [f"request_id={getattr(record, 'request_id', '-')}"]
        shown += [f"{name}={getattr(record, name)}" for name in RUN_FIELDS if hasattr(record, name)]
        record.context = " ".join(shown)
        return super().render(record)


class JsonFormatter(_Redacting):
    """One JSON object per line: ts, level, logger, message, the context fields, extras, exception."""

    def render(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None and value != "-":
                line[name] = value
        for name, value in vars(record).items():
            if (
                name not in _RECORD_ATTRIBUTES
                and name not in _FIELDS
                and name != "context"
                and not name.startswith("_")
            ):
                line[name] = self.redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = self.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = self.redact(record.exc_text)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(log_format: str) -> TextFormatter | JsonFormatter:
    """Return a new formatter for ``log_format`` ("text" or "json")."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a line is written (so a test capturing stderr sees it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def secrets_of(config: Settings) -> tuple[str, ...]:
    """Return the secret values in ``config`` to mask wherever they appear in a log line: the LLM key, the API
    tokens and the console's SECRET_KEY (long, random strings). A database password is masked by its place in a URL
    instead."""
    found = config.secret_values()
    return tuple(sorted({s for s in found if len(s) >= _MIN_SECRET_CHARS}, key=len, reverse=True))


def configure(level: int | str, log_format: str = "text", secrets: Iterable[str] = ()) -> None:
    """Send every log line of this process to stderr in ``log_format``, Flowline's at ``level``; idempotent.

    One handler on the root logger formats Flowline's lines and those of the libraries it uses (psycopg's pool,
    httpx: WARNING and above unless their level is lowered), so a JSON log has no line in another format.
    A later call replaces the format, level and secrets.
    """
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    chosen = formatter(log_format)
    chosen.secrets = tuple(secrets)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    handler.setFormatter(chosen)
    # Python's warnings as log lines too (a bare warning would be the one line in another format).
    logging.captureWarnings(True)
    logger = logging.getLogger("flowline")
    logger.setLevel(level)
    # An earlier release gave "flowline" a handler of its own and stopped propagation; lines now reach the root.
    for old in [h for h in logger.handlers if any(isinstance(f, RequestIdFilter) for f in h.filters)]:
        logger.removeHandler(old)
    logger.propagate = True


# --- gunicorn --------------------------------------------------------------------------------------------------

try:
    from gunicorn import glogging
except ImportError:  # pragma: no cover - gunicorn is a runtime requirement; this keeps flowline.logs importable
    glogging = None  # type: ignore[assignment]  # then there is no GunicornLogger


if glogging is not None:

    class GunicornLogger(glogging.Logger):
        """gunicorn's error and access logs as JSON lines (gunicorn.conf.py sets it when LOG_FORMAT=json).

        An access line holds method, path (no query string), status, duration_ms, bytes, remote_addr and the
        request's ``request_id`` (the X-Request-ID the app answered with), as fields of their own.
        """

        def setup(self, cfg: GunicornConfig) -> None:
            super().setup(cfg)
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:
                    handler.setFormatter(JsonFormatter())

        def access(
            self,
            resp: GunicornResponse,
            req: GunicornRequest,
            environ: MutableMapping[str, Any],
            request_time: timedelta,
        ) -> None:
            if not self.access_log_enabled:
                return
            try:
                status = str(resp.status).split(None, 1)[0]
                headers = resp.headers.items() if hasattr(resp.headers, "items") else resp.headers
                request_id = next((v for k, v in headers if k.lower() == "x-request-id"), None)
                method, path = environ.get("REQUEST_METHOD", "-"), environ.get("PATH_INFO", "-")
                self.access_log.info(
                    "%s %s %s",
                    method,
                    path,
                    status,
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "path": path,
                        "status": int(status),
                        "duration_ms": round(request_time.total_seconds() * 1000, 3),
                        "bytes": getattr(resp, "sent", None),
                        "remote_addr": environ.get("REMOTE_ADDR"),
                    },
                )
            except Exception:
                self.exception("could not write an access log line")
