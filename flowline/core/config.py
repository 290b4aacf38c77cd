"""Settings read from the environment (documented in .env.example and the README)."""

import os
from urllib.parse import urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class ConfigError(ValueError):
    """A setting in the environment has a value Flowline cannot use."""


def _number(env, name, default, minimum, parse, kind):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if not value >= minimum:  # also refuses NaN
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _int(env, name, default, minimum=0):
    return _number(env, name, default, minimum, int, "an integer")


def _float(env, name, default, minimum=0.0):
    return _number(env, name, default, minimum, float, "a number")


def _port(env, name, default):
    value = _int(env, name, default, minimum=0)
    if value > 65535:
        raise ConfigError(f"{name} must be a TCP port (1-65535) or 0, got {value}")
    return value


def _choice(env, name, default, choices):
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _llm_api_key(env):
    """Return LLM_API_KEY with surrounding whitespace removed; the key itself is never put in a message."""
    key = env.get("LLM_API_KEY", "").strip()
    # It travels in an HTTP header: a control or non-ASCII character would make every call fail (and the HTTP
    # library's error would quote the header, key included).
    if key and not all(" " < ch < "\x7f" for ch in key):
        raise ConfigError("LLM_API_KEY contains whitespace, control or non-ASCII characters (the value is not shown)")
    return key


def _flag(env, name, default):
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


# Bearer tokens are compared as they travel in the Authorization header: printable ASCII, no spaces or commas.
API_TOKEN_MIN_CHARS = 16


def _api_tokens(env):
    """Return API_TOKENS as a list (comma-separated; empty: authentication off). No token is ever put in a message."""
    tokens = [t.strip() for t in env.get("API_TOKENS", "").split(",") if t.strip()]
    for n, token in enumerate(tokens, 1):
        if not all(" " < ch < "\x7f" for ch in token):
            raise ConfigError(
                f"API_TOKENS: token {n} contains whitespace, control or non-ASCII characters (the value is not shown)"
            )
        if len(token) < API_TOKEN_MIN_CHARS:
            raise ConfigError(
                f"API_TOKENS: token {n} is shorter than {API_TOKEN_MIN_CHARS} characters; make one "
                "with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
    return tokens


def _llm_base_url(env):
    """Return LLM_BASE_URL without a trailing slash (the provider appends /chat/completions)."""
    url = env.get("LLM_BASE_URL", "").strip() or "https://api.openai.com/v1"
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


def mask_secret_url(url):
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


def _cors_origins(env):
    """Return CORS_ORIGINS as a list: unset or empty, DEFAULT_CORS_ORIGINS; ``none``, no origin (CORS off)."""
    raw = env.get("CORS_ORIGINS", "").strip()
    if raw == "":
        return list(DEFAULT_CORS_ORIGINS)
    if raw.lower() == "none":
        return []
    origins = [o.strip() for o in raw.split(",") if o.strip()]
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


def _secret_key(env):
    """Return SECRET_KEY, or None when unset (the console then answers 503). The value is never put in a message."""
    key = env.get("SECRET_KEY", "").strip()
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


def _llm_model(env):
    """Return LLM_MODEL (the model of generative_ai nodes that name none), DEFAULT_LLM_MODEL when unset."""
    model = env.get("LLM_MODEL", "").strip()
    if len(model) > 200 or not model.isprintable():
        raise ConfigError("LLM_MODEL must be a model name of at most 200 printable characters")
    return model or DEFAULT_LLM_MODEL


def _gunicorn_threads(env):
    """Return GUNICORN_THREADS as gunicorn.conf.py reads it (default 2), for the defaults that follow it."""
    return _int(env, "GUNICORN_THREADS", 2, minimum=1)


# Waits in seconds before each retry of a webhook delivery, doubling from 5 s, then 8 h twice: 11 attempts over
# about 23.7 hours.
DEFAULT_WEBHOOK_RETRY_SCHEDULE_S = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800)


def _retry_schedule(env):
    """Return WEBHOOK_RETRY_SCHEDULE_S as a tuple of seconds (comma-separated; at least one, each at least 0)."""
    raw = env.get("WEBHOOK_RETRY_SCHEDULE_S", "").strip()
    if raw == "":
        return DEFAULT_WEBHOOK_RETRY_SCHEDULE_S
    try:
        schedule = tuple(float(part) for part in raw.split(","))
    except ValueError:
        schedule = ()
    if not schedule or not all(0 <= wait <= 7 * 86400 for wait in schedule):
        raise ConfigError(
            "WEBHOOK_RETRY_SCHEDULE_S must be comma-separated seconds between 0 and 604800, such as 5,30,120, "
            f"got {raw!r}"
        )
    return schedule


