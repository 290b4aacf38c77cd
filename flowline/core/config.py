"""Flowline's settings: one table, read from the environment into one frozen, typed object.

Every setting is declared once, as a field of :class:`Settings`: its environment variable (the field's name in
upper case), its type, default, bounds, whether it is a secret, which processes read it and its one-line meaning.
``from_env()`` reads them all; ``settings_of(app)`` is what the app was created with. `make docs`
(``python -m flowline.core.config_docs``) writes ``.env.example`` and the README's configuration table from the
table, and ``tests/unit/test_config_docs.py`` fails when either drifts from it.

To add a setting: one field below, then `make docs`.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import Flask
from psycopg.conninfo import conninfo_to_dict, make_conninfo


class ConfigError(ValueError):
    """A setting in the environment has a value Flowline cannot use."""


class Scope(enum.Enum):
    """Which processes read a setting (the value is how the docs say it)."""

    API = "API"
    WORKER = "worker"
    BOTH = "API, worker"
    # gunicorn.conf.py, in gunicorn's master: how the API is served.
    GUNICORN = "gunicorn"
    # docker-compose.yml only: Flowline never reads it.
    COMPOSE = "docker compose"


# The sections of .env.example, in order.
DATABASE = "Database"
RUNS = "Runs"
WORKERS = "Workers (`flask --app app worker`, flowline/worker/)"
WEBHOOKS = "Webhooks (flowline/worker/webhooks.py)"
SCHEDULES = "Schedules (flowline/worker/schedules.py)"
LLM = "generative_ai nodes (flowline/engine/providers.py)"
HTTP = "HTTP and logs"
GUNICORN = "gunicorn (gunicorn.conf.py)"
COMPOSE = "docker compose only (docker-compose.yml)"

# gunicorn's master sets SERVER_SOFTWARE=gunicorn/<version> in its environment before it forks the workers that call
# create_app(): how a process tells it serves under gunicorn. It is gunicorn's variable, not a Flowline setting.
GUNICORN_MARKER = "SERVER_SOFTWARE"


@dataclass(frozen=True)
class Derived:
    """A default computed from other settings: ``text`` is how the docs say it, ``compute(values, under_gunicorn)``
    its value from the other settings' values (by field name) and whether the process serves under gunicorn."""

    text: str
    compute: Callable[[Mapping[str, Any], bool], Any]


@dataclass(frozen=True)
class Setting:
    """One row of the table: a setting's declaration (``name`` is its environment variable)."""

    read: Callable[[Setting, str], Any]
    default: Any
    scope: Scope
    section: str
    meaning: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    secret: bool = False
    # An empty value means the default; when False, the reader is given the empty value (ACCESS_LOG: off).
    blank_is_default: bool = True
    # The README's Default cell when the default alone does not say it.
    default_text: str | None = None
    # .env.example's value when it shows an example rather than the default (DATABASE_URL).
    example: str | None = None
    name: str = ""

    @property
    def attribute(self) -> str:
        """Return the name of this setting's attribute on :class:`Settings`."""
        return self.name.lower()


_META = "flowline.setting"


def _setting(
    read: Callable[[Setting, str], Any], *, default: Any, scope: Scope, section: str, meaning: str, **rest: Any
) -> Any:
    """Return a :class:`Settings` field declaring one setting (see :class:`Setting` for ``rest``)."""
    return field(metadata={_META: Setting(read, default, scope, section, meaning, **rest)})


# --- readers: each turns a setting's non-empty value into its typed value, or raises ConfigError ---------------------


def _number(setting: Setting, raw: str, parse: Callable[[str], Any], kind: str) -> Any:
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{setting.name} must be {kind}, got {raw!r}") from None
    if setting.minimum is not None and not value >= setting.minimum:  # also refuses NaN
        raise ConfigError(f"{setting.name} must be at least {setting.minimum}, got {value}")
    return value


def _int(setting: Setting, raw: str) -> int:
    value: int = _number(setting, raw, int, "an integer")
    return value


def _float(setting: Setting, raw: str) -> float:
    value: float = _number(setting, raw, float, "a number")
    return value


def _port(setting: Setting, raw: str) -> int:
    value = _int(setting, raw)
    if value > 65535:
        raise ConfigError(f"{setting.name} must be a TCP port (1-65535) or 0, got {value}")
    return value


def _text(setting: Setting, raw: str) -> str:
    return raw


def _upper(setting: Setting, raw: str) -> str:
    return raw.upper()


def _choice(setting: Setting, raw: str) -> str:
    value = raw.strip().lower()
    if value == "":
        default: str = setting.default
        return default
    if value not in setting.choices:
        raise ConfigError(f"{setting.name} must be one of {', '.join(setting.choices)}, got {value!r}")
    return value


