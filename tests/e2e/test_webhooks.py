"""Webhooks end to end: a real gunicorn and a real worker (one set for this module) deliver finished runs to a
real loopback receiver, signed so the Standard Webhooks reference verifier accepts them; receivers that are down,
failing, gone (410), slow, huge or redirecting; a rotated secret; the delivery history and the worker's metrics.

The worker runs with WEBHOOK_ALLOW_PRIVATE=1 (its receiver is on 127.0.0.1) and a retry schedule of seconds."""

import itertools
import json
import time
import urllib.error
import urllib.request
from datetime import datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support import Server, WorkerProcess, free_port, wait_for
from tests.support.receiver import Behaviour, Receiver

UPPER = ("formatter", {"rules": ["uppercase"]})
SCHEDULE = (0.5, 1.0, 1.5)
WORKER_ENV = {
    "WEBHOOK_ALLOW_PRIVATE": "1",
    "WEBHOOK_TIMEOUT_S": "1.5",
    "WEBHOOK_LEASE_S": "3",
    "WEBHOOK_RETRY_SCHEDULE_S": ",".join(map(str, SCHEDULE)),
    "WEBHOOK_CONCURRENCY": "4",
    "WORKER_POLL_INTERVAL_S": "0.1",
}


@pytest.fixture(scope="module")
def database(module_database_url):
    return module_database_url


@pytest.fixture(scope="module")
def metrics_port():
    return free_port()


@pytest.fixture(scope="module")
def processes(database, tmp_path_factory, metrics_port):
    server = Server(database, tmp_path_factory.mktemp("gunicorn"))
    worker = WorkerProcess(
        database, tmp_path_factory.mktemp("worker"), {**WORKER_ENV, "WORKER_METRICS_PORT": str(metrics_port)}
    )
    server.start()
    worker.start()
    yield server, worker
    worker.process.kill()
    worker.wait()
    server.stop()


