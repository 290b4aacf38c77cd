"""LLM budgets: a model's per-minute budget shared by worker processes through the database, runs that wait for it
in the queue (no thread held, no attempt spent) and resume where they waited, sync runs that wait in their request,
and the calls refused before they are sent. A minute is never waited out: the tests move the reservations, the
waiting runs' available_at and the fake provider's clock on in SQL, as the schedule tests move next_fire_at."""

import signal

import pytest

from tests.support import wait_for
from tests.support.fake_llm import FakeLLM, completion

KEY = "sk-fake-budget-key"
MODEL = "gpt-4o-mini"
FAST = {"RUN_LEASE_SECONDS": 2, "WORKER_POLL_INTERVAL_S": 0.1, "RUN_RETRY_BACKOFF_S": 0.3}


def llm_node(prompt="{text}", max_tokens=50):
    return ("generative_ai", {"prompt": prompt, "model": MODEL, "max_tokens": max_tokens})


def llm_env(fake, **extra):
    return {**FAST, "LLM_API_KEY": KEY, "LLM_BASE_URL": fake.url, "LLM_MAX_RETRIES": 0, "LLM_TIMEOUT_S": 10, **extra}


def set_budget(sql, **limits):
    sql.execute(
        "INSERT INTO llm_models (model, requests_per_minute, tokens_per_minute) VALUES (%s, %s, %s)",
        (MODEL, limits.get("rpm"), limits.get("tpm")),
    )


def statuses(sql):
    rows = sql.execute("SELECT status, count(*) AS n FROM runs GROUP BY status").fetchall()
    return {r["status"]: r["n"] for r in rows}


def waiting_runs(sql):
    return sql.execute(
        "SELECT count(*) AS n FROM runs WHERE status = 'Pending' AND waiting_for = %s", (MODEL,)
    ).fetchone()["n"]


def let_time_pass(sql, fake):
    """Move time on to when the first waiting run may go: the reservations, pauses, staggered slots and waiting runs'
    available_at back, the fake provider's clock forward, all by the same seconds; return them (0: none waits)."""
    with sql.transaction():
        sql.execute("SELECT 1 FROM llm_model_state WHERE model = %s FOR UPDATE", (MODEL,))
        row = sql.execute(
            "SELECT greatest(0, extract(epoch FROM min(available_at) - clock_timestamp()) + 0.05)::float8 AS s"
            " FROM runs WHERE status = 'Pending' AND waiting_for IS NOT NULL"
        ).fetchone()
        seconds = row["s"] or 0.0
        shift = {"s": seconds}
        sql.execute("UPDATE llm_reservations SET at = at - make_interval(secs => %(s)s)", shift)
        sql.execute(
            "UPDATE llm_model_state SET next_slot_at = next_slot_at - make_interval(secs => %(s)s),"
            " paused_until = paused_until - make_interval(secs => %(s)s)",
            shift,
        )
        sql.execute(
            "UPDATE runs SET available_at = available_at - make_interval(secs => %(s)s) WHERE status = 'Pending'",
            shift,
        )
    fake.advance(seconds)
    return seconds


def run_all(sql, fake, total, timeout=60):
    """Let time pass whenever every unfinished run waits, until ``total`` runs finished."""

    def done():
        counts = statuses(sql)
        finished = sum(counts.get(s, 0) for s in ("Succeeded", "Failed", "Cancelled"))
        if finished == total:
            return True
        if counts.get("Running", 0) == 0 and waiting_runs(sql) == total - finished:
            let_time_pass(sql, fake)
        return False

    wait_for(done, timeout=timeout, interval=0.1, message="every run")


@pytest.fixture
def limited():
    """A provider that enforces its own 3 requests per minute, as the budget does."""
    with FakeLLM(rpm=3) as server:
        yield server


