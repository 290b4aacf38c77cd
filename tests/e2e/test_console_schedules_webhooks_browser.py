"""Schedules and webhooks in the console, in a real Chromium against one real gunicorn, one worker and one loopback
receiver for the whole module: a schedule added (previewed, a bad expression refused beside its field), edited,
paused, resumed, fired (its next_fire_at moved in SQL) and deleted; a subscription made from the workflow's page
whose secret verifies the delivery the receiver got; a receiver answering 500 whose retries the page shows until
Dead, then Retry now delivers. The worker retries after 0.3 s, twice, and may send to 127.0.0.1."""

import psycopg
import pytest
from playwright.sync_api import expect
from standardwebhooks import Webhook

from tests.support import Server, WorkerProcess, wait_for
from tests.support.receiver import Behaviour, Receiver

SECRET = "w" * 40
WORKER_ENV = {
    "WEBHOOK_ALLOW_PRIVATE": "1",
    "WEBHOOK_RETRY_SCHEDULE_S": "0.3,0.3",
    "WORKER_POLL_INTERVAL_S": "0.1",
    "SCHEDULE_POLL_INTERVAL_S": "0.1",
}


@pytest.fixture(scope="module")
def console_server(module_database_url, tmp_path_factory):
    server = Server(module_database_url, tmp_path_factory.mktemp("console-server"), {"SECRET_KEY": SECRET})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker(module_database_url, tmp_path_factory):
    worker = WorkerProcess(module_database_url, tmp_path_factory.mktemp("console-worker"), WORKER_ENV).start()
    yield worker
    worker.process.terminate()
    worker.wait()


@pytest.fixture(scope="module")
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sql(module_database_url):
    with psycopg.connect(module_database_url, autocommit=True) as conn:
        yield conn


def _workflow(server, name):
    """Create a workflow of one uppercasing formatter node; return its id."""
    status, body, _ = server.request("POST", "/workflows", {"name": name})
    assert status == 200, body
    added = server.request(
        "POST", f"/workflows/{body['id']}/nodes", {"node_type": "formatter", "config": {"rules": ["uppercase"]}}
    )
    assert added[0] == 200, added[1]
    return body["id"]


def _shot(name):
    from tests.conftest import SCREENSHOTS

    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


