"""GET /openapi.json: a valid OpenAPI 3 document covering every route (schemathesis finding a real gunicorn keeps it:
tests/e2e/test_openapi.py)."""

import json
import re

import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from flowline.api import openapi
from flowline.api.schemas import NODE_TYPES, RunSchema, StepSchema
from tests.support import ROOT, api_rules
from tests.support.contract import ContractViolation, check

_IGNORED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture
def document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["X-Request-ID"]
    return response.json


def test_document_is_valid_openapi_3(app, document):
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document == openapi.build(app)


def test_every_route_is_documented_with_its_methods_and_nothing_else(app, document):
    routes = {}
    for rule in api_rules(app):
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods - _IGNORED_METHODS)
    documented = {path: set(operations) for path, operations in document["paths"].items()}
    assert documented == routes


def test_every_operation_documents_its_error_shape_and_request_id(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"], (method, path)
            # Refused by gunicorn's parser before any route, answered in the error shape (flowline/api/serving.py).
            assert {"400", "414", "417", "431", "501"} <= set(operation["responses"]), (method, path)
            for status, response in operation["responses"].items():
                if "$ref" in response:
                    response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
                assert "X-Request-ID" in response["headers"], (method, path, status)
                if status[0] in "45":
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["detail"] and error["properties"]["detail"] == {"type": "string"}
    assert "errors" in error["properties"]


def test_node_configs_one_component_per_type_discriminated_by_node_type(document):
    schemas = document["components"]["schemas"]
    body = document["paths"]["/workflows/{workflow_id}/nodes"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert body["discriminator"]["propertyName"] == "node_type"
    mapping = body["discriminator"]["mapping"]
    assert set(mapping) == set(NODE_TYPES)
    assert sorted(ref["$ref"] for ref in body["oneOf"]) == sorted(mapping.values())
    configs = set()
    for node_type, ref in mapping.items():
        variant = schemas[ref.rsplit("/", 1)[1]]
        assert variant["properties"]["node_type"] == {"type": "string", "enum": [node_type]}
        assert set(variant["required"]) == {"node_type", "config"}
        config = variant["properties"]["config"]["$ref"].rsplit("/", 1)[1]
        # Any object is a config (docs/CONTRACT.md route 3): unknown keys are allowed, kept and reported.
        assert schemas[config]["type"] == "object" and schemas[config]["additionalProperties"] is True
        assert "Prefer: handling=strict" in schemas[config]["description"]
        configs.add(config)
    assert len(configs) == len(NODE_TYPES)
    assert "required" not in schemas["GenerativeAIConfig"]  # prompt and model have defaults
    assert schemas["GenerativeAIConfig"]["properties"]["prompt"]["default"] == "{text}"
    assert schemas["FormatterConfig"]["properties"]["rules"]["items"]["enum"]


def _readme_rows():
    """Return the README's route table (its "## API" section) as a list of (methods, path with {} for each
    parameter, the statuses its answer names)."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        row = re.fullmatch(r"\| (`[A-Z][^|]*) \|[^|]*\| (.*) \|", line)
        if row is not None:
            path = re.sub(r"\{[^}]*\}", "{}", re.search(r"(/[^\s`?]*)", row[1])[1])
            methods = re.findall(r"\b(GET|POST|PUT|PATCH|DELETE)\b", row[1])
            rows.append((methods, path, set(re.findall(r"\b([1-5]\d\d)\b", row[2]))))
    return rows


def test_the_readme_route_table_agrees_with_the_document(document):
    """Every operation has a row and every row's operations exist; every status a row names is declared by one of
    its operations, and every success status an operation declares is named in its row."""
    documented = {
        (method.upper(), re.sub(r"\{[^}]*\}", "{}", path)): set(operation["responses"])
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    named = {}
    for methods, path, statuses in _readme_rows():
        routes = [(method, path) for method in methods]
        assert set(routes) <= set(documented), (routes, "a README row names an operation the document does not have")
        assert statuses <= set().union(*(documented[route] for route in routes)), (routes, "an undeclared status")
        for route in routes:
            named.setdefault(route, set()).update(statuses)
    assert set(named) == set(documented), "the README's route table misses operations of the document"
    for route, statuses in documented.items():
        assert {s for s in statuses if s.startswith("2")} <= named[route], (route, "a success status is not named")


@pytest.mark.parametrize("name, schema", [("Run", RunSchema), ("Step", StepSchema)])
def test_the_readme_lists_every_key_of_a_run_and_a_step(name, schema):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    keys = re.search(rf"^- \*\*{name}\*\*: `\{{([^}}]*)\}}`", readme, re.MULTILINE)[1]
    assert [key.strip() for key in keys.split(",")] == list(schema().fields)


def test_an_answer_the_document_does_not_describe_fails_the_test(app):
    """The hook every API test's client runs (tests/support/contract.py) refuses an undeclared status, a missing
    required header and a body its schema does not allow."""
    plain = FlaskClient(app)  # without the hook, to change the answers before checking them
    check(app, plain.get("/livez"))
    unknown_status = plain.get("/livez")
    unknown_status.status_code = 418
    with pytest.raises(ContractViolation, match="does not declare"):
        check(app, unknown_status)
    wrong_body = plain.get("/livez")
    wrong_body.set_data(b'{"status": "dead"}')
    with pytest.raises(ContractViolation, match="status"):
        check(app, wrong_body)
    created = plain.post("/workflows", json={"name": "w"})
    check(app, created)
    del created.headers["ETag"]
    with pytest.raises(ContractViolation, match="ETag"):
        check(app, created)
    missing_key = plain.get(f"/workflows/{created.json['id']}")
    missing_key.set_data(json.dumps({k: v for k, v in missing_key.json.items() if k != "nodes"}).encode())
    with pytest.raises(ContractViolation, match="'nodes' is a required property"):
        check(app, missing_key)


def test_the_statuses_a_view_docstring_names_are_declared(app, document):
    """A view's docstring may say why it answers a status (``:raise 404: unknown workflow``); the status must be one
    its declaration gives the document."""
    for rule in api_rules(app):
        (method,) = rule.methods - _IGNORED_METHODS
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        named = set(re.findall(r":raise (\d{3}):", app.view_functions[rule.endpoint].__doc__ or ""))
        assert named <= set(document["paths"][path][method.lower()]["responses"]), (method, path)
