"""Bounded waits: a request with ``Prefer: wait=N`` (RFC 7240 §4.3) waits up to N seconds for its run to finish.

A run a request waits for sends ``NOTIFY flowline_run_finished, '<run id>'`` when it reaches a final status
(migration 0010's trigger, delivered on commit; since migration 0020 only runs whose ``notify_finish`` a waiting
request set, so that finishes nobody waits for cost no NOTIFY). Each process holds one LISTEN connection of its
own, never a pooled one, opened by a daemon thread on its first wait (so after gunicorn forked). A waiting request:

1. takes one of WAIT_MAX_WAITERS slots of its process (none free: it does not wait, and answers at once);
2. registers an event under its run's id, *then* sets the run's ``notify_finish`` (committed) and only then reads
   the run (a pooled connection, given back at once), so a finish committed after that read notifies and wakes
   it: no wake-up is lost (migration 0020 gives the argument);
3. sleeps on the event in slices of at most SLICE_S, checking between them that its client is still connected
   and that the process is not stopping (SIGTERM), until the run is final (each wake-up reads it again) or the
   N seconds are over. It holds a thread, never a connection, while it sleeps.

The listener wakes every waiter whenever it (re)connects: a notification sent while it was not listening is lost,
so each one reads its run again.
"""

from __future__ import annotations

import logging
import re
import select
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any

import psycopg
from flask import current_app
from psycopg_pool import PoolTimeout, TooManyRequests
from werkzeug.wrappers import Request

from ..core import config as settings
from ..core import metrics
from ..core.statuses import FINISHED_STATUSES
from . import prefer

if TYPE_CHECKING:
    from ..core.config import Settings

log = logging.getLogger("flowline.api")

EXTENSION = "flowline.waits"
CHANNEL = "flowline_run_finished"
# Longest sleep between two checks of the client's connection and of SIGTERM: a client that left frees its slot
# within about this long.
SLICE_S = 1.0
# Longest the listener waits for a notification before it looks whether it must stop: close() (a gunicorn worker
# exiting, an app torn down) returns within about this long. Waiting costs nothing between two looks.
LISTEN_SLICE_S = 0.2
# How soon a waiter woken while the pool is busy (many woken at once) reads its run again.
BUSY_RETRY_S = 0.2
# Longest wait before the listener reconnects to a database that went away.
RECONNECT_CAP_S = 5.0
# RFC 7240 §4.3: wait = delta-seconds, one or more digits.
_DELTA_SECONDS = re.compile(r"^[0-9]+$")

# How a wait ended (the outcome label of flowline_waits_total).
FINISHED, TIMED_OUT, OVER_CAP, DISCONNECTED, STOPPING = "finished", "timed_out", "over_cap", "disconnected", "stopping"


def requested_seconds(request: Request, max_s: int) -> int | None:
    """Return the seconds the request's ``Prefer: wait=N`` asks for, capped at ``max_s``; None when it asks for
    none, or for something that is not delta-seconds (``wait=abc``, ``wait=-1``, ``wait=1.5``): a preference
    that cannot be honoured is ignored (RFC 7240 §2). ``wait=0`` and ``max_s`` 0 mean no wait."""
    wait = prefer.of_request(request).get("wait")
    if wait is None or wait.value is None or not _DELTA_SECONDS.match(wait.value):
        return None
    # More than nine digits is far beyond any cap (and int() of a huge string is not free).
    return (max_s if len(wait.value) > 9 else min(int(wait.value), max_s)) or None


def applied(seconds: int) -> str:
    """Return the ``Preference-Applied`` value of a wait of ``seconds`` (RFC 7240 §3)."""
    return f"wait={seconds}"


@dataclass(frozen=True)
class Wait:
    """How a wait ended: ``outcome`` (FINISHED...), ``row`` (the run as last read: get_run_outcome's row, or None
    for an unknown run or a wait over the cap) and ``waited`` (False over the cap: the preference was not applied)."""

    outcome: str
    row: dict | None
    waited: bool = True

    @property
    def final(self) -> bool:
        """True when the run was read in a final status."""
        return self.row is not None and self.row["status"] in FINISHED_STATUSES


def client_gone_check(environ: dict[str, Any]) -> Callable[[], bool]:
    """Return a function telling whether the client of the request with WSGI ``environ`` closed its connection.

    gunicorn puts the client's socket in ``environ["gunicorn.socket"]``; it is polled without reading from it (a
    peer that closed or reset shows as POLLRDHUP/POLLHUP/POLLERR, a TLS socket included). Under another server
    (Flask's test client) the function always says no.
    """
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return lambda: False
    hangup = select.POLLHUP | select.POLLERR | select.POLLNVAL | getattr(select, "POLLRDHUP", 0)

    def gone() -> bool:
        try:
            fd = sock.fileno()
        except OSError:
            return True
        if fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN | hangup)
        events = poller.poll(0)
        if not events:
            return False
        if events[0][1] & hangup:
            return True
        if getattr(select, "POLLRDHUP", 0):
            return False  # readable but not hung up: the client sent more (a pipelined request)
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, ValueError):  # nothing to read after all; a TLS socket cannot peek
            return False
        except OSError:
            return True

    return gone


