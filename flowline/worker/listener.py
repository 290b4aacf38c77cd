"""The LISTEN thread: wakes a run thread for each notification of a queued run, and a webhook delivery thread for
each notification of a delivery to make (flowline/worker/webhooks.py).

The enqueuing statement sends ``NOTIFY flowline_runs`` (delivered on commit); it arrives on a connection of this
thread's own, not a pooled one. On every (re)connect the run threads look at the queue once (and the delivery threads at the outbox), since a notification
sent while the connection was down is lost; polling every WORKER_POLL_INTERVAL_S covers the rest.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import psycopg

from ..core import config as settings
from ..core import logs

if TYPE_CHECKING:
    from .process import Worker

log = logging.getLogger("flowline.worker")

CHANNEL = "flowline_runs"
# Sent on commit by the trigger that writes webhook deliveries (migration 0009) and by a manual retry.
WEBHOOK_CHANNEL = "flowline_webhooks"
# Longest wait before reconnecting to a database that went away (here and in the run threads).
RECONNECT_CAP_S = 5.0


def listen(worker: Worker) -> None:
    """Hold a LISTEN connection and wake one of ``worker``'s run threads per notification until it stops,
    reconnecting with backoff."""
    logs.bind(worker_id=worker.id)
    delay = 0.1
    # The server itself (DATABASE_DIRECT_URL): a pooler in transaction mode would not keep a LISTEN.
    conninfo = settings.connection_kwargs(worker.config.direct_url, 0, "flowline-worker-listen")
    while not worker.stopping.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                conn.execute(f"LISTEN {WEBHOOK_CHANNEL}")
                delay = 0.1
                worker.wake(worker.concurrency)
                worker.deliveries.wake_all()
                while not worker.stopping.is_set():
                    for notify in conn.notifies(timeout=0.5, stop_after=1):
                        if notify.channel == WEBHOOK_CHANNEL:
                            worker.deliveries.wake()
                        else:
                            worker.wake()
        except psycopg.Error as exc:
            if worker.stopping.is_set():
                return
            log.warning(
                "worker %s: LISTEN connection lost (%s); polling every %g s, reconnecting in %g s",
                worker.id,
                type(exc).__name__,
                worker.config.worker_poll_interval_s,
                delay,
            )
            worker.stopping.wait(delay)
            delay = min(RECONNECT_CAP_S, delay * 2)
