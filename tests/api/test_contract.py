"""The milestone-1 contract (docs/CONTRACT.md): routes, shapes, status codes and error cases."""

import re
import uuid

import pytest

from flowline.api.schemas import RunSchema, StepSchema

ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?[+-]\d{2}:\d{2}$")
# The keys of a Run and a Step the earlier service answered (docs/CONTRACT.md); Flowline adds others.
RUN_KEYS = {"id", "workflow_id", "status", "started_at", "finished_at", "error_message", "final_output"}
STEP_KEYS = {
    "id",
    "run_id",
    "node_id",
    "node_type",
    "status",
    "started_at",
    "finished_at",
    "input_text",
    "output_text",
    "error_message",
}
# Of those, the keys never null: every other one is null when empty.
RUN_KEYS_NEVER_NULL = {"id", "workflow_id", "status"}
STEP_KEYS_NEVER_NULL = {"id", "run_id", "node_type", "status"}
UNKNOWN = str(uuid.uuid4())


@pytest.mark.parametrize(
    "schema, keys, never_null",
    [(RunSchema, RUN_KEYS, RUN_KEYS_NEVER_NULL), (StepSchema, STEP_KEYS, STEP_KEYS_NEVER_NULL)],
    ids=["Run", "Step"],
)
def test_the_response_schemas_promise_every_key_null_when_empty(schema, keys, never_null):
    """The OpenAPI document (and so every answer the API tests check against it: tests/support/contract.py)
    requires each milestone-1 key of a Run and a Step, and lets exactly those that may be empty be null."""
    fields = schema().fields
    assert keys <= {name for name, field in fields.items() if field.required}
    assert {name for name in keys if fields[name].allow_none} == keys - never_null


def test_create_workflow_answers_200_with_id_and_name(client, sql):
    response = client.post("/workflows", json={"name": "Invoice cleanup"})
    assert response.status_code == 200
    body = response.json
    assert body["name"] == "Invoice cleanup"
    uuid.UUID(body["id"])
    assert ISO_WITH_OFFSET.match(body["created_at"])
    stored = sql.execute("SELECT name FROM workflows WHERE id = %s", (body["id"],)).fetchone()
    assert stored == {"name": "Invoice cleanup"}


def test_get_workflow_returns_nodes_in_position_order_with_configs_as_sent(client, workflow):
    configs = [
        ("formatter", {}),
        ("generative_ai", {"prompt": "Summarise: {text}", "model": "gpt-4o-mini", "temperature": 0.2}),
        ("extract_text", {}),
        ("formatter", {"rules": ["strip", "collapse_whitespace", "lowercase"]}),
    ]
    workflow_id = workflow(configs, name="ordered")
    response = client.get(f"/workflows/{workflow_id}")
    assert response.status_code == 200
    body = response.json
    assert body["id"] == workflow_id and body["name"] == "ordered"
    assert [(n["node_type"], n["config"]) for n in body["nodes"]] == configs
    assert all({"id", "node_type", "config"} <= set(n) for n in body["nodes"])
    assert response.headers["ETag"] == f'"{body["version"]}"'


def test_add_node_answers_200_with_message_and_node_id(client, workflow):
    workflow_id = workflow()
    response = client.post(
        f"/workflows/{workflow_id}/nodes", json={"node_type": "generative_ai", "config": {"prompt": "Hi", "model": "m"}}
    )
    assert response.status_code == 200
    assert response.json["message"] == "Node added"
    node_id = response.json["node_id"]
    assert [n["id"] for n in client.get(f"/workflows/{workflow_id}").json["nodes"]] == [node_id]


