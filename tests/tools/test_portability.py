"""Export and import (issue #5): a versioned JSON file, validated with the API's schemas, imported all or nothing
and verified by reading it back. The commands run as `flask --app app export|import`: the round trip and the
progress bar as processes of their own, as a user runs them, the rest in this process (tests/support/apps.py)."""

import io
import json
import os
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from flowline.tools import checksums, export_format, importer
from flowline.tools import export as exporter
from tests.support import make_pdf
from tests.support.apps import run_command

ROOT = Path(__file__).resolve().parents[2]
FLASK = str(Path(sys.executable).with_name("flask"))

# What a round trip must keep, table by table: every column but the queue's bookkeeping (leases, backoff).
ROWS = {
    "workflows": "SELECT id, name, created_at, updated_at, version FROM workflows ORDER BY id",
    "nodes": "SELECT id, workflow_id, position, node_type, config, created_at, updated_at, version FROM nodes ORDER BY id",
    "runs": """SELECT id, workflow_id, mode, status, input, final_output, error_message, attempt, max_attempts,
                      worker_id, idempotency_key, request_hash, cancel_requested_at, created_at, started_at, finished_at
               FROM runs WHERE finished_at IS NOT NULL ORDER BY id""",
    "run_steps": """SELECT id, run_id, node_id, attempt, position, node_type, config_snapshot, status, started_at,
                           finished_at, input_text, output_text, error_message, note,
                           model, prompt_tokens, completion_tokens, cost_usd
                    FROM run_steps WHERE run_id IN (SELECT id FROM runs WHERE finished_at IS NOT NULL) ORDER BY id""",
    "run_events": """SELECT id, run_id, attempt, status, at, worker_id, note
                     FROM run_events WHERE run_id IN (SELECT id FROM runs WHERE finished_at IS NOT NULL) ORDER BY id""",
}
# What the imported steps add to GET /usage's roll-up (the source's Pending run has no finished LLM step).
ROLL_UP = """SELECT hour, workflow_id, model, runs, model_runs, steps, prompt_tokens, completion_tokens, cost_usd,
                  unpriced_steps
           FROM llm_usage_hourly ORDER BY hour, workflow_id, model"""


