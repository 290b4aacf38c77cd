"""The async run worker: ``flask --app app worker [--concurrency N]`` or ``python -m flowline.worker``.

The runs table is the queue. Each of the worker's N threads claims the oldest available Pending run with one
``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1)``, executes it with the same engine as the sync
route, and claims again until the queue is empty; then it waits for a NOTIFY (sent by the enqueuing transaction
and received on a dedicated LISTEN connection, not a pooled one) or, at most, WORKER_POLL_INTERVAL_S.

Threads, not processes, because a run mostly waits (on PostgreSQL or an LLM provider): threads share one pool,
one LISTEN connection and one maintenance loop. For more CPU, start more worker processes (on any host).

A maintenance thread renews the lease of every run in progress (so a run outliving RUN_LEASE_SECONDS keeps it)
and sweeps runs whose holder stopped renewing (a worker killed, paused or cut off): they are re-queued or failed.
Every write by a run's holder is fenced by its lease token, so a holder that was declared dead and wakes up
changes nothing and stops.

SIGTERM or SIGINT: stop claiming, finish the runs in progress, exit 0. A second signal, or runs still going after
WORKER_DRAIN_TIMEOUT_S, exits at once (status 1) and leaves those runs to the lease sweep.
"""

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid

import click
import psycopg
from flask import current_app
from flask.cli import with_appcontext

from . import config as settings
from . import db, logs, metrics, providers
from .engine import runner
from .engine.errors import LeaseLost

log = logging.getLogger("flowline.worker")

CHANNEL = "flowline_runs"
# Most expired runs one sweep takes back; the next sweep (a moment later) takes the rest.
SWEEP_BATCH = 100
# Longest wait before reconnecting to a database that went away.
RECONNECT_CAP_S = 5.0
# A worker's row in the workers table is deleted once its heartbeat is this old (any worker starting does it).
FORGET_WORKERS_AFTER_S = 86400


