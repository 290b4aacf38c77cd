"""Logs: one JSON object per line with LOG_FORMAT=json (gunicorn's access log included), the request's and the
run's ids on every line they concern, and no secret, prompt or input text in them, through gunicorn and a worker."""

import json
import logging
import os
import socket
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from flowline.core import logs
from flowline.core.config import from_env
from tests.support import wait_for
from tests.support.fake_llm import FakeLLM, completion

KEY = "sk-logs-test-secret-8d41"
PROMPT = "PROMPT-SECRET-71 rewrite for the board: {text}"
INPUT = "INPUT-SECRET-19 quarterly numbers"
NODE = ("generative_ai", {"prompt": PROMPT, "model": "gpt-4o-mini"})
# An error body quoting the key and the prompt, as some providers' do: none of it may reach a log line.
LEAKY = {"error": {"message": f"Incorrect API key provided: {KEY}; prompt was {PROMPT!r}", "code": "rate_limited"}}
DOWN_URL = "postgresql://postgres@/flowline?host=/nonexistent-flowline-socket&connect_timeout=1"


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


@pytest.fixture(autouse=True)
def text_logs_afterwards():
    """Leave the process's logging as the other tests expect it (apps made here switch it to JSON)."""
    yield
    logs.configure("INFO", "text")


def json_lines(text):
    """Return every line of ``text`` parsed; each must be one JSON object with ts, level, logger and message."""
    parsed = []
    for line in text.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"ts", "level", "logger", "message"} <= set(record), line
        assert record["ts"].endswith("+00:00") and "T" in record["ts"], line
        parsed.append(record)
    return parsed