def flask(url, *args, stdin=None, process=False):
    """Run `flask --app app ARGS` with DATABASE_URL=url: in this process, or (``process``) as its own process from
    the repository, as an operator does; return the CompletedProcess (bytes)."""
    if not process:
        return run_command(url, *args, stdin=stdin)
    return subprocess.run(
        [FLASK, "--app", "app", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        timeout=120,
        env={**os.environ, "DATABASE_URL": url},
    )


def _err(result):
    return result.stderr.decode()


def _rows(url):
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return {table: conn.execute(query).fetchall() for table, query in ROWS.items()}


def _count(url):
    return {table: len(rows) for table, rows in _rows(url).items()}


EMPTY = {"workflows": 0, "nodes": 0, "runs": 0, "run_steps": 0, "run_events": 0}


@pytest.fixture
def seeded(client, workflow, upload, failing_workflow, sql):
    """A database with three kinds of node, finished runs of every status (one with a step whose node was deleted
    since), a run still Pending (queue state: never exported) and a node naming an uploaded file."""
    file_id = upload(make_pdf("Invoice テスト")).json["file_id"]
    invoices = workflow(
        [
            ("formatter", {"rules": ["normalize_width", "strip"]}),
            ("generative_ai", {"prompt": "Summarise: {text}", "model": "m", "temperature": 0.5}),
            ("formatter", {}),
        ],
        name='Invoices ✓ "quoted"',
    )
    pdf = workflow([("extract_text", {"file_id": file_id}), ("formatter", {"rules": []})], name="PDF")
    failing, _ = failing_workflow(before=[("formatter", {})])
    for text in ("ｉｎｖｏｉｃｅ  ", "second"):
        assert client.post(f"/workflows/{invoices}/run", json={"input_text": text}).status_code == 200
    assert client.post(f"/workflows/{pdf}/run", json={}).status_code == 200
    assert client.post(f"/workflows/{failing}/run", json={"input_text": "x"}).status_code == 422
    limits = {"max_concurrent_runs": 4, "max_concurrent_runs_per_key": 2, "max_tokens_per_run": 90_000}
    assert client.patch(f"/workflows/{invoices}", json=limits).status_code == 200
    queued = client.post(
        f"/workflows/{invoices}/runs",
        json={"input_text": "later", "concurrency_key": "tenant-1", "priority": 7},
        headers={"Idempotency-Key": "k-1"},
    )
    assert client.post(f"/runs/{queued.json['run_id']}/cancel").json["status"] == "Cancelled"
    pending = client.post(f"/workflows/{invoices}/runs", json={"input_text": "still queued"}).json["run_id"]
    last_node = client.get(f"/workflows/{invoices}").json["nodes"][-1]["id"]
    assert client.delete(f"/workflows/{invoices}/nodes/{last_node}").status_code == 204
    # What a real provider reports (the echo provider reports 0 tokens), priced: every step's usage travels.
    sql.execute(
        """UPDATE run_steps SET prompt_tokens = 1234 + position, completion_tokens = 56, cost_usd = 0.0012345
           WHERE model = 'm'"""
    )
    statuses = [r["status"] for r in sql.execute("SELECT status FROM runs ORDER BY status").fetchall()]
    assert statuses == ["Cancelled", "Failed", "Pending", "Succeeded", "Succeeded", "Succeeded"]
    return {"invoices": invoices, "pdf": pdf, "failing": failing, "pending": pending, "file_id": file_id}


@pytest.fixture
def target(make_database, template_db):
    """A second, fresh and migrated database to import into."""
    return make_database(template_db)


def _export(url, *args, process=False):
    result = flask(url, "export", *args, process=process)
    assert result.returncode == 0, _err(result)
    return result.stdout


def _write(tmp_path, content, name="export.json"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return str(path)


def test_a_round_trip_with_runs_gives_identical_rows_in_a_fresh_database(
    database_url, seeded, target, tmp_path, make_database, template_db
):
    # The operator's path: both commands as processes of their own.
    exported = _export(database_url, "--with-runs", process=True)
    document = json.loads(exported)
    assert (document["format"], document["version"], document["with_runs"]) == ("flowline-export", 2, True)
    [invoices] = [w for w in document["workflows"] if w["id"] == seeded["invoices"]]
    assert (
        invoices["max_concurrent_runs"],
        invoices["max_concurrent_runs_per_key"],
        invoices["max_tokens_per_run"],
    ) == (
        4,
        2,
        90_000,
    )
    assert [(r["concurrency_key"], r["priority"]) for r in invoices["runs"] if r["status"] == "Cancelled"] == [
        ("tenant-1", 7)
    ]
    assert document["counts"] == {"workflows": 3, "nodes": 6, "runs": 5, "steps": 10, "events": 10}
    assert seeded["pending"] not in exported.decode(), "a Pending run is queue state, never exported"
    assert b'"data"' not in exported and b"%PDF" not in exported, "file bytes are never exported"

    result = flask(target, "import", _write(tmp_path, exported), "--with-runs", process=True)
    assert result.returncode == 0, _err(result)
    out = result.stdout.decode()
    assert "imported 3 workflows, 6 nodes, 5 runs, 10 steps, 10 events" in out
    assert "verified: 3 workflows read back identical to the file" in out
    # The uploaded file did not travel: the import says which node names it (and still imports the node).
    assert f"names file {seeded['file_id']}, which this database does not have" in _err(result)
    assert _rows(target) == _rows(database_url)
    with psycopg.connect(target) as copy, psycopg.connect(database_url) as source:
        assert copy.execute(ROLL_UP).fetchall() == source.execute(ROLL_UP).fetchall() != []

    # Exporting the copy gives the same document, but for the time of export.
    again = json.loads(_export(target, "--with-runs"))
    assert {**again, "exported_at": None} == {**document, "exported_at": None}

    # A file written before steps recorded their usage imports, its steps without usage.
    older = make_database(template_db)
    for workflow in document["workflows"]:
        for run in workflow["runs"]:
            for step in run["steps"]:
                assert step.pop("model") is None or step["node_type"] == "generative_ai"
                del step["prompt_tokens"], step["completion_tokens"], step["cost_usd"]
    result = flask(older, "import", _write(tmp_path, document, "older.json"), "--with-runs")
    assert result.returncode == 0, _err(result)
    steps = _rows(older)["run_steps"]
    assert len(steps) == 10 and {(s["model"], s["prompt_tokens"], s["cost_usd"]) for s in steps} == {(None, None, None)}


def test_without_with_runs_only_workflows_and_nodes_travel(database_url, seeded, target, tmp_path):
    with_runs = _write(tmp_path, _export(database_url, "--with-runs"))
    result = flask(target, "import", with_runs)
    assert result.returncode == 0, _err(result)
    out = result.stdout.decode()
    assert "imported 3 workflows, 6 nodes, 0 runs, 0 steps, 0 events" in out
    assert "not imported: 5 runs with 10 steps and 10 events (pass --with-runs" in out
    source, copy = _rows(database_url), _rows(target)
    assert (copy["workflows"], copy["nodes"]) == (source["workflows"], source["nodes"])
    assert copy["runs"] == copy["run_steps"] == copy["run_events"] == []

    document = json.loads(_export(database_url))
    assert document["with_runs"] is False and all("runs" not in w for w in document["workflows"])


def test_export_of_chosen_workflows_and_of_an_unknown_one(database_url, seeded):
    document = json.loads(_export(database_url, "--workflow", seeded["pdf"], "--workflow", seeded["failing"]))
    assert sorted(w["id"] for w in document["workflows"]) == sorted([seeded["pdf"], seeded["failing"]])

    unknown = str(uuid.uuid4())
    result = flask(database_url, "export", "--workflow", seeded["pdf"], "--workflow", unknown)
    assert result.returncode == 1 and result.stdout == b""
    assert f"no workflow has the id(s) {unknown}" in _err(result) and "Traceback" not in _err(result)
    bad = flask(database_url, "export", "--workflow", "not-a-uuid")
    assert bad.returncode == 2 and "not a valid UUID" in _err(bad)


def test_export_to_a_file_is_complete_or_absent(database_url, seeded, tmp_path):
    output = tmp_path / "out.json"
    result = flask(database_url, "export", "--with-runs", "--output", str(output))
    assert result.returncode == 0 and result.stdout == b"", _err(result)
    assert "exported 3 workflows, 6 nodes, 5 runs, 10 steps, 10 events to" in _err(result)
    assert "webhook subscriptions (and their secrets and delivery history) are not exported" in _err(result)
    assert json.loads(output.read_text())["counts"]["workflows"] == 3
    assert output.stat().st_mode & 0o777 == 0o600, "run history holds users' inputs: readable by its owner only"

    missing = tmp_path / "missing.json"
    failed = flask(database_url, "export", "--workflow", str(uuid.uuid4()), "--output", str(missing))
    assert failed.returncode == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"], "no partial or temporary file is left"


def test_a_dry_run_validates_imports_and_verifies_then_writes_nothing(database_url, seeded, target, tmp_path):
    path = _write(tmp_path, _export(database_url, "--with-runs"))
    result = flask(target, "import", path, "--with-runs", "--dry-run")
    assert result.returncode == 0, _err(result)
    out = result.stdout.decode()
    assert "would import 3 workflows, 6 nodes, 5 runs, 10 steps, 10 events" in out
    assert "verified: 3 workflows" in out and "dry run: rolled back, nothing was written" in out
    assert _count(target) == EMPTY


def _valid_document(workflows=None):
    workflow = {
        "id": str(uuid.uuid4()),
        "name": "w",
        "created_at": "2024-05-01T10:00:00+00:00",
        "updated_at": "2024-05-01T10:00:00.5+00:00",
        "version": 2,
        "nodes": [
            {
                "id": str(uuid.uuid4()),
                "position": 0,
                "node_type": "formatter",
                "config": {"rules": ["strip"]},
                "created_at": "2024-05-01T10:00:00+00:00",
                "updated_at": "2024-05-01T10:00:00+00:00",
                "version": 1,
            }
        ],
    }
    return {
        "format": "flowline-export",
        "version": 1,
        "exported_at": "2024-05-02T00:00:00+00:00",
        "with_runs": False,
        "workflows": workflows if workflows is not None else [workflow],
    }


def test_a_hand_written_minimal_file_imports(target, tmp_path):
    document = _valid_document()
    result = flask(target, "import", _write(tmp_path, document))
    assert result.returncode == 0, _err(result)
    [row] = _rows(target)["workflows"]
    assert (str(row["id"]), row["name"], row["version"]) == (document["workflows"][0]["id"], "w", 2)
    assert row["updated_at"].isoformat() == "2024-05-01T10:00:00.500000+00:00"


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b'{"format": "flowline-export", "version": 1, ',
            "is not valid JSON: Expecting property name enclosed in double quotes at line 1, column 45",
        ),
        (b"\xff\xfe not utf-8", "is not UTF-8 text"),
        (b'{"format": "flowline-export", "version": NaN}', "is not valid JSON: NaN is not valid JSON"),
        (b"[1, 2]", 'is not a Flowline export (it needs "format": "flowline-export"'),
        (
            json.dumps({**_valid_document(), "version": 3}).encode(),
            "is in export format version 3; this Flowline reads versions 1, 2",
        ),
    ],
)
def test_a_file_that_is_not_a_readable_export_is_refused_with_a_clear_error(target, tmp_path, content, message):
    result = flask(target, "import", _write(tmp_path, content))
    assert result.returncode == 1, _err(result)
    assert message in _err(result) and "Traceback" not in _err(result)
    assert _count(target) == EMPTY


