"""The earlier service's clients work unchanged (docs/CONTRACT.md route 3): any JSON object is a node's config, the
keys its type does not know are kept, returned, ignored and reported; `Prefer: handling=strict` brings back
the 422; generative_ai needs neither prompt nor model. (Its browser front end on localhost:3000 passing CORS, against
a real gunicorn: tests/e2e/test_earlier_clients.py.)"""

import json

import pytest

from flowline.api import prefer

STRICT = {"Prefer": "handling=strict"}

# Keys the node types do not know, with every kind of JSON value (and a key that is not ASCII).
FOREIGN_KEYS = {
    "prompt": "Summarise this",
    "colour": "red",
    "retries": 3,
    "ratio": 0.25,
    "nothing": None,
    "flag": False,
    "nested": {"a": [1, {"b": "c"}], "d": None},
    "list": ["x", 2, None, {"y": []}],
    "説明": "日本語のキー ✓",
    "emoji": "\U0001f600 ＡＢＣ",
}
NODE_TYPES = ("extract_text", "generative_ai", "formatter")
# What each type knows, so a foreign key is any other one.
KNOWN = {
    "extract_text": {"file_id"},
    "generative_ai": {"prompt", "model", "temperature", "max_tokens", "top_p"},
    "formatter": {"rules"},
}


def _foreign(node_type):
    return {key: value for key, value in FOREIGN_KEYS.items() if key not in KNOWN[node_type]}


def _warnings(node_type, keys):
    return [f"config.{key} is not used by {node_type} nodes: kept, ignored" for key in keys]


CONFIG_CASES = [
    *[(node_type, {}) for node_type in NODE_TYPES],
    *[(node_type, {"prompt": "Summarise: {text}"}) for node_type in NODE_TYPES],
    *[(node_type, _foreign(node_type)) for node_type in NODE_TYPES],
    ("formatter", {"rules": ["strip"], "colour": "red"}),
    ("generative_ai", {"prompt": "p", "model": "m", "temperature": 0.5, "vendor": {"region": "eu"}}),
]


@pytest.mark.parametrize("node_type, config", CONFIG_CASES)
def test_every_json_object_is_a_config_kept_as_sent_and_its_unused_keys_reported(
    client, workflow, sql, node_type, config
):
    workflow_id = workflow()
    # Sent as written (the test client's json= would sort the keys): warnings follow the order sent.
    added = client.post(
        f"/workflows/{workflow_id}/nodes",
        data=json.dumps({"node_type": node_type, "config": config}),
        content_type="application/json",
    )
    assert added.status_code == 200, added.json
    unused = [key for key in config if key not in KNOWN[node_type]]
    assert added.json.get("warnings") == (_warnings(node_type, unused) or None)
    assert "warnings" in added.json or not unused  # left out when there is nothing to say
    assert added.headers["Vary"] == "Prefer" and "Preference-Applied" not in added.headers
    (node,) = client.get(f"/workflows/{workflow_id}").json["nodes"]
    assert (node["node_type"], node["config"]) == (node_type, config)
    assert client.get(f"/workflows/{workflow_id}/nodes/{added.json['node_id']}").json["config"] == config
    stored = sql.execute("SELECT config FROM nodes WHERE id = %s", (added.json["node_id"],)).fetchone()
    assert stored["config"] == config


@pytest.mark.parametrize("node_type, config", [case for case in CONFIG_CASES if set(case[1]) - KNOWN[case[0]]])
def test_a_strict_client_gets_a_422_naming_each_unused_key_and_nothing_is_stored(client, workflow, node_type, config):
    workflow_id = workflow()
    refused = client.post(
        f"/workflows/{workflow_id}/nodes",
        data=json.dumps({"node_type": node_type, "config": config}),
        content_type="application/json",
        headers=STRICT,
    )
    assert refused.status_code == 422
    unused = [key for key in config if key not in KNOWN[node_type]]
    assert refused.json["errors"] == {"config": {key: ["Unknown field."] for key in unused}}
    assert refused.headers["Preference-Applied"] == "handling=strict"
    assert "Prefer" in refused.headers["Vary"]
    assert client.get(f"/workflows/{workflow_id}").json["nodes"] == []