def _flag(setting: Setting, raw: str) -> bool:
    value = raw.strip().lower()
    if value == "":
        default: bool = setting.default
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{setting.name} must be 1 or 0 (true/false, yes/no, on/off), got {value!r}")


def _optional_text(setting: Setting, raw: str) -> str | None:
    """ACCESS_LOG: empty turns it off (None)."""
    return raw or None


def _printable_ascii(value: str) -> bool:
    # It travels in an HTTP header: a control or non-ASCII character would make every use fail (and an HTTP
    # library's error would quote the header, secret included).
    return all(" " < ch < "\x7f" for ch in value)


def _llm_api_key(setting: Setting, raw: str) -> str:
    """Return LLM_API_KEY with surrounding whitespace removed; the key itself is never put in a message."""
    key = raw.strip()
    if key and not _printable_ascii(key):
        raise ConfigError("LLM_API_KEY contains whitespace, control or non-ASCII characters (the value is not shown)")
    return key


# Bearer tokens are compared as they travel in the Authorization header: printable ASCII, no spaces or commas.
API_TOKEN_MIN_CHARS = 16


def _api_tokens(setting: Setting, raw: str) -> tuple[str, ...]:
    """Return API_TOKENS (comma-separated; none: authentication off). No token is ever put in a message."""
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    for n, token in enumerate(tokens, 1):
        if not _printable_ascii(token):
            raise ConfigError(
                f"API_TOKENS: token {n} contains whitespace, control or non-ASCII characters (the value is not shown)"
            )
        if len(token) < API_TOKEN_MIN_CHARS:
            raise ConfigError(
                f"API_TOKENS: token {n} is shorter than {API_TOKEN_MIN_CHARS} characters; make one "
                "with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
    return tokens


DEFAULT_LLM_BASE_URL = "https://api.openai.com/v1"


def _llm_base_url(setting: Setting, raw: str) -> str:
    """Return LLM_BASE_URL without a trailing slash (the provider appends /chat/completions)."""
    url = raw.strip() or DEFAULT_LLM_BASE_URL
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:
        usable = False
    if not usable:
        raise ConfigError(
            f"LLM_BASE_URL must be an http(s) URL such as https://api.openai.com/v1, got {mask_secret_url(url)!r}"
        )
    if parts.username is not None or parts.password is not None:
        # It would replace the Bearer key with Basic auth, and it would show up wherever the URL is shown.
        raise ConfigError("LLM_BASE_URL must not contain a user or password; put the key in LLM_API_KEY")
    return url.rstrip("/")


def mask_secret_url(url: str) -> str:
    """Return ``url`` with any user:password part replaced by ``***``, for logs and messages."""
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
    except ValueError:
        return "<unparseable URL>"


# CORS_ORIGINS unset or empty: the origins of the earlier service's browser front end, which it allowed out of the box.
DEFAULT_CORS_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000")


def _cors_origins(setting: Setting, raw: str) -> tuple[str, ...]:
    """Return CORS_ORIGINS: blank, DEFAULT_CORS_ORIGINS; ``none``, no origin (CORS off)."""
    value = raw.strip()
    if value == "":
        return DEFAULT_CORS_ORIGINS
    if value.lower() == "none":
        return ()
    origins = tuple(o.strip() for o in value.split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (
            parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query or parts.fragment
        ):
            raise ConfigError(
                f"CORS_ORIGINS: {origin!r} is not an origin such as https://app.example or "
                "http://localhost:3000 (scheme and host, optional port, no path); 'none' turns CORS off"
            )
    return origins


# Shortest SECRET_KEY accepted: the console's sessions and CSRF tokens are signed with it.
SECRET_KEY_MIN_CHARS = 32


def _secret_key(setting: Setting, raw: str) -> str | None:
    """Return SECRET_KEY, or None when blank (the console then answers 503). The value is never put in a message."""
    key = raw.strip()
    if not key:
        return None
    if len(key) < SECRET_KEY_MIN_CHARS:
        raise ConfigError(
            f"SECRET_KEY is shorter than {SECRET_KEY_MIN_CHARS} characters (the value is not shown); make one "
            "with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return key


# The model of a generative_ai node whose config names none, unless LLM_MODEL names another.
DEFAULT_LLM_MODEL = "gpt-4o-mini"


def _llm_model(setting: Setting, raw: str) -> str:
    """Return LLM_MODEL, DEFAULT_LLM_MODEL when blank."""
    model = raw.strip()
    if len(model) > 200 or not model.isprintable():
        raise ConfigError("LLM_MODEL must be a model name of at most 200 printable characters")
    return model or DEFAULT_LLM_MODEL


# Waits in seconds before each retry of a webhook delivery, doubling from 5 s, then 8 h twice: 11 attempts over
# about 23.7 hours.
DEFAULT_WEBHOOK_RETRY_SCHEDULE_S = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 28800.0)


def _retry_schedule(setting: Setting, raw: str) -> tuple[float, ...]:
    """Return WEBHOOK_RETRY_SCHEDULE_S as seconds (comma-separated; at least one, each between 0 and a week)."""
    value = raw.strip()
    if value == "":
        return DEFAULT_WEBHOOK_RETRY_SCHEDULE_S
    try:
        schedule = tuple(float(part) for part in value.split(","))
    except ValueError:
        schedule = ()
    if not schedule or not all(0 <= wait <= 7 * 86400 for wait in schedule):
        raise ConfigError(
            "WEBHOOK_RETRY_SCHEDULE_S must be comma-separated seconds between 0 and 604800, such as 5,30,120, "
            f"got {value!r}"
        )
    return schedule


# --- defaults computed from other settings ---------------------------------------------------------------------------


def _pool_size_default(values: Mapping[str, Any], under_gunicorn: bool) -> int:
    # Under gunicorn, one connection per thread: no thread waits for one. Elsewhere (flask commands, tests' apps) 4.
    # The worker sizes its own pool (flowline/worker/process.py).
    size: int = values["gunicorn_threads"] if under_gunicorn else 4
    return size


def _waiters_default(values: Mapping[str, Any], under_gunicorn: bool) -> int:
    # All threads but one, so a gunicorn worker process always has a thread for other requests.
    threads: int = values["gunicorn_threads"]
    return threads - 1


# --- the table -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Flowline's settings, each read from the environment variable of its name in upper case (``from_env``).

    Fields are declared in .env.example's order; each one's metadata is its :class:`Setting`.
    """

    # fmt: off
    # --- Database
    database_url: str = _setting(
        _text, default="", scope=Scope.BOTH, section=DATABASE,
        meaning="libpq URL (`sslmode`, `sslrootcert`, `options`... pass through; TLS: see [Database over "
        "TLS](#database-over-tls)). Its password is masked wherever Flowline shows the URL. Unset: `make run` and "
        "`make test` start a private PostgreSQL, and docker compose builds it from the `POSTGRES_*` variables.",
        default_text="(a private server)",
        example="postgresql://flowline:secret@db.example.com:5432/flowline?sslmode=require",
    )
    database_direct_url: str = _setting(
        _text, default="", scope=Scope.BOTH, section=DATABASE,
        meaning="The PostgreSQL server itself when `DATABASE_URL` points at PgBouncer in transaction pooling mode: "
        "LISTEN connections, migrations and the `flask` commands (export, import, prune-runs) use it. Set and "
        "different from `DATABASE_URL`, Flowline keeps no session state on pooled connections (no prepared "
        "statements, no startup `options`: `statement_timeout` and UTC are set per transaction). See [Scaling "
        "Flowline](#scaling-flowline).",
        default_text="(`DATABASE_URL`)",
    )
    database_replica_url: str = _setting(
        _text, default="", scope=Scope.API, section=DATABASE,
        meaning="A streaming replica of the database: `GET /runs`, `GET /usage` and the console's runs list, queue "
        "and usage pages read there while its lag is within `REPLICA_MAX_LAG_S`, and from the primary otherwise (a replica never fails a "
        "request); `/readyz` reports it. Empty: every read goes to the primary.",
        default_text="(none)",
    )
    replica_max_lag_s: float = _setting(
        _float, default=5.0, minimum=0.0, scope=Scope.API, section=DATABASE,
        meaning="Most seconds a replica may lag behind the primary and still serve the reads above.",
    )
    db_pool_min_size: int = _setting(
        _int, default=1, minimum=0, scope=Scope.BOTH, section=DATABASE,
        meaning="Connections each process keeps open, even when idle.",
    )
    db_pool_max_size: int = _setting(
        _int, default=Derived("`GUNICORN_THREADS` under gunicorn, else `4`", _pool_size_default),
        minimum=1, scope=Scope.API, section=DATABASE,
        meaning="Most connections per process; under gunicorn the default is one per thread, so no thread waits for "
        "one. The worker sizes its own pool (`WORKER_CONCURRENCY` + `WEBHOOK_CONCURRENCY` + 2).",
    )
    db_pool_timeout_s: float = _setting(
        _float, default=2.0, minimum=0.1, scope=Scope.BOTH, section=DATABASE,
        meaning="Seconds a request waits for a free connection before answering 503 with `Retry-After`.",
    )
    db_pool_max_waiting: int = _setting(
        _int, default=8, minimum=0, scope=Scope.API, section=DATABASE,
        meaning="Requests a process lets wait for a connection while `DB_POOL_MAX_SIZE` others hold one; the next "
        "gets 503 with `Retry-After` at once instead of queueing (0: no bound). Matters when `GUNICORN_THREADS` "
        "exceeds `DB_POOL_MAX_SIZE`.",
    )
    statement_timeout_ms: int = _setting(
        _int, default=5000, minimum=0, scope=Scope.BOTH, section=DATABASE,
        meaning="Server-side `statement_timeout` on every connection, in milliseconds (0: no bound).",
    )

    # --- Runs
    sync_run_timeout_s: float = _setting(
        _float, default=25.0, minimum=0.1, scope=Scope.API, section=RUNS,
        meaning="Seconds a synchronous run (`POST /workflows/{id}/run`) may take before it fails with 504; "
        "gunicorn's worker timeout is this + 10.",
    )
    run_lease_seconds: int = _setting(
        _int, default=30, minimum=1, scope=Scope.BOTH, section=RUNS,
        meaning="Seconds a run's lease lasts before another worker may take the run over; a worker renews the "
        "leases of its runs every third of this (see [Leases](#leases)).",
    )
    run_max_attempts: int = _setting(
        _int, default=3, minimum=1, scope=Scope.API, section=RUNS,
        meaning="Attempts an async run (`POST /workflows/{id}/runs`) gets: a retryable failure (the LLM provider "
        "overloaded or unreachable; the worker died or lost the database mid-run) re-queues it until this many ran. "
        "Fixed on the run when the API queues it (see [Retries](#retries-and-backoff)).",
    )
    run_retry_backoff_s: float = _setting(
        _float, default=2.0, minimum=0.0, scope=Scope.WORKER, section=RUNS,
        meaning="Seconds an async run waits in the queue after a retryable failure, doubling with each attempt "
        "(capped at 300 s).",
    )
    async_run_timeout_s: float = _setting(
        _float, default=600.0, minimum=0.1, scope=Scope.WORKER, section=RUNS,
        meaning="Seconds one attempt of an async run may take in a worker before it fails (`Failed`, not retried).",
    )
    wait_max_s: int = _setting(
        _int, default=30, minimum=0, scope=Scope.API, section=RUNS,
        meaning="Longest wait in seconds a request may ask for with `Prefer: wait=N` (`GET /runs/{id}`, `POST "
        "/workflows/{id}/runs`); a longer one is cut to this. Keep it below your proxies' read timeout (often 60 "
        "s). 0: no waits. See [Waiting for a run](#waiting-for-a-run).",
    )
    wait_max_waiters: int = _setting(
        _int, default=Derived("`GUNICORN_THREADS` - 1", _waiters_default), minimum=0, scope=Scope.API, section=RUNS,
        meaning="Requests each gunicorn worker process lets wait at once (each holds one of its `GUNICORN_THREADS`, "
        "but no database connection); over it a request answers at once. The default leaves one thread free for "
        "other requests: raise `GUNICORN_THREADS` (and set `DB_POOL_MAX_SIZE` explicitly) for many waiters.",
    )
    max_input_chars: int = _setting(
        _int, default=1_000_000, minimum=1, scope=Scope.API, section=RUNS,
        meaning="Longest `input_text` accepted, in characters (longer: 422).",
    )
    max_upload_mb: int = _setting(
        _int, default=10, minimum=1, scope=Scope.API, section=RUNS,
        meaning="Largest PDF `POST /files` accepts, in MiB (larger: 413).",
    )
    pdf_extract_timeout_s: float = _setting(
        _float, default=5.0, minimum=0.1, scope=Scope.API, section=RUNS,
        meaning="Seconds an upload's text extraction (a child process) may take before it is killed and the upload "
        "refused with 422; nothing is stored (see [Uploads](#uploads)).",
    )
    pdf_extract_memory_mb: int = _setting(
        _int, default=512, minimum=64, scope=Scope.API, section=RUNS,
        meaning="Address space in MiB that extraction process may use (RLIMIT_AS), the interpreter and pypdf's ~40 "
        "MiB included; over it: 422.",
    )
    pdf_extract_concurrency: int = _setting(
        _int, default=1, minimum=1, scope=Scope.API, section=RUNS,
        meaning="Extractions each gunicorn worker process runs at once; the next upload gets 503 with `Retry-After` "
        "at once instead of waiting. Each holds one of the worker's `GUNICORN_THREADS` while it runs: keep it below "
        "`GUNICORN_THREADS`, so other requests always find a thread.",
    )
    max_json_kb: int = _setting(
        _int, default=12 * 1024, minimum=1, scope=Scope.API, section=RUNS,
        meaning="Largest JSON request body, in KiB (larger: 413). The default, 12 MiB, holds a `MAX_INPUT_CHARS` "
        "`input_text` however it is encoded (at worst 12 bytes a character: an emoji sent as a `\\ud83d\\ude00` "
        "escape); raise the two together. Uploads keep `MAX_UPLOAD_MB`.",
    )

    # --- Workers
    worker_concurrency: int = _setting(
        _int, default=2, minimum=1, scope=Scope.WORKER, section=WORKERS,
        meaning="Run threads per worker process (`--concurrency N` overrides it).",
    )
    worker_poll_interval_s: float = _setting(
        _float, default=1.0, minimum=0.05, scope=Scope.WORKER, section=WORKERS,
        meaning="Longest wait in seconds before an idle worker looks at the queue when no notification woke it.",
    )
    worker_drain_timeout_s: float = _setting(
        _float, default=60.0, minimum=0.0, scope=Scope.WORKER, section=WORKERS,
        meaning="Seconds a stopping worker (SIGTERM, SIGINT) waits for its runs in progress before exiting and "
        "leaving them to the lease sweep; keep docker-compose.yml's `stop_grace_period` above it.",
    )
    worker_metrics_port: int = _setting(
        _port, default=0, minimum=0, scope=Scope.WORKER, section=WORKERS,
        meaning="Port of a worker's own Prometheus `/metrics` (all interfaces): its run and step durations, "
        "finished runs, heartbeat and pool; 0: not served. Give each worker on one host its own port; docker "
        "compose sets `9101`. See [Metrics](#metrics).",
        default_text="`0` (not served)",
    )

    history_partition_period: str = _setting(
        _choice, default="week", choices=("day", "week", "month"), scope=Scope.WORKER, section=WORKERS,
        meaning="How long a partition of run_steps and run_events is (UTC days, weeks from Monday, months), for the "
        "partitions made from then on: workers make them ahead, `flask --app app import` for the runs it brings. "
        "prune-runs drops whole partitions, so a shorter period frees space sooner. See [Scaling "
        "Flowline](#scaling-flowline).",
    )
    history_partitions_ahead: int = _setting(
        _int, default=3, minimum=2, scope=Scope.WORKER, section=WORKERS,
        meaning="Partitions of run_steps and run_events the workers keep made beyond the current one; `/readyz` "
        "and `flowline_history_partitions_ahead` warn under 2 (with none left, saving a run's steps fails).",
    )

    # --- Webhooks
    webhook_concurrency: int = _setting(
        _int, default=2, minimum=0, scope=Scope.WORKER, section=WEBHOOKS,
        meaning="Webhook delivery threads per worker process (0: this worker delivers none); each sends one "
        "delivery at a time. See [Webhooks](#webhooks).",
    )
    webhook_timeout_s: float = _setting(
        _float, default=10.0, minimum=0.1, scope=Scope.WORKER, section=WEBHOOKS,
        meaning="Seconds one delivery attempt may take in all (resolving, connecting, sending, reading the answer), "
        "however slowly the receiver answers.",
    )
    webhook_lease_s: float = _setting(
        _float, default=30.0, minimum=1.0, scope=Scope.WORKER, section=WEBHOOKS,
        meaning="Seconds a worker holds a delivery it is sending before another worker may send it again; at least "
        "`WEBHOOK_TIMEOUT_S` + 1.",
    )
    webhook_retry_schedule_s: tuple[float, ...] = _setting(
        _retry_schedule, default=DEFAULT_WEBHOOK_RETRY_SCHEDULE_S, scope=Scope.WORKER, section=WEBHOOKS,
        meaning="Comma-separated seconds to wait before each retry of a failed delivery; after the last one it is "
        "`Dead`. The default: 11 attempts over about 23.7 hours.",
    )
    webhook_allow_private: bool = _setting(
        _flag, default=False, scope=Scope.WORKER, section=WEBHOOKS,
        meaning="`1`: deliver to private addresses too (loopback, RFC 1918, link-local such as 169.254.169.254, "
        "`::1`); `0`: only globally routable ones (a receiver inside your network needs `1`).",
    )

    # --- Schedules
    schedule_poll_interval_s: float = _setting(
        _float, default=1.0, minimum=0.05, scope=Scope.WORKER, section=SCHEDULES,
        meaning="Seconds between a worker's looks for due schedule ticks (one index probe each): the most a tick "
        "waits for its run. See [Schedules](#schedules).",
    )
    schedule_misfire_grace_s: float = _setting(
        _float, default=60.0, minimum=0.0, scope=Scope.WORKER, section=SCHEDULES,
        meaning="Seconds late a tick may be found and still fire as itself; an older tick was missed (downtime) and "
        "its schedule's `catchup` decides.",
    )

    # --- generative_ai nodes
    llm_api_key: str = _setting(
        _llm_api_key, default="", scope=Scope.BOTH, section=LLM, secret=True,
        meaning="API key of an OpenAI-compatible Chat Completions endpoint; set, `generative_ai` nodes call it "
        "(provider `openai`); empty, the `echo` provider (returns the rendered prompt, generates nothing).",
        default_text="(none)",
    )
    llm_base_url: str = _setting(
        _llm_base_url, default=DEFAULT_LLM_BASE_URL, scope=Scope.BOTH, section=LLM,
        meaning="The endpoint's base URL; the provider POSTs to `<this>/chat/completions` (e.g. "
        "`http://localhost:11434/v1` for a local server). No user:password in it.",
    )
    llm_model: str = _setting(
        _llm_model, default=DEFAULT_LLM_MODEL, scope=Scope.BOTH, section=LLM,
        meaning="The model of a `generative_ai` node whose config names none (the step's note says when it was "
        "used).",
    )
    llm_timeout_s: float = _setting(
        _float, default=30.0, minimum=0.1, scope=Scope.BOTH, section=LLM,
        meaning="Seconds one HTTP attempt may take (each attempt is also cut at the run's deadline).",
    )
    llm_max_retries: int = _setting(
        _int, default=3, minimum=0, scope=Scope.BOTH, section=LLM,
        meaning="Further attempts after a 5xx, a timeout or a connection error (other 4xx are not retried; a 429 "
        "is a wait, not a failure: see [LLM budgets](#llm-budgets)); 0: one attempt only.",
    )
    llm_max_retry_after_s: float = _setting(
        _float, default=600.0, minimum=0.0, scope=Scope.BOTH, section=LLM,
        meaning="Longest pause in seconds a provider's 429 `Retry-After` may impose on its model (a longer one is "
        "cut to this).",
    )
    llm_max_budget_wait_s: float = _setting(
        _float, default=3600.0, minimum=0.0, scope=Scope.WORKER, section=LLM,
        meaning="Most seconds a queued run may wait in total for LLM budgets and 429 pauses; a wait that would take "
        "it past this fails the run, saying so.",
    )
    llm_backoff_s: float = _setting(
        _float, default=0.5, minimum=0.0, scope=Scope.BOTH, section=LLM,
        meaning="First wait between attempts in seconds, doubling each time (capped at 8 s, full jitter); a "
        "`Retry-After` from the provider wins.",
    )

    # --- HTTP and logs
    cors_origins: tuple[str, ...] = _setting(
        _cors_origins, default=DEFAULT_CORS_ORIGINS, scope=Scope.API, section=HTTP,
        meaning="Comma-separated origins whose browser scripts may call the JSON API (never `/console/`, never with "
        "credentials); empty: the earlier service's front end (these two); a list replaces them; `none`: CORS off. "
        "See [CORS](#cors).",
    )
    api_tokens: tuple[str, ...] = _setting(
        _api_tokens, default=(), scope=Scope.API, section=HTTP, secret=True,
        meaning="Comma-separated bearer tokens (16+ printable ASCII characters each, e.g. `python3 -c 'import "
        "secrets; print(secrets.token_urlsafe(32))'`); set, every route but `/livez` and `/readyz` needs "
        "`Authorization: Bearer <one of them>` (see [Security](#security)); empty: no authentication. Required by "
        "docker-compose.yml.",
        default_text="(none: no authentication)",
    )
    metrics_public: bool = _setting(
        _flag, default=False, scope=Scope.API, section=HTTP,
        meaning="`1`: `GET /metrics` answers without a token even when `API_TOKENS` is set (for a scraper inside "
        "your network); `0`: it needs one like any route.",
    )
    secret_key: str | None = _setting(
        _secret_key, default=None, scope=Scope.API, section=HTTP, secret=True,
        meaning="Signs the console's session cookies and CSRF tokens (32+ characters, e.g. `python3 -c 'import "
        "secrets; print(secrets.token_urlsafe(32))'`); every gunicorn worker must see the same one. Unset: the JSON "
        "API serves as usual and `/console/` answers 503. `make run` makes one in `.data/secret_key`; required by "
        "docker-compose.yml.",
        default_text="(none: the console answers 503)",
    )
    log_level: str = _setting(
        _upper, default="INFO", scope=Scope.BOTH, section=HTTP,
        meaning="Level of Flowline's and gunicorn's logs: DEBUG, INFO, WARNING, ERROR.",
    )
    log_format: str = _setting(
        _choice, default="text", choices=("text", "json"), scope=Scope.BOTH, section=HTTP,
        meaning="`text`: one readable line per record (for a terminal); `json`: one JSON object per line with ts, "
        "level, logger, message, request_id, run_id... (gunicorn's access log too; see [Logs](#logs)). The Docker "
        "image and docker-compose.yml default to `json`.",
    )

    # --- gunicorn
    bind: str = _setting(
        _text, default="127.0.0.1:8000", scope=Scope.GUNICORN, section=GUNICORN,
        meaning="Address gunicorn listens on (host:port; `-b` on the command line overrides it); the Docker image "
        "sets 0.0.0.0:8000.",
    )
    web_concurrency: int = _setting(
        _int, default=2, minimum=1, scope=Scope.GUNICORN, section=GUNICORN,
        meaning="gunicorn worker processes (each has its own pool).",
    )
    gunicorn_threads: int = _setting(
        _int, default=2, minimum=1, scope=Scope.GUNICORN, section=GUNICORN,
        meaning="Threads per gunicorn worker process. Two, because on a 2-core box more only contend for the GIL "
        "(bench/http_bench.py measured 4 slower on every route); raise it when many sync runs wait on an LLM "
        "provider at once.",
    )
    access_log: str | None = _setting(
        _optional_text, default="-", scope=Scope.GUNICORN, section=GUNICORN, blank_is_default=False,
        meaning="Access log destination: `-` for stdout, a file path, or empty to turn it off.",
    )
    prometheus_multiproc_dir: str = _setting(
        _text, default="", scope=Scope.GUNICORN, section=GUNICORN,
        meaning="Directory of prometheus-client's multiprocess files, so `GET /metrics` adds up every gunicorn "
        "worker; emptied when gunicorn starts, one per gunicorn. Empty: a private temporary directory, removed at "
        "exit (a tmpfs such as `/dev/shm` is fastest).",
        default_text="(a private temporary directory)",
    )
    # fmt: on

    def __post_init__(self) -> None:
        """Refuse settings that contradict each other.

        :raise ConfigError: WEBHOOK_LEASE_S below WEBHOOK_TIMEOUT_S + 1.
        """
        if self.webhook_lease_s < self.webhook_timeout_s + 1:
            raise ConfigError(
                f"WEBHOOK_LEASE_S ({self.webhook_lease_s:g}) must be at least WEBHOOK_TIMEOUT_S + 1 "
                f"({self.webhook_timeout_s + 1:g}): another worker would send a delivery again while its attempt is "
                "still running"
            )

    @property
    def direct_url(self) -> str:
        """Return the URL of the PostgreSQL server itself: DATABASE_DIRECT_URL, else DATABASE_URL."""
        return self.database_direct_url or self.database_url

    @property
    def session_free(self) -> bool:
        """Return whether pooled connections may keep no session state: DATABASE_URL is a pooler in transaction
        mode (a DATABASE_DIRECT_URL that differs from it says so)."""
        return self.direct_url != self.database_url

    def secret_values(self) -> tuple[str, ...]:
        """Return the values of the secret settings that are set (API_TOKENS' one by one), to mask in logs."""
        found: list[str] = []
        for setting in FLOWLINE_SETTINGS:
            if setting.secret:
                value = getattr(self, setting.attribute)
                found += value if isinstance(value, tuple) else [value or ""]
        return tuple(v for v in found if v)


def _declared(item: dataclasses.Field[Any]) -> Setting:
    setting: Setting = item.metadata[_META]
    return dataclasses.replace(setting, name=item.name.upper())


# Flowline's settings (what Settings holds), in .env.example's order.
FLOWLINE_SETTINGS: tuple[Setting, ...] = tuple(_declared(item) for item in dataclasses.fields(Settings))
BY_NAME: Mapping[str, Setting] = {setting.name: setting for setting in FLOWLINE_SETTINGS}


def _compose_only(name: str, default: str, meaning: str) -> Setting:
    return Setting(_text, default, Scope.COMPOSE, COMPOSE, meaning, name=name)


# Variables docker-compose.yml reads and Flowline never does: documented beside the settings, not in Settings.
COMPOSE_VARIABLES: tuple[Setting, ...] = (
    _compose_only(
        "POSTGRES_USER", "flowline", "The postgres service's superuser; compose builds `DATABASE_URL` from these three."
    ),
    _compose_only(
        "POSTGRES_PASSWORD",
        "flowline",
        "Its password: change it anywhere but a laptop; URL-safe characters only (letters, digits, -._~).",
    ),
    _compose_only("POSTGRES_DB", "flowline", "The database Flowline uses."),
    _compose_only(
        "PGBOUNCER_POOL_SIZE",
        "20",
        "Server connections PgBouncer keeps to PostgreSQL for every api and worker process together (its "
        "`default_pool_size`); see [Scaling Flowline](#scaling-flowline).",
    ),
    _compose_only(
        "PGADMIN_DEFAULT_EMAIL",
        "admin@example.com",
        "pgAdmin's login email (`docker compose --profile dev up`, http://localhost:5050; add a server with host "
        "postgres).",
    ),
    _compose_only("PGADMIN_DEFAULT_PASSWORD", "admin", "pgAdmin's login password."),
)

# Every variable .env.example and the README document, in their order.
TABLE: tuple[Setting, ...] = FLOWLINE_SETTINGS + COMPOSE_VARIABLES


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Return Flowline's settings read from ``env`` (default: os.environ); unset or empty: each one's default.

    :raise ConfigError: when a value cannot be used; the message names the variable and never shows a secret.
    """
    env = os.environ if env is None else env
    under_gunicorn = env.get(GUNICORN_MARKER, "").startswith("gunicorn/")
    values: dict[str, Any] = {}
    derived: list[Setting] = []
    for setting in FLOWLINE_SETTINGS:
        raw = env.get(setting.name)
        if raw is not None and (raw != "" or not setting.blank_is_default):
            values[setting.attribute] = setting.read(setting, raw)
        elif isinstance(setting.default, Derived):
            derived.append(setting)
        else:
            values[setting.attribute] = setting.default
    for setting in derived:
        values[setting.attribute] = setting.default.compute(values, under_gunicorn)
    return Settings(**values)


def override(settings: Settings, values: Mapping[str, Any]) -> Settings:
    """Return ``settings`` with the settings ``values`` names (by variable: ``{"DB_POOL_MAX_SIZE": 10}``) replaced by
    typed values (a list for a tuple); keys that name no setting are left out. Bounds are not checked (tests go
    below them on purpose); settings that contradict each other are refused.

    :raise ConfigError: as ``Settings`` refuses a contradiction.
    """
    changes: dict[str, Any] = {
        BY_NAME[name].attribute: tuple(value) if isinstance(value, list) else value
        for name, value in values.items()
        if name in BY_NAME
    }
    return dataclasses.replace(settings, **changes)


EXTENSION = "flowline.settings"


def settings_of(app: Flask) -> Settings:
    """Return the Settings ``app`` was created with (``create_app`` keeps them in ``app.extensions``)."""
    settings: Settings = app.extensions[EXTENSION]
    return settings


def connection_kwargs(
    database_url: str, statement_timeout_ms: int, application_name: str, *, session_options: bool = True
) -> str:
    """Return the libpq connection string for ``database_url`` with Flowline's session settings added.

    The server-side ``statement_timeout`` bounds every query; the session time zone is UTC so timestamps
    serialised by PostgreSQL carry a ``+00:00`` offset; ``jit`` is off, since compiling a plan whose estimated cost
    crosses ``jit_above_cost`` took PostgreSQL 1.6 s where running it took 0.2 (a list of 25,000 runs over 29
    partitions, bench/scale_bench.py), and no query of Flowline's runs long enough to gain it back. Options already
    in the URL are kept. With ``session_options`` False (a pooler in transaction mode refuses the ``options``
    startup parameter) none is added: the caller sets them per transaction (flowline/data/db.py).
    """
    params = conninfo_to_dict(database_url)
    if session_options:
        options = params.get("options", "")
        params["options"] = f"{options} -c statement_timeout={statement_timeout_ms} -c TimeZone=UTC -c jit=off".strip()
    params.setdefault("application_name", application_name)
    # Without it a connection attempt to an unreachable host hangs for the OS's TCP timeout (minutes).
    params.setdefault("connect_timeout", "5")
    return make_conninfo("", **params)


def mask_url(database_url: str) -> str:
    """Return ``database_url`` with any password replaced by ``***``, for logs and messages.

    A URL stays a URL (``postgresql://user:***@host/db``); a key=value connection string stays one.
    """
    try:
        params = conninfo_to_dict(database_url)
    except Exception:
        return "<unparseable DATABASE_URL>"
    if "://" in database_url:
        parts = urlsplit(database_url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = "&".join("password=***" if pair.startswith("password=") else pair for pair in parts.query.split("&"))
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **params)
