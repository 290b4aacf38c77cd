"""Bounded waits (Prefer: wait=N) against a real gunicorn and a real worker: a wait answers within milliseconds of
the run's finish, POST with a wait answers 200 with the outcome (Succeeded or Failed) or 202, the waiter bound
holds, a client that disconnects frees its slot, and SIGTERM ends waits. One gunicorn (one process of four
threads, two of them for waiters) and one worker serve the module; runs that must not finish are queued with an
available_at an hour away, so the worker leaves them alone, and finished by the test with SQL."""

import signal
import socket
import statistics
import threading
import time
from datetime import datetime

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Server, WorkerProcess, wait_for
from tests.support.fake_llm import FakeLLM, completion

# The tests time waits (a finish -> answer median of 50 ms...) (tests/support/serial.py).
pytestmark = pytest.mark.serial

LLM_NODE = ("generative_ai", {"prompt": "{text}", "model": "gpt-4o-mini"})
SERVER_ENV = {"WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4", "WAIT_MAX_WAITERS": "2", "DB_POOL_MAX_SIZE": "4"}


@pytest.fixture(scope="module")
def database_url(module_database_url):
    return module_database_url


@pytest.fixture(scope="module")
def fake():
    with FakeLLM() as server:
        yield server


def _stop(process):
    if process.process is not None and process.process.poll() is None:
        process.process.kill()
        process.process.wait()


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    server = Server(database_url, tmp_path_factory.mktemp("gunicorn"), SERVER_ENV)
    server.start()
    yield server
    _stop(server)


@pytest.fixture(scope="module")
def worker(database_url, fake, tmp_path_factory):
    env = {"LLM_API_KEY": "sk-fake-waits", "LLM_BASE_URL": fake.url, "LLM_MAX_RETRIES": "0", "LLM_TIMEOUT_S": "10"}
    worker = WorkerProcess(database_url, tmp_path_factory.mktemp("worker"), env).start(concurrency=2)
    yield worker
    _stop(worker)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def workflow_id(http):
    workflow_id = http.post("/workflows", json={"name": "waits"}).json()["id"]
    node_type, config = LLM_NODE
    assert http.post(f"/workflows/{workflow_id}/nodes", json={"node_type": node_type, "config": config}).is_success
    return workflow_id


@pytest.fixture
def sql(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def parked_run(sql, workflow_id):
    """Queue a run no worker takes for an hour (its available_at), for the test to finish with finish_parked."""
    return str(
        sql.execute(
            "INSERT INTO runs (workflow_id, mode, status, input, max_attempts, available_at) "
            "VALUES (%s, 'async', 'Pending', '{\"input_text\": \"parked\"}', 1, now() + interval '1 hour') "
            "RETURNING id",
            (workflow_id,),
        ).fetchone()[0]
    )


def finish_parked(sql, *run_ids):
    sql.execute(
        "UPDATE runs SET status = 'Succeeded', final_output = 'done', finished_at = clock_timestamp() "
        "WHERE id = ANY(%s::uuid[])",
        (list(run_ids),),
    )


def samples(server):
    text = httpx.get(server.base + "/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def waiters(server):
    return samples(server).get(("flowline_waiters", ()), 0)


def waits_ended(server, outcome):
    return samples(server).get(("flowline_waits_total", (("outcome", outcome),)), 0)


def in_thread(fn):
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=fn()), daemon=True)
    thread.start()
    return thread, result


def test_a_wait_answers_within_milliseconds_of_the_finish(http, worker, fake, workflow_id):
    lags = []
    for n in range(20):
        fake.reply(200, completion(f"answer {n}"), delay=0.15)
        run_id = http.post(f"/workflows/{workflow_id}/runs", json={"input_text": str(n)}).json()["run_id"]
        sent = time.time()
        response = http.get(f"/runs/{run_id}", headers={"Prefer": "wait=10"})
        received = time.time()
        run = response.json()["run"]
        assert response.status_code == 200 and run["status"] == "Succeeded", response.text
        assert response.headers["Preference-Applied"] == "wait=10"
        # finished_at is PostgreSQL's clock_timestamp() at the finish, on this machine's clock as time.time() is.
        finished = datetime.fromisoformat(run["finished_at"]).timestamp()
        assert finished > sent, "the run finished before the wait began: nothing was measured"
        lags.append(received - finished)
    median, worst = statistics.median(lags), max(lags)
    print(f"finish -> answer over {len(lags)} waits: median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms")
    assert median < 0.050 and worst < 0.500, lags


