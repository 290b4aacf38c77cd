"""Webhook subscriptions through the API (create, list, read, change, delete, rotate, the delivery history, retry)
and the outbox the trigger on runs writes, on a real PostgreSQL; no worker runs here, so deliveries stay Pending."""

import threading

import psycopg
import pytest
from psycopg.types.json import Jsonb

from flowline.data import db
from flowline.data.sql import QUERIES

UPPER = ("formatter", {"rules": ["uppercase"]})
HOOK = "https://hooks.example.com/flowline"


def subscribe(client, workflow_id, **body):
    response = client.post(f"/workflows/{workflow_id}/webhooks", json={"url": HOOK, **body})
    assert response.status_code == 201, response.json
    return response


def deliveries(sql, workflow_id=None):
    return sql.execute(
        """SELECT d.*, r.workflow_id FROM webhook_deliveries d JOIN runs r ON r.id = d.run_id
           WHERE %(w)s::uuid IS NULL OR r.workflow_id = %(w)s ORDER BY d.created_at""",
        {"w": workflow_id},
    ).fetchall()


def test_a_subscription_is_created_with_its_secret_shown_once(client, workflow):
    workflow_id = workflow([UPPER])
    created = subscribe(client, workflow_id)
    hook = created.json
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) == 50
    assert hook["events"] == ["run.succeeded", "run.failed", "run.cancelled"]
    assert (hook["url"], hook["enabled"], hook["workflow_id"], hook["version"]) == (HOOK, True, workflow_id, 1)
    assert created.headers["Location"] == f"/webhooks/{hook['id']}" and created.headers["ETag"] == '"1"'
    read = client.get(f"/webhooks/{hook['id']}")
    listed = client.get(f"/workflows/{workflow_id}/webhooks")
    assert read.status_code == 200 and read.headers["ETag"] == '"1"'
    assert listed.json == {"webhooks": [read.json]}
    assert {**read.json, "secret": hook["secret"]} == hook
    for answer in (read, listed, client.get(f"/webhooks/{hook['id']}/deliveries")):
        assert hook["secret"] not in answer.get_data(as_text=True)


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "url"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "http:///nohost"}, "url"),
        ({"url": "https://user:pass@example.com/"}, "url"),
        ({"url": "https://example.com:99999/"}, "url"),
        ({"url": "https://example.com/a b"}, "url"),
        ({"url": "https://example.com/" + "x" * 2000}, "url"),
        ({"url": 5}, "url"),
        ({"url": HOOK, "events": []}, "events"),
        ({"url": HOOK, "events": ["run.started"]}, "events"),
        ({"url": HOOK, "events": "run.failed"}, "events"),
        ({"url": HOOK, "enabled": "yes please"}, "enabled"),
        ({"url": HOOK, "secret": "whsec_mine"}, "secret"),
    ],
)
def test_invalid_subscriptions_are_422_naming_the_field(client, workflow, body, field):
    response = client.post(f"/workflows/{workflow()}/webhooks", json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"] and response.json["detail"]


def test_unknown_ids_are_404(client):
    unknown = "00000000-0000-0000-0000-000000000000"
    assert client.post(f"/workflows/{unknown}/webhooks", json={"url": HOOK}).status_code == 404
    assert client.get(f"/workflows/{unknown}/webhooks").status_code == 404
    for method, path in [
        ("get", f"/webhooks/{unknown}"),
        ("patch", f"/webhooks/{unknown}"),
        ("delete", f"/webhooks/{unknown}"),
        ("post", f"/webhooks/{unknown}/rotate-secret"),
        ("get", f"/webhooks/{unknown}/deliveries"),
        ("post", f"/deliveries/{unknown}/retry"),
        ("get", "/webhooks/not-a-uuid"),
    ]:
        response = getattr(client, method)(path, json={"enabled": False} if method == "patch" else None)
        assert response.status_code == 404 and response.json["detail"], (method, path)


def test_a_subscription_is_changed_deleted_and_honours_if_match(client, workflow):
    hook = subscribe(client, workflow()).json
    changed = client.patch(
        f"/webhooks/{hook['id']}",
        json={"events": ["run.failed", "run.failed"], "enabled": False},
        headers={"If-Match": '"1"'},
    )
    assert changed.status_code == 200, changed.json
    assert (changed.json["events"], changed.json["enabled"], changed.json["version"]) == (["run.failed"], False, 2)
    assert changed.json["url"] == HOOK and "secret" not in changed.json
    stale = client.patch(f"/webhooks/{hook['id']}", json={"url": "http://b.example/"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.json["etag"] == '"2"'
    assert client.patch(f"/webhooks/{hook['id']}", json={}).status_code == 422
    assert client.patch(f"/webhooks/{hook['id']}", json={"url": "http://b.example/"}).json["url"] == "http://b.example/"
    assert client.delete(f"/webhooks/{hook['id']}", headers={"If-Match": '"1"'}).status_code == 412
    assert client.delete(f"/webhooks/{hook['id']}").status_code == 204
    assert client.get(f"/webhooks/{hook['id']}").status_code == 404


def test_rotating_gives_a_new_secret_once_and_keeps_the_old_one_for_a_day(client, workflow, sql):
    hook = subscribe(client, workflow()).json
    rotated = client.post(f"/webhooks/{hook['id']}/rotate-secret")
    assert rotated.status_code == 200 and rotated.json["version"] == 2
    assert rotated.json["secret"].startswith("whsec_") and rotated.json["secret"] != hook["secret"]
    row = sql.execute(
        "SELECT secret, previous_secret, previous_secret_expires_at - now() AS left FROM webhooks WHERE id = %s",
        (hook["id"],),
    ).fetchone()
    assert (row["secret"], row["previous_secret"]) == (rotated.json["secret"], hook["secret"])
    assert 23.9 * 3600 < row["left"].total_seconds() <= 24 * 3600
    assert "secret" not in client.get(f"/webhooks/{hook['id']}").json


def test_a_finished_run_writes_one_delivery_per_subscription_that_wants_its_event(client, workflow, sql):
    workflow_id = workflow([UPPER])
    everything = subscribe(client, workflow_id).json
    failures_only = subscribe(client, workflow_id, events=["run.failed"]).json
    subscribe(client, workflow_id, enabled=False)
    other = workflow([UPPER])
    subscribe(client, other)
    run_id = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "hi"}).json["run_id"]
    rows = deliveries(sql, workflow_id)
    assert [(str(r["webhook_id"]), str(r["run_id"]), r["event_type"], r["status"]) for r in rows] == [
        (everything["id"], run_id, "run.succeeded", "Pending")
    ]
    assert failures_only["id"] not in {str(r["webhook_id"]) for r in rows}
    assert deliveries(sql, other) == []


def test_failed_and_cancelled_runs_write_their_events(client, workflow, failing_workflow, sql):
    failing, _ = failing_workflow()
    subscribe(client, failing)
    assert client.post(f"/workflows/{failing}/run").status_code == 422
    assert [r["event_type"] for r in deliveries(sql, failing)] == ["run.failed"]
    queued = workflow([UPPER])
    subscribe(client, queued)
    run_id = client.post(f"/workflows/{queued}/runs", json={"input_text": "x"}).json["run_id"]
    assert deliveries(sql, queued) == [], "queueing a run is no final status"
    assert client.post(f"/runs/{run_id}/cancel").json["status"] == "Cancelled"
    assert [r["event_type"] for r in deliveries(sql, queued)] == ["run.cancelled"]
    assert client.post(f"/runs/{run_id}/cancel").status_code == 409
    assert len(deliveries(sql, queued)) == 1


def test_a_run_taken_back_by_the_lease_sweep_writes_its_event_once_it_is_final(app, client, workflow, sql):
    workflow_id = workflow([UPPER])
    subscribe(client, workflow_id)
    run_id = client.post(f"/workflows/{workflow_id}/runs", json={"input_text": "x"}).json["run_id"]
    sql.execute(
        """UPDATE runs SET status = 'Running', attempt = max_attempts, lease_token = gen_random_uuid(),
                  lease_expires_at = now() - interval '1 s', worker_id = 'gone' WHERE id = %s""",
        (run_id,),
    )
    with db.connection(app.extensions[db.EXTENSION]) as conn:
        [swept] = db.many(conn, "sweep_expired_leases", batch_size=10)
    assert swept["status"] == "Failed"
    assert [r["event_type"] for r in deliveries(sql, workflow_id)] == ["run.failed"]


def test_a_run_cancelled_while_its_attempt_failed_writes_its_event_and_a_retry_writes_none(app, client, workflow, sql):
    workflow_id = workflow([UPPER])
    subscribe(client, workflow_id)
    run_ids = [client.post(f"/workflows/{workflow_id}/runs", json={"input_text": "x"}).json["run_id"] for _ in range(2)]
    tokens = {}
    for run_id, cancel in zip(run_ids, (False, True), strict=True):
        tokens[run_id] = sql.execute(
            """UPDATE runs SET status = 'Running', attempt = 1, lease_token = gen_random_uuid(),
                      lease_expires_at = now() + interval '1 minute',
                      cancel_requested_at = CASE WHEN %s THEN now() END
               WHERE id = %s RETURNING lease_token""",
            (cancel, run_id),
        ).fetchone()["lease_token"]
    with db.connection(app.extensions[db.EXTENSION]) as conn:
        for run_id in run_ids:
            db.one(
                conn,
                "requeue_run",
                run_id=run_id,
                lease_token=tokens[run_id],
                backoff_seconds=60,
                error_message="provider overloaded",
                note="retrying",
                steps=Jsonb([]),
            )
    statuses = {str(r["id"]): r["status"] for r in sql.execute("SELECT id, status FROM runs").fetchall()}
    assert [statuses[run_id] for run_id in run_ids] == ["Pending", "Cancelled"]
    assert [(str(r["run_id"]), r["event_type"]) for r in deliveries(sql, workflow_id)] == [
        (run_ids[1], "run.cancelled")
    ]


def test_the_delivery_history_pages_and_a_delivery_is_retried_by_hand(client, workflow, sql):
    workflow_id = workflow([UPPER])
    hook = subscribe(client, workflow_id).json
    run_ids = [
        client.post(f"/workflows/{workflow_id}/run", json={"input_text": str(i)}).json["run_id"] for i in range(3)
    ]
    first = client.get(f"/webhooks/{hook['id']}/deliveries?limit=2").json
    second = client.get(f"/webhooks/{hook['id']}/deliveries?limit=2&cursor={first['next_cursor']}").json
    assert second["next_cursor"] is None
    page = first["deliveries"] + second["deliveries"]
    assert [d["run_id"] for d in page] == run_ids[::-1]
    delivery = page[0]
    assert (delivery["status"], delivery["attempts"], delivery["history"], delivery["last_status_code"]) == (
        "Pending",
        0,
        [],
        None,
    )
    assert delivery["next_attempt_at"] is not None and delivery["event_type"] == "run.succeeded"
    assert client.get(f"/webhooks/{hook['id']}/deliveries?cursor=nonsense").status_code == 422
    assert client.get(f"/webhooks/{hook['id']}/deliveries?limit=0").status_code == 422

    sql.execute("UPDATE webhook_deliveries SET status = 'Dead', finished_at = now() WHERE id = %s", (delivery["id"],))
    retried = client.post(f"/deliveries/{delivery['id']}/retry")
    assert retried.status_code == 202 and retried.json == {"delivery_id": delivery["id"], "status": "Pending"}
    row = sql.execute(
        "SELECT status, finished_at, next_attempt_at <= now() AS due FROM webhook_deliveries WHERE id = %s",
        (delivery["id"],),
    ).fetchone()
    assert (row["status"], row["finished_at"], row["due"]) == ("Pending", None, True)

    sql.execute(
        "UPDATE webhook_deliveries SET status = 'Delivering', lease_token = gen_random_uuid() WHERE id = %s",
        (delivery["id"],),
    )
    in_flight = client.post(f"/deliveries/{delivery['id']}/retry")
    assert in_flight.status_code == 409 and "in flight" in in_flight.json["detail"]
    client.patch(f"/webhooks/{hook['id']}", json={"enabled": False})
    disabled = client.post(f"/deliveries/{page[1]['id']}/retry")
    assert disabled.status_code == 409 and "disabled" in disabled.json["detail"]


def test_deleting_the_workflow_deletes_its_subscriptions_and_deliveries(client, workflow, sql):
    workflow_id = workflow([UPPER])
    hook = subscribe(client, workflow_id).json
    client.post(f"/workflows/{workflow_id}/run")
    assert client.delete(f"/workflows/{workflow_id}").status_code == 204
    assert client.get(f"/webhooks/{hook['id']}").status_code == 404
    assert sql.execute("SELECT count(*) AS n FROM webhook_deliveries").fetchone()["n"] == 0


def queue(client, workflow_id):
    return client.post(f"/workflows/{workflow_id}/runs", json={"input_text": "x"}).json["run_id"]


def finish_counting_outbox_calls(sql, run_id):
    """Finish a run as a worker would; return how often that called the outbox trigger's function."""
    # The session's calls not yet flushed to the statistics: read before and after.
    calls = (
        "SELECT coalesce(sum(calls), 0) AS n FROM pg_stat_xact_user_functions "
        "WHERE funcname = 'queue_webhook_deliveries'"
    )
    with sql.transaction():
        sql.execute("SET LOCAL track_functions = 'pl'")
        before = sql.execute(calls).fetchone()["n"]
        sql.execute("UPDATE runs SET status = 'Succeeded', finished_at = now() WHERE id = %s", (run_id,))
        return sql.execute(calls).fetchone()["n"] - before


def delivered_runs(sql, workflow_id):
    return {str(r["run_id"]) for r in deliveries(sql, workflow_id)}


def test_the_outbox_trigger_runs_only_for_workflows_with_an_enabled_subscription(client, workflow, sql):
    """Migration 0020: a finish of a workflow without an enabled subscription calls nothing; a run queued before
    the subscription and finished after it is delivered; disabling or deleting the last one stops both."""
    workflow_id = workflow([UPPER])
    unsubscribed = queue(client, workflow_id)
    assert finish_counting_outbox_calls(sql, unsubscribed) == 0
    queued_before = queue(client, workflow_id)
    hook = subscribe(client, workflow_id).json
    queued_after = queue(client, workflow_id)
    assert finish_counting_outbox_calls(sql, queued_before) == 1
    assert finish_counting_outbox_calls(sql, queued_after) == 1
    synchronous = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "x"}).json["run_id"]
    assert delivered_runs(sql, workflow_id) == {queued_before, queued_after, synchronous}

    assert client.patch(f"/webhooks/{hook['id']}", json={"enabled": False}).status_code == 200
    disabled = queue(client, workflow_id)
    assert finish_counting_outbox_calls(sql, disabled) == 0
    assert client.patch(f"/webhooks/{hook['id']}", json={"enabled": True}).status_code == 200
    enabled_again = queue(client, workflow_id)
    assert finish_counting_outbox_calls(sql, enabled_again) == 1
    assert delivered_runs(sql, workflow_id) == {queued_before, queued_after, synchronous, enabled_again}

    second = subscribe(client, workflow_id).json
    assert client.delete(f"/webhooks/{hook['id']}").status_code == 204  # its deliveries go with it
    one_left = queue(client, workflow_id)
    assert finish_counting_outbox_calls(sql, one_left) == 1
    assert delivered_runs(sql, workflow_id) == {one_left}
    assert client.delete(f"/webhooks/{second['id']}").status_code == 204
    deleted = queue(client, workflow_id)
    assert finish_counting_outbox_calls(sql, deleted) == 0


