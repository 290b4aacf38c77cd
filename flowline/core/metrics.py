"""Prometheus metrics: the series and the functions that record them (flowline/ops/metrics.py exposes them on
``GET /metrics`` of the API and on a worker's own endpoint, WORKER_METRICS_PORT).

Where each series comes from (the README's "Metrics and logs" section has the same list for operators):

* Counted by the process that did the work, kept in memory (or, under gunicorn, in prometheus-client's
  multiprocess files, so the gunicorn workers add up in one scrape):

  - ``flowline_http_requests_total{method,route,status}`` and ``flowline_http_request_duration_seconds{...}``:
    every answered request. ``route`` is the Flask URL rule (``/workflows/<workflow_id>``), never the raw path,
    and ``unmatched`` for a path no route serves; ``method`` is one of the HTTP methods Flowline knows, else
    ``other``: a client cannot create series at will.
  - ``flowline_db_pool_*{pool}``: this process's connection pool (psycopg_pool ``get_stats()``): connections
    open, in use, requests waiting for one, and the pool's maximum. Summed over live gunicorn workers.
  - ``flowline_runs_finished_total{mode,status}``: runs that reached Succeeded, Failed or Cancelled, counted
    where they finished (the API for sync runs and for cancelling a Pending run, a worker for async runs and for
    runs whose lease it swept). A counter, not a table count: it costs nothing with millions of rows.
  - ``flowline_runs_requeued_total{reason}``: runs that went back to the queue (``retry``: a retryable
    failure; ``lease_expired``: its holder stopped renewing the lease and a sweep took it back; ``budget``: it
    waits for an LLM budget, in the same attempt).
  - ``flowline_llm_budget_wait_seconds_total{model}``: seconds LLM calls were told to wait for their model's
    budget or its pause after a 429 (a queued run's time back in the queue, a sync run's sleep).
  - ``flowline_waiters`` and ``flowline_waits_total{outcome}``: requests waiting now for their run to finish
    (``Prefer: wait=N``, flowline/api/waits.py), and how each wait ended (finished, timed_out, over_cap,
    disconnected, stopping, error).
  - ``flowline_run_duration_seconds{mode,status}``: one attempt of a run in this process, from its first node to
    its outcome written (``status`` Pending: re-queued for another attempt).
  - ``flowline_step_duration_seconds{node_type,status}``: one node's execution (the node's own work: an LLM call,
    a formatter), by node type.
  - ``flowline_webhook_deliveries_total{outcome}`` and ``flowline_webhook_delivery_duration_seconds{outcome}``:
    webhook delivery attempts, counted and timed by the worker that made them.
  - Worker processes only: ``flowline_worker_heartbeat_timestamp_seconds{worker_id}``,
    ``flowline_worker_runs_in_progress{worker_id}`` and ``flowline_worker_threads{worker_id}``.

* Read from PostgreSQL when the API is scraped (flowline/ops/metrics.py's ``DatabaseCollector``, with its limits), each query bounded by the queue or by
  ``COUNT_CAP``, never by the run history:

  - ``flowline_database_up``: 1 when those queries answered within ``DB_TIMEOUT_S``; 0 and none of the series
    below when the database is unreachable or the pool had no free connection in time (the scrape still answers).
  - ``flowline_runs{status="Pending"|"Running"}``: counted through the partial indexes that hold only Pending and
    only Running runs; capped at ``COUNT_CAP``.
  - ``flowline_queue_depth``: Pending runs a worker may claim now (not waiting out a retry backoff); capped.
  - ``flowline_queue_oldest_pending_age_seconds``: how long the oldest claimable run has waited since it became
    claimable (0 when none waits): the first sign that workers do not keep up, or that none is running.
  - ``flowline_runs_waiting_for_budget{model}``: Pending runs waiting for each model's budget (capped).
  - ``flowline_webhook_outbox_depth``, ``flowline_webhook_outbox_oldest_age_seconds`` and
    ``flowline_webhook_deliveries_dead``: webhook deliveries still to make, how long the oldest due one has
    waited, and the Dead ones not yet pruned, read through the outbox's partial indexes (capped).
  - ``flowline_schedule_lag_seconds``: how late the oldest due schedule tick is (0 when none is due), one probe of
    the schedules' partial index.
  - ``flowline_llm_tokens_total{model,kind}`` and ``flowline_llm_cost_usd_total{model}``: the tokens (prompt,
    completion) and priced cost of finished LLM steps per model, read from the usage roll-up's per-model totals
    (llm_usage_totals, migration 0019; one row per model), so every worker on every host counts and pruned runs too.
  - ``flowline_worker_last_heartbeat_timestamp_seconds{worker_id}``: each worker's last heartbeat as recorded in
    the ``workers`` table (workers heard from in the last ``WORKER_SHOWN_FOR_S``, clean stops excluded), and
    ``flowline_workers_alive``: how many beat within the last RUN_LEASE_SECONDS. They cover workers on any host,
    whether or not Prometheus scrapes them.
"""

