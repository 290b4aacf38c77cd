"""Schedules through the API (create, list, read, change, delete), their next fire times, and the runs they make
(fired here by one in-process poll of the worker's schedule duty, on a real PostgreSQL): the runs filters,
``schedule_id``/``scheduled_for`` on runs, a rerun without them."""

import itertools
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from flowline.core.config import settings_of
from flowline.data import db
from flowline.worker import schedules as firing

UPPER = ("formatter", {"rules": ["uppercase"]})


def create(client, workflow_id, **body):
    response = client.post(f"/workflows/{workflow_id}/schedules", json={"cron": "*/5 * * * *", **body})
    assert response.status_code == 201, response.json
    return response.json


def poll(app):
    """Decide every due tick once, as a worker's schedule thread does."""
    with app.app_context():
        worker = SimpleNamespace(pool=db.app_pool(), config=settings_of(app), id="test-worker")
        return firing.poll(worker)


# Fires once a year: a schedule made due by make_due has exactly one due tick.
YEARLY = "0 0 1 1 *"


def make_due(sql, schedule_id, ago="30 seconds"):
    """Make a schedule's next tick ``ago`` in the past (within the misfire grace by default); return it."""
    return sql.execute(
        "UPDATE schedules SET next_fire_at = now() - %(ago)s::interval WHERE id = %(id)s RETURNING next_fire_at",
        {"ago": ago, "id": schedule_id},
    ).fetchone()["next_fire_at"]


def test_a_schedule_is_created_read_listed_with_its_next_five_fire_times(client, workflow):
    workflow_id = workflow([UPPER])
    created = client.post(
        f"/workflows/{workflow_id}/schedules",
        json={"cron": "30 2 * * *", "timezone": "Europe/Berlin", "input_text": "hi"},
    )
    assert created.status_code == 201, created.json
    schedule = created.json
    assert created.headers["Location"] == f"/schedules/{schedule['id']}" and created.headers["ETag"] == '"1"'
    assert {k: schedule[k] for k in ("cron", "timezone", "input_text", "file_id", "overlap", "catchup", "enabled")} == {
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "input_text": "hi",
        "file_id": None,
        "overlap": "skip",
        "catchup": "last",
        "enabled": True,
    }
    assert (schedule["skipped_count"], schedule["last_skipped_at"], schedule["last_run_id"]) == (0, None, None)
    times = [datetime.fromisoformat(t) for t in schedule["next_fire_times"]]
    assert len(times) == 5 and times == sorted(times)
    assert times[0] == datetime.fromisoformat(schedule["next_fire_at"])
    # In the schedule's own time zone, one a day.
    assert all(
        t.strftime("%H:%M") == "02:30" and t.utcoffset() in (timedelta(hours=1), timedelta(hours=2)) for t in times
    )
    assert all(b - a <= timedelta(hours=25) for a, b in itertools.pairwise(times))
    read = client.get(f"/schedules/{schedule['id']}")
    assert read.status_code == 200 and read.json == schedule and read.headers["ETag"] == '"1"'
    assert client.get(f"/workflows/{workflow_id}/schedules").json == {"schedules": [schedule]}