def test_config_keys_a_node_type_does_not_know_are_imported_as_sent_and_verified(target, tmp_path):
    document = _valid_document()
    config = {"rules": ["strip"], "prompt": "Summarise", "nested": {"説明": [1, None, {"x": "ｶﾀｶﾅ"}]}}
    document["workflows"][0]["nodes"][0]["config"] = config
    result = flask(target, "import", _write(tmp_path, document))
    assert result.returncode == 0, _err(result)
    assert "verified: 1 workflow read back identical" in result.stdout.decode()
    [node] = _rows(target)["nodes"]
    assert node["config"] == config
    # Anywhere but inside a config, an unknown key is still refused.
    document["workflows"][0]["nodes"][0]["prompt"] = "p"
    refused = flask(target, "import", _write(tmp_path, document))
    assert refused.returncode == 1 and "nodes[0].prompt: Unknown field." in _err(refused)


def test_an_invalid_node_config_names_the_workflow_node_and_field_and_nothing_is_imported(target, tmp_path):
    good, bad = _valid_document()["workflows"][0], _valid_document()["workflows"][0]
    bad["nodes"][0]["config"] = {"rules": ["strip", "shout"]}
    bad["name"] = "Broken one"
    result = flask(target, "import", _write(tmp_path, _valid_document([good, bad])))
    assert result.returncode == 1
    assert f'workflows[1] (id {bad["id"]}, name "Broken one"): nodes[0].config.rules[1]: Must be one of: ' in _err(
        result
    ), _err(result)
    assert "Traceback" not in _err(result)
    assert _count(target) == EMPTY, "the valid workflow before it is not imported either"