def test_workers_keep_the_budget_and_a_killed_worker_loses_no_waiting_run(client, workflow, sql, make_worker, limited):
    set_budget(sql, rpm=3)
    workflow_id = workflow([llm_node()])
    run_ids = [
        client.post(f"/workflows/{workflow_id}/runs", json={"input_text": f"run {i}"}).json["run_id"] for i in range(8)
    ]
    first, second = make_worker(**llm_env(limited)), make_worker(**llm_env(limited))
    first.start(concurrency=3)
    second.start(concurrency=3)
    # The budget's minute is spent on three runs; the five others wait in the queue, no thread holding them.
    wait_for(lambda: statuses(sql).get("Succeeded") == 3 and waiting_runs(sql) == 5, message="three runs, five waiting")
    assert statuses(sql).get("Running", 0) == 0
    assert f'flowline_runs_waiting_for_budget{{model="{MODEL}"}} 5.0' in client.get("/metrics").get_data(as_text=True)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    run_all(sql, limited, total=8)

    assert statuses(sql) == {"Succeeded": 8}
    # The provider never saw more than the budget in a minute, never answered 429, and was called once per run.
    assert limited.max_in_window(60) <= 3
    assert len(limited.requests) == len(limited.accepted) == 8
    assert sorted(r.json["messages"][0]["content"] for r in limited.requests) == [f"run {i}" for i in range(8)]
    runs = sql.execute("SELECT attempt, waiting_for FROM runs").fetchall()
    assert {(r["attempt"], r["waiting_for"]) for r in runs} == {(1, None)}
    steps = sql.execute("SELECT run_id, attempt, status FROM run_steps ORDER BY run_id").fetchall()
    assert len(steps) == 8 and {(s["attempt"], s["status"]) for s in steps} == {(1, "Succeeded")}
    notes = [
        r["note"] for r in sql.execute("SELECT note FROM run_events WHERE run_id = %s ORDER BY at, id", (run_ids[-1],))
    ]
    assert any(note.startswith(f"waiting for {MODEL}: requests per minute") for note in notes)
    assert "resumed: attempt 1 of 3 at node 1" in notes


def test_a_run_that_waited_twice_calls_each_llm_node_once_with_the_nodes_it_started_with(
    client, workflow, sql, make_worker, limited
):
    set_budget(sql, rpm=1)
    workflow_id = workflow([llm_node("one {text}"), llm_node("two {text}"), llm_node("three {text}")])
    run_id = client.post(f"/workflows/{workflow_id}/runs", json={"input_text": "hello"}).json["run_id"]
    make_worker(**llm_env(limited)).start()
    wait_for(lambda: waiting_runs(sql) == 1, message="the first wait")
    # Edited while the run waits: the run goes on with the nodes of its first claim.
    nodes = client.get(f"/workflows/{workflow_id}").json["nodes"]
    client.patch(f"/workflows/{workflow_id}/nodes/{nodes[2]['id']}", json={"config": {"prompt": "edited {text}"}})
    client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": "formatter", "config": {"rules": ["uppercase"]}})
    run_all(sql, limited, total=1)

    assert [r.json["messages"][0]["content"] for r in limited.requests] == [
        "one hello",
        "two fake completion",
        "three fake completion",
    ]
    run = client.get(f"/runs/{run_id}").json
    assert (run["run"]["status"], run["run"]["attempt"], run["run"]["final_output"]) == (
        "Succeeded",
        1,
        "fake completion",
    )
    assert [(s["attempt"], s["status"]) for s in run["steps"]] == [(1, "Succeeded")] * 3
    events = client.get(f"/runs/{run_id}/events").json["events"]
    assert [(e["status"], e["attempt"]) for e in events] == [
        ("Pending", 0),
        ("Running", 1),
        ("Pending", 1),
        ("Running", 1),
        ("Pending", 1),
        ("Running", 1),
        ("Succeeded", 1),
    ]
    assert [e["note"] for e in events if e["note"].startswith("resumed")] == [
        "resumed: attempt 1 of 3 at node 2",
        "resumed: attempt 1 of 3 at node 3",
    ]


