"""Webhook deliveries under failure, with real worker processes and a real loopback receiver: a worker killed
with kill -9 mid-delivery (another one delivers again, with the same webhook-id), 500 runs with a subscription on
three workers, one of them killed (every run has its delivery, none lost), and a worker without
WEBHOOK_ALLOW_PRIVATE refusing private targets with a reason in the history and nothing sent."""

import json
import signal

import pytest
from psycopg.types.json import Jsonb
from standardwebhooks import Webhook

from flowline.data import db
from tests.support import wait_for
from tests.support.receiver import Behaviour, Receiver

UPPER = ("formatter", {"rules": ["uppercase"]})
FAST = {
    "WEBHOOK_ALLOW_PRIVATE": 1,
    "WEBHOOK_TIMEOUT_S": 2,
    "WEBHOOK_LEASE_S": 3,
    "WEBHOOK_RETRY_SCHEDULE_S": "0.2,0.5,1,2,4",
    "WORKER_POLL_INTERVAL_S": 0.1,
    "RUN_LEASE_SECONDS": 2,
}


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def hooked_workflow(client, workflow, url):
    workflow_id = workflow([UPPER])
    response = client.post(f"/workflows/{workflow_id}/webhooks", json={"url": url})
    assert response.status_code == 201
    return workflow_id, response.json


def deliveries(sql, webhook_id):
    return sql.execute(
        "SELECT * FROM webhook_deliveries WHERE webhook_id = %s ORDER BY created_at", (webhook_id,)
    ).fetchall()


def test_a_worker_killed_mid_delivery_leaves_it_to_another_which_sends_it_again(
    client, workflow, sql, make_worker, receiver
):
    receiver.answer("/hold", Behaviour(delay=1.0))
    workflow_id, hook = hooked_workflow(client, workflow, receiver.url("/hold"))
    victim = make_worker(**FAST).start()
    run_id = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "x"}).json["run_id"]
    wait_for(lambda: receiver.received(), message="the victim to be mid-delivery")
    victim.signal(signal.SIGKILL)
    victim.wait()
    [held] = deliveries(sql, hook["id"])
    assert held["status"] == "Delivering" and held["attempts"] == 1
    make_worker(**FAST).start()
    [delivered] = wait_for(
        lambda: [d for d in deliveries(sql, hook["id"]) if d["status"] == "Delivered"],
        timeout=15,
        message="another worker to deliver it",
    )
    first, second = receiver.received()
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(delivered["id"])
    assert second.at - first.at >= 3 - 0.2, "sent again only once the victim's lease expired"
    for got in (first, second):
        assert Webhook(hook["secret"]).verify(got.body, got.headers)["data"]["run"]["id"] == run_id
    assert [a["outcome"] for a in delivered["history"]] == ["lost", "delivered"]
    assert "lease expired" in delivered["history"][0]["error"] and delivered["attempts"] == 2


def test_500_runs_on_three_workers_one_killed_each_get_their_delivery(client, workflow, sql, make_worker, receiver):
    receiver.answer("/hook", Behaviour(delay=0.01))
    workflow_id, hook = hooked_workflow(client, workflow, receiver.url())
    for i in range(500):
        db.one(
            sql,
            "enqueue_run",
            workflow_id=workflow_id,
            input=Jsonb({"input_text": f"run {i}", "file_id": None}),
            max_attempts=3,
            idempotency_key=None,
            request_hash=None,
            concurrency_key=None,
            priority=0,
        )
    workers = [make_worker(**FAST).start() for _ in range(3)]
    wait_for(lambda: len(receiver.received()) >= 100, timeout=60, message="100 deliveries")
    workers[0].signal(signal.SIGKILL)
    workers[0].wait()

    def all_delivered():
        row = sql.execute(
            """SELECT count(*) FILTER (WHERE status = 'Delivered') AS delivered, count(*) AS total
               FROM webhook_deliveries WHERE webhook_id = %s""",
            (hook["id"],),
        ).fetchone()
        return row["delivered"] == 500 and row

    wait_for(all_delivered, timeout=90, interval=0.2, message="500 deliveries")

    runs = {str(r["id"]) for r in sql.execute("SELECT id FROM runs WHERE workflow_id = %s", (workflow_id,))}
    rows = {str(d["id"]): str(d["run_id"]) for d in deliveries(sql, hook["id"])}
    assert len(runs) == 500 and set(rows.values()) == runs, "one delivery per run"
    verifier = Webhook(hook["secret"])
    received_runs = set()
    for got in receiver.received():
        run = verifier.verify(got.body, got.headers)["data"]["run"]
        # A duplicate (the killed worker's deliveries in flight) carries the same webhook-id as the first.
        assert rows[got.headers["webhook-id"]] == run["id"]
        assert run["status"] == "Succeeded"
        received_runs.add(run["id"])
    assert received_runs == runs
    assert sql.execute("SELECT count(*) AS n FROM runs WHERE status <> 'Succeeded'").fetchone()["n"] == 0


def test_without_allow_private_private_targets_are_refused_with_a_reason_and_nothing_is_sent(
    client, workflow, sql, make_worker, receiver
):
    workflow_id = workflow([UPPER])
    targets = {
        receiver.url(): "127.0.0.1 resolves to 127.0.0.1, a loopback address",
        f"http://localhost:{receiver.port}/hook": "localhost resolves to",
        f"http://[::1]:{receiver.port}/hook": "::1 resolves to ::1, a loopback address",
        "http://10.20.30.40/hook": "10.20.30.40, a private address",
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254, a link-local address",
    }
    hooks = {}
    for url in targets:
        response = client.post(f"/workflows/{workflow_id}/webhooks", json={"url": url})
        hooks[url] = response.json["id"]
    make_worker(**{**FAST, "WEBHOOK_ALLOW_PRIVATE": 0, "WEBHOOK_RETRY_SCHEDULE_S": "3600"}).start()
    client.post(f"/workflows/{workflow_id}/run", json={"input_text": "x"})
    for url, reason in targets.items():
        [delivery] = wait_for(
            lambda url=url: [d for d in deliveries(sql, hooks[url]) if d["history"]], message=f"an attempt at {url}"
        )
        [attempt] = delivery["history"]
        assert reason in attempt["error"] and "refused, nothing sent" in attempt["error"], attempt
        assert "WEBHOOK_ALLOW_PRIVATE=1" in delivery["last_error"]
        assert (attempt["outcome"], attempt["status_code"], delivery["status"]) == ("retry", None, "Pending")
    assert receiver.received() == []
    # The history is what the API answers.
    page = client.get(f"/webhooks/{hooks[receiver.url()]}/deliveries").json
    assert "refused, nothing sent" in page["deliveries"][0]["last_error"]
    assert json.dumps(page).count("a loopback address") >= 2
