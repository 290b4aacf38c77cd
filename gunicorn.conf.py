"""gunicorn settings: `gunicorn -c gunicorn.conf.py 'app:create_app()'` is the whole command (`-b` may override bind)."""

import logging
import os
import sys
from typing import Any

# Not `config`: gunicorn would take that name for its own setting (this file's path).
from flowline.core.config import ConfigError, from_env

# The same settings the app reads (flowline/core/config.py), checked here once, before any worker starts.
try:
    settings = from_env()
except ConfigError as exc:
    sys.exit(f"gunicorn.conf.py: {exc}")

bind = settings.bind
workers = settings.web_concurrency
# Threads let one worker overlap database waits; under gunicorn the pool's max size follows them (config.py's
# DB_POOL_MAX_SIZE), so no thread waits for a connection.
# gunicorn's gthread worker, but what its HTTP parser refuses (a NUL in a header, a request line over 4094 bytes...)
# is answered in Flowline's JSON error shape, not as gunicorn's HTML page (flowline/api/serving.py).
worker_class = "flowline.api.serving.JsonErrorThreadWorker"
threads = settings.gunicorn_threads
# Above SYNC_RUN_TIMEOUT_S, so a sync run hits its own bound (and answers 504) before gunicorn kills the worker.
timeout = int(settings.sync_run_timeout_s) + 10
graceful_timeout = timeout
keepalive = 5
# The control socket (gunicorn 27) lives at one path per user: two instances would clash over it.
control_socket_disable = True
# Never preload: the pool must be created and opened after fork, in each worker.
preload_app = False
accesslog = settings.access_log
errorlog = "-"
loglevel = settings.log_level.lower()
# gunicorn's own lines and its access log in Flowline's LOG_FORMAT: as JSON objects (with the request's
# request_id, method, path, status, duration_ms...), or as text: the combined log format plus the request id.
if settings.log_format == "json":
    logger_class = "flowline.core.logs.GunicornLogger"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms request_id=%({x-request-id}o)s'

# Metrics (flowline/core/metrics.py, flowline/ops/metrics.py): prometheus-client's multiprocess mode, so a scrape of any worker reports the
# requests of all of them. Its directory, PROMETHEUS_MULTIPROC_DIR, is emptied at start (unset or empty: a private
# temporary directory, removed at exit); one directory per gunicorn, never shared with another one or a worker.
_created_metrics_dirs: list[str] = []
_METRICS_DIR_PREFIX = "flowline-metrics-"


def when_ready(server: Any) -> None:
    """Say loudly, once, when the database schema is behind the code (or the database is unreachable)."""
    import psycopg

    from flowline.core.config import mask_url
    from flowline.data import migrations

    url = settings.database_url
    log = logging.getLogger("gunicorn.error")
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
            todo = migrations.pending(conn)
    except psycopg.Error as exc:
        log.warning(
            "database %s unreachable at start-up (%s); requests answer 503 until it is",
            mask_url(url),
            type(exc).__name__,
        )
        return
    if todo:
        log.error(
            "SCHEMA IS BEHIND: %d migration(s) pending (%s); /readyz answers 503. Run `make migrate`.",
            len(todo),
            ", ".join(todo),
        )


def post_worker_init(worker: Any) -> None:
    """Open this worker's pool after fork, without waiting, so the worker boots even while the database is down."""
    from flowline.data import db

    db.open_pool(worker.wsgi.extensions[db.EXTENSION])


def worker_exit(server: Any, worker: Any) -> None:
    """Close this worker's pools, LLM provider client and waits' LISTEN connection so they end cleanly."""
    from flowline.api import waits
    from flowline.data import db, replica

    app = getattr(worker, "wsgi", None)
    if app is not None:
        app.extensions[waits.EXTENSION].close()
        app.extensions[db.EXTENSION].close()
        if app.extensions[replica.EXTENSION] is not None:
            app.extensions[replica.EXTENSION].close()
        app.extensions["flowline.provider"].close()


def on_starting(server: Any) -> None:
    """Prepare the metrics directory before any worker starts (workers inherit PROMETHEUS_MULTIPROC_DIR)."""
    import glob
    import tempfile

    path = settings.prometheus_multiproc_dir
    if path:
        os.makedirs(path, exist_ok=True)
        # A previous gunicorn's files would add its counts (and its dead workers' gauges) to this one's.
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        _remove_orphaned_metrics_dirs(tempfile.gettempdir())
        # Named after this master, so a later gunicorn can tell it orphaned (a master killed with SIGKILL).
        path = tempfile.mkdtemp(prefix=f"{_METRICS_DIR_PREFIX}{os.getpid()}-")
        _created_metrics_dirs.append(path)
        # prometheus-client's own variable, not a Flowline setting. In the master's environment rather than raw_env:
        # a HUP reload re-reads this file and resets raw_env, and child_exit's mark_process_dead reads it here too.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def _remove_orphaned_metrics_dirs(parent: str) -> None:
    """Remove the private metrics directories of gunicorn masters that no longer run (they could not clean up)."""
    import glob
    import shutil

    for path in glob.glob(os.path.join(parent, f"{_METRICS_DIR_PREFIX}*-*")):
        pid = os.path.basename(path)[len(_METRICS_DIR_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # alive, under another user


def child_exit(server: Any, worker: Any) -> None:
    """Drop an exited worker's live gauges (its pool); its counters and histograms stay in the totals."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the private metrics directory made at start."""
    import shutil

    for path in _created_metrics_dirs:
        shutil.rmtree(path, ignore_errors=True)