import os
import time
from typing import Any

# prometheus-client chooses multiprocess mode at import from this variable being present; an empty value would
# make it write its files into the working directory. Empty means unset, as for every other Flowline setting.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from psycopg_pool import ConnectionPool

from .statuses import FINISHED_STATUSES, RunStatus, StepStatus

# Under gunicorn (gunicorn.conf.py sets the directory before the workers start): every process writes its values
# to files there, and a scrape of any worker reads them all.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

# No *_created series (each counter's start time): they double the output and multiprocess mode has none.
disable_created_metrics()

# The metrics this process records. Not prometheus-client's default registry: its process and platform
# collectors do not work in multiprocess mode, and the API and the worker should expose the same kind of series.
REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter(
    "flowline_http_requests",
    "HTTP requests answered, by method, route (the URL rule) and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "flowline_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response is built), by method, route and status.",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)

POOL_CONNECTIONS = Gauge(
    "flowline_db_pool_connections",
    "Database connections the pool holds open, in use or idle.",
    ["pool"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
POOL_IN_USE = Gauge(
    "flowline_db_pool_connections_in_use",
    "Database connections lent out of the pool.",
    ["pool"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
POOL_WAITING = Gauge(
    "flowline_db_pool_requests_waiting",
    "Requests waiting for a connection of the pool.",
    ["pool"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
POOL_MAX = Gauge(
    "flowline_db_pool_max_connections",
    "Most connections the pool may open.",
    ["pool"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

RUNS_FINISHED = Counter(
    "flowline_runs_finished",
    "Runs that reached a final status (Succeeded, Failed, Cancelled), counted by the process that finished them.",
    ["mode", "status"],
    registry=REGISTRY,
)
RUNS_REQUEUED = Counter(
    "flowline_runs_requeued",
    "Runs that went back to the queue: retry (a retryable failure), lease_expired (its holder stopped renewing "
    "its lease) or budget (it waits for an LLM budget, resuming in the same attempt).",
    ["reason"],
    registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "flowline_run_duration_seconds",
    "One attempt of a run in this process, by mode and the status it left the run in (Pending: re-queued).",
    ["mode", "status"],
    buckets=RUN_BUCKETS,
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "flowline_step_duration_seconds",
    "One node's execution, by node type and step status.",
    ["node_type", "status"],
    buckets=RUN_BUCKETS,
    registry=REGISTRY,
)

BUDGET_WAIT = Counter(
    "flowline_llm_budget_wait_seconds",
    "Seconds LLM calls were told to wait for their model's budget or its pause after a 429, by model: a queued "
    "run's time back in the queue, a sync run's sleep.",
    ["model"],
    registry=REGISTRY,
)

WAITERS = Gauge(
    "flowline_waiters",
    "Requests waiting for their run to finish (Prefer: wait=N) now.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
WAITS = Counter(
    "flowline_waits",
    "Requests that asked to wait for their run (Prefer: wait=N), by outcome: finished (the run was or became "
    "final, or does not exist), timed_out, over_cap (WAIT_MAX_WAITERS already waited: answered at once), "
    "disconnected (the client left), stopping (the process got SIGTERM) or error (reading the run failed).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "flowline_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered (2xx), retry (anything else; retried later), dead (the "
    "last attempt failed), gone (410: the subscription was disabled), disabled (not sent: the subscription is off).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_DURATION = Histogram(
    "flowline_webhook_delivery_duration_seconds",
    "One webhook delivery attempt that was sent, from resolving the host to the answer read, by outcome.",
    ["outcome"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)

WORKER_HEARTBEAT = Gauge(
    "flowline_worker_heartbeat_timestamp_seconds",
    "When this worker last renewed its leases and recorded its heartbeat (Unix time).",
    ["worker_id"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
WORKER_BUSY = Gauge(
    "flowline_worker_runs_in_progress",
    "Runs this worker is executing.",
    ["worker_id"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
WORKER_THREADS = Gauge(
    "flowline_worker_threads",
    "Run threads of this worker (its concurrency).",
    ["worker_id"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)


# --- recording ---------------------------------------------------------------------------------------------------


def observe_request(method: str, route: str | None, status: int, seconds: float | None) -> None:
    """Count one answered request; ``route`` is the URL rule (None: no route matched)."""
    labels = (method if method in METHODS else "other", route or "unmatched", str(status))
    HTTP_REQUESTS.labels(*labels).inc()
    if seconds is not None:
        HTTP_DURATION.labels(*labels).observe(seconds)


def observe_pool(pool: ConnectionPool[Any]) -> None:
    """Set the pool gauges from ``pool``'s current statistics."""
    stats = pool.get_stats()
    size = stats.get("pool_size", 0)
    name = pool.name or "flowline"
    POOL_CONNECTIONS.labels(name).set(size)
    POOL_IN_USE.labels(name).set(max(0, size - stats.get("pool_available", 0)))
    POOL_WAITING.labels(name).set(stats.get("requests_waiting", 0))
    POOL_MAX.labels(name).set(stats.get("pool_max", pool.max_size))


def run_finished(mode: str, status: RunStatus, seconds: float | None = None, requeued_for: str = "retry") -> None:
    """Count one attempt's outcome: a final ``status`` counts a finished run, Pending a run back in the queue
    (``requeued_for``: retry, or budget: it waits for an LLM budget in the same attempt)."""
    if status in FINISHED_STATUSES:
        RUNS_FINISHED.labels(mode, status).inc()
    elif status == RunStatus.PENDING:
        RUNS_REQUEUED.labels(requeued_for).inc()
    if seconds is not None:
        RUN_DURATION.labels(mode, status).observe(seconds)


def run_swept(mode: str, status: RunStatus) -> None:
    """Count a run whose holder's lease expired: re-queued (Pending) or finished (Failed, Cancelled)."""
    if status == RunStatus.PENDING:
        RUNS_REQUEUED.labels("lease_expired").inc()
    elif status in FINISHED_STATUSES:
        RUNS_FINISHED.labels(mode, status).inc()


def budget_waited(model: str, seconds: float) -> None:
    """Count ``seconds`` an LLM call of ``model`` waits for its budget."""
    BUDGET_WAIT.labels(model).inc(seconds)


def wait_started() -> None:
    """Count one request starting to wait for its run."""
    WAITERS.inc()


def wait_ended(outcome: str, waited: bool = True) -> None:
    """Count one wait's ``outcome``; ``waited``: it had started (wait_started), so it stops being counted as waiting."""
    if waited:
        WAITERS.dec()
    WAITS.labels(outcome).inc()


def step_finished(node_type: str, known: bool, status: StepStatus, seconds: float) -> None:
    """Observe one node's execution; an unknown node type (a row written by a newer release) counts as unknown."""
    STEP_DURATION.labels(node_type if known else "unknown", status).observe(seconds)


def webhook_attempt(outcome: str, seconds: float | None) -> None:
    """Count one webhook delivery attempt's outcome and time it (``seconds`` None: nothing was sent)."""
    WEBHOOK_ATTEMPTS.labels(outcome).inc()
    if seconds is not None:
        WEBHOOK_DURATION.labels(outcome).observe(seconds)


def worker_heartbeat(worker_id: str, runs_in_progress: int, threads: int) -> None:
    """Record a worker's heartbeat: now, its runs in progress and its threads."""
    WORKER_HEARTBEAT.labels(worker_id).set(time.time())
    WORKER_BUSY.labels(worker_id).set(runs_in_progress)
    WORKER_THREADS.labels(worker_id).set(threads)
