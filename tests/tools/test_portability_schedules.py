"""Export and import of runs made by schedules: the runs carry schedule_id and scheduled_for; schedules are not
exported (said on stderr); a schedule_id the target lacks is imported null; a file without the two keys (an
export from before schedules) imports them null. Through the CLI, as a user runs it."""

import json
from types import SimpleNamespace

import psycopg
from psycopg.rows import dict_row

from flowline.core.config import settings_of
from flowline.data import db
from flowline.worker import schedules as firing
from tests.tools.test_portability import _err, _export, _write, flask


def _finished_scheduled_run(app, client, sql):
    workflow_id = client.post("/workflows", json={"name": "nightly"}).json["id"]
    schedule = client.post(f"/workflows/{workflow_id}/schedules", json={"cron": "0 0 1 1 *"}).json
    tick = sql.execute(
        "UPDATE schedules SET next_fire_at = now() WHERE id = %s RETURNING next_fire_at", (schedule["id"],)
    ).fetchone()["next_fire_at"]
    with app.app_context():
        firing.poll(SimpleNamespace(pool=db.app_pool(), config=settings_of(app), id="test-worker"))
    # Finished, as only finished runs are exported (no worker runs here).
    sql.execute("UPDATE runs SET status = 'Succeeded', final_output = '', finished_at = now(), attempt = 1")
    return schedule["id"], tick


def _runs(url):
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute("SELECT schedule_id, scheduled_for FROM runs").fetchall()


def test_runs_keep_their_schedule_fields_and_a_missing_schedule_becomes_null(
    app, client, sql, database_url, make_database, template_db, tmp_path
):
    schedule_id, tick = _finished_scheduled_run(app, client, sql)
    result = flask(database_url, "export", "--with-runs")
    assert result.returncode == 0, _err(result)
    assert "schedules are not exported" in _err(result)
    run = json.loads(result.stdout)["workflows"][0]["runs"][0]
    assert run["schedule_id"] == schedule_id
    path = _write(tmp_path, result.stdout)

    target = make_database(template_db)
    imported = flask(target, "import", "--with-runs", str(path))
    assert imported.returncode == 0, _err(imported)
    assert "1 run name a schedule this database does not have" in imported.stdout.decode()
    assert _runs(target) == [{"schedule_id": None, "scheduled_for": tick}]


def test_a_file_without_the_schedule_fields_imports_them_null(
    app, client, sql, database_url, make_database, template_db, tmp_path
):
    _finished_scheduled_run(app, client, sql)
    document = json.loads(_export(database_url, "--with-runs"))
    for workflow in document["workflows"]:
        for run in workflow["runs"]:
            del run["schedule_id"], run["scheduled_for"]
    target = make_database(template_db)
    imported = flask(target, "import", "--with-runs", str(_write(tmp_path, json.dumps(document).encode())))
    assert imported.returncode == 0, _err(imported)
    assert _runs(target) == [{"schedule_id": None, "scheduled_for": None}]
