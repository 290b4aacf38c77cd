"""Settings read from the environment (documented in .env.example and the README)."""

import os
from urllib.parse import urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class ConfigError(ValueError):
    """A setting in the environment has a value Flowline cannot use."""


def _int(env, name, default, minimum=0):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env, name, default, minimum=0.0):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def from_env(env=None):
    """Return Flowline's settings as a dict of Flask config keys, read from ``env`` (default: os.environ).

    :raise ConfigError: when a value cannot be used.
    """
    env = os.environ if env is None else env
    origins = [o.strip() for o in env.get("CORS_ORIGINS", "").split(",") if o.strip()]
    return {
        "DATABASE_URL": env.get("DATABASE_URL", ""),
        "DB_POOL_MIN_SIZE": _int(env, "DB_POOL_MIN_SIZE", 1, minimum=0),
        "DB_POOL_MAX_SIZE": _int(env, "DB_POOL_MAX_SIZE", 4, minimum=1),
        "DB_POOL_TIMEOUT_S": _float(env, "DB_POOL_TIMEOUT_S", 2.0, minimum=0.1),
        "STATEMENT_TIMEOUT_MS": _int(env, "STATEMENT_TIMEOUT_MS", 5000, minimum=0),
        "SYNC_RUN_TIMEOUT_S": _float(env, "SYNC_RUN_TIMEOUT_S", 25.0, minimum=0.1),
        "RUN_LEASE_SECONDS": _int(env, "RUN_LEASE_SECONDS", 30, minimum=1),
        "MAX_INPUT_CHARS": _int(env, "MAX_INPUT_CHARS", 1_000_000, minimum=1),
        "CORS_ORIGINS": origins,
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO").upper(),
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
