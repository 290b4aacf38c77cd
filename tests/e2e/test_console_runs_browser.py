"""The console's run pages in a real Chromium, against one real gunicorn and one worker for the whole module:
a queued run's page turns Succeeded by itself, a queued run is cancelled from its page, a re-run lands on the new
run's page, the queue page shows the worker, and the pages read on a narrow window. The worker is paused
(SIGSTOP) where a run must stay Pending. Each test leaves a screenshot in tests/screenshots/."""

import re
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import expect

from flowline.console.runs import REFRESH_S
from tests.support import Server, WorkerProcess, wait_for

SECRET = "s" * 40


@pytest.fixture(scope="module")
def console_server(module_database_url, tmp_path_factory):
    server = Server(module_database_url, tmp_path_factory.mktemp("console-server"), {"SECRET_KEY": SECRET})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker(module_database_url, tmp_path_factory):
    worker = WorkerProcess(module_database_url, tmp_path_factory.mktemp("console-worker"), {}).start()
    yield worker
    worker.signal(signal.SIGCONT)  # in case a failed test left it paused
    worker.signal(signal.SIGTERM)
    worker.wait()


@contextmanager
def paused(worker):
    """Keep the worker from claiming anything inside the block (it is stopped, then continued)."""
    worker.signal(signal.SIGSTOP)
    try:
        # SIGSTOP takes effect asynchronously: wait until every thread of the worker is stopped (Linux's /proc).
        tasks = Path(f"/proc/{worker.pid}/task")
        wait_for(
            lambda: all((task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "T" for task in tasks.iterdir())
        )
        yield
    finally:
        worker.signal(signal.SIGCONT)


def _workflow(server, name="Browser runs", configs=({},)):
    """Create a workflow of formatter nodes, one per config (``{}``: its default, uppercase); return its id."""
    status, body, _ = server.request("POST", "/workflows", {"name": name})
    assert status == 200, body
    for config in configs:
        added = server.request("POST", f"/workflows/{body['id']}/nodes", {"node_type": "formatter", "config": config})
        assert added[0] == 200, added[1]
    return body["id"]


def _queue(server, workflow_id, text="hello from the browser test"):
    status, body, _ = server.request("POST", f"/workflows/{workflow_id}/runs", {"input_text": text})
    assert status == 202, body
    return body["run_id"]


def _wait_finished(server, run_id, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        run = server.request("GET", f"/runs/{run_id}")[1]["run"]
        if run["finished_at"]:
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.1)


def test_a_queued_runs_page_turns_succeeded_by_itself(page, console_server, worker):
    workflow_id = _workflow(console_server, configs=({"rules": ["strip"]}, {"rules": ["collapse_whitespace"]}, {}))
    with paused(worker):
        run_id = _queue(console_server, workflow_id)
        page.goto(f"{console_server.base}/console/runs/{run_id}")
        expect(page.locator("#run-status")).to_have_text("Pending")
        expect(page.locator("#refreshing")).to_be_visible()
        # While nothing changes the page is not reloaded: a keyboard user's focus stays where it was.
        page.locator("#rerun").focus()
        page.wait_for_timeout(1000 * (REFRESH_S * 2 + 1))
        assert page.evaluate("document.activeElement.id") == "rerun"
    # No click: the page shows the change by itself once the run has finished, then stops checking.
    expect(page.locator("#run-status")).to_have_text("Succeeded", timeout=20_000)
    expect(page.locator("#run-output")).to_have_text("HELLO FROM THE BROWSER TEST")
    expect(page.locator("#refreshing")).to_have_count(0)
    assert page.locator('meta[http-equiv="refresh"]').count() == 0
    expect(page.locator("svg.timeline rect.timeline-bar")).to_have_count(3)
    expect(page.locator("#cancel")).to_have_count(0)


def test_a_queued_run_is_cancelled_from_its_page(page, console_server, worker):
    workflow_id = _workflow(console_server)
    with paused(worker):
        run_id = _queue(console_server, workflow_id)
        page.goto(f"{console_server.base}/console/runs/{run_id}")
        expect(page.locator("#run-status")).to_have_text("Pending")
        page.locator("#cancel").focus()
        page.keyboard.press("Enter")  # by keyboard, as a person without a mouse does
        expect(page.get_by_role("status")).to_have_text("Run cancelled: it will not start.")
        expect(page.locator("#run-status")).to_have_text("Cancelled")
    assert console_server.request("GET", f"/runs/{run_id}")[1]["run"]["status"] == "Cancelled"
    expect(page.locator("#cancel")).to_have_count(0)


def test_rerun_from_a_runs_page_lands_on_the_new_runs_page_and_a_double_click_queues_one(page, console_server, worker):
    workflow_id = _workflow(console_server, "Re-run me")
    first = _queue(console_server, workflow_id, "again")
    _wait_finished(console_server, first)
    page.goto(f"{console_server.base}/console/runs/{first}")
    expect(page.locator("#run-status")).to_have_text("Succeeded")
    page.locator("#rerun").dblclick()
    # The second click's submit may abort the first one's navigation, so poll the address
    # rather than wait for one navigation event.
    expect(page).to_have_url(re.compile(rf"/console/runs/(?!{first})[0-9a-f-]{{36}}$"))
    # The page of the second submit (the first one's may have been dropped): its message says the form was sent
    # again when the first one's answer came back first.
    expect(page.get_by_role("status").first).to_contain_text("Re-run queued")
    expect(page.locator("#run-status")).to_have_text("Succeeded", timeout=20_000)
    expect(page.locator("#run-output")).to_have_text("AGAIN")
    runs = console_server.request("GET", f"/runs?workflow_id={workflow_id}")[1]["runs"]
    assert len(runs) == 2, runs


def test_the_queue_page_shows_the_worker_alive_and_the_runs_finished(page, console_server, worker):
    _wait_finished(console_server, _queue(console_server, _workflow(console_server, "Queue page")))
    page.goto(f"{console_server.base}/console/")
    page.get_by_role("link", name="Queue and workers").click()
    expect(page.get_by_role("heading", name="Queue and workers")).to_be_visible()
    row = page.locator("table.workers tbody tr").first
    expect(row).to_contain_text(f":{worker.pid}")
    expect(row).to_contain_text("Alive")
    expect(page.locator("svg.minute-chart g.minute-bar")).to_have_count(60)
    expect(page.locator("#finished-summary")).not_to_contain_text("0 runs finished")


def test_the_runs_list_and_a_run_read_on_a_narrow_window(page, console_server, worker):
    workflow_id = _workflow(console_server, "A workflow with a rather long name for a narrow window")
    run_id = _queue(console_server, workflow_id, "a long input " * 40)
    _wait_finished(console_server, run_id)
    page.set_viewport_size({"width": 400, "height": 900})
    page.goto(f"{console_server.base}/console/")
    page.get_by_role("link", name="Runs", exact=True).click()
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    page.get_by_role("link", name="A workflow with a rather long name for a narrow window").first.click()
    expect(page.locator("a.run-link")).to_have_count(1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.locator("a.run-link").click()
    expect(page.locator("#run-status")).to_have_text("Succeeded")
    # Nothing but the timeline picture (which scrolls in its own box) is wider than the window.
    assert page.evaluate("document.documentElement.scrollWidth") <= 400


def test_the_runs_list_filters_by_status_from_its_form_and_counts_the_last_day(page, console_server, worker):
    workflow_id = _workflow(console_server, "Filtered")
    _wait_finished(console_server, _queue(console_server, workflow_id, "done"))
    with paused(worker):
        cancelled = _queue(console_server, workflow_id, "never")
        assert console_server.request("POST", f"/runs/{cancelled}/cancel")[0] == 200
    page.goto(f"{console_server.base}/console/runs?workflow_id={workflow_id}")
    expect(page.get_by_role("heading", name="Runs of Filtered")).to_be_visible()
    expect(page.locator("a.run-link")).to_have_count(2)
    expect(page.locator("#counts-title")).to_have_text("Created in the last 24 hours: 2")
    page.get_by_label("Status").select_option("Cancelled")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("a.run-link")).to_have_count(1)
    expect(page.locator("table.runs tbody")).to_contain_text("Cancelled")
    assert f"workflow_id={workflow_id}" in page.url and "status=Cancelled" in page.url
    page.get_by_label("Status").select_option("Any")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("a.run-link")).to_have_count(2)
