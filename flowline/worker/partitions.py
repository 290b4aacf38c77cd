"""History partition upkeep: every worker keeps the partitions of run_steps and run_events made
HISTORY_PARTITIONS_AHEAD periods (HISTORY_PARTITION_PERIOD) ahead, on its maintenance round. Each partition is made
by one statement under a transaction-level advisory lock (flowline/data/partitions.py), so workers racing for one
make it once, and a worker that cannot get the parent's lock within a second leaves it to the next round."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..data import db, partitions

if TYPE_CHECKING:
    from .process import Worker

log = logging.getLogger("flowline.worker")


def keep_ahead(worker: Worker) -> list[str]:
    """Make the history partitions missing from now to HISTORY_PARTITIONS_AHEAD periods ahead; return their names."""
    config = worker.config
    with db.connection(worker.pool) as conn:
        made = partitions.make_ahead(conn, config.history_partition_period, config.history_partitions_ahead)
    for name in made:
        log.info("worker %s: made history partition %s (and its run_events twin)", worker.id, name)
    return made
