"""Bounded waits through the app and a real PostgreSQL, without a worker: runs are finished by the test with SQL
(migration 0010's trigger sends the NOTIFY, since 0020 for runs a request waits for), so each case controls when.
The e2e ones: tests/e2e/test_waits.py."""

import threading
import time

import psycopg
import pytest

from flowline.api import waits
from flowline.data import db

# Each test times a wait against its bound (tests/support/serial.py).
pytestmark = pytest.mark.serial

UPPER = ("formatter", {"rules": ["uppercase"]})


def queued(client, workflow_id, headers=None):
    response = client.post(f"/workflows/{workflow_id}/runs", json={"input_text": "x"}, headers=headers or {})
    assert response.status_code == 202, response.json
    return response.json["run_id"]


def finish(database_url, run_id, status="Succeeded", after=0.0, notify=True):
    """Finish a run as a worker would (status, outcome, finished_at), after ``after`` seconds, in a thread;
    ``notify=False`` with triggers off, so no NOTIFY is sent. Returns the thread."""

    def work():
        time.sleep(after)
        with psycopg.connect(database_url, autocommit=True) as conn:
            if not notify:
                conn.execute("SET session_replication_role = replica")
            conn.execute(
                "UPDATE runs SET status = %s, final_output = 'X', finished_at = clock_timestamp() WHERE id = %s",
                (status, run_id),
            )

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.fixture
def pending(client, workflow):
    return queued(client, workflow([UPPER]))


def test_get_with_wait_answers_when_the_run_finishes(client, database_url, pending):
    finisher = finish(database_url, pending, after=0.4)
    response, took = timed(lambda: client.get(f"/runs/{pending}", headers={"Prefer": "wait=10"}))
    finisher.join()
    assert response.status_code == 200 and response.json["run"]["status"] == "Succeeded"
    assert 0.35 < took < 2.0
    assert response.headers["Preference-Applied"] == "wait=10"
    assert "Prefer" in response.headers["Vary"]


def test_get_without_wait_answers_at_once_and_varies_on_prefer(client, pending):
    response, took = timed(lambda: client.get(f"/runs/{pending}"))
    assert response.status_code == 200 and response.json["run"]["status"] == "Pending" and took < 1.0
    assert "Preference-Applied" not in response.headers and "Prefer" in response.headers["Vary"]


@pytest.mark.parametrize("prefer", ["wait=abc", "wait=-1", "wait=1.5", "wait=", "wait", "wait=0", "wait=1e3"])
def test_a_wait_that_is_not_delta_seconds_is_ignored(client, pending, prefer):
    response, took = timed(lambda: client.get(f"/runs/{pending}", headers={"Prefer": prefer}))
    assert response.status_code == 200 and response.json["run"]["status"] == "Pending"
    assert took < 1.0 and "Preference-Applied" not in response.headers
    queued_again = client.post(f"/workflows/{response.json['run']['workflow_id']}/runs", headers={"Prefer": prefer})
    assert queued_again.status_code == 202 and "Preference-Applied" not in queued_again.headers


def test_a_wait_is_capped_at_wait_max_s(make_app, workflow, database_url):
    client = make_app(WAIT_MAX_S=1).test_client()
    run_id = queued(client, client.post("/workflows", json={"name": "w"}).json["id"])
    response, took = timed(lambda: client.get(f"/runs/{run_id}", headers={"Prefer": "wait=30"}))
    assert response.status_code == 200 and response.json["run"]["status"] == "Pending"
    assert 0.9 < took < 2.5
    assert response.headers["Preference-Applied"] == "wait=1"


def test_an_unknown_run_answers_404_at_once(client):
    response, took = timed(
        lambda: client.get("/runs/9b0c4f4e-3c55-4c1e-9f53-0b5a0b0f3a11", headers={"Prefer": "wait=10"})
    )
    assert response.status_code == 404 and took < 1.0


def test_over_wait_max_waiters_a_request_answers_at_once(make_app, database_url):
    app = make_app(WAIT_MAX_WAITERS=1)
    client = app.test_client()
    workflow_id = client.post("/workflows", json={"name": "w"}).json["id"]
    first, second = queued(client, workflow_id), queued(client, workflow_id)
    result = {}
    waiter = threading.Thread(
        target=lambda: result.update(r=app.test_client().get(f"/runs/{first}", headers={"Prefer": "wait=10"}))
    )
    waiter.start()
    hub = app.extensions[waits.EXTENSION]
    deadline = time.monotonic() + 5
    while hub.waiting < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    over, took = timed(lambda: client.get(f"/runs/{second}", headers={"Prefer": "wait=10"}))
    assert over.status_code == 200 and over.json["run"]["status"] == "Pending" and took < 1.0
    assert "Preference-Applied" not in over.headers
    finish(database_url, first).join()
    waiter.join(5)
    assert result["r"].json["run"]["status"] == "Succeeded" and result["r"].headers["Preference-Applied"] == "wait=10"


