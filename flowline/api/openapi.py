"""The OpenAPI 3 document served at ``GET /openapi.json``, generated with apispec from the routes' declarations.

Each view declares its operation and answers beside it (flowline/api/contract.py); this module walks Flask's
url_map for the paths, their path parameters and methods, and turns each view's declaration into an operation:
request bodies and query strings from the schemas the views load with, answers from the response schemas in
flowline.api.schemas (registered as components under their class name without ``Schema``). Nothing here lists a
route. tests/api/test_openapi.py checks that every route of the app is documented with its methods (and nothing
else is); every API test validates its answers against the document (tests/support/contract.py);
tests/e2e/test_openapi.py runs schemathesis against a real server to check that the answers match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin, resolver
from flask import Blueprint, Flask, Response, current_app, jsonify
from marshmallow import Schema
from werkzeug.routing import Rule

from .. import nodes
from . import auth, contract, schemas
from .http import CANONICAL_ID

OPENAPI_VERSION = "3.0.3"
EXTENSION = "flowline.openapi"
# The methods Flask answers itself on every route: not operations of the document.
_IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def install(app: Flask, exempt_blueprints: tuple[str, ...] = ()) -> None:
    """Serve ``GET /openapi.json`` on ``app``: the document of every route but Flask's static one and those of
    ``exempt_blueprints`` (the console's pages, which are no JSON API)."""
    app.register_blueprint(bp)
    app.extensions[EXTENSION] = {"exempt_blueprints": frozenset(exempt_blueprints), "document": None}


def api_rules(app: Flask) -> list[Rule]:
    """Return the url_map rules ``app``'s document covers: all but the static route and the exempt blueprints'."""
    exempt = app.extensions[EXTENSION]["exempt_blueprints"]
    return [
        rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and rule.endpoint.partition(".")[0] not in exempt
    ]


def path_of(rule: Rule) -> str:
    """Return the OpenAPI path of a Flask ``rule``: ``{name}`` for each ``<converter:name>``."""
    return _RULE_ARGUMENT.sub(r"{\1}", rule.rule)


def _path_parameter(name: str) -> dict[str, Any]:
    if name in contract.NAME_PATH_PARAMETERS:
        description, schema = contract.NAME_PATH_PARAMETERS[name]
        return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {
            "type": "string",
            "format": "uuid",
            "pattern": f"^{CANONICAL_ID.pattern}$",
        },
        "description": f"The {contract.PATH_PARAMETERS[name]}'s id, lowercase and hyphenated as Flowline sends it "
        "(anything else, such as the same id in uppercase, answers 404 like an unknown id).",
    }


def _headers(*names: str) -> dict[str, dict[str, str]]:
    return {name: contract.ref("headers", name) for name in ("X-Request-ID", *names)}


def _node_create_variant(node_type: str, config_component: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": nodes.BY_NAME[node_type].description,
        "required": ["node_type", "config"],
        "properties": {
            "node_type": {"type": "string", "enum": [node_type]},
            "config": contract.ref("schemas", config_component),
        },
        "additionalProperties": False,
    }


def _error_response(code: int) -> dict[str, Any]:
    return {
        "description": contract.ERRORS[code],
        "headers": _headers(*contract.ERROR_HEADERS.get(code, ())),
        "content": {contract.JSON: {"schema": contract.ref("schemas", "Error")}},
    }


def _new_spec() -> APISpec:
    """Return an APISpec holding what every operation shares: the security scheme, the node config schemas and
    their create bodies, the response headers, the shared error answers."""
    spec = APISpec(
        title="Flowline",
        version="1",
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={
            "description": "Workflows of text-processing nodes, run synchronously, with their history. "
            'Every error answers `{"detail": "..."}` (plus `errors` on 422).'
        },
        # Applies only when the server has API_TOKENS set (off by default); the probes opt out below.
        security=[{"bearerAuth": []}],
    )
    spec.components.security_scheme(
        "bearerAuth",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "One of the server's API_TOKENS, as `Authorization: Bearer <token>`. Required on every "
            "operation but /livez and /readyz (and /metrics with METRICS_PUBLIC=1) when API_TOKENS is "
            "set; without API_TOKENS the server asks for none.",
        },
    )
    spec.components.schema("Error", schema=schemas.ErrorSchema)
    for node_type in nodes.ALL:
        config, _ = contract.NODE_CONFIG_COMPONENTS[node_type.name]
        spec.components.schema(config, schema=node_type.config_schema)
        # Any object is a valid config (docs/CONTRACT.md route 3): keys the type does not know are kept and ignored.
        component = spec.components.schemas[config]
        component["additionalProperties"] = True
        component["description"] = (
            "Keys listed here are validated; any other key is kept as sent, ignored when "
            "the node runs and named in the answer's `warnings` (a 422 with "
            "`Prefer: handling=strict`)."
        )
    for type_name, (config, body) in contract.NODE_CONFIG_COMPONENTS.items():
        spec.components.schema(body, component=_node_create_variant(type_name, config))
    for name, header in contract.RESPONSE_HEADERS.items():
        spec.components.header(name, header)
    for code in contract.ERRORS:
        spec.components.response(f"Error{code}", _error_response(code))
    return spec


