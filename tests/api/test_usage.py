"""What every run cost (issue #20): a run's usage summed over its attempts, in GET /runs/{id} and every list;
GET /usage by day, workflow and model, read from the roll-up that prune-runs does not shrink; the metrics."""

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from flowline.tools import prune as retention
from tests.support.fake_llm import FakeLLM, completion
from tests.support.usage import add_llm_run, save_llm_steps

PRICED = {"usd_per_million_input_tokens": 2.5, "usd_per_million_output_tokens": 10}


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


@pytest.fixture
def llm_client(make_app, fake):
    """A test client whose app calls ``fake`` through the openai provider."""
    return make_app(LLM_API_KEY="sk-test", LLM_BASE_URL=fake.url, LLM_MAX_RETRIES=0).test_client()


def _llm_node(model):
    return ("generative_ai", {"prompt": "Summarise: {text}", "model": model, "max_tokens": 50})


def test_a_runs_usage_is_what_the_provider_reported_over_every_attempt_in_every_list(llm_client, fake, workflow, sql):
    client = llm_client
    assert client.put("/llm-models/gpt-4o-mini", json=PRICED).status_code == 200
    assert client.put("/llm-models/summary-model", json=PRICED).status_code == 200
    workflow_id = workflow([_llm_node("gpt-4o-mini"), _llm_node("summary-model"), ("formatter", {})])
    fake.reply(200, completion("first", prompt_tokens=1200, completion_tokens=300))
    fake.reply(200, completion("second", prompt_tokens=80, completion_tokens=20))
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "numbers"})
    assert response.status_code == 200, response.json
    run_id = response.json["run_id"]
    assert len(fake.requests) == 2
    # A second attempt of the same run (saved as the runner saves one) called gpt-4o-mini again, two days ago.
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    save_llm_steps(sql, run_id, 2, [("gpt-4o-mini", 1000, 100, two_days_ago.isoformat())])
    expected = {
        "prompt_tokens": 1200 + 80 + 1000,
        "completion_tokens": 300 + 20 + 100,
        "cost_usd": pytest.approx(((1200 + 80 + 1000) * 2.5 + (300 + 20 + 100) * 10) / 1e6),
    }
    detail = client.get(f"/runs/{run_id}").json
    assert detail["run"]["usage"] == expected
    assert [s["usage"] and s["usage"]["model"] for s in detail["steps"]] == [
        "gpt-4o-mini",
        "summary-model",
        None,
        "gpt-4o-mini",
    ]
    # Every list carries the same usage on the run's row.
    for path in (
        "/runs",
        f"/runs?workflow_id={workflow_id}",
        f"/runs?status=Succeeded&workflow_id={workflow_id}",
        f"/workflows/{workflow_id}/runs",
        f"/workflows/{workflow_id}/runs?limit=5",
    ):
        rows = {row["id"]: row for row in client.get(path).json["runs"]}
        assert rows[run_id]["usage"] == expected, path

    # A run without an LLM step: zeros, and a cost of 0 (nothing to price).
    plain = workflow([("formatter", {})], name="plain")
    plain_run = client.post(f"/workflows/{plain}/run", json={"input_text": "x"}).json["run_id"]
    assert client.get(f"/runs/{plain_run}").json["run"]["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0,
    }
    # A model without a price: the tokens add up, the cost is not known.
    unpriced = workflow([_llm_node("gpt-4o-mini"), _llm_node("no-price")], name="unpriced")
    fake.reply(200, completion("a", prompt_tokens=10, completion_tokens=1))
    fake.reply(200, completion("b", prompt_tokens=20, completion_tokens=2))
    unpriced_run = client.post(f"/workflows/{unpriced}/run", json={"input_text": "x"}).json["run_id"]
    assert client.get(f"/runs?workflow_id={unpriced}").json["runs"][0]["usage"] == {
        "prompt_tokens": 30,
        "completion_tokens": 3,
        "cost_usd": None,
    }

    # /usage sums the same steps over the last 30 days: by workflow (a run counted once), by model (the runs that
    # called it), by day.
    by_workflow = {r["key"]: r for r in client.get("/usage?group_by=workflow").json["usage"]}
    assert by_workflow[workflow_id] == {"key": workflow_id, "runs": 1, **expected}
    assert by_workflow[unpriced] == {
        "key": unpriced,
        "runs": 1,
        "prompt_tokens": 30,
        "completion_tokens": 3,
        "cost_usd": None,
    }
    assert plain not in by_workflow, "a workflow without LLM steps has no usage row"
    by_model = {r["key"]: r for r in client.get("/usage?group_by=model").json["usage"]}
    assert by_model["gpt-4o-mini"] == {
        "key": "gpt-4o-mini",
        "runs": 2,
        "prompt_tokens": 1200 + 1000 + 10,
        "completion_tokens": 300 + 100 + 1,
        "cost_usd": pytest.approx(((1200 + 1000 + 10) * 2.5 + (300 + 100 + 1) * 10) / 1e6),
    }
    assert by_model["no-price"]["cost_usd"] is None
    by_day = client.get("/usage").json["usage"]
    assert by_day[0]["key"] == two_days_ago.date().isoformat() and by_day[0]["prompt_tokens"] == 1000
    assert sum(r["prompt_tokens"] for r in by_day) == 1200 + 80 + 1000 + 30
    assert sum(r["runs"] for r in by_day) == 2, "each run counts once, on the day of its first LLM step"
    assert unpriced_run and client.get("/usage?since=2026-11-01T00:00:00Z&until=2026-11-02T00:00:00Z").json == {
        "usage": []
    }

    # The metrics: tokens by model and kind, and cost, counted over every step.
    text = client.get("/metrics").get_data(as_text=True)
    assert 'flowline_llm_tokens_total{kind="prompt",model="gpt-4o-mini"} 2210.0' in text
    assert 'flowline_llm_tokens_total{kind="completion",model="no-price"} 2.0' in text
    cost = re.search(r'flowline_llm_cost_usd_total\{model="summary-model"\} (\S+)', text)
    assert cost and float(cost[1]) == pytest.approx((80 * 2.5 + 20 * 10) / 1e6)


