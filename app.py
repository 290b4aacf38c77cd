"""Flowline's WSGI application: ``gunicorn -c gunicorn.conf.py 'app:create_app()'``."""

import itertools
import json
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NoReturn

from flask import Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider

from flowline import console
from flowline.api import (
    auth,
    cors,
    errors,
    files,
    llm_models,
    nodes,
    openapi,
    pdf,
    runs,
    schedules,
    usage,
    waits,
    webhooks,
    workflows,
)
from flowline.core import config as settings
from flowline.core import logs
from flowline.data import db, replica
from flowline.engine import providers
from flowline.ops import health
from flowline.ops import metrics as ops_metrics
from flowline.tools import cli as tools_cli
from flowline.tools import prune
from flowline.worker import cli as worker_cli

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return DefaultJSONProvider.default(value)


class StrictJSONProvider(DefaultJSONProvider):
    """JSON as RFC 8259 defines it: NaN and Infinity are rejected (PostgreSQL's JSON cannot store them), and
    timestamps are written ISO-8601 with their offset, as PostgreSQL writes them."""

    default = staticmethod(_to_json)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return json.loads(s, parse_constant=_reject_constant, **kwargs)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings from the environment, blueprints, error handlers; return it.

    ``config`` overrides: a key that names a setting replaces it (a typed value, as ``Settings`` holds it: tests use
    ``{"DB_POOL_MAX_SIZE": 10}``), any other key (``TESTING``, ``MAX_CONTENT_LENGTH``...) goes to Flask's config.
    The database pool is created closed; it opens in each gunicorn worker after fork (gunicorn.conf.py) or on
    first use, so the app starts even while the database is down.

    :raise ConfigError: a setting cannot be used, or DATABASE_URL is not set.
    """
    app = Flask(__name__)
    app.json = StrictJSONProvider(app)
    overrides = dict(config or {})
    loaded = settings.override(settings.from_env(), overrides)
    if not loaded.database_url:
        raise settings.ConfigError("DATABASE_URL is not set (a libpq URL such as postgresql://user@host/db)")
    app.extensions[settings.EXTENSION] = loaded
    # Flask signs the console's sessions with its own SECRET_KEY (None: the console answers 503).
    app.config["SECRET_KEY"] = loaded.secret_key
    app.config.update({key: value for key, value in overrides.items() if key not in settings.BY_NAME})
    # JSON bodies over MAX_JSON_KB get 413, unread when Content-Length says so (POST /files sets its own bound,
    # from MAX_UPLOAD_MB). Flask's default config has the key (None: no bound), so setdefault would not do.
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = loaded.max_json_kb * 1024
    logs.configure(loaded.log_level, loaded.log_format, logs.secrets_of(loaded))

    app.extensions[db.EXTENSION] = db.create_pool(loaded)
    # History reads' replica (flowline/data/replica.py), when DATABASE_REPLICA_URL names one; its pool opens on use.
    app.extensions[replica.EXTENSION] = replica.Replica(loaded) if loaded.database_replica_url else None
    app.extensions["flowline.provider"] = providers.from_config(loaded)
    # Per process: its semaphore bounds the extractions of this gunicorn worker.
    app.extensions[pdf.EXTENSION] = pdf.Extractor.from_config(loaded)
    # Per process too: the requests waiting for their run (Prefer: wait=N) and the LISTEN thread that wakes them,
    # started by the first wait (after fork).
    app.extensions[waits.EXTENSION] = waits.Waits.from_config(loaded)

    # Request ids made here are this process's random prefix and a counter: unique like a uuid4 per request,
    # at a tenth of its cost (no urandom read per request). create_app runs in each worker after fork.
    id_prefix, id_counter = uuid.uuid4().hex[:16], itertools.count(1)

    @app.before_request
    def assign_request_id() -> None:
        client_id = request.headers.get("X-Request-ID")
        if client_id and _CLIENT_REQUEST_ID.match(client_id):
            g.request_id = client_id
        else:
            g.request_id = f"{id_prefix}{next(id_counter):016x}"

    @app.after_request
    def send_request_id(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id") or uuid.uuid4().hex
        return response

    # After the request id is assigned, so a 401 and a preflight's answer carry it too; preflights before auth.
    cors.install(app)
    # The console's pages sign their visitors in themselves (a session cookie); every other route needs the token.
    auth.install(app, exempt_blueprints=(console.NAME,))

    # Every request counted and timed by route and status (the clock starts before auth's check).
    ops_metrics.init_app(app)

    for blueprint in (
        workflows.bp,
        nodes.bp,
        runs.bp,
        webhooks.bp,
        schedules.bp,
        llm_models.bp,
        usage.bp,
        files.bp,
        health.bp,
        ops_metrics.bp,
    ):
        app.register_blueprint(blueprint)
    # The console's pages are HTML, not the JSON API the document describes.
    openapi.install(app, exempt_blueprints=(console.NAME,))
    errors.register(app)
    # After errors.register: the console's own error pages (HTML) win for its routes.
    console.install(app)
    # The commands: worker (flowline/worker/cli.py); export, import, prune-runs (flowline/tools/).
    for command in (
        worker_cli.worker_command,
        tools_cli.export_command,
        tools_cli.import_command,
        prune.prune_runs_command,
    ):
        app.cli.add_command(command)
    return app
