"""POST /runs/{id}/rerun (issue #13 item 5): a new async run of the run's workflow on the run's input."""

from tests.support import make_pdf

UNKNOWN_RUN = "0b7e4c1a-1b2c-4d3e-8f90-123456789abc"


def _input_of(sql, run_id):
    return sql.execute("SELECT input FROM runs WHERE id = %s", (run_id,)).fetchone()["input"]


def test_rerun_of_a_finished_run_queues_a_new_one_on_the_same_input(client, workflow, upload, sql):
    file_id = upload(make_pdf("kept")).json["file_id"]
    workflow_id = workflow([("formatter", {"rules": ["uppercase"]})])
    original = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "again", "file_id": file_id})
    assert original.json["status"] == "Succeeded"
    response = client.post(f"/runs/{original.json['run_id']}/rerun")
    assert response.status_code == 202 and response.json["status"] == "Pending"
    run_id = response.json["run_id"]
    assert run_id != original.json["run_id"] and response.headers["Location"] == f"/runs/{run_id}"
    assert (
        _input_of(sql, run_id) == _input_of(sql, original.json["run_id"]) == {"input_text": "again", "file_id": file_id}
    )
    run = client.get(f"/runs/{run_id}").json["run"]
    assert (run["workflow_id"], run["mode"], run["status"]) == (workflow_id, "async", "Pending")
    assert [e["note"] for e in client.get(f"/runs/{run_id}/events").json["events"]] == ["queued"]
    # A rerun of the rerun (still Pending) queues a third run: any run can be run again.
    assert client.post(f"/runs/{run_id}/rerun").json["run_id"] not in (run_id, original.json["run_id"])


def test_rerun_honours_an_idempotency_key(client, workflow, sql):
    workflow_id = workflow([("formatter", {})])
    original = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "once"}).json["run_id"]
    first = client.post(f"/runs/{original}/rerun", headers={"Idempotency-Key": "rerun-1"})
    again = client.post(f"/runs/{original}/rerun", headers={"Idempotency-Key": "rerun-1"})
    assert first.status_code == again.status_code == 202 and first.json == again.json
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    count = sql.execute("SELECT count(*) AS n FROM runs WHERE workflow_id = %s", (workflow_id,)).fetchone()["n"]
    assert count == 2
    # The key belongs to the workflow, as for POST /workflows/{id}/runs: the same input there replays the rerun.
    same = client.post(
        f"/workflows/{workflow_id}/runs", json={"input_text": "once"}, headers={"Idempotency-Key": "rerun-1"}
    )
    assert same.status_code == 202 and same.json["run_id"] == first.json["run_id"]
    other = client.post(
        f"/workflows/{workflow_id}/runs", json={"input_text": "else"}, headers={"Idempotency-Key": "rerun-1"}
    )
    assert other.status_code == 422 and other.json["run_id"] == first.json["run_id"]
    assert client.post(f"/runs/{original}/rerun", headers={"Idempotency-Key": "a key"}).status_code == 422


def test_rerun_of_an_unknown_run_or_one_whose_workflow_was_deleted_is_404(client, workflow):
    for run_id in (UNKNOWN_RUN, "not-a-uuid"):
        response = client.post(f"/runs/{run_id}/rerun")
        assert response.status_code == 404 and response.json["detail"] == "Run not found"
    workflow_id = workflow([("formatter", {})])
    run_id = client.post(f"/workflows/{workflow_id}/run").json["run_id"]
    assert client.delete(f"/workflows/{workflow_id}").status_code == 204
    response = client.post(f"/runs/{run_id}/rerun")
    assert response.status_code == 404 and response.json["detail"] == "Run not found"


def test_rerun_of_a_run_whose_file_was_deleted_is_422(client, workflow, upload, sql):
    file_id = upload(make_pdf("soon gone")).json["file_id"]
    workflow_id = workflow([("formatter", {})])
    run_id = client.post(f"/workflows/{workflow_id}/run", json={"file_id": file_id}).json["run_id"]
    assert client.delete(f"/files/{file_id}").status_code == 204
    response = client.post(f"/runs/{run_id}/rerun")
    assert response.status_code == 422 and "not found" in response.json["errors"]["file_id"][0]
    assert sql.execute("SELECT count(*) AS n FROM runs").fetchone()["n"] == 1
