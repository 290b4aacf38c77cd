"""History reads on a streaming replica (DATABASE_REPLICA_URL), while it keeps up; the primary otherwise.

A view whose reads tolerate a few seconds of staleness says so with one line, ``@replica.reads``: while it runs,
``db.connection()`` and ``db.transaction()`` lend the replica's pool instead of the primary's. Only reads across
workflows do (``GET /runs``, the console's runs list and queue page); what a client reads right after its own
write (a run, its events, a workflow's runs), waits, claims and writes stay on the primary.

The replica serves while its lag (``get_replica_lag``, measured at most every LAG_CHECK_S by the request that
finds the reading stale) is within REPLICA_MAX_LAG_S. Lagging, unreachable, or failing mid-request (a recovery
conflict, a dropped connection), the reads go to the primary at once: a replica never fails a request. One that
did not answer costs at most one connect timeout (CONNECT_TIMEOUT_S), then is not tried for DOWN_FOR_S.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any, TypeVar, cast

import psycopg
from flask import current_app

from . import db

if TYPE_CHECKING:
    from ..core.config import Settings

log = logging.getLogger("flowline.replica")

EXTENSION = "flowline.replica"
# What /readyz says of the replica.
OK, LAGGING, UNREACHABLE, NOT_CONFIGURED = "ok", "lagging", "unreachable", "not configured"
# How long a lag reading stands before a request measures it again.
LAG_CHECK_S = 1.0
# How long a request waits for a replica connection (libpq's own connect_timeout cannot go below 2 s).
CONNECT_TIMEOUT_S = 1.0
# How long reads stay on the primary, the replica untried, after it failed to answer.
DOWN_FOR_S = 5.0

View = TypeVar("View", bound=Callable[..., Any])


class Replica:
    """One process's view of the replica: its pool, its last lag reading and whether reads may go there."""

    def __init__(self, config: Settings) -> None:
        self.max_lag_s = config.replica_max_lag_s
        self.pool = db.create_pool(
            config, "flowline-replica", database_url=config.database_replica_url, timeout_s=CONNECT_TIMEOUT_S
        )
        self.lag_s: float | None = None
        self._state: str | None = None
        self._checked_at = float("-inf")
        self._down_until = float("-inf")
        self._checking = threading.Lock()

    def state(self) -> str:
        """Return OK, LAGGING or UNREACHABLE, measuring the lag when the last reading is over LAG_CHECK_S old
        (one thread measures; the others meanwhile take the last reading, UNREACHABLE before the first)."""
        now = monotonic()
        if now < self._down_until:
            return UNREACHABLE
        if now - self._checked_at >= LAG_CHECK_S and self._checking.acquire(blocking=False):
            try:
                self._measure()
            finally:
                self._checking.release()
        return self._state or UNREACHABLE

    def _measure(self) -> None:
        db.open_pool(self.pool)
        try:
            with db.connection(self.pool, timeout=CONNECT_TIMEOUT_S) as conn:
                row = db.one(conn, "get_replica_lag")
        except psycopg.Error as exc:  # PoolTimeout and DatabaseDown included
            self.failed(exc)
            return
        self.lag_s = None if row is None or row["lag_s"] is None else float(row["lag_s"])
        self._state = OK if self.lag_s is not None and self.lag_s <= self.max_lag_s else LAGGING
        self._checked_at = monotonic()

    def failed(self, exc: BaseException) -> None:
        """Note that the replica failed to answer: reads stay on the primary for DOWN_FOR_S."""
        if self._state != UNREACHABLE:
            log.warning("replica unreachable (%s); history reads go to the primary", type(exc).__name__)
        self._state, self.lag_s = UNREACHABLE, None
        self._checked_at = self._down_until = monotonic() + DOWN_FOR_S

    def close(self) -> None:
        self.pool.close()


def of_app() -> Replica | None:
    """Return the current app's Replica, None when DATABASE_REPLICA_URL is not set."""
    replica: Replica | None = current_app.extensions.get(EXTENSION)
    return replica


def status() -> str:
    """Return what /readyz says of the replica: OK, LAGGING, UNREACHABLE or NOT_CONFIGURED."""
    replica = of_app()
    return NOT_CONFIGURED if replica is None else replica.state()


def reads(view: View) -> View:
    """Make ``view``'s database reads go to the replica while it keeps up (see the module's docstring); on any
    replica error the view runs again, on the primary. Only for views that read and write nothing."""

    @functools.wraps(view)
    def routed(*args: Any, **kwargs: Any) -> Any:
        replica = of_app()
        if replica is None or replica.state() != OK:
            return view(*args, **kwargs)
        try:
            with db.reading_from(replica.pool):
                return view(*args, **kwargs)
        except psycopg.Error as exc:
            replica.failed(exc)
        return view(*args, **kwargs)

    return cast(View, routed)
