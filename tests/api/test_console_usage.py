"""The console's usage pages (issue #20): a run's usage and cost, the Models page (budgets, prices, this minute's
use; set and removed through the API's operations, with CSRF), and the last 30 days by day and by workflow."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.history import make_partitions_back
from tests.support.usage import add_llm_run, save_llm_steps

SECRET = "s" * 40


@pytest.fixture
def console(make_app):
    """A test client of an app with SECRET_KEY set and CSRF checked, as served."""
    return make_app(SECRET_KEY=SECRET).test_client()


def _post(client, path, data, page="/console/models"):
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get(page).text)[1]
    return client.post(path, data={"csrf_token": token, **data})


def _ago(**delta):
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


def test_a_runs_page_shows_each_steps_usage_and_the_runs_total(console, client, workflow, sql):
    assert (
        client.put(
            "/llm-models/gpt-4o", json={"usd_per_million_input_tokens": 2.5, "usd_per_million_output_tokens": 10}
        ).status_code
        == 200
    )
    run_id = add_llm_run(
        sql,
        workflow(name="priced"),
        _ago(minutes=5),
        [[("gpt-4o", 1200, 300, _ago(minutes=6))], [("gpt-4o", 1000, 100, _ago(minutes=5))]],
    )
    page = console.get(f"/console/runs/{run_id}").text
    assert re.search(r'id="run-usage">2,200 prompt \+ 400 completion tokens', page)
    assert 'id="run-cost">$0.009500<' in page  # (2,200 * 2.5 + 400 * 10) / 1e6
    assert page.count('class="meta step-usage"') == 2
    assert "Model <code>gpt-4o</code> · 1,200 prompt + 300 completion tokens · cost $0.006000" in page

    unpriced = add_llm_run(sql, workflow(name="unpriced"), _ago(minutes=1), [[("no-price", 5, 1, _ago(minutes=1))]])
    page = console.get(f"/console/runs/{unpriced}").text
    assert 'id="run-cost">unknown (a step' in page and "cost unknown</p>" in page


def test_the_models_page_lists_budgets_and_this_minutes_use_and_sets_and_removes_them(console, client, workflow, sql):
    assert client.put("/llm-models/openai/gpt-4o", json={"requests_per_minute": 60}).status_code == 200
    flow = workflow(name="busy")
    add_llm_run(
        sql,
        flow,
        _ago(seconds=5),
        [[("openai/gpt-4o", 100, 20, _ago(seconds=10)), ("openai/gpt-4o", 7, 3, _ago(seconds=5))]],
    )
    add_llm_run(sql, flow, _ago(seconds=5), [[("local-llama", 1, 1, _ago(seconds=20))]])
    add_llm_run(sql, flow, _ago(minutes=3), [[("openai/gpt-4o", 999, 999, _ago(minutes=3))]])  # not this minute
    page = console.get("/console/models").text
    row = page.split("<code>openai/gpt-4o</code>", 1)[1].split("</tr>", 1)[0]
    assert '"Requests per minute">60<' in row and '"Tokens per minute">no limit<' in row
    assert "2 requests, 130 tokens" in row
    local = page.split("<code>local-llama</code>", 1)[1].split("</tr>", 1)[0]
    assert "no budget, no price" in local and "1 request, 2 tokens" in local and "Remove" not in local

    # The form sets a budget and prices (an empty field: none); the API then answers them.
    saved = _post(
        console,
        "/console/models",
        {
            "model": "local-llama",
            "requests_per_minute": "",
            "tokens_per_minute": "40000",
            "usd_per_million_input_tokens": "0.15",
            "usd_per_million_output_tokens": "0.6",
        },
    )
    assert saved.status_code == 302, saved.text
    stored = client.get("/llm-models/local-llama").json
    assert (stored["requests_per_minute"], stored["tokens_per_minute"], stored["usd_per_million_output_tokens"]) == (
        None,
        40000,
        0.6,
    )
    assert "Saved the budget and prices of local-llama." in console.get("/console/models").text
    # Edit fills the form with the model's values.
    edit = console.get("/console/models?model=local-llama").text
    assert 'id="tokens_per_minute" name="tokens_per_minute" inputmode="decimal" value="40000"' in edit

    # Refused values are shown beside their fields, as the API words them; nothing is stored.
    refused = _post(
        console,
        "/console/models",
        {"model": "new-model", "requests_per_minute": "-3", "usd_per_million_input_tokens": "cheap"},
    )
    assert refused.status_code == 422
    assert re.search(r'id="requests_per_minute-errors"><li>Must be greater than or equal to 1', refused.text)
    assert 'id="usd_per_million_input_tokens-errors"><li>Not a valid number.' in refused.text
    assert 'value="-3"' in refused.text, "what was typed is kept"
    nothing = _post(console, "/console/models", {"model": "new-model"})
    assert nothing.status_code == 422 and 'id="budget-errors"><li>Give requests_per_minute' in nothing.text
    assert client.get("/llm-models/new-model").status_code == 404

    # Without its CSRF token a form changes nothing.
    forged = console.post("/console/models/openai/gpt-4o/delete", data={"csrf_token": "forged"})
    assert forged.status_code == 400 and client.get("/llm-models/openai/gpt-4o").status_code == 200
    removed = _post(console, "/console/models/openai/gpt-4o/delete", {})
    assert removed.status_code == 302 and client.get("/llm-models/openai/gpt-4o").status_code == 404
    assert "Removed the budget and prices of openai/gpt-4o" in console.get("/console/models").text


def test_the_usage_page_shows_the_last_30_days_by_day_and_by_workflow(console, client, workflow, sql):
    named = workflow(name="<b>Invoices</b>")
    gone = workflow(name="gone")
    add_llm_run(sql, named, _ago(days=2), [[("m", 1000, 200, _ago(days=2))]])
    add_llm_run(sql, named, _ago(hours=1), [[("m", 10, 2, _ago(hours=1))]])
    add_llm_run(sql, gone, _ago(days=40), [[("m", 5, 5, _ago(days=40))]])  # outside the 30 days
    add_llm_run(sql, gone, _ago(days=3), [[("m", 3, 3, _ago(days=3))]])
    assert client.delete(f"/workflows/{gone}").status_code == 204
    page = console.get("/console/usage").text
    assert 'id="total-prompt">1,013<' in page and 'id="total-completion">205<' in page
    assert 'id="total-cost">unknown<' in page  # model m has no price
    assert "&lt;b&gt;Invoices&lt;/b&gt;" in page and "<b>Invoices" not in page
    assert f"deleted workflow <code>{gone}</code>" in page
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    assert (
        f'<td data-label="Day">{two_days_ago}</td><td data-label="Runs">1</td><td data-label="Prompt tokens">1,000</td>'
        in page
    )
    # The chart: one bar per day of the window, each with its words.
    chart = page.split('<svg class="usage-chart"', 1)[1].split("</svg>", 1)[0]
    assert chart.count('<g class="usage-bar">') == 31
    assert f"<title>{two_days_ago}: 1,000 prompt + 200 completion tokens, unknown, 1 run</title>" in chart
    assert "style=" not in page and "<script>" not in page.replace('<script src="', "")


def test_the_usage_queries_read_their_indexes_never_a_seq_scan(sql, workflow):
    """At 20,000 LLM steps over 51 days, the Models page's minute reads run_steps through its partial index, and /usage the
    roll-up through its primary key."""
    from flowline.data.sql import QUERIES

    flow = workflow(name="bulk")
    make_partitions_back(sql, 52)
    sql.execute(
        "INSERT INTO runs (id, workflow_id, mode, status, attempt, created_at, finished_at) "
        "SELECT gen_random_uuid(), %s, 'async', 'Succeeded', 1, now() - make_interval(mins => g * 37), "
        "       now() - make_interval(mins => g * 37) FROM generate_series(1, 2000) AS g",
        (flow,),
    )
    sql.execute(
        "INSERT INTO run_steps (run_id, run_created_at, attempt, position, node_type, config_snapshot, status, "
        "                       finished_at, model, prompt_tokens, completion_tokens) "
        "SELECT r.id, r.created_at, 1, p, 'generative_ai', '{}', 'Succeeded', r.finished_at, 'm' || p % 3, 10, 2 "
        "FROM runs AS r, generate_series(0, 9) AS p"
    )
    sql.execute("ANALYZE run_steps")
    sql.execute("ANALYZE llm_usage_hourly")
    now = datetime.now(UTC)
    # run_steps is partitioned (migration 0022): each partition's index is a child of run_steps_llm_finished_idx.
    children = sql.execute(
        "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'run_steps_llm_finished_idx'::regclass"
    ).fetchall()
    # A partition holding no step may be read whole: it is empty.
    filled = [
        row["relname"]
        for row in sql.execute(
            "SELECT relname FROM pg_class WHERE relispartition AND relname LIKE 'run\\_steps\\_p%%' AND reltuples > 0"
        ).fetchall()
    ]
    assert filled
    for name, index, params in [
        ("list_llm_use_last_minute", "run_steps_llm_finished_idx", {}),
        ("sum_llm_usage_by_day", "llm_usage_hourly_pkey", {"since": now - timedelta(hours=3), "until": now}),
        (
            "sum_llm_usage_by_day_and_workflow",
            "llm_usage_hourly_pkey",
            {"since": now - timedelta(hours=3), "until": now},
        ),
    ]:
        plan = sql.execute("EXPLAIN (FORMAT JSON) " + QUERIES[name].text, params).fetchone()["QUERY PLAN"][0]
        text = repr(plan)
        assert index in text or any(row["relname"] in text for row in children), (name, plan)
        tables = "|".join(["run_steps", "llm_usage_hourly", *filled])
        assert not re.search(rf"'Seq Scan'[^}}]*'Relation Name': '({tables})'", text), (name, plan)
    assert save_llm_steps  # the bulk rows above went through the same triggers
    assert sql.execute("SELECT sum(steps) AS n FROM llm_usage_hourly").fetchone()["n"] == 20_000
