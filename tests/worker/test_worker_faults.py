"""Workers under stress and failure, with real processes: many workers at once, kill -9, a paused worker waking
up after its lease was taken, SIGTERM draining, interrupted sync runs, and PostgreSQL restarting mid-batch."""

import ctypes
import os
import platform
import signal
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from flowline.core import config as settings
from flowline.data import migrations
from flowline.worker import sweep
from flowline.worker.process import Worker
from tests.support import wait_for
from tests.support.fake_llm import FakeLLM, completion
from tests.worker.test_async_runs import FAST, LLM_NODE, UPPER, llm_env, queued, run_of


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


def statuses(sql, workflow_id):
    rows = sql.execute(
        "SELECT status, count(*) AS n FROM runs WHERE workflow_id = %s GROUP BY status", (workflow_id,)
    ).fetchall()
    return {r["status"]: r["n"] for r in rows}


def queue_many(sql, workflow_id, n):
    """Queue ``n`` runs with the API's own statement, as n separate requests would."""
    from psycopg.types.json import Jsonb

    from flowline.data import db

    for i in range(n):
        db.one(
            sql,
            "enqueue_run",
            workflow_id=workflow_id,
            input=Jsonb({"input_text": f"run {i}", "file_id": None}),
            max_attempts=3,
            idempotency_key=None,
            request_hash=None,
            concurrency_key=None,
            priority=0,
        )


def test_500_runs_on_4_worker_processes_each_finish_exactly_once(client, workflow, sql, make_worker):
    workflow_id = workflow([UPPER])
    workers = [make_worker(RUN_LEASE_SECONDS=10, WORKER_POLL_INTERVAL_S=0.2).start() for _ in range(4)]
    queue_many(sql, workflow_id, 500)
    wait_for(
        lambda: statuses(sql, workflow_id) == {"Succeeded": 500},
        timeout=120,
        interval=0.2,
        message="500 runs to succeed",
    )
    per_run = sql.execute(
        """SELECT r.attempt, r.final_output = upper(r.input->>'input_text') AS right_output,
                                    count(*) FILTER (WHERE e.status = 'Succeeded') AS succeeded,
                                    count(*) FILTER (WHERE e.status = 'Running') AS claimed,
                                    (SELECT count(*) FROM run_steps s WHERE s.run_id = r.id) AS steps
                             FROM runs r JOIN run_events e ON e.run_id = r.id
                             WHERE r.workflow_id = %s GROUP BY r.id""",
        (workflow_id,),
    ).fetchall()
    assert len(per_run) == 500
    assert {(r["attempt"], r["right_output"], r["succeeded"], r["claimed"], r["steps"]) for r in per_run} == {
        (1, True, 1, 1, 1)
    }
    by_worker = sql.execute("""SELECT split_part(worker_id, ':', 2) AS pid, count(*) AS n FROM run_events
                               WHERE status = 'Succeeded' GROUP BY 1""").fetchall()
    assert {int(r["pid"]) for r in by_worker} <= {w.pid for w in workers}
    assert len(by_worker) >= 2, f"the runs were shared between processes: {by_worker}"


def test_runs_of_a_worker_killed_mid_run_complete_on_another_and_history_shows_the_dead_attempt(
    make_app, sql, make_worker, fake
):
    client = make_app(RUN_MAX_ATTEMPTS=5).test_client()
    for _ in range(20):
        fake.reply(200, completion("done"), delay=0.6)
    workflow_id = client.post("/workflows", json={"name": "kill"}).json["id"]
    for node_type, config in (LLM_NODE, UPPER):
        client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": node_type, "config": config})
    run_ids = [queued(client, workflow_id, f"run {i}") for i in range(6)]
    killed = set()
    for _ in range(3):
        victim = make_worker(**llm_env(fake)).start()
        held = wait_for(
            lambda victim=victim: sql.execute(
                """SELECT r.id FROM runs r JOIN run_steps s ON s.run_id = r.id AND s.attempt = r.attempt
               WHERE r.status = 'Running' AND s.status = 'Running' AND r.worker_id LIKE %s""",
                (f"%:{victim.pid}:%",),
            ).fetchone(),
            message="the victim to be mid-run",
        )
        victim.signal(signal.SIGKILL)
        victim.wait()
        killed.add(held["id"])
    make_worker(**llm_env(fake)).start()
    wait_for(lambda: statuses(sql, workflow_id) == {"Succeeded": 6}, timeout=60, message="every run to succeed")
    for run_id in killed:
        run = run_of(sql, run_id)
        assert run["attempt"] >= 2 and run["final_output"] == "DONE"
        notes = [e["note"] for e in client.get(f"/runs/{run_id}/events").json["events"] if e["status"] == "Pending"]
        assert any("expired during attempt" in note and "re-queued" in note for note in notes), notes
        steps = client.get(f"/runs/{run_id}").json["steps"]
        interrupted = [s for s in steps if s["status"] == "Failed"]
        assert interrupted and all("interrupted" in s["error_message"] for s in interrupted)
        assert [s["status"] for s in steps if s["attempt"] == run["attempt"]] == ["Succeeded", "Succeeded"]
    assert len(run_ids) == 6