def _schema(spec: APISpec, schema: type[Schema] | dict[str, Any]) -> dict[str, Any]:
    """Return what the document says for ``schema``: an inline JSON schema as is; a marshmallow schema class as a
    reference to its component, registered on first use (a schema it nests is registered with it)."""
    if isinstance(schema, dict):
        return schema
    name = resolver(schema)
    if name not in spec.components.schemas:
        spec.components.schema(name, schema=schema)
    return contract.ref("schemas", name)


def _answer(spec: APISpec, answer: contract.Answer) -> dict[str, Any]:
    response: dict[str, Any] = {"description": answer.description, "headers": _headers(*answer.headers)}
    if answer.schema is not None:
        body = _schema(spec, answer.schema)
        response["content"] = {media_type: {"schema": body} for media_type in answer.media_types}
    return response


def _operation(spec: APISpec, rule: Rule, declared: contract.Contract) -> dict[str, Any]:
    """Return the OpenAPI operation of ``rule``'s view, from its ``declared`` contract."""
    path = path_of(rule)
    parameters = [_path_parameter(name) for name in _RULE_ARGUMENT.findall(rule.rule)] + list(declared.headers)
    if declared.query is not None:
        parameters.append({"in": "query", "schema": declared.query})
    responses: dict[str, Any] = {
        str(code): contract.ref("responses", f"Error{code}")
        for code in sorted({*declared.errors, *contract.PROTOCOL_ERRORS})
    }
    responses.update({str(status): _answer(spec, answer) for status, answer in declared.answers.items()})
    operation: dict[str, Any] = {
        "summary": declared.summary,
        "tags": [declared.tag or rule.endpoint.partition(".")[0]],
        "parameters": parameters,
        "responses": responses,
    }
    if declared.body is not None:
        operation["requestBody"] = {
            "required": declared.body_required,
            "content": {declared.body_media_type: {"schema": _schema(spec, declared.body)}},
        }
    if path in auth.PUBLIC_PATHS:
        operation["security"] = []  # probes answer without a token
    else:
        operation["responses"]["401"] = contract.ref("responses", "Error401")
    return operation


def build(app: Flask, rules: Iterable[Rule] | None = None) -> dict[str, Any]:
    """Return a new OpenAPI document (a dict) of ``rules`` of ``app`` (default: every rule of api_rules).

    :raise LookupError: a route whose view declares no operation or no answer, or one view for several methods.
    """
    spec = _new_spec()
    paths: dict[str, dict[str, Any]] = {}
    for rule in api_rules(app) if rules is None else rules:
        declared = contract.of(app.view_functions[rule.endpoint])
        methods = sorted((rule.methods or set()) - _IMPLICIT_METHODS)
        if declared is None or not declared.summary or not declared.answers or len(methods) != 1:
            raise LookupError(
                f"{rule.endpoint} ({rule.rule}): declare one operation per view, with its answers "
                "(flowline/api/contract.py)"
            )
        paths.setdefault(path_of(rule), {})[methods[0].lower()] = _operation(spec, rule, declared)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def document(app: Flask) -> dict[str, Any]:
    """Return ``app``'s OpenAPI document, built once per app (do not mutate it)."""
    state = app.extensions[EXTENSION]
    if state["document"] is None:
        state["document"] = build(app)
    return state["document"]


bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
@contract.operation("This document", tag="meta")
@contract.responds(200, {"type": "object"}, "The OpenAPI document.")
def openapi_json() -> Response:
    """Return the OpenAPI 3 document of this API (built once per app from the routes' declarations)."""
    return jsonify(document(current_app))
