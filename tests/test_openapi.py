"""GET /openapi.json: a valid OpenAPI 3 document covering every route, and schemathesis finding the server keeps it."""

import re

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from conftest import make_pdf
from flowline import openapi
from flowline.schemas import NODE_TYPES

_IGNORED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture
def document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["X-Request-ID"]
    return response.json


def test_document_is_valid_openapi_3(document):
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document == openapi.build()


def test_every_route_is_documented_with_its_methods_and_nothing_else(app, document):
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods - _IGNORED_METHODS)
    documented = {path: set(operations) for path, operations in document["paths"].items()}
    assert documented == routes


def test_every_operation_documents_its_error_shape_and_request_id(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"], (method, path)
            # Refused by gunicorn's parser before any route, answered in the error shape (flowline/serving.py).
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
    body = document["paths"]["/workflows/{workflow_id}/nodes"]["post"]["requestBody"]["content"]["application/json"]["schema"]
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
        # Any object is a config (CONTRACT.md route 3): unknown keys are allowed, kept and reported.
        assert schemas[config]["type"] == "object" and schemas[config]["additionalProperties"] is True
        assert "Prefer: handling=strict" in schemas[config]["description"]
        configs.add(config)
    assert len(configs) == len(NODE_TYPES)
    assert "required" not in schemas["GenerativeAIConfig"]  # prompt and model have defaults
    assert schemas["GenerativeAIConfig"]["properties"]["prompt"]["default"] == "{text}"
    assert schemas["FormatterConfig"]["properties"]["rules"]["items"]["enum"]


# --- schemathesis against a real gunicorn ------------------------------------------------------------------


def _seed(base):
    """Create a workflow with one node of each type, a run and a file; return their ids by path parameter name."""
    with httpx.Client(base_url=base, timeout=30) as http:
        file_id = http.post("/files", files={"file": ("doc.pdf", make_pdf("seeded"), "application/pdf")}).json()["file_id"]
        workflow_id = http.post("/workflows", json={"name": "seeded"}).json()["id"]
        node_ids = []
        for node_type, config in (("extract_text", {"file_id": file_id}), ("generative_ai", {"prompt": "p {text}", "model": "m"}),
                                  ("formatter", {"rules": ["lowercase"]})):
            added = http.post(f"/workflows/{workflow_id}/nodes", json={"node_type": node_type, "config": config})
            assert added.status_code == 200, added.text
            node_ids.append(added.json()["node_id"])
        run = http.post(f"/workflows/{workflow_id}/run", json={"input_text": "seed"})
        assert run.status_code == 200, run.text
    return {"workflow_id": [workflow_id], "node_id": node_ids, "run_id": [run.json()["run_id"]], "file_id": [file_id]}


@pytest.fixture
def api_schema(server):
    schema = schemathesis.openapi.from_url(server.base + "/openapi.json")
    seeded = _seed(server.base)

    # Half the cases use ids that exist (so routes go past their 404), half the generated ones.
    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        known = {name: st.sampled_from(seeded[name]) for name in path_parameters or {} if name in seeded}
        if not known:
            return st.just(path_parameters)
        fixed = {name: st.just(value) for name, value in path_parameters.items()}
        return st.one_of(st.just(path_parameters), st.fixed_dictionaries({**fixed, **known}))

    return schema


_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
           response_schema_conformance]
_SETTINGS = hypothesis.settings(max_examples=25, deadline=None, derandomize=True, database=None,
                                suppress_health_check=list(hypothesis.HealthCheck))


def test_api_keeps_its_contract(api_schema):
    """Every operation, with positive and negative data: never a 5xx, and every answer as documented."""
    failures = []
    # Deletions last (workflows last of all), so the other operations still find the seeded ids.
    operations = sorted((result.ok() for result in api_schema.get_all_operations()),
                        key=lambda op: (op.method.upper() == "DELETE", op.path.startswith("/workflows/{workflow_id}")
                                        and op.path.count("/") == 2))
    documented = {f"{method.upper()} {path}" for path, ops in openapi.PATHS.items() for method in ops}
    # schemathesis leaves out the operation serving the schema it was loaded from.
    assert {operation.label for operation in operations} | {"GET /openapi.json"} == documented
    for operation in operations:
        definition = openapi.PATHS[operation.path][operation.method.lower()]
        has_inputs = bool(definition["parameters"]) or "requestBody" in definition
        # Negative data needs something to make invalid: an operation without parameters or body has none.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_inputs else (GenerationMode.POSITIVE,):

            @_SETTINGS
            @hypothesis.given(case=operation.as_strategy(mode))
            def check(case):
                case.call_and_validate(checks=_CHECKS, timeout=30)

            try:
                check()
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' failures, named by operation and mode
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