def test_a_paused_worker_that_wakes_after_losing_its_lease_writes_nothing(client, workflow, sql, make_worker, fake):
    fake.reply(200, completion("from the paused worker"), delay=2)
    fake.reply(200, completion("from the live worker"), delay=4)
    run_id = queued(client, workflow([LLM_NODE]))
    paused = make_worker(**llm_env(fake)).start()
    wait_for(lambda: fake.requests, message="the first LLM call")
    paused.signal(signal.SIGSTOP)
    try:
        make_worker(**llm_env(fake)).start()
        wait_for(lambda: len(fake.requests) == 2, timeout=30, message="the takeover's LLM call")
    finally:
        # It wakes while the other worker holds the run: only the lease token tells them apart.
        paused.signal(signal.SIGCONT)
    wait_for(lambda: "lost the lease of run" in paused.log.read_text(), timeout=15, message="the fenced write")
    wait_for(lambda: run_of(sql, run_id)["status"] == "Succeeded", timeout=15, message="the run to succeed")
    run = run_of(sql, run_id)
    assert (run["final_output"], run["attempt"]) == ("from the live worker", 2)
    events = client.get(f"/runs/{run_id}/events").json["events"]
    assert [e["status"] for e in events].count("Succeeded") == 1
    steps = client.get(f"/runs/{run_id}").json["steps"]
    assert [(s["attempt"], s["status"], s["output_text"]) for s in steps] == [
        (1, "Failed", None),
        (2, "Succeeded", "from the live worker"),
    ]


def test_sigterm_finishes_the_run_in_progress_and_claims_no_more(client, workflow, sql, make_worker, fake):
    fake.reply(200, completion("finished while draining"), delay=1.5)
    workflow_id = workflow([LLM_NODE])
    first = queued(client, workflow_id, "first")
    worker = make_worker(**llm_env(fake)).start()
    wait_for(lambda: fake.requests, message="the first run to start")
    later = [queued(client, workflow_id, f"later {i}") for i in range(3)]
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert run_of(sql, first)["status"] == "Succeeded"
    assert run_of(sql, first)["final_output"] == "finished while draining"
    assert [(run_of(sql, r)["status"], run_of(sql, r)["attempt"]) for r in later] == [("Pending", 0)] * 3
    assert "finishing runs in progress, claiming no more" in worker.log.read_text()


# The tgkill system call's number (a signal to one thread of a process) on the machines tests run on.
TGKILL = {"x86_64": 234, "aarch64": 131}


def test_sigterm_handed_to_any_of_its_threads_stops_an_idle_worker(make_worker):
    # The kernel gives a signal sent to the process to any thread that does not block it; Python then only runs
    # the handler when its main thread next runs Python code. tgkill hands SIGTERM to each thread but the main one.
    worker = make_worker().start()
    pid = worker.process.pid
    tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid]
    assert tids, "the worker runs its threads"
    libc = ctypes.CDLL(None, use_errno=True)
    sent = libc.syscall(TGKILL[platform.machine()], pid, tids[-1], signal.SIGTERM)
    assert sent == 0, os.strerror(ctypes.get_errno())
    assert worker.wait(timeout=10) == 0
    assert "SIGTERM; finishing runs in progress, claiming no more" in worker.log.read_text()


def test_a_second_sigint_exits_at_once_and_the_lease_sweep_takes_over(client, workflow, sql, make_worker, fake):
    fake.reply(200, completion("never written"), delay=5)
    fake.reply(200, completion("second try"))
    run_id = queued(client, workflow([LLM_NODE]))
    worker = make_worker(**llm_env(fake)).start()
    wait_for(lambda: fake.requests, message="the run to start")
    worker.signal(signal.SIGINT)
    time.sleep(0.3)
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=5) == 1
    make_worker(**llm_env(fake)).start()
    wait_for(lambda: run_of(sql, run_id)["status"] == "Succeeded", timeout=30, message="the re-run")
    assert (run_of(sql, run_id)["final_output"], run_of(sql, run_id)["attempt"]) == ("second try", 2)


