"""History partitions: run_steps and run_events are range-partitioned by their run's created_at (migrations 0021,
0022). Partitions are made ahead by the workers (flowline/worker/partitions.py) and for the runs an import brings,
always through make_history_partition() (SECURITY DEFINER: the app role cannot create tables); prune-runs drops
them (flowline/tools/prune.py). There is no default partition: a row whose partition is missing is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import Connection

from . import db

# /readyz and flowline_history_partitions_ahead warn under this many partitions ahead of the current one.
WARN_UNDER = 2


def make_ahead(conn: Connection[Any], period: str, ahead: int) -> list[str]:
    """Make the missing partitions holding now and the next ``ahead`` periods of ``period`` on the autocommit
    connection ``conn``, one pair per statement (each its own short transaction); return the names made. Stops at
    the first that cannot get its locks within make_history_partition's lock_timeout (the next call goes on)."""
    made: list[str] = []
    while True:
        try:
            row = db.one(conn, "make_next_history_partition", period=period, ahead=ahead)
        except psycopg.errors.LockNotAvailable:
            return made
        if row is None or row["made"] is None:
            return made
        made.append(row["made"])


def make_for(conn: Connection[Any], created_ats: Iterable[datetime], period: str) -> int:
    """Make the partitions holding each of ``created_ats`` (runs' created_at) that are missing, on ``conn``;
    return how many pairs were made."""
    ats = sorted(set(created_ats))
    if not ats:
        return 0
    row = db.one(conn, "make_history_partitions_at", ats=ats, period=period)
    assert row is not None  # an aggregate: always one row
    return int(row["made"])


def count_ahead(conn: Connection[Any]) -> int | None:
    """Return how many partitions lie wholly ahead of now (the fewer of run_steps' and run_events'), or None while
    the partitioning migrations are pending. Runs in its own transaction on ``conn`` (a missing view leaves
    ``conn`` usable)."""
    try:
        with conn.transaction():
            row = db.one(conn, "count_history_partitions_ahead")
    except psycopg.errors.UndefinedTable:
        return None
    assert row is not None  # counts: always one row
    return int(row["ahead"])
