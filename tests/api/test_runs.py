"""The run engine: what a run does, what it answers, and what it leaves in the history when a node fails."""

import uuid

import pytest
from psycopg.types.json import Jsonb

from flowline.core.statuses import FINISHED_STATUSES, RunStatus, StepStatus
from flowline.data import db
from flowline.engine import providers, runner


def _events(sql, run_id):
    return sql.execute(
        "SELECT attempt, status, worker_id, note FROM run_events WHERE run_id = %s ORDER BY at", (run_id,)
    ).fetchall()


def test_a_failing_node_fails_the_run_and_later_nodes_do_not_run(client, failing_workflow, sql):
    workflow_id, file_id = failing_workflow(before=[("formatter", {"rules": ["strip"]})], after=[("formatter", {})])
    error = f"file {file_id} not found (it may have been deleted)"
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "  text  "})

    assert response.status_code == 422
    run_id = response.json["run_id"]
    assert response.json["detail"] == error
    body = client.get(f"/runs/{run_id}").json
    assert body["run"]["status"] == "Failed"
    assert body["run"]["error_message"] == error
    assert body["run"]["final_output"] is None and body["run"]["finished_at"] is not None
    assert [
        (s["node_type"], s["status"], s["input_text"], s["output_text"], s["error_message"]) for s in body["steps"]
    ] == [
        ("formatter", "Succeeded", "  text  ", "text", None),
        ("extract_text", "Failed", "text", None, error),
    ]
    events = _events(sql, run_id)
    assert [(e["status"], e["note"]) for e in events] == [
        ("Running", "started synchronously"),
        ("Failed", f"failed: {error}"),
    ]
    assert all(e["attempt"] == 1 and e["worker_id"] for e in events)


def test_a_config_that_became_invalid_fails_its_step_with_422(client, workflow, sql):
    workflow_id = workflow([("formatter", {"rules": ["strip"]})])
    # A row written by an older release or by hand: the engine validates configs again when it runs them.
    sql.execute("UPDATE nodes SET config = %s WHERE workflow_id = %s", (Jsonb({"rules": ["shout"]}), workflow_id))
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "x"})
    assert response.status_code == 422
    assert "invalid config" in response.json["detail"] and "rules" in response.json["detail"]
    run = client.get(f"/runs/{response.json['run_id']}").json["run"]
    assert run["status"] == "Failed" and "invalid config" in run["error_message"]


def test_a_run_over_its_time_bound_is_failed_with_504(make_app, workflow, sql):
    client = make_app(SYNC_RUN_TIMEOUT_S=1e-9).test_client()
    workflow_id = workflow([("formatter", {}), ("formatter", {})])
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "slow"})
    assert response.status_code == 504
    assert response.json["detail"] == "run timed out before node 1 of 2 (formatter)"
    run = client.get(f"/runs/{response.json['run_id']}").json["run"]
    assert run["status"] == "Failed" and run["error_message"] == response.json["detail"]
    assert [e["status"] for e in _events(sql, run["id"])] == ["Running", "Failed"]


def test_a_successful_run_records_its_transitions_config_snapshots_and_notes(client, workflow, sql):
    workflow_id = workflow([("formatter", {"rules": ["lowercase"]}), ("extract_text", {})])
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "ABC"})
    assert response.status_code == 200
    run_id = response.json["run_id"]
    assert [(e["status"], e["note"]) for e in _events(sql, run_id)] == [
        ("Running", "started synchronously"),
        ("Succeeded", "succeeded after 2 step(s)"),
    ]
    steps = client.get(f"/runs/{run_id}").json["steps"]
    assert [s["config_snapshot"] for s in steps] == [{"rules": ["lowercase"]}, {}]
    assert steps[1]["note"] == "no file given: the input text passed through unchanged"
    assert [s["attempt"] for s in steps] == [1, 1]


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("Summarise: {text}", "Summarise: some input"),
        ("Summarise this.", "Summarise this.\n\nsome input"),
    ],
)
def test_the_echo_provider_returns_the_rendered_prompt_and_says_it_generated_nothing(
    client, workflow, prompt, expected
):
    workflow_id = workflow([("generative_ai", {"prompt": prompt, "model": "gpt-4o-mini"})])
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "some input"})
    assert response.status_code == 200
    assert response.json["final_output"] == expected
    (step,) = client.get(f"/runs/{response.json['run_id']}").json["steps"]
    assert step["status"] == "Succeeded"
    assert "nothing generated" in step["note"] and "gpt-4o-mini" in step["note"]


def test_a_workflow_without_nodes_returns_its_input(client, workflow):
    response = client.post(f"/workflows/{workflow()}/run", json={"input_text": "as is"})
    assert response.status_code == 200 and response.json["final_output"] == "as is"
    assert client.get(f"/runs/{response.json['run_id']}").json["steps"] == []


def test_history_survives_the_deletion_of_its_node(client, workflow, sql):
    workflow_id = workflow([("formatter", {})])
    run_id = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "a"}).json["run_id"]
    sql.execute("DELETE FROM nodes WHERE workflow_id = %s", (workflow_id,))
    (step,) = client.get(f"/runs/{run_id}").json["steps"]
    assert step["node_id"] is None
    assert (step["node_type"], step["output_text"], step["config_snapshot"]) == ("formatter", "A", {})


def test_a_run_whose_lease_was_taken_over_writes_nothing_more(app, workflow, sql):
    """Fencing: once another holder owns the run (its lease token changed), this holder's writes change 0 rows."""
    workflow_id = workflow([("formatter", {}), ("generative_ai", {"prompt": "p", "model": "m"})])
    pool = db.open_pool(app.extensions[db.EXTENSION])
    token = uuid.uuid4()
    with db.connection(pool) as conn:
        row = db.one(
            conn,
            "start_sync_run",
            workflow_id=workflow_id,
            input=Jsonb({"input_text": "x"}),
            lease_token=token,
            lease_seconds=30,
            worker_id="test",
        )
    sql.execute("UPDATE runs SET lease_token = gen_random_uuid() WHERE id = %s", (row["id"],))
    ctx = runner.RunContext(
        run_id=row["id"],
        lease_token=token,
        lease_seconds=30,
        deadline=float("inf"),
        provider=providers.EchoProvider(),
        pool=pool,
    )

    with pytest.raises(runner.LeaseLost):
        runner.execute(ctx, row["nodes"], "x")

    assert sql.execute("SELECT count(*) AS n FROM run_steps WHERE run_id = %s", (row["id"],)).fetchone()["n"] == 0
    assert sql.execute("SELECT status FROM runs WHERE id = %s", (row["id"],)).fetchone()["status"] == "Running"


@pytest.mark.parametrize("binary", [False, True])
def test_a_status_member_reaches_the_database_as_its_text(sql, binary):
    """The engine passes RunStatus members as parameters and in steps' JSON: psycopg sends their text (they are
    strings), what the CHECK constraints allow, never the member's name (SUCCEEDED)."""
    with sql.cursor(binary=binary) as cur:
        row = cur.execute(
            "SELECT %s::text AS status, %s::text[] AS finished, %s::jsonb AS step",
            (RunStatus.SUCCEEDED, list(FINISHED_STATUSES), Jsonb({"status": StepStatus.RUNNING})),
        ).fetchone()

    assert row == {
        "status": "Succeeded",
        "finished": ["Succeeded", "Failed", "Cancelled"],
        "step": {"status": "Running"},
    }