def test_a_run_queued_while_a_subscription_is_being_created_is_delivered(app, workflow, sql, database_url):
    """The enqueue waits for the subscription's transaction and reads what it committed (migration 0020): a run
    queued meanwhile, finished once the subscription committed, is delivered."""
    workflow_id = workflow([UPPER])
    queued = {}
    with psycopg.connect(database_url) as subscribing:
        db.one(
            subscribing,
            "create_webhook",
            workflow_id=workflow_id,
            url=HOOK,
            events=["run.succeeded"],
            enabled=True,
            secret="whsec_dGVzdA==",
        )
        enqueuer = threading.Thread(target=lambda: queued.update(id=queue(app.test_client(), workflow_id)))
        enqueuer.start()
        enqueuer.join(0.3)  # it waits for the subscription's commit (without the lock it would be done)
        subscribing.commit()
        enqueuer.join(10)
    assert finish_counting_outbox_calls(sql, queued["id"]) == 1
    assert delivered_runs(sql, workflow_id) == {queued["id"]}


def _plan_nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.parametrize(
    "query, params",
    [
        ("claim_webhook_delivery", {"lease_token": "00000000-0000-0000-0000-000000000001", "lease_seconds": 30}),
        ("get_webhook_outbox_stats", {"count_cap": 10_000}),
    ],
)
def test_the_claim_and_the_outbox_gauges_read_the_outbox_not_the_history(client, workflow, sql, query, params):
    workflow_id = workflow([UPPER])
    hook = subscribe(client, workflow_id).json
    client.post(f"/workflows/{workflow_id}/run")
    # A long history: 20,000 delivered deliveries beside an outbox of one.
    sql.execute(
        """INSERT INTO webhook_deliveries (webhook_id, run_id, event_type, status, finished_at)
           SELECT %s, (SELECT id FROM runs LIMIT 1), 'run.succeeded', 'Delivered', now()
           FROM generate_series(1, 20000)""",
        (hook["id"],),
    )
    sql.execute("ANALYZE webhook_deliveries")
    # Plain EXPLAIN: the claim is planned, not run.
    (row,) = sql.execute("EXPLAIN (FORMAT JSON) " + QUERIES[query].text, params).fetchall()
    nodes = list(_plan_nodes(row["QUERY PLAN"][0]["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name") == "webhook_deliveries" and "Scan" in n["Node Type"]]
    assert scans and not [n for n in scans if n["Node Type"] == "Seq Scan"], row["QUERY PLAN"]
    assert {n.get("Index Name") for n in scans} <= {
        "webhook_deliveries_due_idx",
        "webhook_deliveries_finished_idx",
        "webhook_deliveries_pkey",
    }, row["QUERY PLAN"]
