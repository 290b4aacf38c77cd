"""Issue #20 through the API: a workflow's max_concurrent_runs and max_concurrent_runs_per_key (create, PATCH with
any subset of its fields, GET), a queued run's concurrency_key and priority (shown on every run), a schedule's
priority carried by the runs it fires, and 422 naming the field for every bad value, with nothing stored."""

import uuid

import pytest

from tests.api.test_schedules import YEARLY, make_due, poll
from tests.worker.test_claim_limits import claim, claim_all, finish

LIMITS = {"max_concurrent_runs": 3, "max_concurrent_runs_per_key": 1}


def test_limits_are_set_on_create_shown_by_get_and_changed_by_patch(client):
    created = client.post("/workflows", json={"name": "limited", **LIMITS})
    assert created.status_code == 200, created.json
    assert created.json["max_concurrent_runs"] == 3 and created.json["max_concurrent_runs_per_key"] == 1
    workflow_id = created.json["id"]
    got = client.get(f"/workflows/{workflow_id}").json
    assert {k: got[k] for k in LIMITS} == LIMITS
    # The list's rows stay as they were.
    row = next(w for w in client.get("/workflows").json["workflows"] if w["id"] == workflow_id)
    assert not set(LIMITS) & set(row)

    patched = client.patch(f"/workflows/{workflow_id}", json={"max_concurrent_runs_per_key": None})
    assert patched.status_code == 200, patched.json
    assert patched.json["name"] == "limited" and patched.json["max_concurrent_runs"] == 3
    assert patched.json["max_concurrent_runs_per_key"] is None
    assert patched.json["version"] == created.json["version"] + 1
    assert patched.headers["ETag"] == f'"{patched.json["version"]}"'
    renamed = client.patch(f"/workflows/{workflow_id}", json={"name": "renamed"}).json
    assert (renamed["name"], renamed["max_concurrent_runs"]) == ("renamed", 3)
    plain = client.post("/workflows", json={"name": "plain"}).json
    assert plain["max_concurrent_runs"] is None and plain["max_concurrent_runs_per_key"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_concurrent_runs": 0}, "max_concurrent_runs"),
        ({"max_concurrent_runs": -2}, "max_concurrent_runs"),
        ({"max_concurrent_runs": "3"}, "max_concurrent_runs"),
        ({"max_concurrent_runs": 2.5}, "max_concurrent_runs"),
        ({"max_concurrent_runs_per_key": True}, "max_concurrent_runs_per_key"),
        ({"max_concurrent_runs_per_key": 0, "name": "ok"}, "max_concurrent_runs_per_key"),
        ({"name": "", "max_concurrent_runs": 2}, "name"),
        ({"max_concurrency": 2}, "max_concurrency"),
        ({}, "_schema"),
    ],
)
def test_bad_limits_are_422_naming_the_field_and_change_nothing(client, body, field):
    created = client.post("/workflows", json={"name": "before", **LIMITS}).json
    response = client.patch(f"/workflows/{created['id']}", json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"], response.json
    after = client.get(f"/workflows/{created['id']}").json
    assert (after["name"], after["version"], after["max_concurrent_runs"]) == ("before", created["version"], 3)
    if field != "_schema":
        refused = client.post("/workflows", json={"name": "new", **body} if "name" not in body else body)
        assert refused.status_code == 422 and field in refused.json["errors"], refused.json


def test_a_queued_run_carries_its_key_and_priority_in_every_view(client, workflow):
    workflow_id = workflow()
    queued = client.post(f"/workflows/{workflow_id}/runs", json={"concurrency_key": "tenant-7", "priority": 42})
    assert queued.status_code == 202, queued.json
    run_id = queued.json["run_id"]
    run = client.get(f"/runs/{run_id}").json["run"]
    assert (run["concurrency_key"], run["priority"]) == ("tenant-7", 42)
    listed = client.get("/runs", query_string={"workflow_id": workflow_id}).json["runs"]
    assert (listed[0]["concurrency_key"], listed[0]["priority"]) == ("tenant-7", 42)
    of_workflow = client.get(f"/workflows/{workflow_id}/runs").json["runs"]
    assert of_workflow[0]["priority"] == 42
    rerun = client.post(f"/runs/{run_id}/rerun").json["run_id"]
    again = client.get(f"/runs/{rerun}").json["run"]
    assert (again["concurrency_key"], again["priority"]) == ("tenant-7", 42)
    default = client.get(f"/runs/{client.post(f'/workflows/{workflow_id}/runs').json['run_id']}").json["run"]
    assert (default["concurrency_key"], default["priority"]) == (None, 0)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"priority": 101}, "priority"),
        ({"priority": -101}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"concurrency_key": ""}, "concurrency_key"),
        ({"concurrency_key": "k" * 201}, "concurrency_key"),
        ({"concurrency_key": 7}, "concurrency_key"),
        ({"concurrency_key": "a\x00b"}, "concurrency_key"),
    ],
)
def test_bad_run_fields_are_422_naming_the_field_and_queue_nothing(client, workflow, sql, body, field):
    workflow_id = workflow()
    response = client.post(f"/workflows/{workflow_id}/runs", json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"], response.json
    assert sql.execute("SELECT count(*) AS n FROM runs WHERE workflow_id = %s", (workflow_id,)).fetchone()["n"] == 0


def test_an_idempotency_key_reused_with_another_priority_is_refused(client, workflow):
    workflow_id = workflow()
    headers = {"Idempotency-Key": "same"}
    first = client.post(f"/workflows/{workflow_id}/runs", json={"priority": 5}, headers=headers)
    assert first.status_code == 202
    repeat = client.post(f"/workflows/{workflow_id}/runs", json={"priority": 5}, headers=headers)
    assert repeat.json["run_id"] == first.json["run_id"]
    other = client.post(f"/workflows/{workflow_id}/runs", json={"priority": 6}, headers=headers)
    assert other.status_code == 422


def test_a_schedule_takes_a_priority_and_its_runs_carry_it(client, workflow, sql, app):
    workflow_id = workflow([("formatter", {"rules": ["uppercase"]})])
    bad = client.post(f"/workflows/{workflow_id}/schedules", json={"cron": YEARLY, "priority": 500})
    assert bad.status_code == 422 and "priority" in bad.json["errors"]
    schedule = client.post(f"/workflows/{workflow_id}/schedules", json={"cron": YEARLY, "priority": -20}).json
    assert schedule["priority"] == -20
    changed = client.patch(f"/schedules/{schedule['id']}", json={"priority": 30}).json
    assert changed["priority"] == 30 and client.get(f"/schedules/{schedule['id']}").json["priority"] == 30
    make_due(sql, schedule["id"])
    poll(app)
    runs = client.get(f"/workflows/{workflow_id}/runs").json["runs"]
    assert [r["priority"] for r in runs] == [30]


def test_patching_a_limit_re_holds_and_releases_queued_runs(client, workflow, sql):
    workflow_id = workflow()
    for _ in range(5):
        client.post(f"/workflows/{workflow_id}/runs")
    assert client.patch(f"/workflows/{workflow_id}", json={"max_concurrent_runs": 2}).status_code == 200
    assert len(claim_all(sql)) == 2
    assert claim_all(sql) == [], "the limit holds the three others"
    assert client.patch(f"/workflows/{workflow_id}", json={"max_concurrent_runs": None}).status_code == 200
    assert len(claim_all(sql)) == 3


def test_a_limit_set_while_runs_are_running_counts_them_until_they_finish(client, workflow, sql):
    # Runs queued while the workflow had no limit skip the limit triggers (migration 0023's runs.limited); setting
    # a limit must still count the two running ones, and each finish must free its place.
    workflow_id = workflow()
    for _ in range(4):
        client.post(f"/workflows/{workflow_id}/runs")
    running = [claim(sql), claim(sql)]
    assert client.patch(f"/workflows/{workflow_id}", json={"max_concurrent_runs": 2}).status_code == 200
    assert claim_all(sql) == [], "two runs already, so the limit lets no third start"
    finish(sql, running[0])
    third = claim_all(sql)
    assert len(third) == 1, "a finish of a run that started before the limit frees its place"
    finish(sql, running[1])
    finish(sql, third[0])
    assert len(claim_all(sql)) == 1
    lanes = sql.execute("SELECT running FROM run_lanes WHERE workflow_id = %s", (workflow_id,)).fetchall()
    assert [lane["running"] for lane in lanes] == [1]


def test_an_unknown_workflow_is_404(client):
    response = client.patch(f"/workflows/{uuid.uuid4()}", json={"max_concurrent_runs": 2})
    assert response.status_code == 404