def test_a_sync_run_whose_process_died_is_failed_as_interrupted_not_retried(client, workflow, sql, database_url):
    from psycopg.types.json import Jsonb

    from flowline.data import db

    workflow_id = workflow([UPPER])
    row = db.one(
        sql,
        "start_sync_run",
        workflow_id=workflow_id,
        input=Jsonb({"input_text": "x"}),
        lease_token="7c1d7f40-4ab5-4c9e-8a56-0f0a3b0d9d11",
        lease_seconds=0.01,
        worker_id="api:host:123",
    )
    time.sleep(0.05)
    worker = Worker(settings.from_env({"DATABASE_URL": database_url}))
    try:
        worker.pool.open(wait=True)
        assert sweep.sweep(worker) == 1
    finally:
        worker.close()
    run = run_of(sql, row["id"])
    assert (run["status"], run["attempt"]) == ("Failed", 1)
    assert run["error_message"].startswith("interrupted: the API process api:host:123")
    assert "not retried" in run["error_message"] and run["finished_at"] is not None
    assert client.get(f"/runs/{row['id']}/events").json["events"][-1]["status"] == "Failed"


def test_the_claim_reads_the_pending_index_not_the_whole_table(client, workflow, sql):
    workflow_id = workflow([UPPER])
    sql.execute(
        """INSERT INTO runs (workflow_id, mode, status, attempt, finished_at, final_output)
                   SELECT %s, 'async', 'Succeeded', 1, now(), 'x' FROM generate_series(1, 50000)""",
        (workflow_id,),
    )
    queued_id = queued(client, workflow_id)
    sql.execute("ANALYZE runs")
    from flowline.data.sql import QUERIES

    plan = sql.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES["claim_run"].text,
        {"lease_token": "7c1d7f40-4ab5-4c9e-8a56-0f0a3b0d9d11", "lease_seconds": 30, "worker_id": "explain"},
    ).fetchone()
    scans = list(plan_nodes(plan["QUERY PLAN"][0]["Plan"]))
    runs_scans = {(n["Node Type"], n.get("Index Name")) for n in scans if n.get("Relation Name") == "runs"}
    # One Pending run: the planner may take any index holding only Pending runs (test_claim_limits.py pins the
    # plan at 100k Pending runs).
    pending_indexes = {"runs_claim_idx", "runs_pending_queue_idx", "runs_released_workflow_idx", "runs_pkey"}
    assert {index for node_type, index in runs_scans if node_type != "ModifyTable"} <= pending_indexes, runs_scans
    assert not any(node_type == "Seq Scan" for node_type, _ in runs_scans), runs_scans
    assert run_of(sql, queued_id)["status"] == "Running", "EXPLAIN ANALYZE ran the claim: it took the one Pending run"


def plan_nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


# --- PostgreSQL restarting under the workers ------------------------------------------------------------------

# private_cluster (tests/conftest.py): a throwaway cluster of the test's own, which it may restart.


def test_workers_survive_a_postgresql_restart_and_every_run_finishes(private_cluster, make_worker):
    url, pg_ctl = private_cluster
    migrations.apply(url)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        workflow_id = conn.execute("INSERT INTO workflows (name) VALUES ('restart') RETURNING id").fetchone()["id"]
        conn.execute(
            "INSERT INTO nodes (workflow_id, position, node_type, config) VALUES (%s, 0, 'formatter', '{}')",
            (workflow_id,),
        )
        queue_many(conn, workflow_id, 300)
    for _ in range(2):
        make_worker(url, **FAST).start()
    time.sleep(0.3)
    pg_ctl("-m", "fast", "restart")
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        queue_many(conn, workflow_id, 100)
        wait_for(
            lambda: statuses(conn, workflow_id) == {"Succeeded": 400},
            timeout=90,
            interval=0.2,
            message="all 400 runs to succeed after the restart",
        )
        twice = conn.execute("""SELECT count(*) AS n FROM (SELECT run_id FROM run_events WHERE status = 'Succeeded'
                                GROUP BY run_id HAVING count(*) > 1) AS t""").fetchone()["n"]
        assert twice == 0
