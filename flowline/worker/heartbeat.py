"""Heartbeats: each worker's row in the workers table (and its own metrics) says it is alive and how busy."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from ..core import metrics
from ..data import db

if TYPE_CHECKING:
    from .process import Worker

# A worker's row in the workers table is deleted once its heartbeat is this old (any worker starting does it).
FORGET_WORKERS_AFTER_S = 86400


def register(worker: Worker) -> None:
    """Record ``worker``'s start in the workers table (and forget workers silent for a day)."""
    metrics.worker_heartbeat(worker.id, 0, worker.concurrency)
    with db.connection(worker.pool) as conn:
        db.execute(
            conn,
            "register_worker",
            worker_id=worker.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            concurrency=worker.concurrency,
        )
        db.execute(conn, "forget_workers", forget_after_s=FORGET_WORKERS_AFTER_S)


def beat(worker: Worker) -> None:
    """Record that ``worker`` is alive, with its runs in progress: in its metrics and in the workers table."""
    busy = len(worker.runs_in_progress())
    metrics.worker_heartbeat(worker.id, busy, worker.concurrency)
    with db.connection(worker.pool) as conn:
        db.execute(
            conn,
            "record_worker_heartbeat",
            runs_in_progress=busy,
            worker_id=worker.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            concurrency=worker.concurrency,
        )


def record_stop(worker: Worker) -> None:
    """Mark ``worker``'s row as stopped cleanly (the metrics leave it out from then on)."""
    with db.connection(worker.pool) as conn:
        db.execute(conn, "stop_worker", worker_id=worker.id)