@pytest.mark.parametrize("headers", [{}, STRICT])
@pytest.mark.parametrize(
    "node_type, config, errors",
    [
        ("formatter", {"rules": "x"}, {"rules": ["Not a valid list."]}),
        ("formatter", {"rules": ["shout"], "prompt": "p"}, None),
        ("generative_ai", {"prompt": ""}, {"prompt": ["Length must be between 1 and 4000."]}),
        ("generative_ai", {"model": " "}, {"model": ["Must not be blank."]}),
        ("generative_ai", {"model": None}, {"model": ["Field may not be null."]}),
        ("generative_ai", {"prompt": None}, {"prompt": ["Field may not be null."]}),
        ("generative_ai", {"temperature": "0.5"}, {"temperature": ["Not a valid number."]}),
        ("extract_text", {"file_id": "abc", "prompt": "p"}, None),
    ],
)
def test_known_keys_are_validated_as_before_in_both_modes(client, workflow, headers, node_type, config, errors):
    workflow_id = workflow()
    response = client.post(
        f"/workflows/{workflow_id}/nodes", json={"node_type": node_type, "config": config}, headers=headers
    )
    assert response.status_code == 422
    known_errors = {k: v for k, v in response.json["errors"]["config"].items() if k in KNOWN[node_type]}
    assert known_errors, response.json
    if errors is not None:
        assert response.json["errors"] == {"config": errors}
    assert client.get(f"/workflows/{workflow_id}").json["nodes"] == []


@pytest.mark.parametrize("config", [[], "x", 3, None, ["prompt"]])
def test_a_config_that_is_not_an_object_stays_a_422(client, workflow, config):
    workflow_id = workflow()
    response = client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": "formatter", "config": config})
    assert response.status_code == 422 and "config" in response.json["errors"]


def test_other_body_keys_and_query_strings_still_refuse_unknown_keys(client, workflow):
    workflow_id = workflow()
    extra = client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": "formatter", "config": {}, "x": 1})
    assert extra.status_code == 422 and extra.json["errors"] == {"x": ["Unknown field."]}
    assert client.post("/workflows", json={"name": "n", "prompt": "p"}).status_code == 422
    assert client.get("/workflows?limit=1&prompt=p").status_code == 422


def test_keys_and_strings_the_database_cannot_store_are_refused_wherever_they_are(client, workflow):
    workflow_id = workflow()
    for config, errors in [
        ({"note": "a\x00b"}, {"note": ["Must not contain NUL (\\u0000) characters."]}),
        (
            {"deep": {"list": ["ok", "half \ud800"]}},
            {"deep": {"list": {"1": ["Must be valid Unicode (unpaired surrogate escape)."]}}},
        ),
        ({"k\x00": 1}, {"k\x00": ["This key: must not contain NUL (\\u0000) characters."]}),
    ]:
        response = client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": "formatter", "config": config})
        assert response.status_code == 422 and response.json["errors"] == {"config": errors}
    assert client.get(f"/workflows/{workflow_id}").json["nodes"] == []


def test_a_patch_keeps_unused_keys_warns_and_refuses_them_for_a_strict_client(client, workflow):
    workflow_id = workflow([("formatter", {"rules": ["strip"]})])
    (node,) = client.get(f"/workflows/{workflow_id}").json["nodes"]
    path = f"/workflows/{workflow_id}/nodes/{node['id']}"

    changed = client.patch(path, json={"config": {"rules": ["lowercase"], "prompt": "p"}})
    assert changed.status_code == 200 and changed.headers["ETag"] == '"2"' and changed.headers["Vary"] == "Prefer"
    assert changed.json["config"] == {"rules": ["lowercase"], "prompt": "p"} and changed.json["version"] == 2
    assert changed.json["warnings"] == _warnings("formatter", ["prompt"])

    # Retyped only: the kept config must suit the new type; its rules mean nothing to generative_ai.
    retyped = client.patch(path, json={"node_type": "generative_ai"})
    assert retyped.status_code == 200 and retyped.json["node_type"] == "generative_ai"
    assert retyped.json["warnings"] == _warnings("generative_ai", ["rules"])

    strict = client.patch(path, json={"config": {"rules": [], "colour": "red"}}, headers=STRICT)
    assert strict.status_code == 422 and strict.json["errors"] == {
        "config": {"rules": ["Unknown field."], "colour": ["Unknown field."]}
    }
    assert strict.headers["Preference-Applied"] == "handling=strict"
    assert client.get(path).json["config"] == {"rules": ["lowercase"], "prompt": "p"}

    clean = client.patch(path, json={"config": {"prompt": "p"}}, headers=STRICT)
    assert clean.status_code == 200 and "warnings" not in clean.json and "Preference-Applied" not in clean.headers