def _broken(change):
    document = _valid_document()
    change(document, document["workflows"][0])
    return document


@pytest.mark.parametrize(
    "document, message",
    [
        (_broken(lambda d, w: w.update(name="")), "workflows[0] (id "),
        (_broken(lambda d, w: w.update(name="  ")), "name: Must not be blank."),
        (_broken(lambda d, w: w["nodes"][0].update(node_type="rocket")), "nodes[0].node_type: Must be one of"),
        (
            _broken(lambda d, w: w["nodes"][0].update(config={"prompt": ""}, node_type="generative_ai")),
            "nodes[0].config.prompt: Length must be between 1 and 4000.",
        ),
        (
            _broken(lambda d, w: w["nodes"][0].update(position=1)),
            "nodes: Node positions must be 0..0, each once; found [1].",
        ),
        (_broken(lambda d, w: w.update(created_at="2024-05-01T10:00:00")), "created_at: Not a valid aware datetime."),
        (_broken(lambda d, w: w.update(id="00000000-0000-0000-0000-000000000000")), "id: Must not be the nil UUID."),
        (_broken(lambda d, w: w.update(surprise=1)), "surprise: Unknown field."),
        (_broken(lambda d, w: d["workflows"].append(dict(w, nodes=[]))), "workflow id"),
        (
            _broken(lambda d, w: d.update(counts={"workflows": 2, "nodes": 1, "runs": 0, "steps": 0, "events": 0})),
            "says it holds 2 workflows, 1 nodes, 0 runs, 0 steps, 0 events but holds 1 workflows",
        ),
    ],
)
def test_read_document_names_what_is_wrong_and_where(document, message):
    with pytest.raises(export_format.PortabilityError) as raised:
        export_format.read_document(io.BytesIO(json.dumps(document).encode()), "f.json")
    assert message in str(raised.value)


