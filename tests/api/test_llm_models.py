"""The LLM models resource: each model's per-minute budget and prices (PUT replaces, GET, list, DELETE), names
with a slash, and bad input refused naming the field with nothing stored."""

import pytest

GPT = "openai/gpt-4o"


def test_a_model_is_put_read_listed_replaced_and_deleted(client):
    put = client.put(f"/llm-models/{GPT}", json={"requests_per_minute": 60, "usd_per_million_input_tokens": 2.5})
    assert put.status_code == 200, put.json
    assert {k: v for k, v in put.json.items() if k not in ("created_at", "updated_at")} == {
        "model": GPT,
        "requests_per_minute": 60,
        "tokens_per_minute": None,
        "usd_per_million_input_tokens": 2.5,
        "usd_per_million_output_tokens": None,
    }
    assert client.get(f"/llm-models/{GPT}").json == put.json
    client.put("/llm-models/gpt-4o-mini", json={"tokens_per_minute": 1000})
    assert [m["model"] for m in client.get("/llm-models").json["llm_models"]] == ["gpt-4o-mini", GPT]

    # PUT replaces: a key left out is null from then on.
    replaced = client.put(f"/llm-models/{GPT}", json={"tokens_per_minute": 90_000})
    assert (replaced.json["requests_per_minute"], replaced.json["tokens_per_minute"]) == (None, 90_000)
    assert replaced.json["usd_per_million_input_tokens"] is None
    assert replaced.json["created_at"] == put.json["created_at"]

    assert client.delete(f"/llm-models/{GPT}").status_code == 204
    assert client.get(f"/llm-models/{GPT}").status_code == 404
    assert client.delete(f"/llm-models/{GPT}").status_code == 404
    assert [m["model"] for m in client.get("/llm-models").json["llm_models"]] == ["gpt-4o-mini"]


def test_a_model_without_a_row_is_not_found(client):
    response = client.get("/llm-models/never-set")
    assert response.status_code == 404
    assert "no budget" in response.json["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"requests_per_minute": -5}, "requests_per_minute"),
        ({"tokens_per_minute": "1000"}, "tokens_per_minute"),
        ({"tokens_per_minute": 1.5}, "tokens_per_minute"),
        ({"tokens_per_minute": 10**12}, "tokens_per_minute"),
        ({"usd_per_million_input_tokens": 0}, "usd_per_million_input_tokens"),
        ({"usd_per_million_output_tokens": -1}, "usd_per_million_output_tokens"),
        ({"usd_per_million_output_tokens": "cheap"}, "usd_per_million_output_tokens"),
        ({"usd_per_million_output_tokens": True}, "usd_per_million_output_tokens"),
        ({"requests_per_minute": 10, "burst": 5}, "burst"),
        ({}, "_schema"),
    ],
)
def test_bad_values_are_refused_naming_the_field_and_nothing_is_stored(client, body, field):
    client.put("/llm-models/kept", json={"requests_per_minute": 7})
    for model in ("kept", "new-one"):
        response = client.put(f"/llm-models/{model}", json=body)
        assert response.status_code == 422, response.json
        assert field in response.json["errors"], response.json
    assert client.get("/llm-models/kept").json["requests_per_minute"] == 7
    assert client.get("/llm-models/new-one").status_code == 404


def test_a_name_longer_than_a_node_takes_is_refused(client):
    response = client.put(f"/llm-models/{'m' * 201}", json={"requests_per_minute": 1})
    assert response.status_code == 422
    assert "model" in response.json["errors"]


def test_null_clears_a_limit_and_a_body_that_is_not_json_is_refused(client):
    assert client.put("/llm-models/m", json={"requests_per_minute": None}).json["requests_per_minute"] is None
    response = client.put("/llm-models/m", data="rpm=5", content_type="text/plain")
    assert response.status_code == 415


def test_a_name_with_a_line_break_is_refused_or_not_found_never_routed_elsewhere(client):
    put = client.put("/llm-models/gpt%0D%0Ainjected", json={"requests_per_minute": 1})
    assert put.status_code == 422 and "model" in put.json["errors"]
    assert client.get("/llm-models/gpt%0Ainjected").status_code == 404
    assert client.delete("/llm-models/gpt%0Ainjected").status_code == 404
    # A doubled slash is part of the name, not a redirect.
    assert client.put("/llm-models/a//b", json={"requests_per_minute": 1}).json["model"] == "a//b"


def test_a_limit_past_what_postgresql_holds_is_refused(client):
    response = client.post("/workflows", json={"name": "w", "max_concurrent_runs_per_key": 2**31})
    assert response.status_code == 422 and "max_concurrent_runs_per_key" in response.json["errors"]


def test_a_workflows_max_tokens_per_run_is_set_read_changed_and_cleared(client):
    created = client.post("/workflows", json={"name": "budgeted", "max_tokens_per_run": 5000})
    assert created.status_code == 200 and created.json["max_tokens_per_run"] == 5000
    workflow_id = created.json["id"]
    assert client.get(f"/workflows/{workflow_id}").json["max_tokens_per_run"] == 5000
    # A PATCH of another field keeps it; null clears it.
    assert client.patch(f"/workflows/{workflow_id}", json={"name": "renamed"}).json["max_tokens_per_run"] == 5000
    assert (
        client.patch(f"/workflows/{workflow_id}", json={"max_tokens_per_run": None}).json["max_tokens_per_run"] is None
    )
    for bad in (0, -1, "5000", 2**31):
        response = client.patch(f"/workflows/{workflow_id}", json={"max_tokens_per_run": bad})
        assert response.status_code == 422 and "max_tokens_per_run" in response.json["errors"]
    assert client.get(f"/workflows/{workflow_id}").json["max_tokens_per_run"] is None
