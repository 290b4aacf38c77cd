"""Every answer an API test gets is checked against the OpenAPI document, so no test can forget to.

``ContractClient`` is the test client of every app the ``make_app`` fixture makes (``app.test_client_class``). For
each answer of a JSON API route (not the console's pages, not an unknown path or method, not HEAD or OPTIONS) it
fails the test when the document does not declare the answer's status for that route and method, when a header the
document says the answer always carries is missing, or when a JSON body does not match the schema the document
gives for that status. The document is built once per set of routes and each schema's validator compiled once per
process, so the check costs a fraction of a millisecond an answer.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from jsonschema.exceptions import best_match
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from werkzeug.exceptions import HTTPException
from werkzeug.test import TestResponse

from flowline.api import contract, openapi

# Answers whose body a schema checked, and answers checked at all, in this process (read by whoever wants the count).
COUNTS = {"validated": 0, "checked": 0}

_SKIPPED_METHODS = frozenset({"HEAD", "OPTIONS"})
_DOCUMENTS: dict[frozenset[tuple[str, str, frozenset[str]]], dict[str, Any]] = {}
_DOCUMENT_OF_APP: weakref.WeakKeyDictionary[Flask, dict[str, Any]] = weakref.WeakKeyDictionary()
_VALIDATORS: dict[str, OAS30Validator] = {}


class ContractViolation(AssertionError):
    """An answer the OpenAPI document does not describe."""


def document_of(app: Flask) -> dict[str, Any]:
    """Return the OpenAPI document of ``app``'s declared routes, built once per set of them (every test's app has
    the same; a route a test adds for itself declares nothing and is left out, like the console's pages)."""
    document = _DOCUMENT_OF_APP.get(app)
    if document is None:
        declared = [rule for rule in openapi.api_rules(app) if contract.of(app.view_functions[rule.endpoint])]
        key = frozenset((rule.rule, rule.endpoint, frozenset(rule.methods or ())) for rule in declared)
        if key not in _DOCUMENTS:
            _DOCUMENTS[key] = json.loads(json.dumps(openapi.build(app, declared)))
        document = _DOCUMENT_OF_APP[app] = _DOCUMENTS[key]
    return document


def _resolved(document: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """Return ``item``, or the component its ``$ref`` names."""
    if "$ref" not in item:
        return item
    _, _, kind, name = item["$ref"].split("/")
    return document["components"][kind][name]


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> OAS30Validator:
    """Return the compiled validator of the response ``schema`` (a component reference or inline)."""
    key = json.dumps(schema, sort_keys=True)
    validator = _VALIDATORS.get(key)
    if validator is None:
        # Components are the same in every app of this process: one validator per schema serves them all.
        validator = OAS30Validator(
            {**schema, "components": document["components"]}, format_checker=oas30_format_checker
        )
        _VALIDATORS[key] = validator
    return validator


def check(app: Flask, response: TestResponse) -> None:
    """Check ``response``, which ``app`` gave, against ``app``'s OpenAPI document.

    :raise ContractViolation: its status is not declared for its route and method, a header the document requires
        is missing, or its JSON body does not match the declared schema.
    """
    request = response.request
    if request.method in _SKIPPED_METHODS:
        return
    try:
        rule, _ = app.url_map.bind_to_environ(request.environ).match(return_rule=True)
    except HTTPException:
        return  # no route: an unknown path or method is no operation of the document
    document = document_of(app)
    operation = document["paths"].get(openapi.path_of(rule), {}).get(request.method.lower())
    if operation is None:
        return  # the console's pages
    where = f"{request.method} {rule.rule} answered {response.status_code}"
    declared = operation["responses"].get(str(response.status_code))
    if declared is None:
        raise ContractViolation(
            f"{where}, a status the OpenAPI document does not declare for it: {response.text[:500]}"
        )
    COUNTS["checked"] += 1
    declared = _resolved(document, declared)
    for name, header in declared.get("headers", {}).items():
        if _resolved(document, header)["required"] and name not in response.headers:
            raise ContractViolation(f"{where} without its {name} header, which the OpenAPI document requires")
    content = declared.get("content", {})
    if response.mimetype != "application/json":
        if content and response.mimetype not in content:
            raise ContractViolation(f"{where} as {response.mimetype}; the document says {sorted(content)}")
        return
    if "application/json" not in content:
        raise ContractViolation(
            f"{where} with a JSON body the OpenAPI document does not declare: {response.text[:500]}"
        )
    error = best_match(_validator(document, content["application/json"]["schema"]).iter_errors(response.get_json()))
    if error is not None:
        path = "/".join(map(str, error.absolute_path)) or "(the body)"
        raise ContractViolation(f"{where} with a body the OpenAPI document does not allow at {path}: {error.message}")
    COUNTS["validated"] += 1


class ContractClient(FlaskClient):
    """Flask's test client, checking every answer against the app's OpenAPI document (``check``)."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        """Send the request as FlaskClient does; return the answer once checked.

        :raise ContractViolation: as ``check``.
        """
        response = super().open(*args, **kwargs)
        check(self.application, response)
        return response