def test_names_and_defaults(client, workflow):
    schedule = create(client, workflow(), cron="@hourly")
    assert schedule["timezone"] == "UTC" and schedule["cron"] == "@hourly"
    times = [datetime.fromisoformat(t) for t in schedule["next_fire_times"]]
    assert all(t.minute == 0 for t in times)
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(times))


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "cron"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "@reboot"}, "cron"),
        ({"cron": 5}, "cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"cron": "* * * * *", "timezone": "../../etc/passwd"}, "timezone"),
        ({"cron": "* * * * *", "overlap": "sometimes"}, "overlap"),
        ({"cron": "* * * * *", "catchup": "some"}, "catchup"),
        ({"cron": "* * * * *", "enabled": "yes please"}, "enabled"),
        ({"cron": "* * * * *", "file_id": "not-a-uuid"}, "file_id"),
        ({"cron": "* * * * *", "file_id": "00000000-0000-4000-8000-000000000000"}, "file_id"),
        ({"cron": "* * * * *", "every": "minute"}, "every"),
    ],
)
def test_bad_fields_are_422_naming_the_field(client, workflow, body, field):
    response = client.post(f"/workflows/{workflow()}/schedules", json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"], response.json
    assert response.json["detail"]


def test_unknown_workflow_or_schedule_is_404(client):
    unknown = "00000000-0000-4000-8000-000000000000"
    assert client.post(f"/workflows/{unknown}/schedules", json={"cron": "* * * * *"}).status_code == 404
    assert client.get(f"/workflows/{unknown}/schedules").status_code == 404
    for method in ("get", "delete"):
        assert getattr(client, method)(f"/schedules/{unknown}").status_code == 404
    assert client.patch(f"/schedules/{unknown}", json={"enabled": False}).status_code == 404
    assert client.get("/schedules/nope").status_code == 404


def test_patch_changes_with_if_match_and_a_new_cron_starts_from_now(client, workflow):
    schedule = create(client, workflow())
    assert client.patch(f"/schedules/{schedule['id']}", json={}).status_code == 422
    bad = client.patch(f"/schedules/{schedule['id']}", json={"timezone": "Nowhere/Land"})
    assert bad.status_code == 422 and "timezone" in bad.json["errors"]
    stale = client.patch(f"/schedules/{schedule['id']}", json={"overlap": "queue"}, headers={"If-Match": '"7"'})
    assert stale.status_code == 412
    changed = client.patch(
        f"/schedules/{schedule['id']}", json={"cron": "0 12 * * *", "overlap": "queue"}, headers={"If-Match": '"1"'}
    )
    assert changed.status_code == 200, changed.json
    assert changed.json["version"] == 2 and changed.headers["ETag"] == '"2"' and changed.json["overlap"] == "queue"
    assert all(datetime.fromisoformat(t).strftime("%H:%M") == "12:00" for t in changed.json["next_fire_times"])


def test_pausing_clears_the_next_tick_and_re_enabling_starts_from_now(client, workflow, sql, app):
    schedule = create(client, workflow(), cron="* * * * *", catchup="all", overlap="queue")
    paused = client.patch(f"/schedules/{schedule['id']}", json={"enabled": False}).json
    assert (paused["enabled"], paused["next_fire_at"], paused["next_fire_times"]) == (False, None, [])
    poll(app)
    assert sql.execute("SELECT count(*) AS n FROM runs").fetchone()["n"] == 0
    resumed = client.patch(f"/schedules/{schedule['id']}", json={"enabled": True}).json
    now = sql.execute("SELECT now() AS now").fetchone()["now"]
    first = datetime.fromisoformat(resumed["next_fire_at"])
    assert now < first <= now + timedelta(minutes=1)
    # Nothing of the paused time is caught up: nothing is due yet.
    assert poll(app) == 0


def test_deleting_a_workflow_deletes_its_schedules_and_deleting_a_schedule_keeps_its_runs(client, workflow, sql, app):
    gone = workflow()
    create(client, gone)
    kept_workflow = workflow([UPPER])
    kept = create(client, kept_workflow, cron=YEARLY)
    make_due(sql, kept["id"])
    poll(app)
    assert client.delete(f"/workflows/{gone}").status_code == 204
    assert [str(r["id"]) for r in sql.execute("SELECT id FROM schedules").fetchall()] == [kept["id"]]
    assert client.delete(f"/schedules/{kept['id']}", headers={"If-Match": '"9"'}).status_code == 412
    assert client.delete(f"/schedules/{kept['id']}").status_code == 204
    assert client.get(f"/schedules/{kept['id']}").status_code == 404
    runs = sql.execute("SELECT schedule_id, scheduled_for FROM runs").fetchall()
    assert len(runs) == 1 and runs[0]["schedule_id"] is None and runs[0]["scheduled_for"] is not None


def test_fired_runs_carry_their_schedule_and_tick_and_the_lists_filter_on_them(client, workflow, sql, app):
    workflow_id = workflow([UPPER])
    schedule = create(client, workflow_id, cron=YEARLY, input_text="tick", overlap="queue")
    other = create(client, workflow_id, cron=YEARLY, overlap="queue")
    client.post(f"/workflows/{workflow_id}/runs", json={"input_text": "by hand"})
    due = make_due(sql, schedule["id"])
    make_due(sql, other["id"])
    assert poll(app) == 2
    mine = client.get(f"/runs?schedule_id={schedule['id']}").json["runs"]
    assert len(mine) == 1
    run = mine[0]
    assert run["schedule_id"] == schedule["id"] and datetime.fromisoformat(run["scheduled_for"]) == due
    assert run["status"] == "Pending" and run["mode"] == "async"
    detail = client.get(f"/runs/{run['id']}").json["run"]
    # Compared as instants: PostgreSQL's JSON drops a trailing zero of the microseconds, Python's isoformat keeps it.
    assert detail["schedule_id"] == run["schedule_id"]
    assert datetime.fromisoformat(detail["scheduled_for"]) == datetime.fromisoformat(run["scheduled_for"])
    assert sql.execute("SELECT input FROM runs WHERE id = %s", (run["id"],)).fetchone()["input"] == {
        "input_text": "tick",
        "file_id": None,
    }
    # Every list shape filters on schedule_id; runs made by hand show it null.
    listed = client.get(f"/workflows/{workflow_id}/runs?schedule_id={schedule['id']}").json["runs"]
    paged = client.get(f"/workflows/{workflow_id}/runs?schedule_id={schedule['id']}&limit=5").json["runs"]
    with_status = client.get(f"/runs?schedule_id={schedule['id']}&status=Pending&workflow_id={workflow_id}").json
    assert (
        [r["id"] for r in listed] == [r["id"] for r in paged] == [r["id"] for r in with_status["runs"]] == [run["id"]]
    )
    assert client.get(f"/runs?schedule_id={schedule['id']}&status=Succeeded").json["runs"] == []
    everything = client.get(f"/workflows/{workflow_id}/runs").json["runs"]
    assert len(everything) == 3 and sum(r["schedule_id"] is None for r in everything) == 1
    assert client.get("/runs?schedule_id=nope").status_code == 422
    # The schedule shows its last fire and run.
    after = client.get(f"/schedules/{schedule['id']}").json
    assert after["last_run_id"] == run["id"] and datetime.fromisoformat(after["last_fired_at"]) == due
    assert after["version"] == 1  # firing is not a client's change: the ETag stays
    # A rerun is an ordinary run: no schedule fields.
    rerun = client.post(f"/runs/{run['id']}/rerun")
    assert rerun.status_code == 202
    again = client.get(f"/runs/{rerun.json['run_id']}").json["run"]
    assert (again["schedule_id"], again["scheduled_for"]) == (None, None)


def test_overlap_skip_counts_the_skipped_ticks(client, workflow, sql, app):
    schedule = create(client, workflow([UPPER]), cron=YEARLY)  # overlap skip
    make_due(sql, schedule["id"])
    poll(app)
    make_due(sql, schedule["id"], "0 seconds")  # the previous run is still Pending: no worker runs here
    poll(app)
    after = client.get(f"/schedules/{schedule['id']}").json
    assert after["skipped_count"] == 1 and after["last_skipped_at"] is not None
    assert sql.execute("SELECT count(*) AS n FROM runs").fetchone()["n"] == 1


def test_the_lag_metric_says_how_late_the_oldest_due_tick_is(client, workflow, sql):
    def lag():
        text = client.get("/metrics").get_data(as_text=True)
        line = next(line for line in text.splitlines() if line.startswith("flowline_schedule_lag_seconds "))
        return float(line.split()[1])

    schedule = create(client, workflow(), cron=YEARLY)
    assert lag() == 0
    make_due(sql, schedule["id"], "90 seconds")
    assert 90 <= lag() < 120


def test_a_scheduled_run_of_a_subscribed_workflow_is_delivered_and_one_of_an_unsubscribed_calls_nothing(
    client, workflow, sql, app
):
    """fire_schedule_run copies its workflow's has_webhooks onto the run (migration 0020), as enqueue_run does."""
    subscribed, unsubscribed = workflow([UPPER]), workflow([UPPER])
    client.post(f"/workflows/{subscribed}/webhooks", json={"url": "https://hooks.example.com/flowline"})
    for workflow_id in (subscribed, unsubscribed):
        make_due(sql, create(client, workflow_id, cron=YEARLY)["id"])
    assert poll(app) == 2
    sql.execute("UPDATE runs SET status = 'Succeeded', finished_at = now()")
    delivered = sql.execute(
        "SELECT r.workflow_id, r.webhooks_wanted, count(d.id) AS deliveries FROM runs r "
        "LEFT JOIN webhook_deliveries d ON d.run_id = r.id GROUP BY r.id ORDER BY r.webhooks_wanted"
    ).fetchall()
    assert [(str(r["workflow_id"]), r["webhooks_wanted"], r["deliveries"]) for r in delivered] == [
        (unsubscribed, False, 0),
        (subscribed, True, 1),
    ]