class Waits:
    """One process's waiting requests and the LISTEN thread that wakes them (``app.extensions[EXTENSION]``)."""

    def __init__(self, database_url: str, max_waiters: int, application_name: str = "flowline-api-waits") -> None:
        self.max_waiters = max_waiters
        self._conninfo = settings.connection_kwargs(database_url, 0, application_name)
        self._lock = threading.Lock()
        # run id (text, as NOTIFY sends it) -> set of threading.Event of the requests waiting
        self._events: dict[str, set[threading.Event]] = {}
        self._count = 0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.listening = threading.Event()

    @classmethod
    def from_config(cls, config: Settings) -> Waits:
        # The server itself (DATABASE_DIRECT_URL): a pooler in transaction mode would not keep a LISTEN.
        return cls(config.direct_url, config.wait_max_waiters)

    @property
    def waiting(self) -> int:
        """The requests of this process waiting now."""
        return self._count

    def wait(
        self,
        run_id: uuid.UUID,
        seconds: float,
        read: Callable[[bool], dict[str, Any] | None],
        client_gone: Callable[[], bool] = lambda: False,
    ) -> Wait:
        """Wait up to ``seconds`` for run ``run_id`` to reach a final status; return a Wait.

        ``read(register)`` reads the run (get_run_outcome's row, or None for an unknown run) with a pooled
        connection it gives back; the first read passes True, registering the waiter in the database before it
        reads (so the run's finish notifies), the later ones False. Over WAIT_MAX_WAITERS, or while the process
        stops, nothing is read and Wait(OVER_CAP or STOPPING, None, waited=False) returns at once.

        :raise psycopg.Error: the first read failed (the database is down or the pool busy: the caller's 503).
        """
        with self._lock:
            if self._stopping.is_set() or self._count >= self.max_waiters:
                refused = STOPPING if self._stopping.is_set() else OVER_CAP
                metrics.wait_ended(refused, waited=False)
                return Wait(refused, None, waited=False)
            self._count += 1
            event = threading.Event()
            self._events.setdefault(str(run_id), set()).add(event)
        metrics.wait_started()
        outcome: str | None = None
        try:
            self._start_listener()
            row = read(True)
            deadline = monotonic() + seconds
            while row is not None and row["status"] not in FINISHED_STATUSES:
                outcome = self._sleep(event, deadline, client_gone)
                if outcome is not None:
                    return Wait(outcome, row)
                event.clear()  # before reading: a notification that arrives during the read wakes the next sleep
                try:
                    row = read(False)
                except (PoolTimeout, TooManyRequests):
                    # Many waiters woken at once (a reconnect) can exhaust the pool: look again a little later.
                    left = deadline - monotonic()
                    if left <= 0:
                        outcome = TIMED_OUT
                        return Wait(TIMED_OUT, row)
                    event.wait(min(BUSY_RETRY_S, left))
                    event.set()
            outcome = FINISHED
            return Wait(FINISHED, row)
        finally:
            with self._lock:
                self._count -= 1
                waiters = self._events[str(run_id)]
                waiters.discard(event)
                if not waiters:
                    del self._events[str(run_id)]
            if outcome is None:
                metrics.wait_ended("error")
            else:
                metrics.wait_ended(outcome)

    def _sleep(self, event: threading.Event, deadline: float, client_gone: Callable[[], bool]) -> str | None:
        """Sleep until ``event`` is set (return None) or the wait must end (return TIMED_OUT, DISCONNECTED or
        STOPPING), in slices of at most SLICE_S."""
        while not event.is_set():
            if self._stopping.is_set():
                return STOPPING
            left = deadline - monotonic()
            if left <= 0:
                return TIMED_OUT
            if client_gone():
                return DISCONNECTED
            event.wait(min(SLICE_S, left))
        return STOPPING if self._stopping.is_set() else None

    def _wake(self, run_id: str | None = None) -> None:
        """Wake the requests waiting for ``run_id``, or every waiting request."""
        with self._lock:
            if run_id is None:
                events = [e for waiters in self._events.values() for e in waiters]
            else:
                events = list(self._events.get(run_id, ()))
        for event in events:
            event.set()

    def _start_listener(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._listen, name="flowline-waits-listener", daemon=True)
                self._thread.start()

    def _listen(self) -> None:
        """Hold the LISTEN connection until stop(), waking the waiters of each finished run; reconnect with
        backoff, and wake every waiter once listening again."""
        delay = 0.1
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    # A constant statement: LISTEN cannot be a named, PREPAREd query of sql/.
                    conn.execute("LISTEN flowline_run_finished")
                    self.listening.set()
                    delay = 0.1
                    self._wake()
                    while not self._stopping.is_set():
                        for notification in conn.notifies(timeout=LISTEN_SLICE_S):
                            self._wake(notification.payload)
            except psycopg.Error as exc:
                self.listening.clear()
                if self._stopping.is_set():
                    return
                log.warning(
                    "waits: LISTEN connection lost (%s); reconnecting in %g s, then every waiting request reads "
                    "its run again",
                    type(exc).__name__,
                    delay,
                )
                self._stopping.wait(delay)
                delay = min(RECONNECT_CAP_S, delay * 2)
        self.listening.clear()

    def stop(self) -> None:
        """End every wait now (each answers with its run as it is) and refuse new ones: the process is stopping
        (gunicorn's SIGTERM). gunicorn calls it from its signal handler, in the worker's main thread, which never
        waits itself: the lock it takes is never held by the thread it interrupts."""
        self._stopping.set()
        self._wake()

    def close(self, timeout: float = 2.0) -> None:
        """stop(), then let the listener close its connection (within about LISTEN_SLICE_S)."""
        self.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


def of_app() -> Waits:
    """Return the current Flask app's Waits."""
    return current_app.extensions[EXTENSION]
