"""The database layer: one connection pool per process, one transaction helper, and small query helpers.

Views read::

    with db.transaction() as conn:
        row = db.one(conn, "create_workflow", name=name)

``transaction()`` commits when the block exits normally and rolls back when it raises. Pooled connections are
in autocommit mode, so ``connection()`` serves single-statement work (each statement is its own transaction)
without the two extra round trips of BEGIN and COMMIT.

Session-free pools (``Settings.session_free``: DATABASE_URL is PgBouncer in transaction mode, which hands each
transaction whichever server connection is free) keep nothing on a session: no prepared statements
(``prepare_threshold=None``), no startup ``options``. Their connections are SessionFreeConnection: the first
statement of each transaction (every statement, outside ``transaction()``) goes out pipelined behind
``set_transaction_settings`` (statement_timeout, UTC and jit off, ``set_config(..., true)``), in the same round
trip.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import monotonic
from typing import TYPE_CHECKING, Any

from flask import current_app
from psycopg import Connection
from psycopg import sql as psql
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout, TooManyRequests

from ..core.config import Settings, connection_kwargs
from .sql import QUERIES, Query

if TYPE_CHECKING:
    from psycopg import Cursor

EXTENSION = "flowline.pool"

# How long the pool retries a lost connection in the background, its waits doubling (1, 2, 4... s), before it gives
# up; the next request that needs a connection then starts a fresh attempt at once. psycopg_pool's default (300 s)
# lets the waits grow to minutes, so a service whose database was down for a while would stay down for about as
# long again after it came back; with 10 s it resumes within a few seconds.
RECONNECT_TIMEOUT_S = 10.0

# While the database is known to be down (a pool's last connection attempt failed and it has no connection open),
# a request is answered 503 at once (DatabaseDown) instead of waiting DB_POOL_TIMEOUT_S for a connection that will
# not come, and once a second one request tries to connect itself, so the first request after the database is back
# waits at most this long (the pool's own background attempts, on a backoff of 1, 2, 4 s..., also end the outage).
FAIL_FAST_S = 1.0


class SessionFreeConnection(Connection[DictRow]):
    """A pooled connection through a pooler in transaction mode, which sets its settings per transaction.

    ``statement_timeout_ms`` is set by its pool when it connects; ``settings_sent`` is None outside
    ``transaction()``, and inside it whether that transaction's settings went out yet (``_execute``).
    """

    statement_timeout_ms = 0
    settings_sent: bool | None = None

    def needs_settings(self) -> bool:
        """Return whether the next statement must carry the settings: it is a transaction of its own (autocommit,
        idle), or the first of ``transaction()``'s, or one in a transaction begun elsewhere (each one then)."""
        return self.info.transaction_status == TransactionStatus.IDLE or not self.settings_sent


class DatabaseDown(PoolTimeout):
    """The pool's last connection attempt failed and it has no connection open: refused without waiting."""


# The psycopg-pool release Pool was checked against: _probe reaches into it (see Pool), and
# tests/unit/test_pool_version.py fails, naming what to re-check, when the installed one differs.
PSYCOPG_POOL_CHECKED = "3.3.3"


