"""Lease renewal: every run in progress keeps its lease while its worker is alive, however long it takes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..data import db
from ..engine import runner

if TYPE_CHECKING:
    from .process import Worker

log = logging.getLogger("flowline.worker")


def renew_leases(worker: Worker) -> None:
    """Renew the lease of every run in progress in ``worker``; a run whose lease was lost stops at its next write."""
    active = worker.runs_in_progress()
    if not active:
        return
    with db.connection(worker.pool) as conn:
        for ctx in active:
            if not runner.renew_lease(conn, ctx):
                log.warning("worker %s: run %s is no longer held by this worker", worker.id, ctx.run_id)
