"""Schedules end to end: a real gunicorn and real worker processes (one database for this module) fire schedules'
ticks. Downtime is simulated by moving ``next_fire_at`` back in SQL while no worker runs, never by waiting; slow
runs are a generative_ai node whose fake LLM answers after a delay.

- five workers racing over the same due ticks decide each exactly once;
- a pool restarted after missed ticks catches up as each schedule's catchup says (none, last, all); a paused
  schedule fires nothing;
- overlap skip, queue and cancel_previous while the previous run is still running.
"""

import json
import signal
import urllib.request
import uuid
from datetime import timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from flowline.worker.schedules import CLAIM_BATCH
from tests.support import Server, WorkerProcess, url_for_database, wait_for
from tests.support.fake_llm import FakeLLM, completion

UPPER = ("formatter", {"rules": ["uppercase"]})
LLM_NODE = ("generative_ai", {"prompt": "Summarise: {text}", "model": "gpt-4o-mini"})
YEARLY = "0 0 1 1 *"


@pytest.fixture(scope="module")
def database(server_url, template_db):
    name = f"flowline_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield url_for_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def fake():
    with FakeLLM() as server:
        yield server


@pytest.fixture(scope="module")
def api(database, tmp_path_factory):
    server = Server(database, tmp_path_factory.mktemp("gunicorn"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def db(database):
    with psycopg.connect(database, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def pool(database, fake, tmp_path):
    """Start worker processes with ``pool.start(n)``; every one still running is stopped after the test."""

    class Pool:
        def __init__(self):
            self.workers = []

        def start(self, n=1, concurrency=1):
            env = {
                "SCHEDULE_POLL_INTERVAL_S": "0.1",
                "WORKER_POLL_INTERVAL_S": "0.1",
                "RUN_LEASE_SECONDS": "5",
                "LLM_API_KEY": "sk-fake-schedules",
                "LLM_BASE_URL": fake.url,
                "LLM_MAX_RETRIES": "0",
                "LLM_TIMEOUT_S": "10",
                "WEBHOOK_CONCURRENCY": "0",
            }
            started = [WorkerProcess(database, tmp_path / f"worker-{len(self.workers) + i}", env) for i in range(n)]
            for worker in started:
                worker.start(concurrency)
            self.workers += started
            return started

        def stop(self):
            for worker in self.workers:
                if worker.process.poll() is None:
                    worker.signal(signal.SIGTERM)
            for worker in self.workers:
                worker.wait()

        def logs(self):
            return "".join(worker.log.read_text() for worker in self.workers)

    workers = Pool()
    yield workers
    workers.stop()


def call(api, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    request = urllib.request.Request(api.base + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def make_workflow(api, nodes):
    workflow_id = call(api, "POST", "/workflows", {"name": f"scheduled {uuid.uuid4().hex[:6]}"})["id"]
    for node_type, config in nodes:
        call(api, "POST", f"/workflows/{workflow_id}/nodes", {"node_type": node_type, "config": config})
    return workflow_id


def make_schedule(api, workflow_id, **body):
    return call(api, "POST", f"/workflows/{workflow_id}/schedules", {"overlap": "queue", **body})["id"]


def runs_of(db, schedule_id):
    return db.execute(
        "SELECT id, status, scheduled_for FROM runs WHERE schedule_id = %s ORDER BY scheduled_for, created_at",
        (schedule_id,),
    ).fetchall()


def decided(db, *schedule_ids):
    """True once none of the schedules has a due tick left."""
    row = db.execute(
        "SELECT count(*) AS due FROM schedules WHERE id = ANY(%s::uuid[]) AND next_fire_at <= now()",
        (list(schedule_ids),),
    ).fetchone()
    return row["due"] == 0


def test_five_workers_racing_over_the_same_ticks_fire_each_exactly_once(api, db, pool):
    workflow_id = make_workflow(api, [])
    template = make_schedule(api, workflow_id, cron="* * * * *", catchup="all")
    # More schedules than one poll claims (CLAIM_BATCH), so the workers' claims meet.
    db.execute(
        "INSERT INTO schedules (workflow_id, cron, overlap, catchup, next_fire_at) "
        "SELECT workflow_id, cron, overlap, catchup, next_fire_at FROM schedules, generate_series(1, %s) "
        "WHERE id = %s",
        (CLAIM_BATCH + 19, template),
    )
    ids = [row["id"] for row in db.execute("SELECT id FROM schedules WHERE workflow_id = %s", (workflow_id,))]
    # Not due while the workers start (a minute turning meanwhile would fire a tick the move below repeats).
    db.execute("UPDATE schedules SET next_fire_at = now() + interval '1 day' WHERE id = ANY(%s::uuid[])", (ids,))
    pool.start(5)
    # Every schedule five minutes behind, at once, while five workers poll every 0.1 s.
    start = db.execute(
        "UPDATE schedules SET next_fire_at = date_trunc('minute', now()) - interval '5 minutes' "
        "WHERE id = ANY(%s::uuid[]) RETURNING next_fire_at",
        (ids,),
    ).fetchone()["next_fire_at"]
    wait_for(lambda: decided(db, *ids), timeout=30, message="every due tick decided")
    for schedule_id in ids:
        ticks = [run["scheduled_for"] for run in runs_of(db, schedule_id)]
        # Every minute from the first due tick on, none twice, none left out (6 or more: the clock moves on).
        assert len(ticks) >= 6
        assert ticks == [start + timedelta(minutes=i) for i in range(len(ticks))]
    logs = pool.logs()
    # Each tick decided by one worker: the unique backstop was never needed, and the work was shared.
    assert "already had its run" not in logs
    total = db.execute("SELECT count(*) AS n FROM runs WHERE schedule_id = ANY(%s::uuid[])", (ids,)).fetchone()["n"]
    assert logs.count(" fired run ") == total
    assert sum(" fired run " in worker.log.read_text() for worker in pool.workers) >= 2


def test_a_pool_restarted_after_missed_ticks_catches_up_as_each_schedule_says(api, db, pool):
    workflow_id = make_workflow(api, [UPPER])
    # A daily tick at the hour 12 hours back, by the database's clock: its latest tick is 12 to 13 hours old,
    # never within the misfire grace, whatever the time of day the test runs.
    tick = db.execute(
        "SELECT date_trunc('hour', now() - interval '12 hours') AS latest, "
        "extract(hour FROM (now() - interval '12 hours') AT TIME ZONE 'UTC')::int AS hour"
    ).fetchone()
    today = tick["latest"]
    daily = {"cron": f"0 {tick['hour']} * * *", "timezone": "UTC"}
    none, last, every = (make_schedule(api, workflow_id, catchup=c, **daily) for c in ("none", "last", "all"))
    paused = make_schedule(api, workflow_id, catchup="all", enabled=False, **daily)
    paused_later = make_schedule(api, workflow_id, catchup="all", **daily)
    # No worker runs: the last ten ticks pass (nine days back to the latest), older than the misfire grace.
    db.execute(
        "UPDATE schedules SET next_fire_at = %s::timestamptz - interval '9 days' WHERE id = ANY(%s::uuid[])",
        (today, [none, last, every, paused_later]),
    )
    call(api, "PATCH", f"/schedules/{paused_later}", {"enabled": False})
    pool.start(1)
    wait_for(lambda: decided(db, none, last, every), timeout=20, message="the missed ticks decided")
    assert runs_of(db, none) == []
    assert [run["scheduled_for"] for run in runs_of(db, last)] == [today]
    assert [run["scheduled_for"] for run in runs_of(db, every)] == [today - timedelta(days=9 - i) for i in range(10)]
    for schedule_id in (none, last, every):
        schedule = call(api, "GET", f"/schedules/{schedule_id}")
        assert schedule["next_fire_times"][0].startswith(str((today + timedelta(days=1)).date()))
    # The paused schedules fire nothing, however long the worker polls.
    wait_for(lambda: all(r["status"] == "Succeeded" for r in runs_of(db, every)), timeout=20, message="runs done")
    assert runs_of(db, paused) == [] and runs_of(db, paused_later) == []


def test_overlap_skip_queue_and_cancel_previous_with_slow_runs(api, db, pool, fake):
    # A node boundary after the slow node, where a cancelled run stops.
    workflow_id = make_workflow(api, [LLM_NODE, UPPER])
    skip, queue, cancel = (
        make_schedule(api, workflow_id, cron=YEARLY, overlap=o) for o in ("skip", "queue", "cancel_previous")
    )
    ids = [skip, queue, cancel]
    fake.reply(200, completion("slow"), delay=4, times=6)
    pool.start(1, concurrency=4)

    def make_due():
        db.execute("UPDATE schedules SET next_fire_at = now() WHERE id = ANY(%s::uuid[])", (ids,))
        wait_for(lambda: decided(db, *ids), timeout=10, message="the ticks decided")

    make_due()
    first = {schedule_id: runs_of(db, schedule_id)[0]["id"] for schedule_id in ids}
    wait_for(
        lambda: all(r["status"] == "Running" for s in ids for r in runs_of(db, s)),
        timeout=10,
        message="the first runs running (slowly)",
    )
    make_due()
    # skip: no second run while the first runs; the tick is counted.
    assert [r["id"] for r in runs_of(db, skip)] == [first[skip]]
    schedule = call(api, "GET", f"/schedules/{skip}")
    assert schedule["skipped_count"] == 1 and schedule["last_skipped_at"] is not None
    assert "skipped: run" in pool.logs()
    # queue: a second run beside the first.
    assert len(runs_of(db, queue)) == 2
    # cancel_previous: the first is cancelled (at its node boundary), the second queued.
    runs = runs_of(db, cancel)
    assert len(runs) == 2 and runs[0]["id"] == first[cancel]
    assert db.execute("SELECT cancel_requested_at FROM runs WHERE id = %s", (first[cancel],)).fetchone()[
        "cancel_requested_at"
    ]
    wait_for(lambda: runs_of(db, cancel)[0]["status"] == "Cancelled", timeout=15, message="the first run cancelled")
    wait_for(
        lambda: runs_of(db, queue)[0]["status"] == "Succeeded" and runs_of(db, skip)[0]["status"] == "Succeeded",
        timeout=15,
        message="the slow runs done",
    )
