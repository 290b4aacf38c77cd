"""Async runs: queueing (202, Location, idempotency), cancellation, and real worker processes executing runs,
retrying, recovering from dead and paused workers, and draining on SIGTERM."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import ROOT, make_pdf, wait_for
from tests.support.fake_llm import FakeLLM, completion

KEY = "sk-fake-async-key"
FAST = {"RUN_LEASE_SECONDS": 2, "WORKER_POLL_INTERVAL_S": 0.2, "RUN_RETRY_BACKOFF_S": 0.3}
LLM_NODE = ("generative_ai", {"prompt": "Summarise: {text}", "model": "gpt-4o-mini"})
UPPER = ("formatter", {"rules": ["uppercase"]})


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


def llm_env(fake, **extra):
    return {**FAST, "LLM_API_KEY": KEY, "LLM_BASE_URL": fake.url, "LLM_MAX_RETRIES": 0, "LLM_TIMEOUT_S": 10, **extra}


def queue(client, workflow_id, body=None, key=None):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"/workflows/{workflow_id}/runs", json=body, headers=headers)


def queued(client, workflow_id, text="hello"):
    response = queue(client, workflow_id, {"input_text": text})
    assert response.status_code == 202, response.json
    return response.json["run_id"]


def run_of(sql, run_id):
    return sql.execute("SELECT * FROM runs WHERE id = %s", (run_id,)).fetchone()


def events_of(client, run_id):
    return client.get(f"/runs/{run_id}/events").json["events"]


def finished(sql, *run_ids):
    rows = sql.execute("SELECT status FROM runs WHERE id = ANY(%s::uuid[])", (list(run_ids),)).fetchall()
    return all(r["status"] in ("Succeeded", "Failed", "Cancelled") for r in rows) and len(rows) == len(run_ids)


# --- queueing -------------------------------------------------------------------------------------------------


def test_queueing_answers_202_with_location_and_the_run_waits_pending(client, workflow, sql):
    workflow_id = workflow([UPPER])
    response = queue(client, workflow_id, {"input_text": "later"})
    assert response.status_code == 202
    run_id = response.json["run_id"]
    assert response.json == {"run_id": run_id, "status": "Pending"}
    assert response.headers["Location"] == f"/runs/{run_id}"
    run = client.get(response.headers["Location"]).json
    assert run["run"]["status"] == "Pending" and run["run"]["mode"] == "async" and run["steps"] == []
    assert run["run"]["attempt"] == 0 and run["run"]["max_attempts"] == 3
    (event,) = events_of(client, run_id)
    assert (event["status"], event["attempt"], event["note"]) == ("Pending", 0, "queued")
    assert run_of(sql, run_id)["input"] == {"input_text": "later", "file_id": None}


def test_queueing_an_unknown_workflow_or_a_bad_body_is_refused(client, workflow):
    assert queue(client, "9b0c4f4e-3c55-4c1e-9f53-0b5a0b0f3a11", {"input_text": "x"}).status_code == 404
    workflow_id = workflow([UPPER])
    bad = queue(client, workflow_id, {"input_text": 3})
    assert bad.status_code == 422 and "input_text" in bad.json["errors"]
    missing_file = queue(client, workflow_id, {"file_id": "9b0c4f4e-3c55-4c1e-9f53-0b5a0b0f3a11"})
    assert missing_file.status_code == 422 and "file_id" in missing_file.json["errors"]
    for key in ["", "x" * 256, "has space", "caf\u00e9"]:
        response = client.post(f"/workflows/{workflow_id}/runs", json={}, headers={"Idempotency-Key": key})
        assert response.status_code == 422, key
        assert "Idempotency-Key" in response.json["detail"]


def test_the_same_idempotency_key_answers_the_same_run_and_a_different_body_is_refused(client, workflow, sql):
    workflow_id, other_workflow = workflow([UPPER]), workflow([UPPER])
    first = queue(client, workflow_id, {"input_text": "once"}, key="order-42")
    again = queue(client, workflow_id, {"input_text": "once"}, key="order-42")
    assert first.status_code == again.status_code == 202
    assert again.json == first.json and again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    changed = queue(client, workflow_id, {"input_text": "twice"}, key="order-42")
    assert changed.status_code == 422
    assert "different request body" in changed.json["detail"] and changed.json["run_id"] == first.json["run_id"]
    # A key belongs to one workflow: another workflow's run with the same key is another run.
    elsewhere = queue(client, other_workflow, {"input_text": "once"}, key="order-42")
    assert elsewhere.status_code == 202 and elsewhere.json["run_id"] != first.json["run_id"]
    count = sql.execute("SELECT count(*) AS n FROM runs WHERE workflow_id = %s", (workflow_id,)).fetchone()["n"]
    assert count == 1


def test_twenty_concurrent_requests_with_one_key_queue_one_run(server, sql):
    _status, created, _ = server.request("POST", "/workflows", {"name": "idem"})
    workflow_id = created["id"]
    server.request("POST", f"/workflows/{workflow_id}/nodes", {"node_type": "formatter", "config": {}})
    barrier, answers = threading.Barrier(20), []

    def send():
        request = urllib.request.Request(
            f"{server.base}/workflows/{workflow_id}/runs",
            method="POST",
            data=json.dumps({"input_text": "same"}).encode(),
            headers={"Content-Type": "application/json", "Idempotency-Key": "k-20"},
        )
        barrier.wait()
        with urllib.request.urlopen(request, timeout=10) as response:
            answers.append((response.status, json.loads(response.read())["run_id"]))

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 20 and {status for status, _ in answers} == {202}
    assert len({run_id for _, run_id in answers}) == 1
    rows = sql.execute("SELECT id FROM runs WHERE workflow_id = %s", (workflow_id,)).fetchall()
    assert [str(r["id"]) for r in rows] == [answers[0][1]]
    events = sql.execute("SELECT count(*) AS n FROM run_events WHERE run_id = %s", (rows[0]["id"],)).fetchone()
    assert events["n"] == 1


# --- cancelling -----------------------------------------------------------------------------------------------


def test_a_cancelled_pending_run_never_starts(client, workflow, sql, make_worker):
    workflow_id = workflow([UPPER])
    cancelled, kept = queued(client, workflow_id, "no"), queued(client, workflow_id, "yes")
    response = client.post(f"/runs/{cancelled}/cancel")
    assert response.status_code == 200 and response.json == {"run_id": cancelled, "status": "Cancelled"}
    assert [e["status"] for e in events_of(client, cancelled)] == ["Pending", "Cancelled"]
    make_worker(**FAST).start()
    wait_for(lambda: finished(sql, kept), message="the other run")
    assert run_of(sql, kept)["status"] == "Succeeded"
    run = run_of(sql, cancelled)
    assert (run["status"], run["attempt"], run["started_at"]) == ("Cancelled", 0, None)
    assert run["finished_at"] is not None
    assert client.get(f"/runs/{cancelled}").json["steps"] == []


def test_cancelling_a_finished_or_unknown_run_is_refused(client, workflow):
    workflow_id = workflow([UPPER])
    done = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "x"}).json["run_id"]
    response = client.post(f"/runs/{done}/cancel")
    assert response.status_code == 409
    assert response.json["status"] == "Succeeded" and "already Succeeded" in response.json["detail"]
    pending = queued(client, workflow_id)
    assert client.post(f"/runs/{pending}/cancel").status_code == 200
    again = client.post(f"/runs/{pending}/cancel")
    assert again.status_code == 409 and again.json["status"] == "Cancelled"
    assert client.post("/runs/9b0c4f4e-3c55-4c1e-9f53-0b5a0b0f3a11/cancel").status_code == 404
    assert client.post("/runs/nope/cancel").status_code == 404


def test_a_cancelled_running_run_stops_at_the_next_node_boundary(client, workflow, sql, make_worker, fake):
    fake.reply(200, completion("summary"), delay=1.5)
    workflow_id = workflow([LLM_NODE, UPPER, UPPER])
    run_id = queued(client, workflow_id)
    make_worker(**llm_env(fake)).start()
    wait_for(lambda: fake.requests, message="the LLM call")
    response = client.post(f"/runs/{run_id}/cancel")
    assert response.status_code == 202
    assert response.json["status"] == "Running" and "next node boundary" in response.json["note"]
    wait_for(lambda: finished(sql, run_id), message="the cancelled run")
    detail = client.get(f"/runs/{run_id}").json
    assert detail["run"]["status"] == "Cancelled" and detail["run"]["final_output"] is None
    # The node in progress completed; the two after it never ran.
    assert [(s["node_type"], s["status"], s["output_text"]) for s in detail["steps"]] == [
        ("generative_ai", "Succeeded", "summary")
    ]
    last = events_of(client, run_id)[-1]
    assert last["status"] == "Cancelled" and "1 of 3 node(s) ran" in last["note"]


# --- workers --------------------------------------------------------------------------------------------------


def test_a_worker_runs_queued_runs_oldest_first_and_history_names_it(client, workflow, sql, make_worker):
    workflow_id = workflow([UPPER, ("formatter", {"rules": ["strip"]})])
    run_ids = [queued(client, workflow_id, f" run {i} ") for i in range(3)]
    worker = make_worker(**FAST).start()
    wait_for(lambda: finished(sql, *run_ids), message="the runs")
    runs = [run_of(sql, run_id) for run_id in run_ids]
    assert [r["final_output"] for r in runs] == ["RUN 0", "RUN 1", "RUN 2"]
    assert [r["status"] for r in runs] == ["Succeeded"] * 3
    assert runs[0]["started_at"] < runs[1]["started_at"] < runs[2]["started_at"]
    events = events_of(client, run_ids[0])
    assert [(e["status"], e["attempt"]) for e in events] == [("Pending", 0), ("Running", 1), ("Succeeded", 1)]
    worker_id = f"{socket.gethostname()}:{worker.pid}:1"
    assert [e["worker_id"] for e in events[1:]] == [worker_id, worker_id]
    assert events[1]["note"] == "claimed: attempt 1 of 3"
    assert [s["attempt"] for s in client.get(f"/runs/{run_ids[0]}").json["steps"]] == [1, 1]


def test_an_idle_worker_wakes_on_notify_without_waiting_for_its_poll(client, workflow, sql, make_worker):
    workflow_id = workflow([UPPER])
    worker = make_worker(**{**FAST, "WORKER_POLL_INTERVAL_S": 60}).start()
    wait_for(
        lambda: sql.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'flowline-worker-listen' AND query LIKE 'LISTEN%%'"
        ).fetchone(),
        message="the LISTEN connection",
    )
    time.sleep(0.5)  # the worker's first look at the queue (made when its LISTEN connection opens) is over
    run_ids = [queued(client, workflow_id, f"wake {i}") for i in range(3)]
    wait_for(lambda: finished(sql, *run_ids), timeout=10, message="the runs (NOTIFY, not the 60 s poll)")
    assert worker.process.poll() is None


def test_a_run_queued_without_notification_is_found_by_polling(client, workflow, sql, make_worker):
    workflow_id = workflow([UPPER])
    make_worker(**FAST).start()
    time.sleep(0.5)
    # As if the notification were lost (a pooler that drops LISTEN, a connection down at the time).
    run_id = sql.execute(
        "INSERT INTO runs (workflow_id, mode, input) VALUES (%s, 'async', '{\"input_text\": \"quiet\"}') RETURNING id",
        (workflow_id,),
    ).fetchone()["id"]
    wait_for(lambda: finished(sql, run_id), timeout=10, message="the polled run")
    assert run_of(sql, run_id)["final_output"] == "QUIET"


def test_a_worker_runs_a_pdf_input_file(client, workflow, sql, make_worker, upload):
    file_id = upload(make_pdf("Quarterly report")).json["file_id"]
    workflow_id = workflow([("extract_text", {}), UPPER])
    run_id = queue(client, workflow_id, {"file_id": file_id}).json["run_id"]
    make_worker(**FAST).start()
    wait_for(lambda: finished(sql, run_id), message="the run")
    assert run_of(sql, run_id)["final_output"].strip() == "QUARTERLY REPORT"


def test_a_provider_429_is_a_wait_in_the_queue_that_spends_no_attempt(client, workflow, sql, make_worker, fake):
    fake.reply(200, completion("summary"))
    fake.reply(429, {"error": {"message": "slow down", "code": "rate_limit_exceeded"}}, headers={"Retry-After": "1"})
    fake.reply(200, completion("after the wait"))
    run_id = queued(client, workflow([LLM_NODE, UPPER, LLM_NODE]))
    make_worker(**llm_env(fake)).start()
    wait_for(lambda: finished(sql, run_id), message="the run")
    run = run_of(sql, run_id)
    assert (run["status"], run["attempt"], run["final_output"]) == ("Succeeded", 1, "after the wait")
    assert run["error_message"] is None
    events = events_of(client, run_id)
    assert [(e["status"], e["attempt"]) for e in events] == [
        ("Pending", 0),
        ("Running", 1),
        ("Pending", 1),
        ("Running", 1),
        ("Succeeded", 1),
    ]
    assert events[2]["note"].startswith("waiting for gpt-4o-mini: rate limited by the provider (429)")
    assert events[3]["note"] == "resumed: attempt 1 of 3 at node 3"
    # One step per node in the attempt: the first two are not run again, the last waited and then succeeded.
    steps = client.get(f"/runs/{run_id}").json["steps"]
    assert [(s["attempt"], s["node_type"], s["status"]) for s in steps] == [
        (1, "generative_ai", "Succeeded"),
        (1, "formatter", "Succeeded"),
        (1, "generative_ai", "Succeeded"),
    ]
    _first, limited, second = fake.requests
    assert "SUMMARY" in limited.json["messages"][0]["content"] == second.json["messages"][0]["content"]
    assert second.at - limited.at >= 0.95, "the run waited for the Retry-After"


def test_a_rejected_request_fails_at_once_without_retry(client, workflow, sql, make_worker, fake):
    fake.reply(400, {"error": {"message": "bad model", "code": "model_not_found"}})
    run_id = queued(client, workflow([LLM_NODE]))
    make_worker(**llm_env(fake)).start()
    wait_for(lambda: finished(sql, run_id), message="the run")
    run = run_of(sql, run_id)
    assert (run["status"], run["attempt"]) == ("Failed", 1)
    assert "400" in run["error_message"] and "not retried" in run["error_message"]
    assert len(fake.requests) == 1


def test_retries_stop_at_max_attempts(make_app, sql, make_worker, fake):
    client = make_app(RUN_MAX_ATTEMPTS=2).test_client()
    fake.reply(503, {}, times=5)
    workflow_id = client.post("/workflows", json={"name": "w"}).json["id"]
    client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": LLM_NODE[0], "config": LLM_NODE[1]})
    run_id = queued(client, workflow_id)
    make_worker(**llm_env(fake)).start()
    wait_for(lambda: finished(sql, run_id), message="the run")
    run = run_of(sql, run_id)
    assert (run["status"], run["attempt"], run["max_attempts"]) == ("Failed", 2, 2)
    assert "503" in run["error_message"]
    assert len(fake.requests) == 2


def test_a_sync_run_cancelled_while_it_waits_answers_409_and_is_persisted_cancelled(make_app, sql, fake):
    client = make_app(LLM_API_KEY=KEY, LLM_BASE_URL=fake.url, LLM_MAX_RETRIES=0).test_client()
    fake.reply(200, completion("too late"), delay=1.0)
    workflow_id = client.post("/workflows", json={"name": "sync"}).json["id"]
    for node_type, config in (LLM_NODE, UPPER):
        client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": node_type, "config": config})
    answers = []
    thread = threading.Thread(
        target=lambda: answers.append(client.post(f"/workflows/{workflow_id}/run", json={"input_text": "x"}))
    )
    thread.start()
    wait_for(lambda: fake.requests, message="the LLM call")
    (running,) = sql.execute("SELECT id FROM runs WHERE status = 'Running'").fetchall()
    assert client.post(f"/runs/{running['id']}/cancel").status_code == 202
    thread.join()
    (answer,) = answers
    assert answer.status_code == 409
    assert answer.json["status"] == "Cancelled" and answer.json["run_id"] == str(running["id"])
    assert [s["node_type"] for s in client.get(f"/runs/{running['id']}").json["steps"]] == ["generative_ai"]


def test_the_worker_is_a_flask_command():
    flask = str(Path(sys.executable).with_name("flask"))
    shown = subprocess.run(
        [flask, "--app", "app", "worker", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": "postgresql://nobody@/none?host=/nonexistent"},
    )
    assert shown.returncode == 0, shown.stderr
    assert "--concurrency" in shown.stdout and "async runs" in shown.stdout
    refused = subprocess.run(
        [flask, "--app", "app", "worker", "--concurrency", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": "postgresql://nobody@/none?host=/nonexistent"},
    )
    assert refused.returncode == 2 and "--concurrency" in refused.stderr
