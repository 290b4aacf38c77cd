"""The console's workflow page lists the workflow's schedules (next fire times, last run linked to its page,
skips) in a fixed number of queries, however many schedules there are."""

from types import SimpleNamespace

from flowline.core.config import settings_of
from flowline.data import db
from flowline.worker import schedules as firing

SECRET = "s" * 40


def test_the_workflow_page_lists_its_schedules_in_a_fixed_number_of_queries(make_app, sql, monkeypatch):
    app = make_app(SECRET_KEY=SECRET)
    client = app.test_client()
    workflow_id = client.post("/workflows", json={"name": "nightly"}).json["id"]

    def add(**body):
        answer = client.post(f"/workflows/{workflow_id}/schedules", json=body)
        assert answer.status_code == 201, answer.json
        return answer.json

    fired = add(cron="0 0 1 1 *", timezone="Europe/Berlin", overlap="queue")
    sql.execute("UPDATE schedules SET next_fire_at = now() WHERE id = %s", (fired["id"],))
    with app.app_context():
        firing.poll(SimpleNamespace(pool=db.app_pool(), config=settings_of(app), id="test-worker"))
    run_id = client.get(f"/schedules/{fired['id']}").json["last_run_id"]

    statements = []
    real = db._execute
    monkeypatch.setattr(db, "_execute", lambda conn, name, *rest: statements.append(name) or real(conn, name, *rest))

    def page():
        statements.clear()
        answer = client.get(f"/console/workflows/{workflow_id}")
        assert answer.status_code == 200
        return answer.text, len(statements)

    one, queries_for_one = page()
    assert "0 0 1 1 *" in one and "Europe/Berlin" in one
    assert f'href="/console/runs/{run_id}"' in one
    for t in client.get(f"/schedules/{fired['id']}").json["next_fire_times"]:
        assert t in one
    add(cron="*/5 * * * *", enabled=False)
    add(cron="@daily", overlap="cancel_previous", catchup="all")
    three, queries_for_three = page()
    assert "*/5 * * * *" in three and "(paused)" in three and "overlap cancel_previous, catchup all" in three
    assert queries_for_three == queries_for_one
    assert statements.count("list_workflow_schedules_with_last_run") == 1
    run_page = client.get(f"/console/runs/{run_id}").text
    assert "Scheduled for" in run_page and fired["id"] in run_page