def test_a_run_whose_waits_would_pass_the_total_cap_fails_saying_so(client, workflow, sql, make_worker, limited):
    set_budget(sql, rpm=1)
    run_id = client.post(
        f"/workflows/{workflow([llm_node('a {text}'), llm_node('b {text}')])}/runs", json={"input_text": "x"}
    ).json["run_id"]
    make_worker(**llm_env(limited, LLM_MAX_BUDGET_WAIT_S=30)).start()
    wait_for(lambda: statuses(sql).get("Failed") == 1, message="the failed run")
    run = client.get(f"/runs/{run_id}").json
    assert run["run"]["attempt"] == 1 and len(limited.requests) == 1
    assert run["run"]["error_message"].startswith(
        f"waiting for {MODEL}: requests per minute: the run would have waited"
    )
    assert "more than LLM_MAX_BUDGET_WAIT_S (30 s)" in run["run"]["error_message"]
    assert [s["status"] for s in run["steps"]] == ["Succeeded", "Failed"]


# --- sync runs and refused calls (in the request: the Flask test client) ------------------------------------------


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


@pytest.fixture
def llm_client(make_app, fake):
    def make(**overrides):
        settings = {"LLM_API_KEY": KEY, "LLM_BASE_URL": fake.url, "LLM_MAX_RETRIES": 0, **overrides}
        return make_app(**settings).test_client()

    return make


def test_a_sync_run_waits_for_its_budget_within_its_timeout_then_answers_504(llm_client, fake, workflow, sql):
    set_budget(sql, rpm=1)
    client = llm_client(SYNC_RUN_TIMEOUT_S=3)
    workflow_id = workflow([llm_node()])
    assert client.post(f"/workflows/{workflow_id}/run", json={"input_text": "first"}).status_code == 200
    # The minute's request was made 59.5 s ago: room in half a second, which the next run waits for.
    sql.execute("UPDATE llm_reservations SET at = clock_timestamp() - interval '60.5 seconds'")
    waited = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "second"})
    assert waited.status_code == 200, waited.json
    first, second = fake.requests
    assert 0.3 <= second.at - first.at < 3
    refused = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "third"})
    assert refused.status_code == 504
    assert refused.json["detail"].startswith(f"run timed out waiting for {MODEL}: requests per minute (room in ")
    assert len(fake.requests) == 2
    scraped = client.get("/metrics").get_data(as_text=True)
    waited = [line for line in scraped.splitlines() if line.startswith("flowline_llm_budget_wait_seconds_total")]
    assert waited and float(waited[0].split()[-1]) > 0.3


def test_a_call_whose_estimate_exceeds_the_whole_tokens_per_minute_fails_at_once(llm_client, fake, workflow, sql):
    set_budget(sql, tpm=100)
    response = llm_client().post(
        f"/workflows/{workflow([llm_node(max_tokens=200)])}/run", json={"input_text": "x" * 40}
    )
    assert response.status_code == 422
    assert response.json["detail"] == (
        f"the call's estimated 210 tokens (prompt characters / 4 + max_tokens) can never fit {MODEL}'s budget of "
        "100 tokens per minute; not sent"
    )
    assert fake.requests == []


def test_a_step_that_would_pass_max_tokens_per_run_fails_unsent(llm_client, fake, workflow, sql):
    fake.reply(200, completion("fake completion", prompt_tokens=12, completion_tokens=5))
    workflow_id = workflow([llm_node("{text}", max_tokens=10), llm_node("{text}", max_tokens=10)])
    client = llm_client()
    patched = client.patch(f"/workflows/{workflow_id}", json={"max_tokens_per_run": 25})
    assert patched.status_code == 200 and patched.json["max_tokens_per_run"] == 25
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "hello"})
    assert response.status_code == 422
    assert response.json["detail"] == (
        "the call's estimated 14 tokens would take the run past its workflow's max_tokens_per_run (25; 17 used so "
        "far); not sent"
    )
    assert len(fake.requests) == 1
    run = client.get(f"/runs/{response.json['run_id']}").json
    assert run["run"]["status"] == "Failed"
    assert [s["status"] for s in run["steps"]] == ["Succeeded", "Failed"]
