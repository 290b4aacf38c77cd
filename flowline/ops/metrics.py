"""Metrics exposed: ``GET /metrics`` in Prometheus' text format (OpenMetrics when the scraper asks for it), a
worker's own endpoint, and the request instrumentation that feeds them. The series are flowline/core/metrics.py's.
"""

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from wsgiref.simple_server import WSGIServer

import psycopg
from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..api import contract
from ..core.config import settings_of
from ..core.metrics import MULTIPROCESS, REGISTRY, observe_pool, observe_request
from ..core.statuses import RunStatus
from ..data import db, partitions, replica
from ..data.db import Pool
from ..data.replica import UNREACHABLE, Replica

bp = Blueprint("metrics", __name__)
log = logging.getLogger("flowline.metrics")

# Longest wait for a pooled connection, and longest query time, of a scrape's database queries.
DB_TIMEOUT_S = 0.5
# The most Pending (or Running) runs a scrape counts: beyond it the gauges stay at the cap (the queue's age still
# tells how far behind it is), so a scrape costs the same with a backlog of millions.
COUNT_CAP = 10_000
# Workers not heard from for this long, or stopped cleanly, are no longer listed.
WORKER_SHOWN_FOR_S = 3600
# Most workers one scrape lists.
WORKER_ROWS = 500
# Most models one scrape lists the LLM usage of.
MODEL_ROWS = 500
# How often a gunicorn worker refreshes its pool gauges between scrapes (on a request, never more often).
POOL_REFRESH_S = 1.0


def init_app(app: Flask) -> None:
    """Count every request of ``app``: its method, route, status and duration.

    The clock starts before any other before_request function (an early answer, such as a 401, is timed too)
    and stops when the response is built.
    """
    last_pool_refresh = [0.0]

    def start_clock() -> None:
        g.metrics_started = time.perf_counter()

    app.before_request_funcs.setdefault(None, []).insert(0, start_clock)

    @app.after_request
    def count_request(response: Response) -> Response:
        started = g.get("metrics_started")
        seconds = None if started is None else time.perf_counter() - started
        rule = request.url_rule
        observe_request(request.method, rule.rule if rule is not None else None, response.status_code, seconds)
        # Between scrapes the pool gauges of this process follow its requests, at most once a second.
        now = time.monotonic()
        if MULTIPROCESS and now - last_pool_refresh[0] >= POOL_REFRESH_S:
            last_pool_refresh[0] = now
            pool = app.extensions.get(db.EXTENSION)
            if pool is not None and not pool.closed:
                observe_pool(pool)
        return response


# --- exposing ----------------------------------------------------------------------------------------------------