class Worker:
    """One worker process: ``concurrency`` run threads, a LISTEN thread and a maintenance thread."""

    def __init__(self, config, *, concurrency=None):
        self.config = config
        self.concurrency = concurrency or config["WORKER_CONCURRENCY"]
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.lease_seconds = config["RUN_LEASE_SECONDS"]
        # Renew leases and sweep three times per lease period: a lease survives two missed renewals.
        self.maintenance_interval = self.lease_seconds / 3
        # No fail-fast (db.FAIL_FAST_S): no client waits on a worker, and a run's next write that waits out a short
        # outage for a connection goes on, where a write refused at once would fail the attempt and leave the run
        # to its lease (RUN_LEASE_SECONDS) and a retry.
        self.pool = db.create_pool({**config, "DB_POOL_MAX_SIZE": self.concurrency + 1}, "flowline-worker",
                                   fail_fast_s=0)
        self.provider = providers.from_config(config)
        self.stopping = threading.Event()
        self._wakeup = threading.Condition()
        self._signals = 0
        # Runs in progress in this process, by id: the maintenance thread renews their leases.
        self._active = {}
        self._active_lock = threading.Lock()
        # The HTTP server of this worker's own /metrics (WORKER_METRICS_PORT; None: not served).
        self.metrics_server = None

    # -- waking up ------------------------------------------------------------------------------------------------

    def _wake(self, n=1):
        with self._wakeup:
            self._signals = min(self.concurrency, self._signals + n)
            self._wakeup.notify(n)

    def _wait_for_work(self):
        with self._wakeup:
            if self._signals == 0 and not self.stopping.is_set():
                self._wakeup.wait(self.config["WORKER_POLL_INTERVAL_S"])
            self._signals = max(0, self._signals - 1)

    def _listen(self):
        """Hold a LISTEN connection of its own and wake a run thread per notification, reconnecting as needed."""
        logs.bind(worker_id=self.id)
        delay = 0.1
        conninfo = settings.connection_kwargs(self.config["DATABASE_URL"], 0, "flowline-worker-listen")
        while not self.stopping.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.1
                    # A notification sent while this connection was down is lost: poll once to cover it.
                    self._wake(self.concurrency)
                    while not self.stopping.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._wake()
            except psycopg.Error as exc:
                if self.stopping.is_set():
                    return
                log.warning("worker %s: LISTEN connection lost (%s); polling every %g s, reconnecting in %g s",
                            self.id, type(exc).__name__, self.config["WORKER_POLL_INTERVAL_S"], delay)
                self.stopping.wait(delay)
                delay = min(RECONNECT_CAP_S, delay * 2)

    # -- running --------------------------------------------------------------------------------------------------

    def _run_thread(self, index):
        """Claim and execute runs until stopped, on one connection held for as long as it works.

        The thread never needs two connections at once, and a held connection spares each run the pool's
        check on checkout; a connection that breaks (a database restart) is replaced on the next round.
        """
        worker_id = f"{self.id}:{index}"
        logs.bind(worker_id=worker_id)
        failures = 0
        while not self.stopping.is_set():
            try:
                with db.connection(self.pool) as conn:
                    while not self.stopping.is_set():
                        claimed = self.work_once(conn, worker_id)
                        failures = 0
                        if not claimed:
                            self._wait_for_work()
            except psycopg.OperationalError as exc:
                failures += 1
                delay = min(RECONNECT_CAP_S, 0.1 * 2 ** failures)
                log.warning("worker %s: database unavailable (%s); retrying in %.1f s",
                            worker_id, type(exc).__name__, delay)
                self.stopping.wait(delay)
            except Exception:
                log.exception("worker %s: unexpected error; the run's lease will expire and the sweep re-queues it",
                              worker_id)
                self.stopping.wait(1.0)

    def work_once(self, conn, worker_id):
        """Claim one available run on ``conn`` and execute it there; return False when none was available."""
        lease_token = uuid.uuid4()
        row = db.one(conn, "claim_run", lease_token=lease_token, lease_seconds=self.lease_seconds,
                     worker_id=worker_id)
        if row is None:
            return False
        # More may be waiting: let an idle thread look too (one notification may stand for several runs).
        self._wake()
        ctx = runner.RunContext(
            run_id=row["id"], lease_token=lease_token, lease_seconds=self.lease_seconds,
            deadline=time.monotonic() + self.config["ASYNC_RUN_TIMEOUT_S"], provider=self.provider,
            pool=self.pool, conn=conn, input_file_id=row["input"].get("file_id"), attempt=row["attempt"],
            max_attempts=row["max_attempts"], retry_backoff_s=self.config["RUN_RETRY_BACKOFF_S"])
        with logs.context(run_id=row["id"], attempt=row["attempt"]):
            self._execute(ctx, row, worker_id)
        return True

    def _execute(self, ctx, row, worker_id):
        with self._active_lock:
            self._active[ctx.run_id] = ctx
        try:
            outcome = runner.execute(ctx, row["nodes"], row["input"].get("input_text") or "")
        except LeaseLost:
            log.warning("worker %s: lost the lease of run %s (attempt %d): another worker took it over; "
                        "nothing more is written", worker_id, ctx.run_id, ctx.attempt)
            return
        except psycopg.OperationalError:
            log.warning("worker %s: database unavailable during run %s (attempt %d); its lease will expire and "
                        "the sweep re-queues it", worker_id, ctx.run_id, ctx.attempt)
            raise
        finally:
            with self._active_lock:
                self._active.pop(ctx.run_id, None)
        log.info("worker %s: run %s attempt %d of %d: %s", worker_id, ctx.run_id, ctx.attempt, ctx.max_attempts,
                 outcome.status)

    # -- leases ---------------------------------------------------------------------------------------------------

    def _maintain(self):
        """Renew the leases of runs in progress and sweep expired ones, every third of a lease period.

        While the worker drains it goes on renewing (the runs in progress still need their leases) but stops
        sweeping: a stopping worker takes on no one else's runs. Each round also records the worker's heartbeat.
        """
        logs.bind(worker_id=self.id)
        try:
            self.register()
        except psycopg.Error as exc:
            log.warning("worker %s: could not record its start (%s); the next heartbeat will", self.id,
                        type(exc).__name__)
        while True:
            time.sleep(self.maintenance_interval)
            try:
                self.renew_leases()
                self.heartbeat()
                if not self.stopping.is_set():
                    self.sweep()
            except psycopg.OperationalError as exc:
                log.warning("worker %s: database unavailable for lease upkeep (%s)", self.id, type(exc).__name__)
            except Exception:
                log.exception("worker %s: lease upkeep failed", self.id)

    def renew_leases(self):
        """Renew the lease of every run in progress here; a run whose lease was lost stops at its next write."""
        with self._active_lock:
            active = list(self._active.values())
        if not active:
            return
        with db.connection(self.pool) as conn:
            for ctx in active:
                if not runner.renew_lease(conn, ctx):
                    log.warning("worker %s: run %s is no longer held by this worker", self.id, ctx.run_id)

    def sweep(self):
        """Take back runs whose holder stopped renewing its lease; return how many."""
        with db.connection(self.pool) as conn:
            rows = db.many(conn, "sweep_expired_leases", batch_size=SWEEP_BATCH)
        for row in rows:
            metrics.run_swept(row["mode"], row["status"])
            with logs.context(run_id=row["id"], attempt=row["attempt"]):
                log.warning("worker %s: run %s: %s -> %s", self.id, row["id"], row["note"], row["status"])
        return len(rows)

    # -- heartbeats -----------------------------------------------------------------------------------------------

    def register(self):
        """Record this worker's start in the workers table (and forget workers silent for a day)."""
        metrics.worker_heartbeat(self.id, 0, self.concurrency)
        with db.connection(self.pool) as conn:
            db.execute(conn, "register_worker", worker_id=self.id, hostname=socket.gethostname(), pid=os.getpid(),
                       concurrency=self.concurrency)
            db.execute(conn, "forget_workers", forget_after_s=FORGET_WORKERS_AFTER_S)

    def heartbeat(self):
        """Record that this worker is alive, with its runs in progress: in its metrics and in the workers table."""
        with self._active_lock:
            busy = len(self._active)
        metrics.worker_heartbeat(self.id, busy, self.concurrency)
        with db.connection(self.pool) as conn:
            db.execute(conn, "record_worker_heartbeat", runs_in_progress=busy, worker_id=self.id,
                       hostname=socket.gethostname(), pid=os.getpid(), concurrency=self.concurrency)

    # -- life cycle -----------------------------------------------------------------------------------------------

    def run(self):
        """Work until stopped (``stop()``, SIGTERM, SIGINT); return the process exit status."""
        logs.bind(worker_id=self.id)
        port = self.config.get("WORKER_METRICS_PORT") or 0
        if port:
            try:
                self.metrics_server = metrics.serve_worker_metrics(port, self.pool)
            except OSError as exc:
                log.error("worker %s: cannot serve its metrics on port %d (WORKER_METRICS_PORT): %s", self.id,
                          port, exc.strerror or exc)
                return 2
        db.open_pool(self.pool)
        log.info("worker %s: %d thread(s), lease %d s, polling every %g s, database %s, metrics %s", self.id,
                 self.concurrency, self.lease_seconds, self.config["WORKER_POLL_INTERVAL_S"],
                 settings.mask_url(self.config["DATABASE_URL"]),
                 f"on port {port} (/metrics)" if port else "not served (WORKER_METRICS_PORT=0)")
        helpers = [threading.Thread(target=self._listen, name="listen", daemon=True),
                   threading.Thread(target=self._maintain, name="maintain", daemon=True)]
        runners = [threading.Thread(target=self._run_thread, args=(i,), name=f"run-{i}", daemon=True)
                   for i in range(1, self.concurrency + 1)]
        for thread in helpers + runners:
            thread.start()
        self.stopping.wait()
        deadline = time.monotonic() + self.config["WORKER_DRAIN_TIMEOUT_S"]
        for thread in runners:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in runners):
            with self._active_lock:
                left = sorted(str(run_id) for run_id in self._active)
            log.error("worker %s: runs still in progress after %g s (%s); leaving them to the lease sweep",
                      self.id, self.config["WORKER_DRAIN_TIMEOUT_S"], ", ".join(left))
            return 1
        self.close()
        log.info("worker %s: stopped", self.id)
        return 0

    def stop(self):
        """Stop claiming; runs in progress finish."""
        self.stopping.set()
        with self._wakeup:
            self._wakeup.notify_all()

    def close(self):
        try:
            with db.connection(self.pool) as conn:
                db.execute(conn, "stop_worker", worker_id=self.id)
        except psycopg.Error as exc:
            log.warning("worker %s: could not record its stop (%s)", self.id, type(exc).__name__)
        self.pool.close()
        self.provider.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()

    def install_signal_handlers(self):
        """First SIGTERM/SIGINT: drain. Second: exit at once, leaving runs in progress to the lease sweep."""
        def handle(signum, frame):
            if self.stopping.is_set():
                log.error("worker %s: %s again; exiting now, runs in progress are left to the lease sweep",
                          self.id, signal.Signals(signum).name)
                os._exit(1)
            log.info("worker %s: %s; finishing runs in progress, claiming no more", self.id,
                     signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def main(config, concurrency=None):
    """Run a worker in this process until it is stopped by a signal; return its exit status."""
    logs.configure(config["LOG_LEVEL"], config.get("LOG_FORMAT", "text"), logs.secrets_of(config))
    worker = Worker(config, concurrency=concurrency)
    worker.install_signal_handlers()
    return worker.run()


def _cli(argv=None):
    parser = argparse.ArgumentParser(prog="python -m flowline.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=None,
                        help="run threads in this process (default: WORKER_CONCURRENCY, 2)")
    args = parser.parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    try:
        config = settings.from_env()
    except settings.ConfigError as exc:
        parser.error(str(exc))
    if not config["DATABASE_URL"]:
        parser.error("DATABASE_URL is not set (a libpq URL such as postgresql://user@host/db)")
    return main(config, args.concurrency)


@click.command("worker")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Run threads in this process (default: WORKER_CONCURRENCY, 2).")
@with_appcontext
def worker_command(concurrency):
    """Execute async runs from the queue until SIGTERM or SIGINT."""
    sys.exit(main(dict(current_app.config), concurrency))


if __name__ == "__main__":
    sys.exit(_cli())
