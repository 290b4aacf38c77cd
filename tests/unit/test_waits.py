"""Bounded waits without a database: what ``Prefer: wait=N`` asks for, a client's closed connection, and a
waiter's slot, wake-up, deadline and stop (the run read by a stand-in; the listener cannot connect)."""

import socket
import threading
import time

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from flowline.api import waits

# The tests time wake-ups against bounds of 0.1 to 0.5 s (tests/support/serial.py).
pytestmark = pytest.mark.serial

# A unix socket folder with no server in it: the listener's connection fails at once, and it retries quietly.
NOWHERE = "postgresql://postgres@/flowline?host=/nonexistent-flowline-socket&connect_timeout=1"
RUN_ID = "3f0b6c1e-1d2a-4b5c-8d9e-0f1a2b3c4d5e"


def request_with(*prefer):
    return Request(EnvironBuilder(headers=[("Prefer", value) for value in prefer]).get_environ())


@pytest.mark.parametrize(
    "prefer, seconds",
    [
        (["wait=5"], 5),
        (["respond-async, wait=7"], 7),
        (["WAIT=3"], 3),
        (['wait="4"'], 4),
        (["wait=100"], 30),  # capped at max_s
        (["wait=0"], None),
        (["wait=abc"], None),
        (["wait=-1"], None),
        (["wait=1.5"], None),
        (["wait="], None),
        (["wait"], None),
        (["wait=99999999999999"], 30),
        (["handling=strict"], None),
        ([], None),
        (["wait=2", "wait=9"], 2),  # the first of a repeated preference counts
    ],
)
def test_requested_seconds_reads_delta_seconds_and_ignores_what_is_not(prefer, seconds):
    assert waits.requested_seconds(request_with(*prefer), 30) == seconds


def test_no_wait_is_granted_when_the_cap_is_zero():
    assert waits.requested_seconds(request_with("wait=5"), 0) is None


def test_a_closed_or_reset_client_connection_is_seen_as_gone():
    ours, theirs = socket.socketpair()
    gone = waits.client_gone_check({"gunicorn.socket": ours})
    assert not gone()
    theirs.sendall(b"GET /next HTTP/1.1\r\n")  # a pipelined request: still connected
    assert not gone()
    theirs.close()
    assert gone()
    ours.close()
    assert gone()  # our side closed too (fileno -1)


def test_without_gunicorns_socket_the_client_is_never_gone():
    assert waits.client_gone_check({})() is False


class Run:
    """A stand-in for the database: the run's status, read by ``read`` (counting the reads, and recording which of
    them registered the waiter)."""

    def __init__(self, status="Pending"):
        self.status = status
        self.reads = 0
        self.registered = []

    def read(self, register):
        self.reads += 1
        self.registered.append(register)
        return {"id": RUN_ID, "status": self.status, "final_output": None, "error_message": None}


@pytest.fixture
def hub():
    hub = waits.Waits(NOWHERE, max_waiters=1)
    yield hub
    hub.close()


def in_thread(fn, *args):
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=fn(*args)))
    thread.start()
    return thread, result


def wait_until(predicate, timeout=5):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_final_run_answers_at_once_and_an_unknown_one_too(hub):
    done = Run("Failed")
    wait = hub.wait(RUN_ID, 5, done.read)
    assert (wait.outcome, wait.final, wait.waited, done.reads) == (waits.FINISHED, True, True, 1)
    wait = hub.wait(RUN_ID, 5, lambda register: None)
    assert (wait.outcome, wait.final, wait.row) == (waits.FINISHED, False, None)
    assert hub.waiting == 0


def test_a_wake_up_for_its_run_reads_it_again_and_ends_the_wait(hub):
    run = Run()
    thread, result = in_thread(hub.wait, RUN_ID, 10, run.read)
    wait_until(lambda: hub.waiting == 1 and run.reads == 1)
    hub._wake("another-run")
    time.sleep(0.05)
    assert run.reads == 1
    run.status = "Succeeded"
    started = time.monotonic()
    hub._wake(RUN_ID)
    thread.join(5)
    assert time.monotonic() - started < 0.5
    assert result["value"].outcome == waits.FINISHED and result["value"].row["status"] == "Succeeded"
    assert run.reads == 2 and hub.waiting == 0
    assert run.registered == [True, False], "only the first read registers the waiter in the database"


def test_a_wait_ends_at_its_deadline_and_over_the_cap_nothing_waits(hub):
    run = Run()
    thread, result = in_thread(hub.wait, RUN_ID, 1, run.read)
    wait_until(lambda: hub.waiting == 1)
    started = time.monotonic()
    over = hub.wait(RUN_ID, 5, run.read)
    assert time.monotonic() - started < 0.1
    assert (over.outcome, over.waited, over.row) == (waits.OVER_CAP, False, None)
    thread.join(5)
    assert result["value"].outcome == waits.TIMED_OUT and result["value"].row["status"] == "Pending"
    assert hub.waiting == 0


def test_a_client_that_left_frees_its_slot_within_a_slice(hub):
    left = threading.Event()
    thread, result = in_thread(hub.wait, RUN_ID, 20, Run().read, left.is_set)
    wait_until(lambda: hub.waiting == 1)
    started = time.monotonic()
    left.set()
    thread.join(5)
    assert time.monotonic() - started < waits.SLICE_S + 0.5
    assert result["value"].outcome == waits.DISCONNECTED and hub.waiting == 0


def test_stop_ends_every_wait_at_once_and_refuses_new_ones(hub):
    thread, result = in_thread(hub.wait, RUN_ID, 20, Run().read)
    wait_until(lambda: hub.waiting == 1)
    started = time.monotonic()
    hub.stop()
    thread.join(5)
    assert time.monotonic() - started < 0.5
    assert result["value"].outcome == waits.STOPPING
    refused = hub.wait(RUN_ID, 5, Run().read)
    assert (refused.outcome, refused.waited) == (waits.STOPPING, False)


def test_a_finish_notified_while_the_run_is_being_read_is_not_lost(hub):
    """The waiter registers before it reads: a NOTIFY that arrives while the read sees the run not yet final
    (committed just after the read's snapshot) wakes it, and it reads again."""

    class Racing(Run):
        def read(self, register):
            row = super().read(register)
            if self.reads == 1:
                self.status = "Succeeded"
                hub._wake(RUN_ID)  # the notification, after the snapshot that saw Pending
            return row

    run = Racing()
    started = time.monotonic()
    wait = hub.wait(RUN_ID, 5, run.read)
    assert wait.outcome == waits.FINISHED and wait.row["status"] == "Succeeded"
    assert time.monotonic() - started < 0.5 and run.reads == 2