def test_post_with_wait_answers_200_with_the_outcome_of_a_succeeded_run(http, worker, fake, workflow_id):
    fake.reply(200, completion("all done"), delay=0.1)
    response = http.post(f"/workflows/{workflow_id}/runs", json={"input_text": "x"}, headers={"Prefer": "wait=10"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {"run_id": body["run_id"], "status": "Succeeded", "final_output": "all done", "error_message": None}
    assert response.headers["Location"] == f"/runs/{body['run_id']}"
    assert response.headers["Preference-Applied"] == "wait=10" and "Prefer" in response.headers["Vary"]


def test_post_with_wait_answers_200_with_the_error_of_a_failed_run(http, worker, fake, workflow_id):
    fake.reply(400, {"error": {"message": "no such model", "type": "invalid_request_error"}})
    response = http.post(f"/workflows/{workflow_id}/runs", json={"input_text": "x"}, headers={"Prefer": "wait=10"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "Failed" and body["final_output"] is None and body["error_message"]


def test_post_with_wait_answers_202_when_the_run_does_not_finish_in_time(http, worker, fake, workflow_id):
    fake.reply(200, completion("late"), delay=2.5)
    started = time.monotonic()
    response = http.post(f"/workflows/{workflow_id}/runs", json={"input_text": "x"}, headers={"Prefer": "wait=1"})
    took = time.monotonic() - started
    assert response.status_code == 202 and response.json()["status"] == "Pending", response.text
    assert 0.9 < took < 2.5
    assert response.headers["Preference-Applied"] == "wait=1"
    # Its answer, later, once it finished (so the next test's script is not taken by this run).
    later = http.get(response.headers["Location"], headers={"Prefer": "wait=10"}).json()
    assert later["run"]["status"] == "Succeeded"


def test_waiters_are_capped_per_process_and_over_the_cap_answer_at_once(http, server, sql, workflow_id):
    first, second, third = (parked_run(sql, workflow_id) for _ in range(3))
    threads = [
        in_thread(lambda run_id=run_id: httpx.get(f"{server.base}/runs/{run_id}", headers={"Prefer": "wait=20"}))
        for run_id in (first, second)
    ]
    wait_for(lambda: waiters(server) == 2, timeout=10, message="two waiters")
    started = time.monotonic()
    over = http.get(f"/runs/{third}", headers={"Prefer": "wait=20"})
    assert time.monotonic() - started < 1.0
    assert over.status_code == 200 and over.json()["run"]["status"] == "Pending"
    assert "Preference-Applied" not in over.headers
    # The threads the waiters leave free still serve other requests at once.
    started = time.monotonic()
    assert http.get(f"/workflows/{workflow_id}").status_code == 200
    assert time.monotonic() - started < 1.0
    finish_parked(sql, first, second)
    for thread, result in threads:
        thread.join(2)
        assert result["value"].json()["run"]["status"] == "Succeeded"
    assert waiters(server) == 0


def test_a_client_that_disconnects_frees_its_slot_within_about_a_second(server, sql, workflow_id):
    run_id = parked_run(sql, workflow_id)
    left_before = waits_ended(server, "disconnected")
    client = socket.create_connection(("127.0.0.1", server.port))
    client.sendall(f"GET /runs/{run_id} HTTP/1.1\r\nHost: flowline\r\nPrefer: wait=20\r\n\r\n".encode())
    wait_for(lambda: waiters(server) == 1, timeout=10, message="the waiter")
    client.close()
    closed = time.monotonic()
    wait_for(lambda: waiters(server) == 0, timeout=5, interval=0.05, message="the slot freed")
    assert time.monotonic() - closed < 2.0
    assert waits_ended(server, "disconnected") == left_before + 1
    finish_parked(sql, run_id)


def test_sigterm_ends_waits_at_once(database_url, sql, workflow_id, tmp_path):
    # A gunicorn of its own, as this one is stopped.
    stopping = Server(database_url, tmp_path, SERVER_ENV)
    stopping.start()
    try:
        run_id = parked_run(sql, workflow_id)
        thread, result = in_thread(
            lambda: httpx.get(f"{stopping.base}/runs/{run_id}", headers={"Prefer": "wait=20"}, timeout=30)
        )
        wait_for(lambda: waiters(stopping) == 1, timeout=10, message="the waiter")
        signalled = time.monotonic()
        stopping.process.send_signal(signal.SIGTERM)
        thread.join(10)
        answered = time.monotonic() - signalled
        assert result["value"].status_code == 200 and result["value"].json()["run"]["status"] == "Pending"
        assert answered < 1.5
        assert stopping.process.wait(timeout=10) == 0
        assert time.monotonic() - signalled < 5
    finally:
        _stop(stopping)
        finish_parked(sql, run_id)