def test_the_earlier_front_ends_nodes_run_and_their_steps_name_the_ignored_keys_and_the_model(client, workflow):
    workflow_id = workflow(
        [
            ("extract_text", {"prompt": "Read the invoice"}),
            ("generative_ai", {"prompt": "Summarise: {text}"}),
            ("formatter", {"prompt": "Shout it"}),
        ]
    )
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "invoice 42"})
    assert response.status_code == 200, response.json
    # extract_text passes the text through; the echo provider returns the rendered prompt; formatter's {} uppercases.
    assert response.json["final_output"] == "SUMMARISE: INVOICE 42"
    steps = client.get(f"/runs/{response.json['run_id']}").json["steps"]
    assert [s["status"] for s in steps] == ["Succeeded"] * 3
    assert "config keys not used by extract_text nodes, ignored: prompt" in steps[0]["note"]
    assert "config keys not used by formatter nodes, ignored: prompt" in steps[2]["note"]
    assert "ignored" not in steps[1]["note"]
    assert "model 'gpt-4o-mini'" in steps[1]["note"] and "LLM_MODEL" in steps[1]["note"]
    assert steps[2]["config_snapshot"] == {"prompt": "Shout it"}


def test_generative_ai_without_prompt_or_model_prompts_with_the_input_and_the_configured_model(make_app):
    client = make_app(LLM_MODEL="house-model-7").test_client()
    workflow_id = client.post("/workflows", json={"name": "w"}).json["id"]
    client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": "generative_ai", "config": {}})
    client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": "generative_ai", "config": {"model": "named"}})
    response = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "the input is the prompt"})
    assert response.status_code == 200 and response.json["final_output"] == "the input is the prompt"
    first, second = client.get(f"/runs/{response.json['run_id']}").json["steps"]
    assert "model 'house-model-7'" in first["note"] and "LLM_MODEL" in first["note"]
    assert "model 'named'" in second["note"] and "LLM_MODEL" not in second["note"]


# --- Prefer (RFC 7240) -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, expected",
    [
        (["handling=strict"], {"handling": ("strict", {})}),
        (['HANDLING = "strict"'], {"handling": ("strict", {})}),
        (
            ["respond-async, wait=10, handling=lenient"],
            {"respond-async": (None, {}), "wait": ("10", {}), "handling": ("lenient", {})},
        ),
        (["wait=5", "handling=strict", "wait=9"], {"wait": ("5", {}), "handling": ("strict", {})}),
        (["handling=lenient, handling=strict"], {"handling": ("lenient", {})}),
        (['foo="a, b; c"; p=1; Q="x\\"y", bar'], {"foo": ("a, b; c", {"p": "1", "q": 'x"y'}), "bar": (None, {})}),
        (['empty="", =broken, sp ace=1, ok'], {"empty": (None, {}), "ok": (None, {})}),
        ([""], {}),
    ],
)
def test_prefer_headers_parse_as_rfc_7240_says(headers, expected):
    parsed = prefer.parse(headers)
    assert {name: (p.value, p.params) for name, p in parsed.items()} == expected


@pytest.mark.parametrize(
    "headers, strict",
    [
        ({"Prefer": "handling=strict"}, True),
        ({"Prefer": "Handling=Strict"}, True),
        ({"Prefer": "respond-async, handling=strict"}, True),
        ({"Prefer": "handling=lenient"}, False),
        ({"Prefer": "handling"}, False),
        ({"Prefer": "strict"}, False),
        ({}, False),
    ],
)
def test_only_handling_strict_makes_a_client_strict(client, workflow, headers, strict):
    workflow_id = workflow()
    response = client.post(
        f"/workflows/{workflow_id}/nodes", headers=headers, json={"node_type": "formatter", "config": {"prompt": "p"}}
    )
    assert response.status_code == (422 if strict else 200)


def test_repeated_prefer_headers_are_read_together(client, workflow):
    workflow_id = workflow()
    response = client.post(
        f"/workflows/{workflow_id}/nodes",
        json={"node_type": "formatter", "config": {"x": 1}},
        headers=[("Prefer", "wait=3"), ("Prefer", "handling=strict")],
    )
    assert response.status_code == 422 and response.headers["Preference-Applied"] == "handling=strict"