def _run_document(run_changes=None, step_changes=None):
    document = _valid_document()
    workflow = document["workflows"][0]
    run = {
        "id": str(uuid.uuid4()),
        "mode": "sync",
        "status": "Succeeded",
        "input": {"input_text": "x"},
        "final_output": "x",
        "error_message": None,
        "attempt": 1,
        "max_attempts": 1,
        "worker_id": "h:1",
        "idempotency_key": None,
        "request_hash": None,
        "cancel_requested_at": None,
        "created_at": "2024-05-01T11:00:00+00:00",
        "started_at": "2024-05-01T11:00:00+00:00",
        "finished_at": "2024-05-01T11:00:01+00:00",
        "steps": [
            {
                "id": str(uuid.uuid4()),
                "node_id": workflow["nodes"][0]["id"],
                "attempt": 1,
                "position": 0,
                "node_type": "formatter",
                "config_snapshot": {"rules": ["strip"]},
                "status": "Succeeded",
                "started_at": None,
                "finished_at": None,
                "input_text": "x",
                "output_text": "x",
                "error_message": None,
                "note": None,
                **(step_changes or {}),
            }
        ],
        "events": [
            {
                "id": str(uuid.uuid4()),
                "attempt": 1,
                "status": "Succeeded",
                "at": "2024-05-01T11:00:01+00:00",
                "worker_id": None,
                "note": "done",
            }
        ],
        **(run_changes or {}),
    }
    workflow["runs"] = [run]
    return document


@pytest.mark.parametrize(
    "document, message",
    [
        (_run_document({"status": "Running"}), "runs[0].status: Must be one of: Succeeded, Failed, Cancelled."),
        (
            _run_document(step_changes={"node_id": str(uuid.uuid4())}),
            "runs[0].steps[0].node_id: Must be null or the id of one of this workflow's nodes.",
        ),
        (_run_document(step_changes={"input_text": "nul \u0000"}), "runs[0].steps[0].input_text: Must not contain NUL"),
    ],
)
def test_run_history_is_validated_too(document, message):
    with pytest.raises(export_format.PortabilityError) as raised:
        export_format.read_document(io.BytesIO(json.dumps(document).encode()), "f.json")
    assert message in str(raised.value)


def _renumbered(workflow, name):
    """Return a copy of an exported workflow with fresh ids everywhere (node references follow)."""
    copy = json.loads(json.dumps(workflow))
    node_ids = {node["id"]: str(uuid.uuid4()) for node in copy["nodes"]}
    copy.update(id=str(uuid.uuid4()), name=name)
    for node in copy["nodes"]:
        node["id"] = node_ids[node["id"]]
    for run in copy.get("runs", []):
        run["id"] = str(uuid.uuid4())
        for step in run["steps"]:
            step.update(id=str(uuid.uuid4()), node_id=node_ids.get(step["node_id"]))
        for event in run["events"]:
            event["id"] = str(uuid.uuid4())
    return copy


