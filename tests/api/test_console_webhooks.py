"""The console's webhook pages through Flask's test client, on a real PostgreSQL: the secret shown once (and on
rotation), a receiver's answer shown as escaped text, the SSRF guard's reason shown as the history records it
(deliveries made in this process by the worker's own code, to a real loopback receiver), keyset pages of
deliveries, Retry now, and the page's query plan at 20,000 deliveries. The browser flows are in
tests/e2e/test_console_schedules_webhooks_browser.py."""

import re
import threading
from types import SimpleNamespace

import pytest

from flowline.core.config import settings_of
from flowline.data import db
from flowline.data.sql import QUERIES
from flowline.worker.webhooks import Deliveries
from tests.support.receiver import Behaviour, Receiver

SECRET = "s" * 40
HOSTILE = b"<script>alert(1)</script><b>boom</b>"


@pytest.fixture
def app(make_app):
    return make_app(SECRET_KEY=SECRET, WEBHOOK_ALLOW_PRIVATE="1", WEBHOOK_RETRY_SCHEDULE_S="60")


@pytest.fixture
def console(app):
    return app.test_client()


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def _token(page):
    return re.search(r'name="csrf_token" value="([^"]+)"', page)[1]


def _workflow(console):
    workflow_id = console.post("/workflows", json={"name": "hooked"}).json["id"]
    return workflow_id, _token(console.get(f"/console/workflows/{workflow_id}").text)


def _subscribe(console, url):
    workflow_id, token = _workflow(console)
    created = console.post(
        f"/console/workflows/{workflow_id}/webhooks",
        data={"csrf_token": token, "url": url, "events": ["run.succeeded", "run.failed"]},
    )
    assert created.status_code == 201, created.text
    webhook_id = console.get(f"/workflows/{workflow_id}/webhooks").json["webhooks"][0]["id"]
    return workflow_id, webhook_id, created.text


def _deliver(app, allow_private=True):
    """Make one due delivery with the worker's own code, in this process."""
    with app.app_context():
        worker = SimpleNamespace(
            config=settings_of(app), pool=db.app_pool(), id="console-test", stopping=threading.Event()
        )
        deliveries = Deliveries(worker)
        deliveries.allow_private = allow_private
        assert deliveries.deliver_once("console-test:webhook-1")


def test_subscribing_shows_the_secret_once_and_rotating_shows_the_new_one_once(console, sql):
    workflow_id, webhook_id, page = _subscribe(console, "https://example.com/hook?token=abc")
    secret = re.search(r'id="secret" class="secret" readonly value="(whsec_[^"]+)"', page)[1]
    assert "It will not be shown again" in page
    assert sql.execute("SELECT secret FROM webhooks WHERE id = %s", (webhook_id,)).fetchone()["secret"] == secret
    again = console.get(f"/console/webhooks/{webhook_id}").text
    assert secret not in again and "whsec_" not in again
    assert "https://example.com/hook?token=abc" in console.get(f"/console/workflows/{workflow_id}").text

    rotated = console.post(f"/console/webhooks/{webhook_id}/rotate", data={"csrf_token": _token(again), "version": 1})
    assert rotated.status_code == 200
    new_secret = re.search(r'id="secret" class="secret" readonly value="(whsec_[^"]+)"', rotated.text)[1]
    assert new_secret != secret
    assert "previous secret goes on signing beside it for 24 hours" in rotated.text
    stored = sql.execute("SELECT secret, previous_secret FROM webhooks WHERE id = %s", (webhook_id,)).fetchone()
    assert (stored["secret"], stored["previous_secret"]) == (new_secret, secret)
    # A second rotation from the same (now stale) page changes nothing.
    stale = console.post(f"/console/webhooks/{webhook_id}/rotate", data={"csrf_token": _token(again), "version": 1})
    assert stale.status_code == 409 and "Reload" in stale.text and "whsec_" not in stale.text


def test_a_bad_url_is_refused_beside_its_field_with_the_apis_message(console):
    workflow_id, token = _workflow(console)
    refused = console.post(
        f"/console/workflows/{workflow_id}/webhooks",
        data={"csrf_token": token, "url": "ftp://user:pw@example.com/", "events": []},
    )
    assert refused.status_code == 422
    assert 'id="w-url-errors"' in refused.text and "Must be an http or https URL" in refused.text
    assert 'id="w-events-errors"' in refused.text
    assert console.get(f"/workflows/{workflow_id}/webhooks").json["webhooks"] == []


def test_a_receivers_answer_shows_as_escaped_text_and_a_refused_address_its_reason(app, console, receiver, sql):
    receiver.answer("/hook", Behaviour(status=500, body=HOSTILE))
    workflow_id, webhook_id, _ = _subscribe(console, receiver.url("/hook"))
    assert console.post(f"/workflows/{workflow_id}/run", json={"input_text": "x"}).status_code == 200
    _deliver(app)
    page = console.get(f"/console/webhooks/{webhook_id}").text
    assert "<script>alert(1)" not in page and "<b>boom" not in page
    assert "HTTP 500: &lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;boom&lt;/b&gt;" in page
    assert "Retry now" in page  # failed, a retry pending

    # The same delivery, now from a worker without WEBHOOK_ALLOW_PRIVATE: refused, nothing sent, the reason shown.
    sql.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE webhook_id = %s", (webhook_id,))
    _deliver(app, allow_private=False)
    assert len(receiver.received("/hook")) == 1
    page = console.get(f"/console/webhooks/{webhook_id}").text
    assert "127.0.0.1, a loopback address, not a public one" in page
    assert page.count("<li>") >= 2  # both attempts listed


