"""The lease sweep: takes back the runs whose holder stopped renewing its lease (a worker killed, paused or cut off,
an API process that died mid sync run). Every worker sweeps; ``FOR UPDATE SKIP LOCKED`` keeps two sweeps apart."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..core import logs, metrics
from ..data import db

if TYPE_CHECKING:
    from .process import Worker

log = logging.getLogger("flowline.worker")

# Most expired runs one sweep takes back; the next sweep (a moment later) takes the rest.
SWEEP_BATCH = 100


def sweep(worker: Worker) -> int:
    """Re-queue (attempts left) or finish (Failed, or Cancelled when asked) the runs whose lease expired; return
    how many."""
    with db.connection(worker.pool) as conn:
        rows = db.many(conn, "sweep_expired_leases", batch_size=SWEEP_BATCH)
    for row in rows:
        metrics.run_swept(row["mode"], row["status"])
        with logs.context(run_id=row["id"], attempt=row["attempt"]):
            log.warning("worker %s: run %s: %s -> %s", worker.id, row["id"], row["note"], row["status"])
    return len(rows)