def test_existing_ids_are_refused_unless_skip_existing_skips_their_workflows(database_url, seeded, target, tmp_path):
    exported = json.loads(_export(database_url, "--with-runs"))
    first = flask(target, "import", _write(tmp_path, exported), "--with-runs")
    assert first.returncode == 0, _err(first)
    before = _rows(target)

    invoices = next(w for w in exported["workflows"] if w["id"] == seeded["invoices"])
    exported["workflows"].append(_renumbered(invoices, "A new copy"))
    exported.pop("counts")
    path = _write(tmp_path, exported, "with-new.json")

    refused = flask(target, "import", path, "--with-runs")
    assert refused.returncode == 1
    assert "id(s) in the file already exist in the database; nothing was imported" in _err(refused)
    assert f'(id {seeded["invoices"]}, name "Invoices ✓ \\"quoted\\""): workflow already exists' in _err(refused)
    assert "node " not in _err(refused), "the ids inside a workflow that exists are not listed again"
    assert "pass --skip-existing" in _err(refused)
    assert _rows(target) == before, "the new workflow was not imported either"

    skipped = flask(target, "import", path, "--with-runs", "--skip-existing")
    assert skipped.returncode == 0, _err(skipped)
    out = skipped.stdout.decode()
    assert "imported 1 workflow, 2 nodes, 3 runs, 6 steps, 6 events" in out
    assert "skipped (the workflow already exists): 3 workflows, 6 nodes, 5 runs, 10 steps, 10 events" in out
    assert [w["name"] for w in _rows(target)["workflows"] if w["name"] == "A new copy"] == ["A new copy"]


def test_skip_existing_does_not_skip_an_id_taken_by_another_workflow(database_url, seeded, target, tmp_path):
    exported = json.loads(_export(database_url))
    assert flask(target, "import", _write(tmp_path, exported)).returncode == 0
    stolen = exported["workflows"][0]["nodes"][0]["id"]
    newcomer = _renumbered(exported["workflows"][0], "newcomer")
    newcomer["nodes"][0]["id"] = stolen
    result = flask(target, "import", _write(tmp_path, _valid_document([newcomer]), "n.json"), "--skip-existing")
    assert result.returncode == 1
    assert f"node {stolen} already exists in workflow {exported['workflows'][0]['id']}" in _err(result)
    assert "--skip-existing skips whole workflows that exist" in _err(result)
    assert "newcomer" not in [w["name"] for w in _rows(target)["workflows"]]


def _install_trigger(url, table, body):
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE FUNCTION test_trigger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} END $$")
        conn.execute(
            f"CREATE TRIGGER test_trigger BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION test_trigger()"
        )


def test_a_failure_midway_leaves_nothing_behind(database_url, seeded, target, tmp_path):
    exported = json.loads(_export(database_url, "--with-runs"))
    # The very last row the import writes fails: workflows, nodes, runs and steps are already inserted by then.
    last_event = exported["workflows"][-1]["runs"][-1]["events"][-1]["id"]
    _install_trigger(
        target, "run_events", f"IF NEW.id = '{last_event}' THEN RAISE EXCEPTION 'disk on fire'; END IF; RETURN NEW;"
    )
    result = flask(target, "import", _write(tmp_path, exported), "--with-runs")
    assert result.returncode == 1
    assert "database error: disk on fire" in _err(result) and "Traceback" not in _err(result)
    assert _count(target) == EMPTY


def test_a_verification_mismatch_rolls_the_import_back(database_url, seeded, target, tmp_path):
    exported = json.loads(_export(database_url))
    # Something between the import and the table (here a trigger) changes what is stored.
    _install_trigger(target, "workflows", "IF NEW.name = 'PDF' THEN NEW.name := 'pdf'; END IF; RETURN NEW;")
    result = flask(target, "import", _write(tmp_path, exported))
    assert result.returncode == 1
    err = _err(result)
    assert "verification failed, the import was rolled back (nothing was imported)" in err
    assert f'(id {seeded["pdf"]}, name "PDF"): md5 ' in err and "Traceback" not in err
    assert _count(target) == EMPTY