def with_password(url, password):
    """Return ``url`` with ``password`` in it (and that password): the throwaway server's trust auth ignores it."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:{password}@{host}")), password


# --- in one process --------------------------------------------------------------------------------------------


def test_json_lines_carry_the_request_id_and_third_party_lines_are_json_too(make_app, capsys):
    app = make_app(DATABASE_URL=DOWN_URL, LOG_FORMAT="json", DB_POOL_TIMEOUT_S=0.5)
    capsys.readouterr()
    response = app.test_client().get("/metrics", headers={"X-Request-ID": "req-json-1"})
    assert response.status_code == 200
    app.extensions["flowline.pool"].close()
    lines = json_lines(capsys.readouterr().err)
    (ours,) = [r for r in lines if r["logger"] == "flowline.metrics"]
    assert ours["level"] == "WARNING" and ours["request_id"] == "req-json-1"
    assert "database unavailable" in ours["message"]
    # psycopg's pool logs its failed connection attempts: one JSON object per line as well, multi-line text inside.
    assert any(r["logger"] == "psycopg.pool" for r in lines)


def test_lines_of_a_run_carry_its_run_node_attempt_and_holder(make_app, workflow, fake, capsys):
    fake.reply(500, LEAKY)
    fake.reply(200, completion("done"))
    workflow_id = workflow([NODE])
    app = make_app(LOG_FORMAT="json", LLM_API_KEY=KEY, LLM_BASE_URL=fake.url, LLM_BACKOFF_S=0.01)
    capsys.readouterr()
    response = app.test_client().post(
        f"/workflows/{workflow_id}/run", json={"input_text": INPUT}, headers={"X-Request-ID": "req-run-1"}
    )
    assert response.status_code == 200, response.json
    node_id = app.test_client().get(f"/workflows/{workflow_id}").json["nodes"][0]["id"]
    err = capsys.readouterr().err
    (retry,) = [r for r in json_lines(err) if "retrying" in r["message"]]
    assert retry["logger"] == "flowline.providers"
    assert retry["request_id"] == "req-run-1"
    assert retry["run_id"] == response.json["run_id"]
    assert retry["node_id"] == node_id
    assert retry["attempt"] == 1
    assert retry["worker_id"] == f"api:{socket.gethostname()}:{os.getpid()}"
    for secret in (KEY, "PROMPT-SECRET", "INPUT-SECRET"):
        assert secret not in err
    # Outside the run the fields are gone again.
    logging.getLogger("flowline.test").warning("after the run")
    (after,) = json_lines(capsys.readouterr().err)
    assert not {"run_id", "node_id", "attempt", "worker_id", "request_id"} & set(after)


def test_text_lines_show_the_same_context(capsys):
    logs.configure("INFO", "text")
    with logs.context(run_id="r-1", worker_id="host:1:1", attempt=2), logs.context(node_id="n-1"):
        logging.getLogger("flowline.test").info("inside")
    logging.getLogger("flowline.test").info("outside")
    inside, outside = capsys.readouterr().err.splitlines()
    assert inside.endswith(
        "INFO flowline.test [request_id=- run_id=r-1 node_id=n-1 worker_id=host:1:1 attempt=2] inside"
    )
    assert outside.endswith("INFO flowline.test [request_id=-] outside")


def test_secrets_and_passwords_are_masked_in_any_line(capsys):
    config = from_env(
        {"LLM_API_KEY": KEY, "API_TOKENS": "tok-aaaaaaaaaaaaaaaa", "DATABASE_URL": "postgresql://x@db/flowline"}
    )
    assert set(logs.secrets_of(config)) == {KEY, "tok-aaaaaaaaaaaaaaaa"}
    for log_format in ("json", "text"):
        logs.configure("INFO", log_format, logs.secrets_of(config))
        log = logging.getLogger("flowline.test")
        log.warning("careless: %s %s", KEY, "Bearer tok-aaaaaaaaaaaaaaaa")
        log.warning("careless: %s", "postgresql://app:p%40ss-Word-9@db.example.com/flowline?sslmode=require")
        log.warning("careless: %s", "host=db password='pa ss\\'wd' dbname=flowline")
        try:
            raise RuntimeError("connect failed for postgresql://app:pw-in-trace@db/flowline")
        except RuntimeError:
            log.exception("careless: a traceback")
        err = capsys.readouterr().err
        assert "careless: *** Bearer ***" in err
        assert "careless: postgresql://app:***@db.example.com/flowline?sslmode=require" in err
        assert "careless: host=db password=*** dbname=flowline" in err
        for secret in (KEY, "tok-aaaa", "p%40ss", "pa ss", "pw-in-trace"):
            assert secret not in err
        # A database password is masked by its place, not its value: the word stays readable elsewhere.
        assert "flowline.test" in err


# --- through gunicorn and a worker --------------------------------------------------------------------------------


def test_a_run_through_gunicorn_and_a_worker_logs_json_with_its_ids_and_no_secret(
    make_server, make_worker, database_url, fake
):
    url, password = with_password(database_url, "pw-Secret-4242")
    env = {
        "LOG_FORMAT": "json",
        "LLM_API_KEY": KEY,
        "LLM_BASE_URL": fake.url,
        "LLM_BACKOFF_S": "0.01",
        "LLM_MAX_RETRIES": "2",
    }
    server = make_server(url, ACCESS_LOG="-", **env)
    server.start()
    worker = make_worker(url, WORKER_POLL_INTERVAL_S=0.2, **env).start()
    # Each run's LLM call fails once with a 5xx (quoting the key and the prompt), retried in the thread, then answered.
    for _ in range(2):
        fake.reply(500, LEAKY)
        fake.reply(200, completion("Numbers are up."))

    with httpx.Client(base_url=server.base, timeout=30) as http:
        workflow_id = http.post("/workflows", json={"name": "logged"}).json()["id"]
        node_id = http.post(f"/workflows/{workflow_id}/nodes", json={"node_type": NODE[0], "config": NODE[1]}).json()[
            "node_id"
        ]
        sync = http.post(
            f"/workflows/{workflow_id}/run", json={"input_text": INPUT}, headers={"X-Request-ID": "logs-sync-1"}
        )
        assert sync.status_code == 200, sync.text
        assert sync.headers["X-Request-ID"] == "logs-sync-1"
        queued = http.post(
            f"/workflows/{workflow_id}/runs", json={"input_text": INPUT}, headers={"X-Request-ID": "logs-async-1"}
        )
        assert queued.status_code == 202, queued.text
        async_id = queued.json()["run_id"]
        wait_for(
            lambda: http.get(f"/runs/{async_id}").json()["run"]["status"] == "Succeeded",
            message="the worker to run the queued run",
        )
    worker.signal(15)
    assert worker.wait() == 0
    server.stop()

    server_text, worker_text = server.log.read_text(), worker.log.read_text()
    server_lines, worker_lines = json_lines(server_text), json_lines(worker_text)

    # gunicorn's access log: JSON, with the request id the response carried.
    (access,) = [r for r in server_lines if r["logger"] == "gunicorn.access" and r.get("request_id") == "logs-sync-1"]
    assert (access["method"], access["path"], access["status"]) == ("POST", f"/workflows/{workflow_id}/run", 200)
    assert access["duration_ms"] >= 0
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["message"] for r in server_lines)

    # The sync run's lines, written in the request: request_id, run_id, node_id, attempt, the API as holder.
    (retry,) = [r for r in server_lines if "retrying" in r["message"]]
    assert retry["request_id"] == "logs-sync-1" and retry["run_id"] == sync.json()["run_id"]
    assert retry["node_id"] == node_id and retry["attempt"] == 1 and retry["worker_id"].startswith("api:")

    # The async run's lines, written by the worker: run_id, node_id, attempt and the worker thread's id.
    thread_id = f"{socket.gethostname()}:{worker.pid}:1"
    (retry,) = [r for r in worker_lines if "retrying" in r["message"]]
    assert (retry["run_id"], retry["node_id"], retry["attempt"], retry["worker_id"]) == (
        async_id,
        node_id,
        1,
        thread_id,
    )
    (done,) = [r for r in worker_lines if r["message"].endswith(": Succeeded")]
    assert (done["run_id"], done["worker_id"], done["attempt"]) == (async_id, thread_id, 1)
    assert all(
        r["worker_id"].startswith(f"{socket.gethostname()}:{worker.pid}") for r in worker_lines if "worker_id" in r
    )
    # The worker shows where its database is, password masked.
    assert any(":***@" in r["message"] for r in worker_lines)

    for text in (server_text, worker_text):
        for secret in (KEY, password, "PROMPT-SECRET", "INPUT-SECRET"):
            assert secret not in text
