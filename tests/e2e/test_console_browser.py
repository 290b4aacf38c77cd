"""The console's workflow pages as a person uses them, in a real Chromium against a real gunicorn: build a
workflow through the forms, see a field error, reorder, run it, upload a PDF, meet a stale edit from two tabs,
sign in and out, and see hostile text shown as text. One gunicorn per module, one browser per session."""

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.support import Server, make_pdf

SECRET_KEY = "console-browser-secret-" + "k" * 20
TOKEN = "console-browser-token-" + "t" * 20
XSS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']


def _start(database_url, tmp_path_factory, **env):
    server = Server(database_url, tmp_path_factory.mktemp("console"), {"SECRET_KEY": SECRET_KEY, **env})
    server.start()
    return server


@pytest.fixture(scope="module")
def console(module_database_url, tmp_path_factory):
    server = _start(module_database_url, tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture
def dialogs(page):
    """Every JavaScript dialog the page opens (an XSS payload that ran would open one); none may."""
    opened = []
    page.on("dialog", lambda dialog: (opened.append(dialog.message), dialog.dismiss()))
    return opened


def _new_workflow(page, console, name):
    page.goto(f"{console.base}/console/")
    page.get_by_label("New workflow's name").fill(name)
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"/console/workflows/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


def _nodes(console, workflow_id):
    return [(n["node_type"], n["config"]) for n in console.request("GET", f"/workflows/{workflow_id}")[1]["nodes"]]


def test_build_a_workflow_with_every_node_type_through_the_forms_and_run_it(page, console, dialogs):
    workflow_id = _new_workflow(page, console, "Built in the console")
    assert page.get_by_role("heading", level=1).text_content() == "Built in the console"

    page.get_by_role("link", name="formatter").click()
    page.get_by_label("Rule 1").select_option("strip")
    page.get_by_label("Rule 2").select_option("lowercase")
    page.get_by_role("button", name="Add node").click()
    assert "formatter node added at position 1" in page.locator(".flash").text_content()

    page.get_by_role("link", name="generative_ai").click()
    page.get_by_label("Prompt").fill("Say: {text}")
    page.get_by_label("Temperature").fill("3")  # over 2: the API's error, beside the field
    page.get_by_role("button", name="Add node").click()
    error = page.locator("#f-temperature-errors")
    assert "Must be greater than or equal to 0 and less than or equal to 2." in error.text_content()
    assert page.get_by_label("Prompt").input_value() == "Say: {text}"  # what was typed is kept
    page.screenshot(path=_shot("console-field-error"), full_page=True)
    page.get_by_label("Temperature").fill("0.2")
    page.get_by_role("button", name="Add node").click()
    assert "generative_ai node added at position 2" in page.locator(".flash").text_content()

    page.get_by_role("link", name="extract_text").click()
    page.get_by_role("button", name="Add node").click()

    assert _nodes(console, workflow_id) == [
        ("formatter", {"rules": ["strip", "lowercase"]}),
        ("generative_ai", {"prompt": "Say: {text}", "temperature": 0.2}),
        ("extract_text", {}),
    ]
    # Move the formatter down twice: it now runs last, on the echo provider's rendered prompt.
    page.get_by_role("button", name="Move node 1 down").click()
    page.get_by_role("button", name="Move node 2 down").click()
    assert [t for t, _ in _nodes(console, workflow_id)] == ["generative_ai", "extract_text", "formatter"]

    page.get_by_label("Input text").fill("  HELLO World  ")
    page.get_by_role("button", name="Run now").click()
    assert page.locator("#try-output").text_content() == "say:   hello world"
    assert "Succeeded" in page.locator("#try-result").text_content()
    page.screenshot(path=_shot("console-workflow"), full_page=True)
    assert dialogs == []


def test_upload_a_pdf_and_run_extract_text(page, console, tmp_path):
    workflow_id = _new_workflow(page, console, "Read a PDF")
    page.get_by_role("link", name="extract_text").click()
    page.get_by_role("button", name="Add node").click()
    pdf = tmp_path / "letter.pdf"
    pdf.write_bytes(make_pdf("Dear reader", "Page two"))
    page.get_by_label("Upload a PDF").set_input_files(str(pdf))
    page.get_by_role("button", name="Run now").click()
    output = page.locator("#try-output").text_content()
    assert "Dear reader" in output and "Page two" in output
    # The upload is now among the files a node can name.
    page.get_by_role("link", name="Edit node 1 (extract_text)").click()
    page.get_by_label("PDF file").select_option(label="letter.pdf (2 pages)")
    page.get_by_role("button", name="Save").click()
    assert _nodes(console, workflow_id)[0][1]["file_id"]


def test_set_limits_then_queue_a_run_with_a_key_and_a_priority(page, console):
    workflow_id = _new_workflow(page, console, "Limited")
    page.get_by_label("Most runs of this workflow running at once").fill("0")
    page.get_by_role("button", name="Save limits").click()
    assert "Must be greater than or equal to 1 " in page.locator("#limit-max_concurrent_runs-errors").text_content()
    page.get_by_label("Most runs of this workflow running at once").fill("4")
    page.get_by_label("Most runs of one concurrency key running at once").fill("1")
    page.get_by_label("Most LLM tokens one run may use").fill("20000")
    page.get_by_role("button", name="Save limits").click()
    assert "Limits saved." in page.locator(".flash").text_content()
    assert page.get_by_label("Most runs of one concurrency key running at once").input_value() == "1"
    shown = console.request("GET", f"/workflows/{workflow_id}")[1]
    assert (shown["max_concurrent_runs"], shown["max_concurrent_runs_per_key"], shown["max_tokens_per_run"]) == (
        4,
        1,
        20000,
    )
    page.locator("#limits").screenshot(path=_shot("console-limits"))

    page.get_by_label("Input text").fill("queued")
    page.get_by_label("Concurrency key (optional").fill("customer-42")
    page.get_by_label("Priority (").fill("50")
    page.get_by_role("button", name="Queue").click()
    page.wait_for_url(re.compile(r"/console/runs/[0-9a-f-]{36}$"))
    assert page.locator("#run-priority").text_content() == "50"
    assert page.locator("#run-key").text_content() == "customer-42"


def test_a_stale_edit_from_a_second_tab_is_refused_with_a_reload(browser, console):
    context = browser.new_context()
    try:
        first, second = context.new_page(), context.new_page()
        workflow_id = _new_workflow(first, console, "Two tabs")
        first.get_by_role("link", name="formatter").click()
        first.get_by_role("button", name="Add node").click()
        first.get_by_role("link", name="Edit node 1 (formatter)").click()
        second.goto(first.url)
        second.get_by_label("Rule 1").select_option("lowercase")
        second.get_by_role("button", name="Save").click()
        first.get_by_label("Rule 1").select_option("strip")
        first.get_by_role("button", name="Save").click()
        notice = first.get_by_role("alert")
        assert "changed in another tab" in notice.text_content()
        assert _nodes(console, workflow_id) == [("formatter", {"rules": ["lowercase"]})]  # never overwritten
        first.screenshot(path=_shot("console-stale-edit"), full_page=True)
        first.get_by_role("link", name="Reload the current version").click()
        assert first.get_by_label("Rule 1").input_value() == "lowercase"
    finally:
        context.close()


def test_delete_asks_first_then_deletes(page, console):
    workflow_id = _new_workflow(page, console, "Short-lived")
    page.get_by_role("link", name="Delete this workflow…").click()
    assert "cannot be undone" in page.locator("main").text_content()
    page.get_by_role("link", name="Keep it").click()
    assert console.request("GET", f"/workflows/{workflow_id}")[0] == 200
    page.get_by_role("link", name="Delete this workflow…").click()
    page.get_by_role("button", name="Delete the workflow").click()
    assert "deleted" in page.locator(".flash").text_content()
    assert console.request("GET", f"/workflows/{workflow_id}")[0] == 404


def test_times_show_in_the_browsers_time_zone_with_the_iso_value_on_hover(browser, console):
    context = browser.new_context(timezone_id="Asia/Tokyo", locale="en-US", viewport={"width": 400, "height": 800})
    try:
        page = context.new_page()
        _new_workflow(page, console, "Seen from Tokyo, on a narrow window")
        shown = page.locator("p.meta time").first
        iso = shown.get_attribute("title")
        local = datetime.fromisoformat(iso).astimezone(ZoneInfo("Asia/Tokyo"))
        hour = local.hour % 12 or 12
        expected = f"{local.month}/{local.day}/{local.year}, {hour}:{local:%M:%S} {'AM' if local.hour < 12 else 'PM'}"
        assert shown.text_content() == expected
        # Narrow: nothing wider than the window (no sideways scrolling).
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
        page.screenshot(path=_shot("console-narrow"), full_page=True)
    finally:
        context.close()


def test_a_forged_form_from_another_site_is_refused(page, console):
    # A page elsewhere posting to the console (no CSRF token, the visitor's cookies would go along).
    page.set_content(
        f'<form method="post" action="{console.base}/console/workflows"><input name="name" value="forged">'
        '<button type="submit">Win a prize</button></form>'
    )
    page.get_by_role("button", name="Win a prize").click()
    page.wait_for_load_state()
    assert "Form refused" in page.locator("h1").text_content()
    names = [w["name"] for w in console.request("GET", "/workflows")[1]["workflows"]]
    assert "forged" not in names


@pytest.mark.parametrize("hostile", XSS)
def test_hostile_text_is_shown_as_text(page, console, dialogs, hostile):
    _new_workflow(page, console, hostile)
    assert page.get_by_role("heading", level=1).text_content() == hostile
    page.get_by_role("link", name="generative_ai").click()
    page.get_by_label("Prompt").fill(hostile + " {text}")
    page.get_by_role("button", name="Add node").click()
    page.get_by_label("Input text").fill(hostile)
    page.get_by_role("button", name="Run now").click()
    assert page.locator("#try-output").text_content() == f"{hostile} {hostile}"
    page.goto(f"{console.base}/console/")
    assert page.get_by_role("link", name=hostile).first.is_visible()
    assert page.locator("img").count() == 0
    assert dialogs == []


@pytest.fixture(scope="module")
def secured_console(module_database_url, tmp_path_factory):
    server = _start(module_database_url, tmp_path_factory, API_TOKENS=TOKEN)
    yield server
    server.stop()


def test_with_api_tokens_sign_in_once_then_out(page, secured_console):
    page.goto(f"{secured_console.base}/console/")
    assert page.get_by_role("heading", level=1).text_content() == "Sign in"
    page.get_by_label("API token").fill("not-the-token-" + "x" * 20)
    page.get_by_role("button", name="Sign in").click()
    assert "not one of this server" in page.locator("#token-errors").text_content()
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("heading", level=1).text_content() == "Workflows"
    cookie = next(c for c in page.context.cookies() if c["name"] == "flowline_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/console"
    assert TOKEN not in cookie["value"]
    # The cookie is the console's only: the JSON API still wants the bearer token.
    assert page.request.get(f"{secured_console.base}/workflows").status == 401
    page.get_by_role("button", name="Sign out").click()
    assert page.get_by_role("heading", level=1).text_content() == "Sign in"
    page.goto(f"{secured_console.base}/console/")
    assert page.get_by_role("heading", level=1).text_content() == "Sign in"


def _shot(name):
    from tests.conftest import SCREENSHOTS

    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS / f"{name}.png"