class Pool(ConnectionPool[Connection[DictRow]]):
    """A ConnectionPool that fails fast while the database is known to be down, and whose callers, holding or
    waiting for a connection, are at most ``max_size + max_waiting``: one more gets TooManyRequests at once instead
    of queueing (``max_waiting=0``: no bound).

    Not psycopg_pool's own ``max_waiting``: its queue keeps every request that timed out waiting until a connection
    frees up, so while the database is down a few timeouts fill it for good, every request is refused before it
    can ask the pool to reconnect, and the service never comes back (seen with psycopg_pool 3.3.3).

    Failing fast (``fail_fast_s`` > 0): once a connection attempt failed (``get_stats()``'s ``connections_errors``
    grew since one last succeeded, which the ``configure`` callback notes), while no connection is idle in the
    pool or lent out, ``getconn`` raises DatabaseDown at once, except that every ``fail_fast_s`` one caller tries
    to connect itself (a probe, bounded by the pool timeout): its connection joins the pool and the caller is
    served, or it fails and the caller gets DatabaseDown. With a connection open the database was reached, so a
    failed attempt then means a full server (max_connections), not one down: callers wait as usual.

    All of it is psycopg_pool's public API (``get_stats``, ``configure``, ``getconn``/``putconn``) but the probe:
    psycopg_pool has no public way to add a connection to a pool now, so it counts and adds its connection as
    the pool's own growth does, with ``_lock``, ``_nconns``, ``_connect`` and ``_add_to_pool``
    (PSYCOPG_POOL_CHECKED).
    """

    def __init__(
        self,
        *args: Any,
        max_waiting: int = 0,
        fail_fast_s: float = 0.0,
        statement_timeout_ms: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, configure=self._connected, **kwargs)
        self.statement_timeout_ms = statement_timeout_ms
        self.max_callers = self.max_size + max_waiting if max_waiting else None
        self._callers = threading.BoundedSemaphore(self.max_callers) if self.max_callers is not None else None
        self.fail_fast_s = fail_fast_s
        # get_stats()'s connections_errors when an attempt last succeeded: more since, and the latest ones failed.
        # (pop_stats() would reset that counter: nothing in Flowline calls it; metrics read get_stats().)
        self._errors_at_success = 0
        # monotonic() of the latest probe, None before the first; connections lent out.
        self._probed_at: float | None = None
        self._lent = 0
        self._lent_lock = threading.Lock()
        self._probing = threading.Lock()

    def _connected(self, conn: Connection[DictRow]) -> None:
        """The ``configure`` callback: note that a connection attempt (the pool's or a probe's) succeeded."""
        if isinstance(conn, SessionFreeConnection):
            conn.statement_timeout_ms = self.statement_timeout_ms
        self._errors_at_success = self.get_stats().get("connections_errors", 0)

    def _known_down(self) -> bool:
        """Return whether the latest connection attempts failed while no connection is idle or lent out."""
        if self.fail_fast_s <= 0:
            return False
        stats = self.get_stats()
        failed = stats.get("connections_errors", 0) > self._errors_at_success
        return failed and not stats["pool_available"] and not self._lent

    def _probe(self) -> None:
        """Connect now, the pool's way, and add the connection to the pool, counted as one of its own.

        Counted even when the pool's own attempts (waiting out their backoff) already fill ``max_size``: when they
        succeed too, the pool holds one connection more than ``max_size`` until an idle one is closed
        (``max_idle``), rather than this caller waiting for their next attempt.

        :raise DatabaseDown: the attempt failed.
        """
        with self._lock:
            self._nconns += 1
        try:
            conn = self._connect(timeout=self.timeout)
        except Exception:
            with self._lock:
                self._nconns -= 1
            raise DatabaseDown(f"the pool {self.name!r} could not connect to the database") from None
        self._add_to_pool(conn)

    def _fail_fast(self) -> None:
        """Raise DatabaseDown while the database is known to be down, but let one probe through per window.

        :raise DatabaseDown: the database is known to be down, and this caller's probe failed or was not its turn.
        """
        if not self._known_down():
            return
        recently = self._probed_at is not None and monotonic() - self._probed_at < self.fail_fast_s
        if recently or not self._probing.acquire(blocking=False):
            raise DatabaseDown(f"the pool {self.name!r} failed to connect less than {self.fail_fast_s} s ago")
        try:
            if self._known_down():
                self._probed_at = monotonic()
                self._probe()
        finally:
            self._probing.release()

    def getconn(self, timeout: float | None = None) -> Connection[DictRow]:
        """Return a connection, as ConnectionPool.getconn does, once the fail-fast and caller bounds let it.

        :raise DatabaseDown: the database is known to be down (see Pool).
        :raise TooManyRequests: ``max_size + max_waiting`` callers already hold or wait for a connection.
        :raise PoolTimeout: no connection within ``timeout`` (default: the pool's).
        """
        self._fail_fast()
        if self._callers is not None and not self._callers.acquire(blocking=False):
            raise TooManyRequests(
                f"the pool {self.name!r} has {self.max_callers} requests holding or waiting for a connection"
            )
        try:
            conn = super().getconn(timeout)
        except BaseException:
            if self._callers is not None:
                self._callers.release()
            raise
        with self._lent_lock:
            self._lent += 1
        return conn

    def putconn(self, conn: Connection[DictRow]) -> None:
        """Give back a connection getconn lent, as ConnectionPool.putconn does, freeing its caller's place."""
        with self._lent_lock:
            self._lent -= 1
        try:
            super().putconn(conn)
        finally:
            if self._callers is not None:
                self._callers.release()