def test_usage_counts_by_the_hour_within_its_window_and_outlives_pruned_runs(client, workflow, sql):
    first, second = workflow(name="first"), workflow(name="second")
    # Two attempts of one run, a day apart in the middle: one run, on the day of its first LLM step.
    spanning = add_llm_run(
        sql,
        first,
        "2026-10-02T00:30:00Z",
        [[("m-a", 100, 10, "2026-10-01T23:10:00Z")], [("m-a", 200, 20, "2026-10-02T00:20:00Z")]],
    )
    add_llm_run(
        sql,
        second,
        "2026-10-02T09:00:00Z",
        [[("m-a", 1, 1, "2026-10-02T08:59:00Z"), ("m-b", 5, 5, "2026-10-02T08:59:30Z")]],
    )
    add_llm_run(sql, second, "2026-10-03T12:00:00Z", [[("m-b", 7, 7, "2026-10-03T11:00:00Z")]])

    def usage(query):
        response = client.get(f"/usage?{query}")
        assert response.status_code == 200, response.json
        return [(r["key"], r["runs"], r["prompt_tokens"], r["completion_tokens"]) for r in response.json["usage"]]

    whole = "since=2026-10-01T00:00:00Z&until=2026-10-04T00:00:00Z"
    by_day = [("2026-10-01", 1, 100, 10), ("2026-10-02", 1, 206, 26), ("2026-10-03", 1, 7, 7)]
    by_workflow = sorted([(first, 1, 300, 30), (second, 2, 13, 13)])
    by_model = [("m-a", 2, 301, 31), ("m-b", 2, 12, 12)]
    assert usage(whole) == usage(whole + "&group_by=day") == by_day
    assert usage(whole + "&group_by=workflow") == by_workflow
    assert usage(whole + "&group_by=model") == by_model
    # By the hour: a step counts when the hour it finished in overlaps [since, until); offsets are honoured.
    assert usage("since=2026-10-02T00:59:59Z&until=2026-10-02T08:00:00Z") == [("2026-10-02", 0, 200, 20)]
    assert usage("since=2026-10-02T01:00:00Z&until=2026-10-02T08:00:00Z") == []
    assert usage("since=2026-10-02T10:00:00%2B02:00&until=2026-10-02T10:59:00%2B02:00") == [("2026-10-02", 1, 6, 6)]

    # prune-runs deletes the runs, steps and all; what they used stays counted.
    assert sum(totals["runs"] for totals in retention.prune(sql, 3600)[1].values()) == 3
    assert client.get(f"/runs/{spanning}").status_code == 404
    assert sql.execute("SELECT count(*) AS n FROM run_steps").fetchone()["n"] == 0
    assert usage(whole) == by_day
    assert usage(whole + "&group_by=workflow") == by_workflow
    # And so does that of a deleted workflow, under its id.
    assert client.delete(f"/workflows/{first}").status_code == 204
    assert usage(whole + "&group_by=model") == by_model


def test_bad_usage_parameters_are_a_422_naming_the_field(client):
    cases = {
        "group_by=week": "group_by",
        "since=yesterday": "since",
        "since=2026-10-01T00:00:00": "since",  # an instant needs its offset
        "until=2026-13-01T00:00:00Z": "until",
        "since=2026-10-02T00:00:00Z&until=2026-10-01T00:00:00Z": "until",
        "since=2026-10-01T00:00:00Z&until=2026-10-01T00:00:00Z": "until",
        "since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z": "since",
        "sort=key": "sort",
        "until=0001-01-02T00:00:00Z": "until",  # no 30 days before it
    }
    for query, field in cases.items():
        response = client.get(f"/usage?{query}")
        assert response.status_code == 422, query
        assert list(response.json["errors"]) == [field], (query, response.json)
    assert client.get(f"/usage?since=2026-10-01T00:00:00Z&group_by=model&until={uuid.uuid4()}").status_code == 422
