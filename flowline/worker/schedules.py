"""Schedules' firing: every worker's schedule thread decides the due ticks of schedules, each exactly once.

Every SCHEDULE_POLL_INTERVAL_S the thread runs one transaction: it locks up to CLAIM_BATCH enabled schedules whose
``next_fire_at`` has passed by the database's clock (``claim_due_schedules``: one scan of ``schedules_due_idx``,
``FOR UPDATE SKIP LOCKED``, so workers racing over the same schedules each take different ones), decides their due
ticks, inserts the runs (``fire_schedule_run``, whose ``ON CONFLICT (schedule_id, scheduled_for) DO NOTHING`` is the
backstop) and advances ``next_fire_at`` past now (``advance_schedule``). A worker that dies mid-transaction decides
nothing: its locks go with it and another worker decides the same ticks.

Which ticks fire. A tick found at most SCHEDULE_MISFIRE_GRACE_S after its time fires as itself. Older ticks were
missed (no worker ran, or all were busy); the schedule's ``catchup`` decides: ``none`` fires none of them, ``last``
fires one run for the latest, ``all`` fires each of the latest CATCHUP_MAX (older ones are dropped, and logged).

Then the ``overlap`` policy, tick by tick, oldest first: ``skip`` fires nothing while the schedule's latest run is
Pending or Running (the tick is counted in ``skipped_count`` and ``last_skipped_at``, and logged); ``queue`` always
fires; ``cancel_previous`` cancels that run (``cancel_run``: a Pending one at once, a Running one at its next node
boundary) and fires.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from itertools import islice, takewhile
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import Connection
from psycopg.types.json import Jsonb

from ..core import cron, logs, metrics
from ..core.statuses import ACTIVE_STATUSES, RunStatus
from ..data import db

if TYPE_CHECKING:
    from .process import Worker

log = logging.getLogger("flowline.worker")

# Most schedules one poll decides; when it found that many, the next poll follows at once.
CLAIM_BATCH = 100
# Most missed ticks a schedule with catchup "all" fires after a downtime: the latest ones.
CATCHUP_MAX = 100


def due_ticks(schedule: Mapping[str, Any], now: datetime, grace_s: float) -> tuple[list[datetime], bool, datetime]:
    """Return ``(ticks to fire, truncated, next tick)`` for a due ``schedule`` (its cron, timezone, catchup and
    next_fire_at) at the database's ``now``: the ticks oldest first; truncated when catchup "all" left missed ticks
    older than the latest CATCHUP_MAX out; the next tick after ``now``."""
    expr, tz, first = schedule["cron"], schedule["timezone"], schedule["next_fire_at"]
    cutoff = now - timedelta(seconds=grace_s)
    on_time = [first] if first >= cutoff else []
    # Ticks on time after the first, up to now (the first is the only one before the cutoff we may meet going up).
    start = first if first >= cutoff else cutoff - timedelta(microseconds=1)
    on_time += takewhile(lambda tick: tick <= now, cron.ticks_after(expr, tz, start))
    missed: list[datetime] = []
    truncated = False
    if first < cutoff and schedule["catchup"] != "none":
        wanted = 1 if schedule["catchup"] == "last" else CATCHUP_MAX
        # Ticks before the cutoff, latest first, down to the first not yet decided; one more tells of older ones.
        earlier = list(islice(takewhile(lambda tick: tick >= first, cron.ticks_before(expr, tz, cutoff)), wanted + 1))
        missed = earlier[:wanted][::-1]
        truncated = len(earlier) > wanted and schedule["catchup"] == "all"
    return missed + on_time, truncated, cron.next_tick(expr, tz, now)


def poll(worker: Worker) -> int:
    """Decide the due ticks of up to CLAIM_BATCH schedules in one transaction; return how many were claimed."""
    config = worker.config
    with db.transaction(worker.pool) as conn:
        schedules = db.many(conn, "claim_due_schedules", batch_size=CLAIM_BATCH)
        for schedule in schedules:
            with logs.context(schedule_id=schedule["id"]):
                _decide(conn, worker, schedule, config.schedule_misfire_grace_s, config.run_max_attempts)
    return len(schedules)


def _decide(
    conn: Connection[Any], worker: Worker, schedule: Mapping[str, Any], grace_s: float, max_attempts: int
) -> None:
    ticks, truncated, next_fire_at = due_ticks(schedule, schedule["now"], grace_s)
    if schedule["next_fire_at"] < schedule["now"] - timedelta(seconds=grace_s):
        log.warning(
            "worker %s: schedule %s: ticks missed since %s (catchup %s: %d to fire%s); next tick %s",
            worker.id,
            schedule["id"],
            schedule["next_fire_at"].isoformat(),
            schedule["catchup"],
            len(ticks),
            f", older than the latest {CATCHUP_MAX} dropped" if truncated else "",
            next_fire_at.isoformat(),
        )
    last_run_id, last_status = schedule["last_run_id"], schedule["last_run_status"]
    skipped, last_skipped_at, last_fired_at, fired_run_id = 0, None, None, None
    stored_input = {"input_text": schedule["input_text"], "file_id": schedule["file_id"] and str(schedule["file_id"])}
    for tick in ticks:
        if last_status in ACTIVE_STATUSES and schedule["overlap"] == "skip":
            skipped, last_skipped_at = skipped + 1, tick
            log.info(
                "worker %s: schedule %s: tick %s skipped: run %s is still %s (overlap skip)",
                worker.id,
                schedule["id"],
                tick.isoformat(),
                last_run_id,
                last_status,
            )
            continue
        if last_status in ACTIVE_STATUSES and schedule["overlap"] == "cancel_previous":
            cancelled = db.one(conn, "cancel_run", run_id=last_run_id)
            if cancelled is not None and cancelled["previous_status"] == RunStatus.PENDING:
                metrics.run_finished("async", RunStatus.CANCELLED)
            log.info(
                "worker %s: schedule %s: tick %s cancels run %s (overlap cancel_previous)",
                worker.id,
                schedule["id"],
                tick.isoformat(),
                last_run_id,
            )
        row = db.one(
            conn,
            "fire_schedule_run",
            workflow_id=schedule["workflow_id"],
            input=Jsonb(stored_input),
            max_attempts=max_attempts,
            schedule_id=schedule["id"],
            scheduled_for=tick,
            priority=schedule["priority"],
        )
        if row is None:
            # The unique backstop: the claim's lock should make this impossible, so say so when it is not.
            log.warning(
                "worker %s: schedule %s: tick %s already had its run; none added",
                worker.id,
                schedule["id"],
                tick.isoformat(),
            )
            continue
        last_run_id, last_status, fired_run_id, last_fired_at = row["id"], RunStatus.PENDING, row["id"], tick
        log.info("worker %s: schedule %s: tick %s fired run %s", worker.id, schedule["id"], tick.isoformat(), row["id"])
    db.execute(
        conn,
        "advance_schedule",
        schedule_id=schedule["id"],
        next_fire_at=next_fire_at,
        skipped=skipped,
        last_skipped_at=last_skipped_at,
        last_fired_at=last_fired_at,
        last_run_id=fired_run_id,
    )


def run_schedules(worker: Worker) -> None:
    """The schedule thread: poll every SCHEDULE_POLL_INTERVAL_S (at once again after a full batch) until the
    worker stops; a stopping worker fires nothing more."""
    logs.bind(worker_id=f"{worker.id}:schedules")
    interval = worker.config.schedule_poll_interval_s
    while not worker.stopping.is_set():
        claimed = 0
        try:
            claimed = poll(worker)
        except psycopg.OperationalError as exc:
            log.warning("worker %s: database unavailable for schedules (%s)", worker.id, type(exc).__name__)
        except Exception:
            log.exception("worker %s: deciding schedules' ticks failed", worker.id)
        if claimed < CLAIM_BATCH:
            worker.stopping.wait(interval)