def test_a_schedule_is_added_edited_paused_fired_and_deleted(browser, console_server, worker, sql):
    workflow_id = _workflow(console_server, "Weekday mornings")
    # A browser in Berlin: the new schedule's time zone is the browser's.
    context = browser.new_context(timezone_id="Europe/Berlin", viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto(f"{console_server.base}/console/workflows/{workflow_id}")
        expect(page.get_by_label("Time zone")).to_have_value("Europe/Berlin")
        page.get_by_label("Cron expression").fill("0 25 * * *")
        page.get_by_role("button", name="Preview fire times").click()
        expect(page.locator("#s-cron-errors")).to_contain_text("Not a valid cron expression")
        expect(page.get_by_label("Cron expression")).to_have_attribute("aria-invalid", "true")
        page.get_by_label("Cron expression").fill("0 9 * * 1-5")
        page.get_by_label("Each run's input").fill("good morning")
        page.get_by_label("Ticks missed while no worker ran").select_option("none")
        page.get_by_role("button", name="Preview fire times").click()
        preview = page.locator("#schedule-preview li")
        expect(preview).to_have_count(5)
        expect(preview.first).to_contain_text("09:00 (UTC+0")
        expect(page.get_by_label("When a tick comes while its last run is unfinished")).to_have_value("skip")
        page.locator("#schedules").screenshot(path=_shot("console-schedules"))
        page.get_by_role("button", name="Add schedule").click()
        expect(page.locator(".flash")).to_have_text(
            "Schedule added: every weekday (Monday to Friday) at 09:00 Europe/Berlin."
        )
        row = page.locator("table.schedules tbody tr")
        expect(row).to_have_count(1)
        schedule_id = (row.get_attribute("id") or "").removeprefix("schedule-")
        stored = console_server.request("GET", f"/schedules/{schedule_id}")[1]
        assert (stored["timezone"], stored["catchup"], stored["input_text"]) == (
            "Europe/Berlin",
            "none",
            "good morning",
        )

        page.get_by_role("link", name="Edit schedule 1 (0 9 * * 1-5)").click()
        page.get_by_label("Cron expression").fill("30 7 * * *")
        page.get_by_role("button", name="Save").click()
        expect(page.locator(".flash")).to_have_text("Schedule saved.")
        expect(row).to_contain_text("every day at 07:30 Europe/Berlin")

        page.get_by_role("button", name="Pause schedule 1 (30 7 * * *)").click()
        expect(row).to_contain_text("(paused)")
        page.get_by_role("button", name="Resume schedule 1 (30 7 * * *)").click()
        expect(row).not_to_contain_text("(paused)")

        # Its next tick is due now, as if 07:30 had come: the worker fires it, and the page links its run.
        sql.execute("UPDATE schedules SET next_fire_at = now() - interval '1 second' WHERE id = %s", (schedule_id,))
        run_id = wait_for(
            lambda: console_server.request("GET", f"/schedules/{schedule_id}")[1]["last_run_id"], timeout=20
        )
        page.reload()
        row.get_by_role("link").filter(has=page.locator("time")).click()
        expect(page.locator("#run-status")).to_have_text("Succeeded", timeout=20_000)
        expect(page.locator("#run-output")).to_have_text("GOOD MORNING")

        page.goto(f"{console_server.base}/console/workflows/{workflow_id}")
        page.get_by_role("link", name="Delete schedule 1 (30 7 * * *)").click()
        page.get_by_role("button", name="Delete the schedule").click()
        expect(page.locator(".flash")).to_have_text("Schedule 30 7 * * * deleted; its runs are kept.")
        expect(row).to_have_count(0)
        assert console_server.request("GET", f"/schedules/{schedule_id}")[0] == 404
        assert console_server.request("GET", f"/runs/{run_id}")[0] == 200
    finally:
        context.close()


def test_a_subscription_made_in_the_console_gets_its_delivery_signed_with_the_secret_shown(
    page, console_server, worker, receiver
):
    workflow_id = _workflow(console_server, "Hooked")
    page.goto(f"{console_server.base}/console/workflows/{workflow_id}")
    page.get_by_label("Receiver's URL").fill(receiver.url("/ok"))
    page.get_by_label("run.cancelled").uncheck()
    page.get_by_role("button", name="Subscribe").click()
    expect(page.locator("#secret-once")).to_contain_text("It will not be shown again")
    secret = page.get_by_label("Signing secret").input_value()
    assert secret.startswith("whsec_")
    page.get_by_role("button", name="Copy").click()  # shown by the script only
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    page.screenshot(path=_shot("console-webhook-secret"))

    page.get_by_role("link", name="Hooked").click()
    page.get_by_label("Input text").fill("deliver me")
    page.get_by_role("button", name="Run now").click()
    expect(page.locator("#try-result")).to_contain_text("Succeeded")
    page.get_by_role("link", name=receiver.url("/ok")).click()
    assert "whsec_" not in page.content()
    # No click: the page checks for the outcome itself.
    expect(page.locator("td.delivery-status")).to_have_text("Delivered", timeout=20_000)
    expect(page.locator("#refreshing")).to_have_count(0)
    (received,) = receiver.received("/ok")
    body = Webhook(secret).verify(received.body, received.headers)
    assert body["type"] == "run.succeeded" and body["data"]["run"]["final_output"] == "DELIVER ME"


def test_a_failing_receivers_retries_show_until_dead_and_retry_now_delivers(page, console_server, worker, receiver):
    receiver.answer("/fail", Behaviour(status=500, body=b"<h1>down for maintenance</h1>"))
    workflow_id = _workflow(console_server, "Hooked to a failing receiver")
    status, hook, _ = console_server.request(
        "POST", f"/workflows/{workflow_id}/webhooks", {"url": receiver.url("/fail")}
    )
    assert status == 201, hook
    assert console_server.request("POST", f"/workflows/{workflow_id}/run", {"input_text": "x"})[0] == 200
    page.goto(f"{console_server.base}/console/webhooks/{hook['id']}")
    status_cell = page.locator("td.delivery-status")
    expect(status_cell).to_have_text("Dead", timeout=20_000)
    expect(page.locator("td.delivery-attempts")).to_have_text("3")
    attempts = page.locator("ol.attempts li")
    expect(attempts).to_have_count(3)
    expect(attempts.nth(0)).to_contain_text("retry, HTTP 500")
    expect(attempts.nth(2)).to_contain_text("dead, HTTP 500")
    expect(attempts.nth(2)).to_contain_text("HTTP 500: <h1>down for maintenance</h1>")  # as text
    expect(page.locator("h1")).to_have_count(1)

    receiver.answer("/fail", Behaviour(status=204))
    page.get_by_role("button", name="Retry delivery 1 now").click()
    expect(page.locator(".flash")).to_contain_text("is due now")
    expect(status_cell).to_have_text("Delivered", timeout=20_000)
    expect(attempts).to_have_count(4)
    expect(attempts.nth(3)).to_contain_text("delivered, HTTP 204")
    assert len({r.headers["webhook-id"] for r in receiver.received("/fail")}) == 1
    page.get_by_text("Attempts of this delivery (4)").click()
    page.screenshot(path=_shot("console-webhook"), full_page=True)

    page.set_viewport_size({"width": 400, "height": 900})
    for path in (f"/console/webhooks/{hook['id']}", f"/console/workflows/{workflow_id}"):
        page.goto(console_server.base + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 400, path
