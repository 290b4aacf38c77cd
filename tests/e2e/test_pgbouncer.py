"""The queue, kill -9, waits, webhooks, schedules and the console end to end through a real PgBouncer in transaction
pooling mode (tests/support/pgbouncer.py), as a deployment of many hosts runs them: one gunicorn and two worker
processes whose DATABASE_URL is PgBouncer and whose DATABASE_DIRECT_URL is the server, for the whole module.

PgBouncer keeps only 3 server connections for all of them, so consecutive transactions of one client land on
different server connections: anything Flowline left on a session (a prepared statement, a SET, startup options)
would break or leak. The database's own default time zone is Asia/Tokyo, so a transaction that missed Flowline's
per-transaction settings would show +09:00 timestamps.
"""

import http.cookiejar
import json
import re
import signal
import urllib.parse
import urllib.request

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support import Server, WorkerProcess, wait_for
from tests.support.fake_llm import FakeLLM, completion
from tests.support.pgbouncer import running_pgbouncer
from tests.support.receiver import Receiver

SECRET = "s" * 40
UPPER = {"node_type": "formatter", "config": {"rules": ["uppercase"]}}
LLM = {"node_type": "generative_ai", "config": {"prompt": "Say {text}", "model": "gpt-4o-mini"}}
UTC_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)$")