def test_import_reads_stdin(database_url, seeded, target):
    result = flask(target, "import", "-", stdin=_export(database_url), process=True)  # a real stdin
    assert result.returncode == 0, _err(result)
    assert _count(target)["workflows"] == 3


def test_export_walks_workflows_and_runs_in_batches(sql, database_url, workflow):
    """Batches of 2 over 5 workflows and over 5 runs created in one statement (equal created_at): nothing is lost
    or repeated at a batch boundary."""
    ids = sorted(workflow([("formatter", {})], name=f"w{i}") for i in range(5))
    sql.execute(
        """
        INSERT INTO runs (workflow_id, mode, status, attempt, started_at, finished_at)
        SELECT %s, 'sync', 'Succeeded', 1, now(), now() FROM generate_series(1, 5)""",
        (ids[0],),
    )
    out = io.BytesIO()
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        result = exporter.export(conn, out, with_runs=True, batch_size=2, run_batch_size=2)
    document = json.loads(out.getvalue())
    assert [w["id"] for w in document["workflows"]] == ids
    runs = document["workflows"][0]["runs"]
    assert len(runs) == len({r["id"] for r in runs}) == 5
    assert result.counts == {"workflows": 5, "nodes": 5, "runs": 5, "steps": 0, "events": 0}


def test_an_empty_database_exports_a_valid_empty_document_that_imports(database_url):
    out = io.BytesIO()
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        exporter.export(conn, out)
        data = export_format.read_document(io.BytesIO(out.getvalue()), "empty")
        result = importer.import_data(conn, data, partition_period="week")
    assert data["workflows"] == [] and result.imported == dict.fromkeys(export_format.KINDS, 0)


def test_the_checksum_compares_values_not_spellings():
    """The same workflow written two ways (a time in another offset, keys and nodes in another order, 1.0 as 1:
    jsonb keeps numbers by value) has one checksum; a changed value has another."""
    first = _valid_document()["workflows"][0]
    first["nodes"].append(
        dict(
            first["nodes"][0],
            id=str(uuid.uuid4()),
            position=1,
            node_type="generative_ai",
            config={"prompt": "p", "model": "m", "temperature": 1.0, "max_tokens": 10},
        )
    )
    second = json.loads(json.dumps(first))
    second["created_at"] = "2024-05-01T12:00:00+02:00"
    second["nodes"].reverse()
    second["nodes"][0]["config"] = {"max_tokens": 10, "temperature": 1, "model": "m", "prompt": "p"}
    load = export_format.ExportWorkflowSchema().load
    checksum = lambda w: checksums.workflow_checksum(load(w), with_runs=False)  # noqa: E731
    assert checksum(first) == checksum(second)
    second["nodes"][0]["config"]["max_tokens"] = 11
    assert checksum(first) != checksum(second)


def _read_terminal(fd, process, timeout=60):
    """Return all a process wrote to the terminal whose master end is ``fd``, until the process exits."""
    output, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the terminal closed (EIO): the process has exited
                break
            output += chunk
        elif process.poll() is not None:
            break
    return output


def test_the_progress_bar_shows_on_a_terminal_only(database_url, seeded, make_database, template_db, tmp_path):
    import pty

    path = _write(tmp_path, _export(database_url))
    piped = flask(make_database(template_db), "import", path)
    assert piped.returncode == 0 and "Importing workflows" not in _err(piped)

    master, slave = pty.openpty()
    process = subprocess.Popen(
        [FLASK, "--app", "app", "import", path],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "DATABASE_URL": make_database(template_db)},
    )
    os.close(slave)
    try:
        terminal = _read_terminal(master, process).decode(errors="replace")
        assert process.wait(timeout=60) == 0, terminal
    finally:
        os.close(master)
    assert "Importing workflows" in terminal and "Verifying workflows" in terminal and "100%" in terminal
    assert "imported 3 workflows" in process.stdout.read().decode()
    process.stdout.close()