def _webhook_timing(env):
    """Return (WEBHOOK_TIMEOUT_S, WEBHOOK_LEASE_S): an attempt must end well within its lease."""
    timeout = _float(env, "WEBHOOK_TIMEOUT_S", 10.0, minimum=0.1)
    lease = _float(env, "WEBHOOK_LEASE_S", 30.0, minimum=1.0)
    if lease < timeout + 1:
        raise ConfigError(
            f"WEBHOOK_LEASE_S ({lease:g}) must be at least WEBHOOK_TIMEOUT_S + 1 ({timeout + 1:g}): another worker "
            "would send a delivery again while its attempt is still running"
        )
    return timeout, lease


def from_env(env=None):
    """Return Flowline's settings as a dict of Flask config keys, read from ``env`` (default: os.environ).

    :raise ConfigError: when a value cannot be used.
    """
    env = os.environ if env is None else env
    webhook_timeout_s, webhook_lease_s = _webhook_timing(env)
    return {
        "DATABASE_URL": env.get("DATABASE_URL", ""),
        "DB_POOL_MIN_SIZE": _int(env, "DB_POOL_MIN_SIZE", 1, minimum=0),
        "DB_POOL_MAX_SIZE": _int(env, "DB_POOL_MAX_SIZE", 4, minimum=1),
        "DB_POOL_TIMEOUT_S": _float(env, "DB_POOL_TIMEOUT_S", 2.0, minimum=0.1),
        # Requests a process lets queue for a connection while all are busy; the next one gets 503 at once (0: no bound).
        "DB_POOL_MAX_WAITING": _int(env, "DB_POOL_MAX_WAITING", 8, minimum=0),
        "STATEMENT_TIMEOUT_MS": _int(env, "STATEMENT_TIMEOUT_MS", 5000, minimum=0),
        "SYNC_RUN_TIMEOUT_S": _float(env, "SYNC_RUN_TIMEOUT_S", 25.0, minimum=0.1),
        "RUN_LEASE_SECONDS": _int(env, "RUN_LEASE_SECONDS", 30, minimum=1),
        # Async runs: attempts per run, the backoff before a retry (doubling each attempt) and a run's time bound.
        "RUN_MAX_ATTEMPTS": _int(env, "RUN_MAX_ATTEMPTS", 3, minimum=1),
        "RUN_RETRY_BACKOFF_S": _float(env, "RUN_RETRY_BACKOFF_S", 2.0, minimum=0.0),
        "ASYNC_RUN_TIMEOUT_S": _float(env, "ASYNC_RUN_TIMEOUT_S", 600.0, minimum=0.1),
        # Workers: threads per process, the longest wait for work when no notification arrives, and how long a
        # stopping worker waits for its current runs before leaving them to the lease sweep.
        "WORKER_CONCURRENCY": _int(env, "WORKER_CONCURRENCY", 2, minimum=1),
        "WORKER_POLL_INTERVAL_S": _float(env, "WORKER_POLL_INTERVAL_S", 1.0, minimum=0.05),
        "WORKER_DRAIN_TIMEOUT_S": _float(env, "WORKER_DRAIN_TIMEOUT_S", 60.0, minimum=0.0),
        # The port of a worker's own Prometheus endpoint (its run and step metrics); 0: not served.
        "WORKER_METRICS_PORT": _port(env, "WORKER_METRICS_PORT", 0),
        # Prefer: wait=N (GET /runs/{id}, POST /workflows/{id}/runs): the longest wait granted, and the requests
        # each gunicorn worker process lets wait at once (each holds one of its GUNICORN_THREADS, no connection);
        # by default all threads but one, so a process always has a thread for other requests.
        "WAIT_MAX_S": _int(env, "WAIT_MAX_S", 30, minimum=0),
        "WAIT_MAX_WAITERS": _int(env, "WAIT_MAX_WAITERS", _gunicorn_threads(env) - 1, minimum=0),
        # Webhook deliveries (flowline/worker/webhooks.py): delivery threads per worker (0: this worker delivers
        # none), the bound of one attempt, its lease, the waits before each retry, and whether private addresses
        # (loopback, RFC 1918, link-local...) may be delivered to.
        "WEBHOOK_CONCURRENCY": _int(env, "WEBHOOK_CONCURRENCY", 2, minimum=0),
        "WEBHOOK_TIMEOUT_S": webhook_timeout_s,
        "WEBHOOK_LEASE_S": webhook_lease_s,
        "WEBHOOK_RETRY_SCHEDULE_S": _retry_schedule(env),
        "WEBHOOK_ALLOW_PRIVATE": _flag(env, "WEBHOOK_ALLOW_PRIVATE", False),
        # Schedules (flowline/worker/schedules.py): how often each worker looks for due ticks, and how late a tick
        # may be found and still fire as itself (older ones are missed: each schedule's catchup decides).
        "SCHEDULE_POLL_INTERVAL_S": _float(env, "SCHEDULE_POLL_INTERVAL_S", 1.0, minimum=0.05),
        "SCHEDULE_MISFIRE_GRACE_S": _float(env, "SCHEDULE_MISFIRE_GRACE_S", 60.0, minimum=0.0),
        "MAX_INPUT_CHARS": _int(env, "MAX_INPUT_CHARS", 1_000_000, minimum=1),
        "MAX_UPLOAD_MB": _int(env, "MAX_UPLOAD_MB", 10, minimum=1),
        # POST /files extracts a PDF's text in a child process: killed past this many seconds (422), and given
        # this much address space, the interpreter and pypdf's ~40 MB included (over it: 422); at most this many
        # children per gunicorn worker process (the next upload gets 503 at once, not a queue). Each running
        # child holds one of the worker's GUNICORN_THREADS while it waits, so the default leaves one of the two
        # default threads free for every other request.
        "PDF_EXTRACT_TIMEOUT_S": _float(env, "PDF_EXTRACT_TIMEOUT_S", 5.0, minimum=0.1),
        "PDF_EXTRACT_MEMORY_MB": _int(env, "PDF_EXTRACT_MEMORY_MB", 512, minimum=64),
        "PDF_EXTRACT_CONCURRENCY": _int(env, "PDF_EXTRACT_CONCURRENCY", 1, minimum=1),
        # Largest JSON request body (larger: 413). 12 MiB holds MAX_INPUT_CHARS' million characters however the client
        # encodes them: up to 12 bytes per character when an emoji is sent as a \ud83d\ude00 surrogate-pair escape.
        "MAX_JSON_KB": _int(env, "MAX_JSON_KB", 12 * 1024, minimum=1),
        "CORS_ORIGINS": _cors_origins(env),
        # Bearer tokens every route but /livez, /readyz (and /metrics with METRICS_PUBLIC) requires; none: no auth.
        "API_TOKENS": _api_tokens(env),
        "METRICS_PUBLIC": _flag(env, "METRICS_PUBLIC", False),
        # Signs the console's sessions and CSRF tokens; the same in every gunicorn worker. None: /console/ is 503.
        "SECRET_KEY": _secret_key(env),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO").upper(),
        # text: one readable line per record (a terminal); json: one JSON object per line (log collectors).
        "LOG_FORMAT": _choice(env, "LOG_FORMAT", "text", ("text", "json")),
        # generative_ai: the openai provider is active whenever LLM_API_KEY is set, else the echo provider.
        "LLM_API_KEY": _llm_api_key(env),
        "LLM_BASE_URL": _llm_base_url(env),
        # generative_ai nodes whose config names no model ask for this one.
        "LLM_MODEL": _llm_model(env),
        "LLM_TIMEOUT_S": _float(env, "LLM_TIMEOUT_S", 30.0, minimum=0.1),
        "LLM_MAX_RETRIES": _int(env, "LLM_MAX_RETRIES", 3, minimum=0),
        "LLM_BACKOFF_S": _float(env, "LLM_BACKOFF_S", 0.5, minimum=0.0),
    }


def connection_kwargs(database_url, statement_timeout_ms, application_name):
    """Return the libpq connection string for ``database_url`` with Flowline's session settings added.

    The server-side ``statement_timeout`` bounds every query; the session time zone is UTC so timestamps
    serialised by PostgreSQL carry a ``+00:00`` offset. Options already in the URL are kept.
    """
    params = conninfo_to_dict(database_url)
    options = params.get("options", "")
    options = f"{options} -c statement_timeout={statement_timeout_ms} -c TimeZone=UTC".strip()
    params["options"] = options
    params.setdefault("application_name", application_name)
    # Without it a connection attempt to an unreachable host hangs for the OS's TCP timeout (minutes).
    params.setdefault("connect_timeout", "5")
    return make_conninfo(**params)


def mask_url(database_url):
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
    return make_conninfo(**params)