def test_run_answers_200_with_final_output_and_persists_run_and_steps(client, workflow):
    workflow_id = workflow([("formatter", {"rules": ["strip"]}), ("formatter", {})])
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "  hello world  "})
    assert response.status_code == 200
    assert response.json["final_output"] == "HELLO WORLD"
    run_id = response.json["run_id"]

    detail = client.get(f"/runs/{run_id}")
    assert detail.status_code == 200
    run, steps = detail.json["run"], detail.json["steps"]
    assert set(run) >= RUN_KEYS
    assert run["status"] == "Succeeded" and run["final_output"] == "HELLO WORLD" and run["error_message"] is None
    assert ISO_WITH_OFFSET.match(run["started_at"]) and ISO_WITH_OFFSET.match(run["finished_at"])
    assert [(s["input_text"], s["output_text"], s["status"]) for s in steps] == [
        ("  hello world  ", "hello world", "Succeeded"),
        ("hello world", "HELLO WORLD", "Succeeded"),
    ]
    assert all(set(s) >= STEP_KEYS and s["run_id"] == run_id for s in steps)


def test_run_needs_no_body(client, workflow):
    workflow_id = workflow([("formatter", {})])
    response = client.post(f"/workflows/{workflow_id}/run")
    assert response.status_code == 200
    assert response.json["final_output"] == ""
    also_empty_json = client.post(f"/workflows/{workflow_id}/run", data="", content_type="application/json")
    assert also_empty_json.status_code == 200


def test_runs_are_listed_newest_first_with_every_key(client, workflow):
    workflow_id = workflow([("formatter", {})])
    run_ids = [
        client.post(f"/workflows/{workflow_id}/run", json={"input_text": str(i)}).json["run_id"] for i in range(3)
    ]
    response = client.get(f"/workflows/{workflow_id}/runs")
    assert response.status_code == 200
    runs = response.json["runs"]
    assert [r["id"] for r in runs] == run_ids[::-1]
    assert all(set(r) >= RUN_KEYS for r in runs)
    assert client.get(f"/workflows/{workflow()}/runs").json == {"runs": []}


def test_every_run_and_step_key_is_present_even_when_empty(client, failing_workflow):
    workflow_id, _ = failing_workflow(after=[("formatter", {})])
    run_id = client.post(f"/workflows/{workflow_id}/run").json["run_id"]
    body = client.get(f"/runs/{run_id}").json
    assert body["run"]["final_output"] is None
    assert set(body["run"]) >= RUN_KEYS
    (step,) = body["steps"]
    assert step["output_text"] is None and set(step) >= STEP_KEYS


@pytest.mark.parametrize(
    "method, path, detail",
    [
        ("get", "/workflows/{id}", "Workflow not found"),
        ("post", "/workflows/{id}/nodes", "Workflow not found"),
        ("post", "/workflows/{id}/run", "Workflow not found"),
        ("get", "/workflows/{id}/runs", "Workflow not found"),
        ("get", "/runs/{id}", "Run not found"),
    ],
)
# UNKNOWN's id is a fixed name: pytest-xdist's workers must collect the same test ids.
@pytest.mark.parametrize(
    "unknown_id",
    [UNKNOWN, "not-a-uuid", "1", "00000000-0000-0000-0000-00000000000g"],
    ids=lambda value: "unknown-uuid" if value == UNKNOWN else None,
)
def test_unknown_ids_are_404_without_internal_details(client, method, path, detail, unknown_id):
    body = {"node_type": "formatter", "config": {}} if path.endswith("/nodes") else None
    response = getattr(client, method)(path.format(id=unknown_id), json=body)
    assert response.status_code == 404
    assert response.json == {"detail": detail}