@pytest.fixture(scope="module")
def api(processes):
    return processes[0]


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def call(api, method, path, body=None):
    """Return (status, JSON body or None) of a request to the real gunicorn."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        api.base + path, data=data, method=method, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def workflow_with_hook(api, url, **subscription):
    status, workflow = call(api, "POST", "/workflows", {"name": "hooked"})
    assert status == 200
    call(api, "POST", f"/workflows/{workflow['id']}/nodes", {"node_type": UPPER[0], "config": UPPER[1]})
    status, hook = call(api, "POST", f"/workflows/{workflow['id']}/webhooks", {"url": url, **subscription})
    assert status == 201, hook
    return workflow["id"], hook


def run(api, workflow_id, text="hello"):
    status, body = call(api, "POST", f"/workflows/{workflow_id}/run", {"input_text": text})
    assert status == 200, body
    return body["run_id"]


def deliveries_of(api, hook):
    status, page = call(api, "GET", f"/webhooks/{hook['id']}/deliveries")
    assert status == 200
    return page["deliveries"]


def delivery_when(api, hook, predicate, timeout=15, message="the delivery"):
    return wait_for(
        lambda: next((d for d in deliveries_of(api, hook) if predicate(d)), None),
        timeout=timeout,
        interval=0.1,
        message=message,
    )


@pytest.mark.serial  # it checks a delivery's latency
def test_a_finished_run_is_delivered_signed_and_verifies_with_the_reference_library(api, receiver):
    workflow_id, hook = workflow_with_hook(api, receiver.url())
    finished_at = time.monotonic()
    run_id = run(api, workflow_id)
    [got] = wait_for(lambda: receiver.received(), message="the receiver to get the delivery")
    assert got.at - finished_at < 2
    payload = Webhook(hook["secret"]).verify(got.body, got.headers)
    _, read = call(api, "GET", f"/runs/{run_id}")
    assert payload["type"] == "run.succeeded"
    assert payload["data"] == {"run": read["run"]}
    assert payload["data"]["run"]["final_output"] == "HELLO"
    assert len(got.headers["webhook-signature"].split(" ")) == 1
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 5
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(got.body.replace(b"HELLO", b"HELL0"), got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(got.body, {**got.headers, "webhook-timestamp": str(int(time.time()) - 600)})
    delivery = delivery_when(api, hook, lambda d: d["status"] == "Delivered")
    assert got.headers["webhook-id"] == delivery["id"]
    assert (delivery["run_id"], delivery["attempts"], delivery["last_status_code"]) == (run_id, 1, 200)
    assert delivery["next_attempt_at"] is None and delivery["last_error"] is None
    [attempt] = delivery["history"]
    assert (attempt["outcome"], attempt["status_code"], attempt["attempt"]) == ("delivered", 200, 1)
    assert attempt["latency_ms"] < 1000


def test_a_subscription_gets_only_the_events_it_names(api, receiver):
    workflow_id, only_failures = workflow_with_hook(api, receiver.url("/f"), events=["run.failed"])
    run(api, workflow_id)
    time.sleep(0.5)
    assert receiver.received() == [] and deliveries_of(api, only_failures) == []


def test_a_receiver_down_then_up_gets_the_delivery_after_retries_with_backoff(api):
    port = free_port()
    workflow_id, hook = workflow_with_hook(api, f"http://127.0.0.1:{port}/hook")
    run(api, workflow_id)
    delivery = delivery_when(api, hook, lambda d: d["attempts"] >= 2 and d["status"] == "Pending")
    refused = delivery["history"]
    assert [a["outcome"] for a in refused] == ["retry", "retry"]
    assert all(a["status_code"] is None and "ConnectError" in a["error"] for a in refused)
    receiver = Receiver(port).start()
    try:
        delivered = delivery_when(api, hook, lambda d: d["status"] == "Delivered")
        [got] = receiver.received()
        assert got.headers["webhook-id"] == delivered["id"]
        Webhook(hook["secret"]).verify(got.body, got.headers)
    finally:
        receiver.stop()
    history = delivered["history"]
    assert [a["attempt"] for a in history] == list(range(1, len(history) + 1)) and len(history) <= len(SCHEDULE) + 1
    assert history[-1]["outcome"] == "delivered" and delivered["attempts"] == len(history)
    # Each wait (from one attempt's end to the next one's) is at least its step of the schedule.
    gaps = [_at(b) - _at(a) for a, b in itertools.pairwise(history)]
    assert all(gap >= wait - 0.05 for gap, wait in zip(gaps, SCHEDULE, strict=False)), gaps


def _at(attempt):
    return datetime.fromisoformat(attempt["at"]).timestamp()


def test_a_failing_receiver_makes_the_delivery_dead_after_the_last_attempt_and_a_retry_sends_it_again(api, receiver):
    receiver.answer("/hook", Behaviour(status=500, body_bytes=20))
    workflow_id, hook = workflow_with_hook(api, receiver.url())
    run(api, workflow_id)
    dead = delivery_when(api, hook, lambda d: d["status"] == "Dead", timeout=20)
    assert dead["attempts"] == len(SCHEDULE) + 1 == len(dead["history"])
    assert [a["outcome"] for a in dead["history"]] == ["retry"] * len(SCHEDULE) + ["dead"]
    assert dead["last_status_code"] == 500 and dead["last_error"] == "HTTP 500: " + "x" * 20
    assert len({r.headers["webhook-id"] for r in receiver.received()}) == 1
    receiver.answer("/hook", Behaviour(status=204))
    status, retried = call(api, "POST", f"/deliveries/{dead['id']}/retry")
    assert status == 202 and retried["status"] == "Pending"
    delivered = delivery_when(api, hook, lambda d: d["status"] == "Delivered")
    assert delivered["attempts"] == len(SCHEDULE) + 2 and delivered["last_status_code"] == 204
    assert {r.headers["webhook-id"] for r in receiver.received()} == {dead["id"]}


def test_410_disables_the_subscription(api, receiver):
    receiver.answer("/hook", Behaviour(status=410))
    workflow_id, hook = workflow_with_hook(api, receiver.url())
    run(api, workflow_id)
    dead = delivery_when(api, hook, lambda d: d["status"] == "Dead")
    assert (dead["attempts"], dead["history"][0]["outcome"], dead["last_status_code"]) == (1, "gone", 410)
    _, read = call(api, "GET", f"/webhooks/{hook['id']}")
    assert read["enabled"] is False and "410" in read["disabled_reason"]
    run(api, workflow_id)
    time.sleep(0.5)
    assert len(deliveries_of(api, hook)) == 1, "a disabled subscription gets no more deliveries"
    assert len(receiver.received()) == 1
    status, _refused = call(api, "POST", f"/deliveries/{dead['id']}/retry")
    assert status == 409


@pytest.mark.serial  # it checks a delivery's latency
def test_a_slow_receiver_is_cut_off_at_the_bound_and_a_huge_answer_is_not_read(api, receiver):
    receiver.answer("/slow", Behaviour(drip=0.2))
    receiver.answer("/huge", Behaviour(body_bytes=10 * 1024 * 1024))
    workflow_id, slow = workflow_with_hook(api, receiver.url("/slow"))
    _, huge = call(api, "POST", f"/workflows/{workflow_id}/webhooks", {"url": receiver.url("/huge")})
    run(api, workflow_id)
    cut = delivery_when(api, slow, lambda d: d["attempts"] >= 1 and d["history"])
    assert cut["history"][0]["error"] == "no complete answer within 1.5 s (WEBHOOK_TIMEOUT_S)"
    assert 1400 <= cut["history"][0]["latency_ms"] < 2500
    assert cut["history"][0]["outcome"] == "retry"
    delivered = delivery_when(api, huge, lambda d: d["status"] == "Delivered")
    assert delivered["last_latency_ms"] < 1000
    wait_for(lambda: False in receiver.completed, message="the receiver to see the client hang up")
    call(api, "PATCH", f"/webhooks/{slow['id']}", {"enabled": False})


def test_a_redirect_is_not_followed(api, receiver):
    target = Receiver().start()
    try:
        receiver.answer("/hook", Behaviour(status=307, location=target.url("/latest/meta-data")))
        workflow_id, hook = workflow_with_hook(api, receiver.url())
        run(api, workflow_id)
        delivery = delivery_when(api, hook, lambda d: d["history"])
        assert delivery["history"][0]["outcome"] == "retry" and delivery["last_status_code"] == 307
        assert "not followed" in delivery["last_error"]
        assert target.received() == []
        call(api, "PATCH", f"/webhooks/{hook['id']}", {"enabled": False})
    finally:
        target.stop()


def test_after_a_rotation_both_secrets_verify(api, receiver):
    workflow_id, hook = workflow_with_hook(api, receiver.url())
    status, rotated = call(api, "POST", f"/webhooks/{hook['id']}/rotate-secret")
    assert status == 200 and rotated["secret"] != hook["secret"]
    run(api, workflow_id)
    [got] = wait_for(lambda: receiver.received(), message="the delivery")
    new, old = got.headers["webhook-signature"].split(" ")
    assert new.startswith("v1,") and old.startswith("v1,")
    for secret in (rotated["secret"], hook["secret"]):
        assert Webhook(secret).verify(got.body, got.headers)["type"] == "run.succeeded"
    with pytest.raises(WebhookVerificationError):
        Webhook(rotated["secret"]).verify(got.body, {**got.headers, "webhook-signature": old})


def test_the_worker_counts_and_times_its_deliveries(api, metrics_port, receiver):
    workflow_id, _ = workflow_with_hook(api, receiver.url())
    run(api, workflow_id)
    wait_for(lambda: receiver.received(), message="the delivery")

    def scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    text = wait_for(lambda: (t := scrape()) and 'flowline_webhook_deliveries_total{outcome="delivered"}' in t and t)
    assert 'flowline_webhook_delivery_duration_seconds_count{outcome="delivered"}' in text
    with urllib.request.urlopen(api.base + "/metrics", timeout=5) as response:
        api_text = response.read().decode()
    for series in (
        "flowline_webhook_outbox_depth",
        "flowline_webhook_outbox_oldest_age_seconds",
        "flowline_webhook_deliveries_dead",
    ):
        assert f"\n{series} " in api_text, series


def test_no_secret_reaches_a_log_line(api, processes, receiver):
    workflow_id, hook = workflow_with_hook(api, receiver.url("/logged?token=receivers-own-token"))
    _, rotated = call(api, "POST", f"/webhooks/{hook['id']}/rotate-secret")
    run(api, workflow_id)
    wait_for(lambda: receiver.received(), message="the delivery")
    server, worker = processes
    logs = server.log.read_text() + worker.log.read_text()
    assert "webhook delivery" in logs, "the worker logs its deliveries"
    for secret in (hook["secret"], rotated["secret"], "receivers-own-token"):
        assert secret not in logs
    assert "whsec_" not in logs
