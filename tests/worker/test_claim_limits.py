"""Issue #20, concurrency limits and priorities: the claim (claim_run) never starts a run past its workflow's or its
key's limit, such runs block no one behind them, keys take turns, higher priorities go first, and the plan stays
index-backed with 100k runs waiting. Claims and finishes are the workers' own statements, called on the test's
connection; one test claims from eight connections at once, and one has two worker processes call a fake provider,
which sees the limits kept."""

import threading
import time
import uuid
from collections import Counter

from psycopg.types.json import Jsonb

from flowline.data import db
from flowline.data.sql import QUERIES
from tests.support import wait_for
from tests.support.fake_llm import FakeLLM


def new_workflow(sql, max_concurrent_runs=None, max_concurrent_runs_per_key=None):
    return sql.execute(
        "INSERT INTO workflows (name, max_concurrent_runs, max_concurrent_runs_per_key) "
        "VALUES ('limits', %s, %s) RETURNING id",
        (max_concurrent_runs, max_concurrent_runs_per_key),
    ).fetchone()["id"]


def enqueue(sql, workflow_id, n=1, key=None, priority=0, label=""):
    ids = []
    for i in range(n):
        row = db.one(
            sql,
            "enqueue_run",
            workflow_id=workflow_id,
            input=Jsonb({"input_text": f"{label}{i}", "file_id": None}),
            max_attempts=3,
            idempotency_key=None,
            request_hash=None,
            concurrency_key=key,
            priority=priority,
        )
        ids.append(row["id"])
    return ids


def claim(conn):
    """Claim as a worker does; return (run id, lease token, key, workflow id), or None."""
    token = uuid.uuid4()
    row = db.one(conn, "claim_run", lease_token=token, lease_seconds=60, worker_id="test")
    if row is None:
        return None
    run = conn.execute("SELECT workflow_id, concurrency_key FROM runs WHERE id = %s", (row["id"],)).fetchone()
    return row["id"], token, run["concurrency_key"], run["workflow_id"]


def finish(conn, claimed):
    row = db.one(
        conn,
        "finish_run",
        run_id=claimed[0],
        lease_token=claimed[1],
        steps=Jsonb([]),
        status="Succeeded",
        final_output="ok",
        error_message=None,
        note="done",
    )
    assert row["held"] == 1


def claim_all(conn):
    claimed = []
    while (one := claim(conn)) is not None:
        claimed.append(one)
    return claimed


def test_a_full_key_blocks_neither_other_keys_nor_other_workflows(sql):
    limited = new_workflow(sql, max_concurrent_runs_per_key=2)
    other = new_workflow(sql)
    enqueue(sql, limited, 50, key="big")
    enqueue(sql, limited, 5, key="small")
    enqueue(sql, other, 3)
    claimed = claim_all(sql)
    assert Counter(c[2] for c in claimed if c[3] == limited) == {"big": 2, "small": 2}
    assert sum(c[3] == other for c in claimed) == 3, "the other workflow's runs were not held behind the full keys"
    finish(sql, next(c for c in claimed if c[2] == "big"))
    assert claim(sql)[2] == "big", "a finished run's slot goes to the next run of its key"
    assert claim(sql) is None


def test_a_workflow_never_runs_more_than_its_limit(sql):
    limited = new_workflow(sql, max_concurrent_runs=3, max_concurrent_runs_per_key=5)
    other = new_workflow(sql)
    enqueue(sql, limited, 10)
    enqueue(sql, limited, 10, key="k")
    enqueue(sql, other, 4)
    claimed = claim_all(sql)
    assert sum(c[3] == limited for c in claimed) == 3
    assert sum(c[3] == other for c in claimed) == 4
    for done in [c for c in claimed if c[3] == limited][:2]:
        finish(sql, done)
    assert [c[3] for c in claim_all(sql)] == [limited, limited]
    running = sql.execute(
        "SELECT count(*) AS n FROM runs WHERE workflow_id = %s AND status = 'Running'", (limited,)
    ).fetchone()
    assert running["n"] == 3


