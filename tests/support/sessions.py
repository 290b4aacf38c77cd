"""A statement whose session is killed half-way, as a lost connection or a killed client would end it."""

import threading
from collections.abc import Callable
from typing import Any

import psycopg

from tests.support.waiting import wait_for


def terminate_midway(url: str, statement: str, observer: Any, until: Callable[[int], Any], message: str) -> Exception:
    """Run ``statement`` in a session of its own on ``url`` (autocommit); once ``until(pid)`` holds (``pid``: that
    session's backend), terminate the session from the connection ``observer`` (``pg_terminate_backend``). Return
    the error the statement died with.

    :raise AssertionError: the statement was not ended by the termination (it finished, or failed otherwise).
    """
    errors: list[Exception] = []
    with psycopg.connect(url, autocommit=True) as victim:
        pid = victim.info.backend_pid

        def run() -> None:
            try:
                victim.execute(statement)
            except psycopg.OperationalError as exc:  # its session is terminated below
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        wait_for(lambda: until(pid), message=message)
        observer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        thread.join(10)
    assert errors, f"the statement was not killed: {statement}"
    return errors[0]