class DatabaseCollector:
    """The series read from PostgreSQL at scrape time (see the module's docstring); never raises."""

    def __init__(self, pool: Pool, alive_within_s: float) -> None:
        self.pool = pool
        self.alive_within_s = alive_within_s

    def _read(
        self,
    ) -> tuple[
        Mapping[str, Any],
        Sequence[Mapping[str, Any]] | None,
        Mapping[str, Any] | None,
        Mapping[str, Any] | None,
        Sequence[Mapping[str, Any]] | None,
        Sequence[Mapping[str, Any]] | None,
        int | None,
    ]:
        """Return the queue's counts, the workers' heartbeats, the outbox's and the schedules' figures, the runs
        waiting for each model's budget, the LLM usage per model and the history partitions made ahead (None: that
        migration is pending).

        :raise psycopg.Error: the database is unreachable, no pooled connection was free in time, or a query failed.
        """
        db.open_pool(self.pool)
        with db.transaction(self.pool, timeout=DB_TIMEOUT_S) as conn:
            db.one(conn, "set_local_statement_timeout", timeout_ms=int(DB_TIMEOUT_S * 1000))
            queue = db.one(conn, "get_queue_stats", count_cap=COUNT_CAP)
            assert queue is not None  # counts: always one row
            try:
                with conn.transaction():
                    workers = db.many(
                        conn,
                        "list_worker_heartbeats",
                        shown_for_s=WORKER_SHOWN_FOR_S,
                        alive_within_s=self.alive_within_s,
                        row_limit=WORKER_ROWS,
                    )
            except psycopg.errors.UndefinedTable:
                workers = None  # the workers table's migration is pending: /readyz says so
            try:
                with conn.transaction():
                    outbox = db.one(conn, "get_webhook_outbox_stats", count_cap=COUNT_CAP)
            except psycopg.errors.UndefinedTable:
                outbox = None  # the webhooks migration is pending
            try:
                with conn.transaction():
                    schedules = db.one(conn, "get_schedule_lag")
            except psycopg.errors.UndefinedTable:
                schedules = None  # the schedules migration is pending
            try:
                with conn.transaction():
                    waiting = db.many(conn, "count_runs_waiting_for_budget", count_cap=COUNT_CAP)
            except psycopg.errors.UndefinedColumn:
                waiting = None  # the budgets migration is pending
            try:
                with conn.transaction():
                    usage = db.many(conn, "list_llm_usage_totals", row_limit=MODEL_ROWS)
            except psycopg.errors.UndefinedTable:
                usage = None  # the usage roll-up's migration is pending
            ahead = partitions.count_ahead(conn)  # None: the partitioning migrations are pending
        return queue, workers, outbox, schedules, waiting, usage, ahead

    def collect(self) -> Iterator[Metric]:
        """Yield ``flowline_database_up`` and, when the database answered, the series read from it."""
        up = GaugeMetricFamily(
            "flowline_database_up",
            "1 when this scrape's database queries answered in time, "
            "0 when the database is unreachable or no pooled connection was free in time.",
        )
        try:
            queue, workers, outbox, schedules, waiting, usage, ahead = self._read()
        except psycopg.Error as exc:  # PoolTimeout and PoolClosed included
            log.warning("metrics: database unavailable (%s); database-derived series left out", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        runs = GaugeMetricFamily(
            "flowline_runs",
            f"Runs in a non-final status (Pending, Running), counted through "
            f"their partial indexes, at most {COUNT_CAP}.",
            labels=["status"],
        )
        runs.add_metric([RunStatus.PENDING], queue["pending"])
        runs.add_metric([RunStatus.RUNNING], queue["running"])
        yield runs
        yield GaugeMetricFamily(
            "flowline_queue_depth",
            f"Pending runs a worker may claim now (not waiting out a retry backoff), at most {COUNT_CAP}.",
            value=queue["claimable"],
        )
        yield GaugeMetricFamily(
            "flowline_queue_oldest_pending_age_seconds",
            "How long the oldest claimable Pending run has waited since it became claimable (0: none waits).",
            value=float(queue["oldest_claimable_age_s"] or 0),
        )
        if waiting is not None:
            budgets = GaugeMetricFamily(
                "flowline_runs_waiting_for_budget",
                f"Pending runs waiting for an LLM model's budget or its pause after a 429, by model, at most "
                f"{COUNT_CAP} in all.",
                labels=["model"],
            )
            for row in waiting:
                budgets.add_metric([row["model"]], row["runs"])
            yield budgets
        if outbox is not None:
            yield GaugeMetricFamily(
                "flowline_webhook_outbox_depth",
                f"Webhook deliveries still to make (Pending, or Delivering under a lease), at most {COUNT_CAP}.",
                value=outbox["outbox"],
            )
            yield GaugeMetricFamily(
                "flowline_webhook_outbox_oldest_age_seconds",
                "How long the oldest due webhook delivery has waited since it became due (0: none waits).",
                value=float(outbox["oldest_due_age_s"] or 0),
            )
            yield GaugeMetricFamily(
                "flowline_webhook_deliveries_dead",
                f"Webhook deliveries that are Dead (no attempt left, or 410 Gone) and not yet pruned, at most "
                f"{COUNT_CAP}; POST /deliveries/{{id}}/retry sends one again.",
                value=outbox["dead"],
            )
        if schedules is not None:
            yield GaugeMetricFamily(
                "flowline_schedule_lag_seconds",
                "How late the oldest due tick of an enabled schedule is, by the database's clock (0: none is due); "
                "over SCHEDULE_POLL_INTERVAL_S for long means no worker fires schedules.",
                value=float(schedules["lag_s"]),
            )
        if usage is not None:
            yield from _usage_series(usage)
        if ahead is not None:
            yield GaugeMetricFamily(
                "flowline_history_partitions_ahead",
                f"Partitions of run_steps and run_events made ahead of the current one (the fewer of the two); under "
                f"{partitions.WARN_UNDER} no worker is keeping them (HISTORY_PARTITIONS_AHEAD), and with none left "
                f"saving steps fails.",
                value=ahead,
            )
        if workers is None:
            return
        heartbeats = GaugeMetricFamily(
            "flowline_worker_last_heartbeat_timestamp_seconds",
            "Each worker's last "
            "heartbeat recorded in the database (Unix time); workers stopped cleanly or "
            f"silent for over {WORKER_SHOWN_FOR_S} s are left out.",
            labels=["worker_id"],
        )
        alive = 0
        for row in workers:
            heartbeats.add_metric([row["id"]], float(row["heartbeat_at_s"]))
            alive += bool(row["alive"])
        yield heartbeats
        yield GaugeMetricFamily(
            "flowline_workers_alive", "Workers whose last heartbeat is within RUN_LEASE_SECONDS.", value=alive
        )


def _usage_series(rows: Sequence[Mapping[str, Any]]) -> Iterator[Metric]:
    """Yield the LLM usage counters from ``rows`` of list_llm_usage_totals (one per model)."""
    tokens = CounterMetricFamily(
        "flowline_llm_tokens",
        "Tokens LLM providers reported for finished steps, by model and kind (prompt, completion), from the "
        "usage roll-up: every process and host, runs pruned since included.",
        labels=["model", "kind"],
    )
    cost = CounterMetricFamily(
        "flowline_llm_cost_usd",
        "What finished LLM steps cost in US dollars at their model's prices when they ran (steps without a price "
        "add nothing), by model, from the usage roll-up.",
        labels=["model"],
    )
    for row in rows:
        tokens.add_metric([row["model"], "prompt"], row["prompt_tokens"])
        tokens.add_metric([row["model"], "completion"], row["completion_tokens"])
        cost.add_metric([row["model"]], row["cost_usd"])
    yield tokens
    yield cost


class ReplicaCollector:
    """The history reads' replica, as this process last measured it (measured now when that is over a second old)."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def collect(self) -> Iterator[Metric]:
        """Yield ``flowline_replica_up`` and, while it answers, ``flowline_replica_lag_seconds``."""
        state = self.replica.state()
        yield GaugeMetricFamily(
            "flowline_replica_up",
            "1 when the replica (DATABASE_REPLICA_URL) answered its last lag check, 0 when it did not: history reads "
            "then go to the primary.",
            value=0 if state == UNREACHABLE else 1,
        )
        if self.replica.lag_s is not None:
            yield GaugeMetricFamily(
                "flowline_replica_lag_seconds",
                "How far the replica is behind the primary (0: it replayed all it received); over REPLICA_MAX_LAG_S, "
                "history reads go to the primary.",
                value=self.replica.lag_s,
            )


class _Collectors:
    """Several collectors exposed as one (what the exposition functions take as a registry)."""

    def __init__(self, *collectors: Collector) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        """Yield every collector's series, in order."""
        for collector in self.collectors:
            yield from collector.collect()


def render(
    pool: Pool, alive_within_s: float, accept: str | None = None, replica: Replica | None = None
) -> tuple[bytes, str]:
    """Return ``(body, content_type)`` of the API's /metrics: every process's series plus the database's (and the
    replica's, when there is one).

    Under gunicorn the series of all its workers are read from the multiprocess directory (counters and
    histograms summed, pool gauges summed over live workers); otherwise this process's.
    """
    if not pool.closed:
        observe_pool(pool)
    if MULTIPROCESS:
        local = CollectorRegistry()
        multiprocess.MultiProcessCollector(local)
    else:
        local = REGISTRY
    encoder, content_type = choose_encoder(accept or "")
    collectors: list[Collector] = [local, DatabaseCollector(pool, alive_within_s)]
    if replica is not None:
        collectors.append(ReplicaCollector(replica))
    return encoder(_Collectors(*collectors)), content_type


class _Refreshed:
    """This process's series, with the pool gauges refreshed first (a worker's endpoint)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        """Yield this process's series, the pool gauges refreshed first."""
        if not self.pool.closed:
            observe_pool(self.pool)
        # This process's values even in multiprocess mode: a worker's endpoint must not show the API's series.
        yield from REGISTRY.collect()


def serve_worker_metrics(port: int, pool: Pool) -> WSGIServer:
    """Serve this process's series on ``port`` (all interfaces) in a daemon thread; return the server."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Refreshed(pool))
    server, _thread = start_http_server(port, registry=registry)
    return server


@bp.get("/metrics")
@contract.operation("Prometheus metrics: requests by route and status, the pool, runs, the queue, workers", tag="meta")
@contract.responds(
    200,
    {"type": "string"},
    "Every `flowline_*` series (the README lists them), in Prometheus' text format, "
    "or OpenMetrics when the Accept header asks for it. Series read from the "
    "database are left out, with `flowline_database_up 0`, while it is unreachable.",
    media_types=("text/plain", "application/openmetrics-text"),
)
def get_metrics() -> Response:
    """Return every ``flowline_*`` series of this gunicorn's workers, plus the queue and the worker heartbeats read
    from the database (left out, with ``flowline_database_up 0``, when it does not answer within
    DB_TIMEOUT_S): a scrape answers 200 quickly even while the database is down.
    """
    body, content_type = render(
        current_app.extensions[db.EXTENSION],
        settings_of(current_app).run_lease_seconds,
        request.headers.get("Accept"),
        replica.of_app(),
    )
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
