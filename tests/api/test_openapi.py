"""GET /openapi.json: a valid OpenAPI 3 document covering every route (schemathesis finding a real gunicorn keeps it:
tests/e2e/test_openapi.py)."""

import re

import pytest
from openapi_spec_validator import validate

from flowline.api import openapi
from flowline.api.schemas import NODE_TYPES
from tests.support import api_rules

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
        # Any object is a config (CONTRACT.md route 3): unknown keys are allowed, kept and reported.
        assert schemas[config]["type"] == "object" and schemas[config]["additionalProperties"] is True
        assert "Prefer: handling=strict" in schemas[config]["description"]
        configs.add(config)
    assert len(configs) == len(NODE_TYPES)
    assert "required" not in schemas["GenerativeAIConfig"]  # prompt and model have defaults
    assert schemas["GenerativeAIConfig"]["properties"]["prompt"]["default"] == "{text}"
    assert schemas["FormatterConfig"]["properties"]["rules"]["items"]["enum"]
