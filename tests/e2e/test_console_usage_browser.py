"""The console's usage pages in a real Chromium, against one real gunicorn for the whole module: a model's budget is
set, edited and removed from the Models page; the Usage page draws the last 30 days; a run's page shows its cost;
all of them read on a 400 px window without scrolling sideways. Each test leaves screenshots in
tests/screenshots/."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from playwright.sync_api import expect
from psycopg.rows import dict_row

from tests.support import ROOT, Server
from tests.support.usage import add_llm_run

SECRET = "s" * 40
SCREENSHOTS = ROOT / "tests" / "screenshots"


@pytest.fixture(scope="module")
def console_server(module_database_url, tmp_path_factory):
    server = Server(module_database_url, tmp_path_factory.mktemp("usage-server"), {"SECRET_KEY": SECRET})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def history(module_database_url, console_server):
    """Two workflows whose LLM steps finished over the last days, one of them a minute ago; returns a run id."""
    ago = lambda **delta: (datetime.now(UTC) - timedelta(**delta)).isoformat()  # noqa: E731
    status, priced = console_server.request(
        "PUT", "/llm-models/openai/gpt-4o-mini", {"usd_per_million_input_tokens": 0.15, "tokens_per_minute": 200000}
    )[:2]
    assert status == 200, priced
    ids = [
        console_server.request("POST", "/workflows", {"name": name})[1]["id"]
        for name in ("Invoices from every supplier we have", "Support tickets")
    ]
    with psycopg.connect(module_database_url, autocommit=True, row_factory=dict_row) as sql:
        for day in range(12):
            add_llm_run(
                sql,
                ids[day % 2],
                ago(days=day, minutes=1),
                [[("openai/gpt-4o-mini", 900 * (day + 1), 300, ago(days=day, minutes=1))]],
            )
        return add_llm_run(
            sql,
            ids[0],
            ago(seconds=20),
            [
                [
                    ("openai/gpt-4o-mini", 1200, 300, ago(seconds=30)),
                    ("local/llama-3.1-8b-instruct", 50, 7, ago(seconds=20)),
                ]
            ],
        )


def _shot(page, name):
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"usage-{name}.png", full_page=True)


def test_a_budget_is_set_edited_and_removed_from_the_models_page(page, console_server, history):
    page.goto(f"{console_server.base}/console/")
    page.get_by_role("link", name="Models", exact=True).click()
    expect(page.get_by_role("heading", name="Models", exact=True)).to_be_visible()
    row = page.locator("table.models tr", has_text="openai/gpt-4o-mini")
    expect(row).to_contain_text("1 request, 1,500 tokens")
    unlisted = page.locator("table.models tr", has_text="local/llama-3.1-8b-instruct")
    expect(unlisted).to_contain_text("no budget, no price")
    _shot(page, "models")

    unlisted.get_by_role("link", name="Set a budget").click()
    expect(page.locator("#model")).to_have_value("local/llama-3.1-8b-instruct")
    page.locator("#requests_per_minute").fill("0")
    page.locator("#save-budget").click()
    expect(page.locator("#requests_per_minute-errors")).to_contain_text("greater than or equal to 1")
    page.locator("#requests_per_minute").fill("30")
    page.locator("#usd_per_million_output_tokens").fill("0.2")
    page.locator("#save-budget").click()
    expect(page.get_by_role("status")).to_contain_text("Saved the budget and prices of local/llama-3.1-8b-instruct.")
    assert console_server.request("GET", "/llm-models/local/llama-3.1-8b-instruct")[1]["requests_per_minute"] == 30

    row = page.locator("table.models tr", has_text="local/llama-3.1-8b-instruct")
    row.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status")).to_contain_text("Removed the budget and prices of local/llama-3.1-8b-instruct")
    assert console_server.request("GET", "/llm-models/local/llama-3.1-8b-instruct")[0] == 404


def test_usage_a_runs_cost_and_the_models_read_on_a_narrow_window(page, console_server, history):
    page.goto(f"{console_server.base}/console/usage")
    expect(page.get_by_role("heading", name="Usage, last 30 days")).to_be_visible()
    expect(page.locator("svg.usage-chart g.usage-bar")).to_have_count(31)
    # Neither cost is known (a model without a price): the most tokens first.
    expect(page.locator("table.usage-workflows tbody tr").nth(0)).to_contain_text("Support tickets")
    expect(page.locator("table.usage-workflows tbody tr").nth(1)).to_contain_text("Invoices from every supplier")
    _shot(page, "usage")
    page.set_viewport_size({"width": 400, "height": 900})
    for path in ("/console/usage", "/console/models", f"/console/runs/{history}"):
        page.goto(f"{console_server.base}{path}")
        # Nothing but a picture (which scrolls in its own box) is wider than the window.
        assert page.evaluate("document.documentElement.scrollWidth") <= 400, path
    expect(page.locator("#run-usage")).to_contain_text("1,250 prompt + 307 completion tokens")
    expect(page.locator("#run-cost")).to_contain_text("unknown")
    expect(page.locator("p.step-usage").first).to_contain_text("openai/gpt-4o-mini")
    _shot(page, "run-narrow")
    page.goto(f"{console_server.base}/console/models")
    _shot(page, "models-narrow")