def create_pool(
    config: Settings,
    application_name: str = "flowline",
    fail_fast_s: float = FAIL_FAST_S,
    database_url: str | None = None,
    timeout_s: float | None = None,
) -> Pool:
    """Return a closed pool for ``config`` (on ``database_url``, default DATABASE_URL: the replica's pool passes
    its own; ``timeout_s``, default DB_POOL_TIMEOUT_S); ``open_pool`` opens it after the process has forked.

    A request waits at most DB_POOL_TIMEOUT_S for a connection (then PoolTimeout), and when DB_POOL_MAX_SIZE
    requests hold one, at most DB_POOL_MAX_WAITING more wait: the next gets TooManyRequests at once; within
    ``fail_fast_s`` of a failed connection attempt, with no connection open, DatabaseDown at once. All are
    answered 503 with Retry-After (flowline/api/errors.py).
    """
    session_free = config.session_free
    return Pool(
        connection_kwargs(
            database_url or config.database_url,
            config.statement_timeout_ms,
            application_name,
            session_options=not session_free,
        ),
        connection_class=SessionFreeConnection if session_free else Connection,
        statement_timeout_ms=config.statement_timeout_ms,
        min_size=config.db_pool_min_size,
        max_size=max(config.db_pool_max_size, config.db_pool_min_size, 1),
        timeout=config.db_pool_timeout_s if timeout_s is None else timeout_s,
        max_waiting=config.db_pool_max_waiting,
        fail_fast_s=fail_fast_s,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        # Through a pooler in transaction mode, a statement prepared on one server connection would be looked for
        # on another: none is prepared.
        kwargs={"row_factory": dict_row, "autocommit": True} | ({"prepare_threshold": None} if session_free else {}),
        # A connection killed by a server restart or failover is replaced instead of failing a request.
        check=ConnectionPool.check_connection,
        open=False,
        name=application_name,
    )


_open_lock = threading.Lock()


def open_pool(pool: Pool) -> Pool:
    """Open ``pool`` once, without waiting for connections, so a process starts even while the database is down."""
    with _open_lock:
        if pool.closed:
            pool.open(wait=False)
    return pool


# The pool a view's reads go to instead of the app's, while flowline/data/replica.py routes them to the replica.
_reading_from: ContextVar[Pool | None] = ContextVar("flowline_reading_from", default=None)


@contextmanager
def reading_from(pool: Pool) -> Iterator[Pool]:
    """Inside the block, ``app_pool()`` (so ``connection()`` and ``transaction()``) lends ``pool``'s connections."""
    token = _reading_from.set(pool)
    try:
        yield pool
    finally:
        _reading_from.reset(token)


def app_pool() -> Pool:
    """Return the current Flask app's pool (or the one ``reading_from`` names), opening it on first use."""
    pool = _reading_from.get() or current_app.extensions[EXTENSION]
    if pool.closed:
        open_pool(pool)
    return pool