def test_a_flooded_key_does_not_starve_a_small_one(sql):
    workflow_id = new_workflow(sql)
    enqueue(sql, workflow_id, 200, key="flood")
    enqueue(sql, workflow_id, 10, key="small")
    keys = []
    for _ in range(30):
        claimed = claim(sql)
        keys.append(claimed[2])
        finish(sql, claimed)
    assert keys.count("small") == 10, keys
    assert keys[:20].count("small") == 10, "keys take turns: the small key's runs alternate with the flood's"


def test_higher_priority_first_then_oldest(sql):
    first, second = new_workflow(sql), new_workflow(sql)
    low = enqueue(sql, first, 3, priority=-5)
    normal = enqueue(sql, second, 3)
    high = enqueue(sql, first, 2, priority=50)
    keyed_low = enqueue(sql, second, 1, key="k", priority=0)
    keyed_high = enqueue(sql, second, 1, key="k", priority=60)
    order = [c[0] for c in claim_all(sql)]
    # A run of higher priority takes its key's turn from the run released before it.
    assert order == [*keyed_high, *high, *normal, *keyed_low, *low]


def test_runs_that_wait_do_not_block_the_ones_available(sql):
    workflow_id = new_workflow(sql)
    later = enqueue(sql, workflow_id, 3, priority=90)
    sql.execute("UPDATE runs SET available_at = now() + interval '1 hour' WHERE id = ANY(%s)", (later,))
    now = enqueue(sql, workflow_id, 1)
    assert [c[0] for c in claim_all(sql)] == now


def test_a_requeued_or_cancelled_run_gives_its_key_the_next_turn(sql, client):
    workflow_id = new_workflow(sql, max_concurrent_runs_per_key=1)
    first, second, third = enqueue(sql, workflow_id, 3, key="k")
    claimed = claim(sql)
    assert claimed[0] == first and claim(sql) is None
    row = db.one(
        sql,
        "requeue_run",
        run_id=first,
        lease_token=claimed[1],
        steps=Jsonb([]),
        backoff_seconds=3600,
        error_message="boom",
        note="retrying",
    )
    assert row["status"] == "Pending"
    # The retry waits an hour; the key's next run goes now.
    assert claim(sql)[0] == second
    assert client.post(f"/runs/{third}/cancel").status_code == 200
    assert claim(sql) is None
    held = sql.execute("SELECT held_by FROM runs WHERE id = %s", (first,)).fetchone()
    assert held["held_by"] == "key"


def test_limits_hold_under_concurrent_claims(make_database, template_db):
    """Eight connections claim, hold and finish at once: no key and no workflow ever runs over its limit."""
    import psycopg
    from psycopg.rows import dict_row

    url = make_database(template_db)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as sql:
        limited = new_workflow(sql, max_concurrent_runs=5, max_concurrent_runs_per_key=2)
        for key in ("a", "b", "c", "d"):
            enqueue(sql, limited, 15, key=key)
        free = new_workflow(sql)
        enqueue(sql, free, 20)
    errors = []

    def work():
        try:
            with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
                while (claimed := claim(conn)) is not None:
                    conn.execute("SELECT pg_sleep(0.005)")
                    finish(conn, claimed)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as sql:
        runs = sql.execute("SELECT workflow_id, concurrency_key, status, started_at, finished_at FROM runs").fetchall()
    assert {r["status"] for r in runs} == {"Succeeded"} and len(runs) == 80

    def most_at_once(rows):
        moments = sorted([(r["started_at"], 1) for r in rows] + [(r["finished_at"], -1) for r in rows])
        at_once = peak = 0
        for _, step in moments:
            at_once += step
            peak = max(peak, at_once)
        return peak

    mine = [r for r in runs if r["workflow_id"] == limited]
    assert most_at_once(mine) <= 5
    for key in ("a", "b", "c", "d"):
        assert most_at_once([r for r in mine if r["concurrency_key"] == key]) <= 2