@pytest.fixture(scope="module")
def direct_url(module_database_url):
    with psycopg.connect(module_database_url, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute(f"ALTER DATABASE \"{dbname}\" SET TimeZone = 'Asia/Tokyo'")
    return module_database_url


@pytest.fixture(scope="module")
def bouncer_url(server_url, direct_url):
    with running_pgbouncer(server_url, pool_size=3) as through:
        yield through(direct_url)


@pytest.fixture(scope="module")
def fake():
    with FakeLLM() as server:
        yield server


@pytest.fixture(scope="module")
def env(direct_url, fake):
    return {
        "DATABASE_DIRECT_URL": direct_url,
        "SECRET_KEY": SECRET,
        "RUN_LEASE_SECONDS": "3",
        "WORKER_POLL_INTERVAL_S": "0.5",
        "SCHEDULE_POLL_INTERVAL_S": "0.2",
        "WEBHOOK_ALLOW_PRIVATE": "1",
        "WEBHOOK_RETRY_SCHEDULE_S": "0.2",
        "WORKER_DRAIN_TIMEOUT_S": "1",
        "RUN_RETRY_BACKOFF_S": "0",
        "LLM_API_KEY": "sk-fake-pgbouncer",
        "LLM_BASE_URL": fake.url,
        "LLM_MAX_RETRIES": "0",
    }


@pytest.fixture(scope="module")
def api(bouncer_url, env, tmp_path_factory):
    server = Server(bouncer_url, tmp_path_factory.mktemp("gunicorn"), env)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def workers(bouncer_url, env, tmp_path_factory):
    started = [WorkerProcess(bouncer_url, tmp_path_factory.mktemp(f"worker{i}"), env).start(2) for i in range(2)]
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.signal(signal.SIGTERM)
    for worker in started:
        worker.wait()
    logs = "".join(worker.log.read_text() for worker in started)
    assert "prepared statement" not in logs and "Traceback" not in logs, logs[-3000:]


@pytest.fixture(scope="module")
def db(direct_url):
    with psycopg.connect(direct_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def call(api, method, path, body=None, headers=None):
    status, answer, _ = request(api, method, path, body, headers)
    assert status < 300, (status, answer)
    return answer


def request(api, method, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json"} if data else {}
    req = urllib.request.Request(api.base + path, data=data, method=method, headers={**sent, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            return response.status, json.loads(response.read() or b"null"), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


def make_workflow(api, *nodes):
    workflow_id = call(api, "POST", "/workflows", {"name": "through pgbouncer"})["id"]
    for node in nodes:
        call(api, "POST", f"/workflows/{workflow_id}/nodes", node)
    return workflow_id


def queue(api, workflow_id, text):
    return call(api, "POST", f"/workflows/{workflow_id}/runs", {"input_text": text})["run_id"]


def finished(api, run_id, timeout=30):
    return wait_for(
        lambda: (run := call(api, "GET", f"/runs/{run_id}")["run"])["finished_at"] and run,
        timeout=timeout,
        interval=0.1,
        message=f"run {run_id} to finish",
    )


def test_queued_runs_finish_once_each_and_timestamps_stay_utc(api, workers, db):
    workflow_id = make_workflow(api, UPPER)
    run_ids = [queue(api, workflow_id, f"run {i}") for i in range(30)]
    for i, run_id in enumerate(run_ids):
        run = finished(api, run_id)
        assert (run["status"], run["final_output"]) == ("Succeeded", f"RUN {i}")
        for at in (run["created_at"], run["started_at"], run["finished_at"]):
            assert UTC_TIMESTAMP.match(at), at
    events = db.execute(
        "SELECT count(*) FILTER (WHERE status = 'Running') AS claims, count(DISTINCT worker_id) AS workers "
        "FROM run_events WHERE run_id = ANY(%s::uuid[])",
        (run_ids,),
    ).fetchone()
    assert events["claims"] == 30
    # The server connections are PgBouncer's three, and the LISTENs the only direct ones of the processes.
    apps = db.execute(
        "SELECT application_name, count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'flowline%%' GROUP BY 1"
    ).fetchall()
    assert {row["application_name"]: row["n"] for row in apps}.get("flowline-worker-listen") == 2


def test_a_worker_killed_mid_run_leaves_its_run_to_the_others(api, workers, bouncer_url, env, fake, db, tmp_path):
    fake.reply(200, completion("done"), delay=1.5)
    workflow_id = make_workflow(api, LLM)
    for worker in workers:
        worker.signal(signal.SIGSTOP)
    try:
        victim = WorkerProcess(bouncer_url, tmp_path / "victim", env).start()
        run_id = queue(api, workflow_id, "kill me")
        wait_for(lambda: call(api, "GET", f"/runs/{run_id}")["run"]["status"] == "Running", message="the claim")
        victim.signal(signal.SIGKILL)
        victim.wait()
    finally:
        for worker in workers:
            worker.signal(signal.SIGCONT)
    fake.reply(200, completion("done"))
    run = finished(api, run_id)
    assert (run["status"], run["attempt"], run["final_output"]) == ("Succeeded", 2, "done")
    notes = [e["note"] for e in call(api, "GET", f"/runs/{run_id}/events")["events"] if e["status"] == "Pending"]
    assert any("expired during attempt" in (note or "") for note in notes), notes


def test_waits_answer_through_a_direct_listen_even_after_it_drops(api, workers, db):
    workflow_id = make_workflow(api, UPPER)
    answer = call(api, "POST", f"/workflows/{workflow_id}/runs", {"input_text": "wait"}, {"Prefer": "wait=20"})
    assert (answer["status"], answer["final_output"]) == ("Succeeded", "WAIT")
    listening = (
        "FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name IN ('flowline-api-waits', 'flowline-worker-listen')"
    )
    # The gunicorn worker's waits listener and both workers' listeners (a worker started by the test before may
    # still be opening its own).
    wait_for(
        lambda: db.execute(f"SELECT count(*) AS n {listening}").fetchone()["n"] >= 3,
        message="three LISTEN connections",
    )
    listeners = db.execute(f"SELECT pg_terminate_backend(pid) {listening}").fetchall()
    assert len(listeners) >= 3
    # Re-opened, and the poll covers what was notified meanwhile: every wait still ends with its run.
    for text in ("again", "and again"):
        status, answer, _ = request(
            api, "POST", f"/workflows/{workflow_id}/runs", {"input_text": text}, {"Prefer": "wait=20"}
        )
        assert (status, answer["status"], answer["final_output"]) == (200, "Succeeded", text.upper())


def test_a_webhook_is_delivered(api, workers):
    receiver = Receiver().start()
    try:
        workflow_id = make_workflow(api, UPPER)
        call(api, "POST", f"/workflows/{workflow_id}/webhooks", {"url": receiver.url("/hook")})
        run_id = call(api, "POST", f"/workflows/{workflow_id}/run", {"input_text": "hook"})["run_id"]
        got = wait_for(lambda: receiver.received("/hook"), timeout=20, message="the delivery")
        assert json.loads(got[0].body)["data"]["run"]["id"] == run_id
    finally:
        receiver.stop()


def test_a_due_schedule_fires_its_tick(api, workers, db):
    workflow_id = make_workflow(api, UPPER)
    schedule_id = call(api, "POST", f"/workflows/{workflow_id}/schedules", {"cron": "* * * * *"})["id"]
    due = db.execute(
        "UPDATE schedules SET next_fire_at = now() - interval '1 second' WHERE id = %s RETURNING next_fire_at",
        (schedule_id,),
    ).fetchone()["next_fire_at"]
    first = wait_for(
        lambda: db.execute(
            "SELECT scheduled_for, status FROM runs WHERE schedule_id = %s ORDER BY scheduled_for LIMIT 1",
            (schedule_id,),
        ).fetchone(),
        timeout=20,
        message="the schedule's run",
    )
    assert first["scheduled_for"] == due
    assert (
        db.execute("SELECT next_fire_at FROM schedules WHERE id = %s", (schedule_id,)).fetchone()["next_fire_at"] > due
    )


def test_the_console_lists_runs_shows_the_queue_and_cancels_a_run(api, workers):
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def page(path, form=None):
        data = None if form is None else urllib.parse.urlencode(form).encode()
        with browser.open(api.base + path, data=data, timeout=20) as response:
            assert response.status == 200
            return response.read().decode()

    workflow_id = make_workflow(api, UPPER)
    done = queue(api, workflow_id, "console")
    finished(api, done)
    assert f'href="/console/runs/{done}"' in page("/console/runs")
    queue_page = page("/console/queue")
    assert all(f":{worker.pid}<" in queue_page for worker in workers) and "Alive" in queue_page
    for worker in workers:
        worker.signal(signal.SIGSTOP)
    try:
        pending = queue(api, workflow_id, "cancel me")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page(f"/console/runs/{pending}"))[1]
        assert "Run cancelled: it will not start." in page(f"/console/runs/{pending}/cancel", {"csrf_token": token})
    finally:
        for worker in workers:
            worker.signal(signal.SIGCONT)
    assert call(api, "GET", f"/runs/{pending}")["run"]["status"] == "Cancelled"