def test_post_with_wait_answers_202_when_the_run_does_not_finish_in_time(make_app):
    client = make_app(WAIT_MAX_S=1).test_client()
    workflow_id = client.post("/workflows", json={"name": "w"}).json["id"]
    response, took = timed(lambda: client.post(f"/workflows/{workflow_id}/runs", headers={"Prefer": "wait=5"}))
    assert response.status_code == 202 and response.json["status"] == "Pending" and 0.9 < took < 2.5
    assert response.headers["Preference-Applied"] == "wait=1"
    assert response.headers["Location"] == f"/runs/{response.json['run_id']}"


def test_a_replayed_post_with_wait_answers_the_earlier_runs_outcome(client, workflow, database_url):
    workflow_id = workflow([UPPER])
    run_id = queued(client, workflow_id, {"Idempotency-Key": "k-1"})
    finish(database_url, run_id, status="Failed").join()
    response, took = timed(
        lambda: client.post(
            f"/workflows/{workflow_id}/runs",
            json={"input_text": "x"},
            headers={"Idempotency-Key": "k-1", "Prefer": "wait=10"},
        )
    )
    assert response.status_code == 200 and took < 1.0
    assert response.json == {"run_id": run_id, "status": "Failed", "final_output": "X", "error_message": None}
    assert response.headers["Idempotent-Replayed"] == "true"
    assert response.headers["Preference-Applied"] == "wait=10"


def test_cancelling_a_pending_run_ends_its_wait(client, pending):
    canceller = threading.Thread(target=lambda: (time.sleep(0.3), client.post(f"/runs/{pending}/cancel")))
    canceller.start()
    response, took = timed(lambda: client.get(f"/runs/{pending}", headers={"Prefer": "wait=10"}))
    canceller.join()
    assert response.json["run"]["status"] == "Cancelled" and took < 2.0


def test_a_finish_missed_while_the_listener_was_down_is_found_when_it_reconnects(app, client, database_url, pending):
    hub = app.extensions[waits.EXTENSION]
    result = {}
    waiter = threading.Thread(
        target=lambda: result.update(r=app.test_client().get(f"/runs/{pending}", headers={"Prefer": "wait=15"}))
    )
    waiter.start()
    assert hub.listening.wait(5)
    # Finished without a NOTIFY (triggers off), then the listener's connection is killed: on reconnecting it
    # wakes every waiter, which reads its run again.
    finish(database_url, pending, notify=False).join()
    time.sleep(0.3)
    assert waiter.is_alive()
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'flowline-api-waits'"
        ).fetchall()
    assert killed == [(True,)]
    waiter.join(10)
    assert result["r"].json["run"]["status"] == "Succeeded"
    assert time.monotonic() - started < 3


def test_closing_the_app_ends_its_listener_within_a_fraction_of_a_second(app, client, pending):
    """What a gunicorn worker leaving (SIGTERM, max_requests) and every test app's teardown wait for."""
    hub = app.extensions[waits.EXTENSION]
    response, _ = timed(lambda: client.get(f"/runs/{pending}", headers={"Prefer": "wait=1"}))
    assert response.json["run"]["status"] == "Pending" and hub.listening.is_set()
    time.sleep(0.05)  # the listener is inside its wait for a notification
    _, took = timed(hub.close)
    assert not hub.listening.is_set() and took < 0.5


def test_only_a_waited_runs_change_into_a_final_status_notifies(client, database_url, pending):
    """Migration 0020: a finish nobody waits for sends no NOTIFY (PostgreSQL serialises notifying commits); once a
    request registered as the run's waiter, its change into a final status does, once."""
    unwaited = queued(client, client.get(f"/runs/{pending}").json["run"]["workflow_id"])
    with psycopg.connect(database_url, autocommit=True) as listener, psycopg.connect(database_url) as writer:
        listener.execute("LISTEN flowline_run_finished")
        writer.autocommit = True
        writer.execute("UPDATE runs SET status = 'Failed', finished_at = now() WHERE id = %s", (unwaited,))
        assert list(listener.notifies(timeout=0.3)) == []
        assert db.execute(writer, "register_run_waiter", run_id=unwaited) == 0, "a final run needs no mark"
        assert db.execute(writer, "register_run_waiter", run_id=pending) == 1
        assert db.execute(writer, "register_run_waiter", run_id=pending) == 0, "a second waiter writes nothing"
        writer.execute(
            "UPDATE runs SET status = 'Running', lease_token = gen_random_uuid(), lease_expires_at = now() "
            "WHERE id = %s",
            (pending,),
        )
        writer.execute("UPDATE runs SET error_message = 'x' WHERE id = %s", (pending,))
        assert list(listener.notifies(timeout=0.3)) == []
        writer.execute("UPDATE runs SET status = 'Failed', finished_at = now() WHERE id = %s", (pending,))
        (note,) = list(listener.notifies(timeout=1, stop_after=1))
        assert (note.channel, note.payload) == ("flowline_run_finished", pending)
        # No change of status (Failed again): no NOTIFY.
        writer.execute("UPDATE runs SET status = 'Failed' WHERE id = %s", (pending,))
        assert list(listener.notifies(timeout=0.3)) == []