def test_limits_changed_while_runs_are_queued_claimed_and_finished(app, database_url, workflow):
    """A workflow's limit set and lifted over and over through the API while its runs are queued, claimed and
    finished from other connections: no statement deadlocks (a PATCH used to take the concurrency lock before the
    workflow's row, an enqueue the reverse), and the running counts stay true: under the last limit every run
    still gets its turn (a count left too high would hold the rest back for good), and a new limit holds exactly."""
    import psycopg
    from psycopg.rows import dict_row

    workflow_id = workflow()
    errors, done = [], threading.Event()

    def guarded(work):
        def run():
            try:
                work()
            except Exception as exc:  # reported below
                errors.append(exc)

        return threading.Thread(target=run)

    def connect():
        return psycopg.connect(database_url, autocommit=True, row_factory=dict_row)

    def queue():
        with connect() as conn:
            for i in range(120):
                enqueue(conn, workflow_id, label=f"q{i}-")
        done.set()

    def work():
        deadline = time.monotonic() + 60
        with connect() as conn:
            while time.monotonic() < deadline and (
                not done.is_set()
                or conn.execute(
                    "SELECT 1 FROM runs WHERE workflow_id = %s AND status = 'Pending'", (workflow_id,)
                ).fetchone()
            ):
                if (claimed := claim(conn)) is None:
                    time.sleep(0.005)
                    continue
                finish(conn, claimed)

    def patch():
        client = app.test_client()
        for limit in [None, 2] * 15:
            response = client.patch(f"/workflows/{workflow_id}", json={"max_concurrent_runs": limit})
            assert response.status_code == 200, response.json

    threads = [guarded(queue), guarded(patch), *(guarded(work) for _ in range(3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    with connect() as conn:
        statuses = conn.execute("SELECT status, count(*) AS n FROM runs GROUP BY status").fetchall()
        assert [(s["status"], s["n"]) for s in statuses] == [("Succeeded", 120)]
        client = app.test_client()
        assert client.patch(f"/workflows/{workflow_id}", json={"max_concurrent_runs": 3}).status_code == 200
        enqueue(conn, workflow_id, 5)
        assert len(claim_all(conn)) == 3, "the running counts drifted: the limit no longer holds exactly"


def plan_nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def test_the_claim_skips_100k_waiting_high_priority_runs_on_its_index(sql):
    """101k Pending runs: 100k of priority 10 waiting an hour or more (as runs waiting for an LLM budget do), 1k
    of priority 0 available; the claim reads a handful of index entries and takes the oldest available."""
    workflow_id = new_workflow(sql)
    # Bulk rows without the triggers (keyless runs of a workflow without limits: nothing to hold).
    sql.execute("SET session_replication_role = replica")
    sql.execute(
        "INSERT INTO runs (workflow_id, mode, priority, available_at) "
        "SELECT %s, 'async', 10, now() + make_interval(hours => 1, secs => g) FROM generate_series(1, 100000) AS g",
        (workflow_id,),
    )
    sql.execute(
        "INSERT INTO runs (workflow_id, mode, available_at) "
        "SELECT %s, 'async', now() - make_interval(secs => g) FROM generate_series(1, 1000) AS g",
        (workflow_id,),
    )
    sql.execute("RESET session_replication_role")
    sql.execute("ANALYZE runs")
    plan = sql.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + QUERIES["claim_run"].text,
        {"lease_token": uuid.uuid4(), "lease_seconds": 30, "worker_id": "explain"},
    ).fetchone()["QUERY PLAN"][0]
    scans = [n for n in plan_nodes(plan["Plan"]) if "Scan" in n["Node Type"] and n.get("Relation Name") == "runs"]
    assert {n["Node Type"] for n in scans} <= {"Index Scan", "Index Only Scan"}, scans
    assert {n["Index Name"] for n in scans} == {"runs_claim_idx", "runs_pkey"}, scans
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in scans) <= 10, "the claim walked waiting runs"
    assert plan["Plan"]["Shared Hit Blocks"] + plan["Plan"].get("Shared Read Blocks", 0) < 200
    oldest = sql.execute(
        "SELECT id FROM runs WHERE status = 'Running' AND priority = 0 AND available_at < now() - interval '999 s'"
    ).fetchall()
    assert len(oldest) == 1, "it claimed the oldest available run"


def test_worker_processes_keep_the_limits_as_the_provider_sees_them(client, workflow, sql, make_worker):
    """Real workers (two processes, four threads each) calling a fake provider whose answers take 0.3 s: what the
    provider sees in flight at once is what the limits allow, other workflows go ahead, a flooded key does not starve
    a small one, and a higher priority goes first."""

    def new(name, llm_prefix, **limits):
        workflow_id = workflow([("generative_ai", {"prompt": llm_prefix + ":{text}", "model": "gpt-4o-mini"})], name)
        if limits:
            assert client.patch(f"/workflows/{workflow_id}", json=limits).status_code == 200
        return workflow_id

    def queue(workflow_id, text, **where):
        answer = client.post(f"/workflows/{workflow_id}/runs", json={"input_text": text, **where})
        assert answer.status_code == 202, answer.json

    capped, keyed, one_at_a_time, free = (
        new("capped", "A", max_concurrent_runs=2),
        new("keyed", "K", max_concurrent_runs_per_key=1),
        new("one at a time", "P", max_concurrent_runs=1),
        new("free", "B"),
    )
    # Queued in this order, before any worker runs: the capped workflow's flooded key first.
    for i in range(6):
        queue(capped, f"big{i}", concurrency_key="big")
    for i in range(2):
        queue(capped, f"small{i}", concurrency_key="small")
    for key in ("x", "y"):
        for i in range(3):
            queue(keyed, f"{key}{i}", concurrency_key=key)
    for i in range(3):
        queue(one_at_a_time, f"low{i}")
    queue(one_at_a_time, "high", priority=50)
    for i in range(3):
        queue(free, f"b{i}")

    # Kept back until both workers are up, so neither takes the queue's head alone; then let go in queued order.
    sql.execute("UPDATE runs SET available_at = now() + interval '1 hour'")
    with FakeLLM(delay=0.3) as fake:
        env = {"LLM_API_KEY": "sk-fake-limits", "LLM_BASE_URL": fake.url, "WORKER_POLL_INTERVAL_S": 0.1}
        for _ in range(2):
            make_worker(**env).start(concurrency=4)
        wait_for(lambda: sql.execute("SELECT count(*) AS n FROM workers").fetchone()["n"] == 2, message="2 workers")
        sql.execute("UPDATE runs SET available_at = created_at")
        wait_for(
            lambda: (
                sql.execute("SELECT count(*) FILTER (WHERE status = 'Succeeded') AS n FROM runs").fetchone()["n"] == 21
            ),
            timeout=20,
            message="all 21 runs",
        )

    def prompt(request):
        return request.json["messages"][0]["content"]

    def of(prefix):
        return lambda request: prompt(request).startswith(prefix)

    # The limits, as the provider saw them: reached, never passed.
    assert fake.most_at_once(of("A:")) == 2
    assert fake.most_at_once(of("K:")) == 2
    assert fake.most_at_once(of("K:x")) == fake.most_at_once(of("K:y")) == 1
    assert fake.most_at_once(of("P:")) == 1
    # The free workflow, queued last, was not held behind the capped ones: all of it started before any of their
    # first calls had answered.
    first_answer = min(r.done_at for r in fake.requests if not prompt(r).startswith("B:"))
    assert max(r.at for r in fake.requests if prompt(r).startswith("B:")) < first_answer
    # Keys take turns: the small key's two runs were among the capped workflow's first four calls, not after the
    # six of the flooded key queued before them.
    capped_order = [prompt(r) for r in sorted(fake.requests, key=lambda r: r.at) if prompt(r).startswith("A:")]
    assert {"A:small0", "A:small1"} <= set(capped_order[:4])
    # Priorities: the run queued last with priority 50 went first; the others in the order they were queued.
    assert [prompt(r) for r in sorted(fake.requests, key=lambda r: r.at) if prompt(r).startswith("P:")] == [
        "P:high",
        "P:low0",
        "P:low1",
        "P:low2",
    ]