@pytest.mark.parametrize(
    "payload, errors",
    [
        ({}, {"node_type": ["Missing data for required field."], "config": ["Missing data for required field."]}),
        (
            {"node_type": "rocket", "config": {}},
            {"node_type": ["Must be one of: extract_text, generative_ai, formatter."]},
        ),
        ({"node_type": "formatter"}, {"config": ["Missing data for required field."]}),
        ({"node_type": "formatter", "config": []}, {"config": ["Not a valid mapping type."]}),
        (
            {"node_type": "formatter", "config": {"rules": ["shout"]}},
            {
                "config": {
                    "rules": {
                        "0": [
                            "Must be one of: uppercase, lowercase, full_to_half, half_to_full, normalize_width, "
                            "strip, collapse_whitespace, nfkc."
                        ]
                    }
                }
            },
        ),
        (
            {"node_type": "generative_ai", "config": {"prompt": "x" * 4001, "model": "m"}},
            {"config": {"prompt": ["Length must be between 1 and 4000."]}},
        ),
        (
            {"node_type": "generative_ai", "config": {"prompt": "p", "model": " "}},
            {"config": {"model": ["Must not be blank."]}},
        ),
        (
            {"node_type": "generative_ai", "config": {"prompt": "p", "model": "m", "temperature": 2.5}},
            {"config": {"temperature": ["Must be greater than or equal to 0 and less than or equal to 2."]}},
        ),
        (
            {"node_type": "generative_ai", "config": {"prompt": "p", "model": "m", "temperature": "0.5"}},
            {"config": {"temperature": ["Not a valid number."]}},
        ),
        (
            {"node_type": "generative_ai", "config": {"prompt": "p", "model": "m", "max_tokens": 0}},
            {"config": {"max_tokens": ["Must be greater than or equal to 1 and less than or equal to 4096."]}},
        ),
        (
            {"node_type": "generative_ai", "config": {"prompt": "p", "model": "m", "max_tokens": 1.5}},
            {"config": {"max_tokens": ["Not a valid integer."]}},
        ),
        (
            {"node_type": "generative_ai", "config": {"prompt": "p", "model": "m", "top_p": -0.1}},
            {"config": {"top_p": ["Must be greater than or equal to 0 and less than or equal to 1."]}},
        ),
        ({"node_type": "extract_text", "config": {"file_id": "abc"}}, {"config": {"file_id": ["Not a valid UUID."]}}),
        ({"node_type": "formatter", "config": {}, "position": 3}, {"position": ["Unknown field."]}),
    ],
)
def test_invalid_node_payloads_are_422_naming_the_field(client, workflow, payload, errors):
    workflow_id = workflow()
    response = client.post(f"/workflows/{workflow_id}/nodes", json=payload)
    assert response.status_code == 422
    assert response.json["errors"] == {k: v for k, v in errors.items()}
    assert isinstance(response.json["detail"], str)
    assert client.get(f"/workflows/{workflow_id}").json["nodes"] == []


@pytest.mark.parametrize(
    "payload, errors",
    [
        ({"node_type": "formatter", "config": {"rule": ["uppercase"]}}, {"config": {"rule": ["Unknown field."]}}),
    ],
)
def test_unknown_config_keys_are_422_naming_the_field_for_a_strict_client(client, workflow, payload, errors):
    """Before, every client got this 422; now a client asks for it with Prefer: handling=strict."""
    workflow_id = workflow()
    response = client.post(f"/workflows/{workflow_id}/nodes", json=payload, headers={"Prefer": "handling=strict"})
    assert response.status_code == 422
    assert response.json["errors"] == {k: v for k, v in errors.items()}
    assert isinstance(response.json["detail"], str)
    assert client.get(f"/workflows/{workflow_id}").json["nodes"] == []


def test_legacy_configs_stay_valid(client, workflow):
    workflow_id = workflow([("extract_text", {}), ("formatter", {}), ("generative_ai", {"prompt": "p", "model": "m"})])
    assert len(client.get(f"/workflows/{workflow_id}").json["nodes"]) == 3


@pytest.mark.parametrize(
    "payload, field, message",
    [
        ({}, "name", "Missing data for required field."),
        ({"name": ""}, "name", "Length must be between 1 and 200."),
        ({"name": "   "}, "name", "Must not be blank."),
        ({"name": "x" * 201}, "name", "Length must be between 1 and 200."),
        ({"name": 42}, "name", "Not a valid string."),
        ({"name": "a\u0000b"}, "name", "Must not contain NUL (\\u0000) characters."),
        ({"name": "ok", "colour": "red"}, "colour", "Unknown field."),
    ],
)
def test_invalid_workflow_bodies_are_422(client, payload, field, message):
    response = client.post("/workflows", json=payload)
    assert response.status_code == 422
    assert response.json["errors"] == {field: [message]}