def test_retry_now_makes_a_dead_delivery_due_and_a_disabled_subscription_offers_none(console, sql):
    workflow_id, webhook_id, _ = _subscribe(console, "https://example.com/hook")
    assert console.post(f"/workflows/{workflow_id}/run", json={"input_text": "x"}).status_code == 200
    sql.execute(
        "UPDATE webhook_deliveries SET status = 'Dead', attempts = 4, finished_at = now(), last_status_code = 503, "
        'history = \'[{"attempt": 4, "at": "2026-01-01T00:00:00+00:00", "outcome": "dead"}]\' '
        "WHERE webhook_id = %s",
        (webhook_id,),
    )
    page = console.get(f"/console/webhooks/{webhook_id}").text
    delivery_id = sql.execute("SELECT id FROM webhook_deliveries WHERE webhook_id = %s", (webhook_id,)).fetchone()["id"]
    retried = console.post(
        f"/console/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", data={"csrf_token": _token(page)}
    )
    assert retried.status_code == 302
    assert sql.execute("SELECT status FROM webhook_deliveries WHERE id = %s", (delivery_id,)).fetchone()["status"] == (
        "Pending"
    )
    sql.execute("UPDATE webhook_deliveries SET status = 'Dead', finished_at = now() WHERE id = %s", (delivery_id,))
    disabled = console.post(
        f"/console/webhooks/{webhook_id}/enabled", data={"csrf_token": _token(page), "enabled": "0", "version": 1}
    )
    assert disabled.status_code == 302
    page = console.get(f"/console/webhooks/{webhook_id}").text
    assert "Retry now" not in page and "Enable the subscription to retry." in page


def test_deliveries_page_newest_first_in_keyset_pages_in_a_fixed_number_of_queries(console, sql, monkeypatch):
    workflow_id, webhook_id, _ = _subscribe(console, "https://example.com/hook")
    assert console.post(f"/workflows/{workflow_id}/run", json={"input_text": "x"}).status_code == 200
    sql.execute(
        "INSERT INTO webhook_deliveries (webhook_id, run_id, event_type, status, finished_at, created_at) "
        "SELECT webhook_id, run_id, event_type, 'Delivered', now(), now() - make_interval(secs => g) "
        "FROM webhook_deliveries, generate_series(1, 30) AS g WHERE webhook_id = %s",
        (webhook_id,),
    )
    statements = []
    real = db._execute
    monkeypatch.setattr(db, "_execute", lambda conn, name, *rest: statements.append(name) or real(conn, name, *rest))
    first = console.get(f"/console/webhooks/{webhook_id}").text
    assert sorted(statements) == ["get_webhook", "get_workflow_json", "list_webhook_deliveries_page"]
    cursor = re.search(r'href="[^"]*cursor=([^"]+)" rel="next"', first)[1]
    second = console.get(f"/console/webhooks/{webhook_id}?cursor={cursor}").text
    ids = [re.findall(r'<tr id="delivery-([0-9a-f-]{36})"', page) for page in (first, second)]
    assert [len(i) for i in ids] == [25, 6] and not set(ids[0]) & set(ids[1])
    stored = [
        str(r["id"])
        for r in sql.execute(
            "SELECT id FROM webhook_deliveries WHERE webhook_id = %s ORDER BY created_at DESC, id", (webhook_id,)
        )
    ]
    assert ids[0] + ids[1] == stored
    assert 'rel="next"' not in second


def _plan_nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def test_a_subscriptions_page_of_deliveries_reads_its_index_at_20000_deliveries(console, sql):
    _, webhook_id, _ = _subscribe(console, "https://example.com/hook")
    workflow_id = console.post("/workflows", json={"name": "other"}).json["id"]
    run_id = console.post(f"/workflows/{workflow_id}/run", json={"input_text": "x"}).json["run_id"]
    other = console.post(f"/workflows/{workflow_id}/webhooks", json={"url": "https://e.com/"}).json["id"]
    sql.execute(
        "INSERT INTO webhook_deliveries (webhook_id, run_id, event_type, status, finished_at, created_at) "
        "SELECT (%(hooks)s::uuid[])[1 + g %% 4], %(run)s, 'run.succeeded', 'Delivered', now(), "
        "       now() - make_interval(secs => g) "
        "FROM generate_series(1, 20000) AS g",
        {"hooks": [webhook_id, other, other, other], "run": run_id},
    )
    sql.execute("ANALYZE webhook_deliveries")
    for after in (None, "2000-01-01"):
        params = {"webhook_id": webhook_id, "after_created_at": after, "after_id": None, "row_limit": 26}
        if after:
            params["after_id"] = "00000000-0000-4000-8000-000000000000"
        query = "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES["list_webhook_deliveries_page"].text
        plan = sql.execute(query, params).fetchone()["QUERY PLAN"][0]
        nodes = list(_plan_nodes(plan["Plan"]))
        assert "webhook_deliveries_webhook_idx" in {node.get("Index Name") for node in nodes}, plan
        assert all(node["Node Type"] != "Seq Scan" for node in nodes), plan
