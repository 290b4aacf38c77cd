"""The console's workflow page lists the workflow's schedules (next fire times, last run linked to its page,
skips) in a fixed number of queries, however many schedules there are."""

import re
from types import SimpleNamespace

from flowline.api import schedules
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


def _token(page):
    return re.search(r'name="csrf_token" value="([^"]+)"', page)[1]


FORM = {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", "input_text": "morning", "overlap": "queue"}


def test_a_schedule_is_previewed_with_the_apis_ticks_and_errors_then_added(make_app, sql):
    client = make_app(SECRET_KEY=SECRET).test_client()
    workflow_id = client.post("/workflows", json={"name": "weekdays"}).json["id"]
    path = f"/console/workflows/{workflow_id}"
    blank = client.get(path).text
    token = _token(blank)
    assert '<option value="Europe/Berlin">' in blank and '<option value="cancel_previous">' in blank

    refused = client.post(
        f"{path}/schedules", data={"csrf_token": token, **FORM, "cron": "0 25 * * *", "action": "preview"}
    )
    assert refused.status_code == 422
    api_says = client.post(f"/workflows/{workflow_id}/schedules", json={"cron": "0 25 * * *"}).json["errors"]["cron"]
    errors = re.search(r'<ul class="field-errors" id="s-cron-errors">(.*?)</ul>', refused.text)[1]
    assert api_says[0].replace("'", "&#39;") in errors
    assert 'value="0 25 * * *"' in refused.text  # what was typed is kept

    preview = client.post(f"{path}/schedules", data={"csrf_token": token, **FORM, "action": "preview"})
    assert preview.status_code == 200
    with client.application.app_context():
        expected = schedules.preview("0 9 * * 1-5", "Europe/Berlin")
    shown = re.findall(
        r'<span class="zoned" title="([^"]+)">([^<]+)</span>', preview.text.split('id="schedule-preview"')[1]
    )
    assert [title for title, _ in shown] == expected
    assert all(
        re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri) \d\d \w{3} \d{4}, 09:00 \(UTC\+0[12]:00\)", text) for _, text in shown
    )
    assert client.get(f"/workflows/{workflow_id}/schedules").json["schedules"] == []

    added = client.post(f"{path}/schedules", data={"csrf_token": token, **FORM, "enabled": "1", "action": "add"})
    assert added.status_code == 302
    (stored,) = client.get(f"/workflows/{workflow_id}/schedules").json["schedules"]
    assert {k: stored[k] for k in (*FORM, "enabled", "catchup")} == {**FORM, "enabled": True, "catchup": "last"}
    page = client.get(path).text
    assert "Schedule added: every weekday (Monday to Friday) at 09:00 Europe/Berlin." in page
    # Without script the time zone field stays empty: UTC, the API's default.
    client.post(
        f"{path}/schedules",
        data={"csrf_token": token, "cron": "@hourly", "timezone": "", "overlap": "skip", "catchup": "none"},
    )
    newest = client.get(f"/workflows/{workflow_id}/schedules").json["schedules"][0]
    assert (newest["cron"], newest["timezone"]) == ("@hourly", "UTC")


def test_a_stale_schedule_edit_is_refused_with_a_reload_and_changes_nothing(make_app):
    client = make_app(SECRET_KEY=SECRET).test_client()
    workflow_id = client.post("/workflows", json={"name": "stale"}).json["id"]
    schedule = client.post(f"/workflows/{workflow_id}/schedules", json={"cron": "@daily"}).json
    edit = f"/console/schedules/{schedule['id']}/edit"
    form = client.get(edit).text
    assert 'value="@daily"' in form and 'name="version" value="1"' in form
    assert client.patch(f"/schedules/{schedule['id']}", json={"input_text": "elsewhere"}).status_code == 200
    data = {"csrf_token": _token(form), "version": "1", **FORM, "enabled": "1", "action": "save"}
    stale = client.post(edit, data=data)
    assert stale.status_code == 409
    assert "changed in another tab" in stale.text and 'value="0 9 * * 1-5"' in stale.text
    assert client.get(f"/schedules/{schedule['id']}").json["cron"] == "@daily"
    paused = client.post(
        f"/console/schedules/{schedule['id']}/enabled",
        data={"csrf_token": _token(form), "version": "1", "enabled": "0"},
    )
    assert paused.status_code == 409
    assert client.get(f"/schedules/{schedule['id']}").json["enabled"] is True