@contextmanager
def connection(pool: Pool | None = None, timeout: float | None = None) -> Iterator[Connection[Any]]:
    """Yield a pooled autocommit connection: every statement commits on its own. ``timeout``: the longest wait for
    one (default: the pool's).

    :raise psycopg_pool.PoolTimeout: when no connection frees up within the pool timeout (mapped to 503).
    :raise DatabaseDown: at once, while the database is known to be down (a PoolTimeout: mapped to 503).
    :raise psycopg_pool.TooManyRequests: when DB_POOL_MAX_WAITING requests already wait (mapped to 503).
    """
    with (pool or app_pool()).connection(timeout) as conn:
        yield conn


@contextmanager
def transaction(pool: Pool | None = None, timeout: float | None = None) -> Iterator[Connection[Any]]:
    """Yield a pooled connection inside one transaction: committed on normal exit, rolled back on error.

    :raise psycopg_pool.PoolTimeout: when no connection frees up within the pool timeout (mapped to 503).
    """
    with connection(pool, timeout) as conn, conn.transaction():
        if not isinstance(conn, SessionFreeConnection):
            yield conn
            return
        conn.settings_sent = False
        try:
            yield conn
        finally:
            conn.settings_sent = None


def _query(query_name: str, cardinality: str) -> Query:
    """Return the named query ``query_name``.

    :raise TypeError: the query is not of ``cardinality``.
    """
    query = QUERIES[query_name]
    if query.cardinality != cardinality:
        raise TypeError(f"query {query_name} is {query.cardinality}, not {cardinality}")
    return query


def _execute(conn: Connection[Any], query_name: str, cardinality: str, params: dict[str, Any]) -> Cursor[Any]:
    """Run ``query_name`` with ``params`` on ``conn``; return its cursor.

    :raise TypeError: the query is not of ``cardinality``.
    """
    query = _query(query_name, cardinality)
    if isinstance(conn, SessionFreeConnection) and conn.needs_settings():
        # One round trip: the server runs both in one transaction (the autocommit statement's implicit one, up to
        # the pipeline's Sync, or the open one), so the settings hold for the query and vanish with it.
        with conn.pipeline():
            _send(conn, "set_transaction_settings", timeout_ms=conn.statement_timeout_ms)
            cursor = conn.execute(query.text, params)
        if conn.settings_sent is False:
            conn.settings_sent = True
        return cursor
    return conn.execute(query.text, params)


def _send(conn: Connection[Any], query_name: str, /, **params: Any) -> Cursor[Any]:
    """Run ``query_name`` on ``conn`` without reading its result (in a pipeline: queued until it syncs)."""
    return conn.execute(QUERIES[query_name].text, params)


def one(conn: Connection[Any], query_name: str, /, **params: Any) -> dict[str, Any] | None:
    """Run the ``:one`` query ``query_name``; return its row as a dict, or None when it returned no row."""
    return _execute(conn, query_name, ":one", params).fetchone()


def many(conn: Connection[Any], query_name: str, /, **params: Any) -> list[dict[str, Any]]:
    """Run the ``:many`` query ``query_name``; return its rows as a list of dicts."""
    return _execute(conn, query_name, ":many", params).fetchall()


def execute(conn: Connection[Any], query_name: str, /, **params: Any) -> int:
    """Run the ``:exec`` query ``query_name``; return the number of rows it changed."""
    return _execute(conn, query_name, ":exec", params).rowcount


def execute_ddl(conn: Connection[Any], query_name: str, /, **identifiers: str) -> None:
    """Run the ``:exec`` DDL query ``query_name`` with its ``{name}`` placeholders filled by ``identifiers``, each
    quoted as an identifier (``psycopg.sql.Identifier``): DDL takes no parameters. Outside any transaction block
    when ``conn`` is in autocommit mode and none is open (``DETACH … CONCURRENTLY`` needs that), so never behind
    the session-free settings' pipeline.

    :raise TypeError: the query is not ``:exec``.
    """
    query = _query(query_name, ":exec")
    conn.execute(psql.SQL(query.text).format(**{name: psql.Identifier(value) for name, value in identifiers.items()}))
