"""One worker process: its run threads and the claim loop, its background duties' threads, its life cycle."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import HTTPServer
from types import FrameType
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg import Connection

from ..core import config as settings
from ..core import logs
from ..data import db
from ..engine import providers, runner
from ..engine.budget import budget_settings
from ..ops.metrics import serve_worker_metrics
from . import heartbeat, lease_renewal, partitions, sweep
from .listener import RECONNECT_CAP_S, listen
from .schedules import run_schedules
from .webhooks import Deliveries

if TYPE_CHECKING:
    from ..core.config import Settings

log = logging.getLogger("flowline.worker")

# Longest a signal waits for its handler while the worker's main thread waits to be stopped (see run()).
SIGNAL_CHECK_S = 0.5


class Worker:
    """One worker process: ``concurrency`` run threads, WEBHOOK_CONCURRENCY webhook delivery threads, a LISTEN
    thread, a maintenance thread and a schedule thread."""

    def __init__(self, config: Settings, *, concurrency: int | None = None) -> None:
        self.config = config
        self.concurrency = concurrency or config.worker_concurrency
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.lease_seconds = config.run_lease_seconds
        # Renew leases and sweep three times per lease period: a lease survives two missed renewals.
        self.maintenance_interval = self.lease_seconds / 3
        # No fail-fast (db.FAIL_FAST_S): no client waits on a worker, and a run's next write that waits out a short
        # outage for a connection goes on, where a write refused at once would fail the attempt and leave the run
        # to its lease (RUN_LEASE_SECONDS) and a retry.
        # A connection for each run thread, each delivery thread (held only to claim and record, never while
        # sending), the maintenance thread and the schedule thread.
        self.pool = db.create_pool(
            dataclasses.replace(config, db_pool_max_size=self.concurrency + config.webhook_concurrency + 2),
            "flowline-worker",
            fail_fast_s=0,
        )
        self.provider = providers.from_config(config)
        self.stopping = threading.Event()
        self.deliveries = Deliveries(self)
        self._wakeup = threading.Condition()
        self._signals = 0
        # Runs in progress in this process, by id: the maintenance thread renews their leases.
        self._active: dict[UUID, runner.RunContext] = {}
        self._active_lock = threading.Lock()
        # The HTTP server of this worker's own /metrics (WORKER_METRICS_PORT; None: not served).
        self.metrics_server: HTTPServer | None = None

    # -- waking up ------------------------------------------------------------------------------------------------

    def wake(self, n: int = 1) -> None:
        """Wake up to ``n`` idle run threads to look at the queue."""
        with self._wakeup:
            self._signals = min(self.concurrency, self._signals + n)
            self._wakeup.notify(n)

    def _wait_for_work(self) -> None:
        with self._wakeup:
            if self._signals == 0 and not self.stopping.is_set():
                self._wakeup.wait(self.config.worker_poll_interval_s)
            self._signals = max(0, self._signals - 1)

    def runs_in_progress(self) -> list[runner.RunContext]:
        """Return the RunContexts of the runs this process is executing now."""
        with self._active_lock:
            return list(self._active.values())

    # -- running --------------------------------------------------------------------------------------------------

    def _run_thread(self, index: int) -> None:
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
                delay = min(RECONNECT_CAP_S, 0.1 * 2**failures)
                log.warning(
                    "worker %s: database unavailable (%s); retrying in %.1f s", worker_id, type(exc).__name__, delay
                )
                self.stopping.wait(delay)
            except Exception:
                log.exception(
                    "worker %s: unexpected error; the run's lease will expire and the sweep re-queues it", worker_id
                )
                self.stopping.wait(1.0)

    def work_once(self, conn: Connection[Any], worker_id: str) -> bool:
        """Claim one available run on ``conn`` and execute it there; return False when none was available."""
        lease_token = uuid.uuid4()
        row = db.one(conn, "claim_run", lease_token=lease_token, lease_seconds=self.lease_seconds, worker_id=worker_id)
        if row is None:
            return False
        # More may be waiting: let an idle thread look too (one notification may stand for several runs).
        self.wake()
        file_id = row["input"].get("file_id")
        claimed_at = time.monotonic()
        ctx = runner.RunContext(
            run_id=row["id"],
            lease_token=lease_token,
            lease_seconds=self.lease_seconds,
            # Only the time the attempt ran counts: not the waits for an LLM budget between its claims.
            deadline=claimed_at + self.config.async_run_timeout_s - row["attempt_run_s"],
            provider=self.provider,
            pool=self.pool,
            conn=conn,
            input_file_id=UUID(file_id) if file_id else None,
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            retry_backoff_s=self.config.run_retry_backoff_s,
            budget=budget_settings(self.config),
            waited_s=row["budget_wait_s"],
            max_wait_s=self.config.llm_max_budget_wait_s,
            claimed_at=claimed_at,
        )
        with logs.context(run_id=row["id"], attempt=row["attempt"]):
            self._execute(ctx, row, worker_id)
        return True

    def _execute(self, ctx: runner.RunContext, row: Mapping[str, Any], worker_id: str) -> None:
        with self._active_lock:
            self._active[ctx.run_id] = ctx
        try:
            # A run that waited for an LLM budget resumes at the node that waited, on its last finished step's output.
            start = row["resume_index"] or 0
            text = row["resume_text"] if row["resume_text"] is not None else row["input"].get("input_text") or ""
            outcome = runner.execute(ctx, row["nodes"], text, start)
        except runner.LeaseLost:
            log.warning(
                "worker %s: lost the lease of run %s (attempt %d): another worker took it over; "
                "nothing more is written",
                worker_id,
                ctx.run_id,
                ctx.attempt,
            )
            return
        except psycopg.OperationalError:
            log.warning(
                "worker %s: database unavailable during run %s (attempt %d); its lease will expire and "
                "the sweep re-queues it",
                worker_id,
                ctx.run_id,
                ctx.attempt,
            )
            raise
        finally:
            with self._active_lock:
                self._active.pop(ctx.run_id, None)
        log.info(
            "worker %s: run %s attempt %d of %d: %s",
            worker_id,
            ctx.run_id,
            ctx.attempt,
            ctx.max_attempts,
            outcome.status,
        )

    # -- background duties ----------------------------------------------------------------------------------------

    def _maintain(self) -> None:
        """Renew the leases of runs in progress, sweep expired ones and keep the history partitions made ahead,
        every third of a lease period.

        While the worker drains it goes on renewing (the runs in progress still need their leases) but stops
        sweeping: a stopping worker takes on no one else's runs. Each round also records the worker's heartbeat.
        """
        logs.bind(worker_id=self.id)
        try:
            heartbeat.register(self)
        except psycopg.Error as exc:
            log.warning(
                "worker %s: could not record its start (%s); the next heartbeat will", self.id, type(exc).__name__
            )
        while True:
            time.sleep(self.maintenance_interval)
            try:
                lease_renewal.renew_leases(self)
                heartbeat.beat(self)
                if not self.stopping.is_set():
                    sweep.sweep(self)
                    partitions.keep_ahead(self)
            except psycopg.OperationalError as exc:
                log.warning("worker %s: database unavailable for lease upkeep (%s)", self.id, type(exc).__name__)
            except Exception:
                log.exception("worker %s: lease upkeep failed", self.id)

    # -- life cycle -----------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped (``stop()``, SIGTERM, SIGINT); return the process exit status."""
        logs.bind(worker_id=self.id)
        port = self.config.worker_metrics_port
        if port:
            try:
                self.metrics_server = serve_worker_metrics(port, self.pool)
            except OSError as exc:
                log.error(
                    "worker %s: cannot serve its metrics on port %d (WORKER_METRICS_PORT): %s",
                    self.id,
                    port,
                    exc.strerror or exc,
                )
                return 2
        db.open_pool(self.pool)
        log.info(
            "worker %s: %d thread(s), %d webhook delivery thread(s), lease %d s, polling every %g s, schedules "
            "every %g s, database %s, metrics %s",
            self.id,
            self.concurrency,
            self.deliveries.concurrency,
            self.lease_seconds,
            self.config.worker_poll_interval_s,
            self.config.schedule_poll_interval_s,
            settings.mask_url(self.config.database_url),
            f"on port {port} (/metrics)" if port else "not served (WORKER_METRICS_PORT=0)",
        )
        helpers = [
            threading.Thread(target=listen, args=(self,), name="listen", daemon=True),
            threading.Thread(target=self._maintain, name="maintain", daemon=True),
        ]
        # Drained alike on SIGTERM: a delivery's attempt in progress ends within WEBHOOK_TIMEOUT_S, and the
        # schedule thread's poll in progress commits (or rolls back) before the pool closes.
        runners = (
            [
                threading.Thread(target=self._run_thread, args=(i,), name=f"run-{i}", daemon=True)
                for i in range(1, self.concurrency + 1)
            ]
            + self.deliveries.threads()
            + [threading.Thread(target=run_schedules, args=(self,), name="schedules", daemon=True)]
        )
        for thread in helpers + runners:
            thread.start()
        # Never an untimed wait: a SIGTERM the kernel hands to another thread only flags it, and Python runs the
        # handler when this thread next runs Python code (an untimed wait never returned: the worker never drained).
        while not self.stopping.wait(SIGNAL_CHECK_S):
            pass
        deadline = time.monotonic() + self.config.worker_drain_timeout_s
        for thread in runners:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in runners):
            with self._active_lock:
                left = sorted(str(run_id) for run_id in self._active)
            log.error(
                "worker %s: runs still in progress after %g s (%s); leaving them to the lease sweep",
                self.id,
                self.config.worker_drain_timeout_s,
                ", ".join(left),
            )
            return 1
        self.close()
        log.info("worker %s: stopped", self.id)
        return 0

    def stop(self) -> None:
        """Stop claiming; runs in progress finish."""
        self.stopping.set()
        with self._wakeup:
            self._wakeup.notify_all()
        self.deliveries.wake_all()

    def close(self) -> None:
        """Record the clean stop, close the pool, the provider and the metrics server."""
        try:
            heartbeat.record_stop(self)
        except psycopg.Error as exc:
            log.warning("worker %s: could not record its stop (%s)", self.id, type(exc).__name__)
        self.pool.close()
        self.provider.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()

    def install_signal_handlers(self) -> None:
        """First SIGTERM/SIGINT: drain. Second: exit at once, leaving runs in progress to the lease sweep."""

        def handle(signum: int, frame: FrameType | None) -> None:
            if self.stopping.is_set():
                log.error(
                    "worker %s: %s again; exiting now, runs in progress are left to the lease sweep",
                    self.id,
                    signal.Signals(signum).name,
                )
                os._exit(1)
            log.info(
                "worker %s: %s; finishing runs in progress, claiming no more", self.id, signal.Signals(signum).name
            )
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