@pytest.mark.parametrize(
    "data, content_type, status, detail_part",
    [
        ("{not json", "application/json", 400, "not valid JSON"),
        ('{"name": NaN}', "application/json", 400, "not valid JSON"),
        (b'{"name": "\xff"}', "application/json", 400, "not valid JSON"),
        ('["a list"]', "application/json", 422, "must be a JSON object"),
        ("name=x", "application/x-www-form-urlencoded", 415, "application/json"),
        ('{"name": "x"}', "text/plain", 415, "application/json"),
        ("", "application/json", 422, "body is required"),
    ],
)
def test_malformed_bodies_get_a_clear_4xx(client, data, content_type, status, detail_part):
    response = client.post("/workflows", data=data, content_type=content_type)
    assert response.status_code == status
    assert detail_part in response.json["detail"]
    assert set(response.json) == {"detail"}


@pytest.mark.parametrize(
    "body, errors",
    [
        ({"input_text": 5}, {"input_text": ["Not a valid string."]}),
        ({"input": "x"}, {"input": ["Unknown field."]}),
        (
            {"input_text": "lone \ud800 surrogate"},
            {"input_text": ["Must be valid Unicode (unpaired surrogate escape)."]},
        ),
    ],
)
def test_invalid_run_bodies_are_422_and_create_no_run(client, workflow, body, errors):
    workflow_id = workflow([("formatter", {})])
    response = client.post(f"/workflows/{workflow_id}/run", json=body)
    assert response.status_code == 422
    assert response.json["errors"] == errors
    assert client.get(f"/workflows/{workflow_id}/runs").json == {"runs": []}


def test_input_over_the_limit_is_422(make_app, workflow):
    client = make_app(MAX_INPUT_CHARS=10).test_client()
    workflow_id = client.post("/workflows", json={"name": "w"}).json["id"]
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "x" * 11})
    assert response.status_code == 422
    assert "longer than 10" in response.json["detail"]


def test_every_response_carries_a_request_id_and_echoes_the_clients(client, workflow):
    generated = {client.get("/livez").headers["X-Request-ID"] for _ in range(3)}
    assert len(generated) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", g) for g in generated)
    assert client.get("/livez", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    assert client.get("/runs/nope").headers["X-Request-ID"]
    assert client.post("/workflows", data="{", content_type="application/json").headers["X-Request-ID"]
    # A header that could forge log lines is replaced, not echoed.
    assert client.get("/livez", headers={"X-Request-ID": "a b\tc"}).headers["X-Request-ID"] != "a b\tc"


def test_unknown_routes_and_methods_answer_in_the_error_shape(client):
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and isinstance(missing.json["detail"], str)
    wrong_method = client.delete("/workflows")
    assert wrong_method.status_code == 405 and isinstance(wrong_method.json["detail"], str)
    assert "POST" in wrong_method.headers["Allow"]


def test_oversized_bodies_are_413(make_app):
    client = make_app(MAX_CONTENT_LENGTH=1000).test_client()
    response = client.post("/workflows", data='{"name": "' + "x" * 2000 + '"}', content_type="application/json")
    assert response.status_code == 413
    assert isinstance(response.json["detail"], str)


def test_cors_origins_come_from_configuration(make_app):
    client = make_app(CORS_ORIGINS=["https://app.example"]).test_client()
    allowed = client.get("/livez", headers={"Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = client.get("/livez", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_by_default_cors_allows_the_earlier_front_end_only(client):
    for origin in ("http://localhost:3000", "http://127.0.0.1:3000"):
        assert client.get("/livez", headers={"Origin": origin}).headers["Access-Control-Allow-Origin"] == origin
    assert "Access-Control-Allow-Origin" not in client.get("/livez", headers={"Origin": "https://app.example"}).headers


def test_cors_origins_none_sends_no_cors_headers(make_app):
    client = make_app(CORS_ORIGINS=[]).test_client()
    assert (
        "Access-Control-Allow-Origin" not in client.get("/livez", headers={"Origin": "http://localhost:3000"}).headers
    )
