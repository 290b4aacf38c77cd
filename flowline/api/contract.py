"""What each route answers, declared beside its view: the one place a route's contract is written.

    @bp.get("/workflows/<workflow_id>")
    @contract.operation("Read a workflow with its nodes in position order")
    @contract.responds(200, schemas.WorkflowWithNodesSchema, "The workflow.", "ETag")
    @contract.errors(404, 503)
    def get_workflow(workflow_id): ...

The decorators only attach a ``Contract`` to the view function (``view.contract``); they never touch a request or
an answer. ``load_json`` still reads bodies, PostgreSQL still builds most answers, and errors keep their one shape.
flowline/api/openapi.py builds the OpenAPI document from these declarations and Flask's url_map (the paths, their
path parameters and methods), and the API tests validate every JSON answer against it (tests/support/contract.py).

The vocabulary a declaration may use is here too: the response headers (``RESPONSE_HEADERS``), the shared error
answers (``ERRORS``), the request headers a route reads (``IF_MATCH``...), the path parameters (``PATH_PARAMETERS``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from marshmallow import Schema

from .. import nodes

JSON = "application/json"

# A body's schema: a marshmallow schema class (its OpenAPI component), an inline JSON schema, or None (no body).
BodySchema = type[Schema] | dict[str, Any] | None
View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class Answer:
    """One documented answer of an operation: its status, what it means, its body's schema (in each of
    ``media_types``) and the headers it carries besides X-Request-ID (names of RESPONSE_HEADERS)."""

    status: int
    description: str
    schema: BodySchema = None
    headers: tuple[str, ...] = ()
    media_types: tuple[str, ...] = (JSON,)


@dataclass
class Contract:
    """A view's declared operation: its summary, what it reads (request headers, body, query) and its answers."""

    summary: str = ""
    tag: str | None = None
    headers: tuple[dict[str, Any], ...] = ()
    body: BodySchema = None
    body_required: bool = True
    body_media_type: str = JSON
    query: type[Schema] | None = None
    answers: dict[int, Answer] = field(default_factory=dict)
    errors: frozenset[int] = frozenset()


def of(view: Callable[..., Any]) -> Contract | None:
    """Return the contract declared on ``view``, or None when it declares none."""
    return vars(view).get("contract")


def _contract(view: Callable[..., Any]) -> Contract:
    """Return ``view``'s contract, attached to it (empty) by the first declaration."""
    return vars(view).setdefault("contract", Contract())


def operation(
    summary: str,
    *,
    headers: tuple[dict[str, Any], ...] = (),
    body: BodySchema = None,
    body_required: bool = True,
    body_media_type: str = JSON,
    query: type[Schema] | None = None,
    tag: str | None = None,
) -> Callable[[View], View]:
    """Declare a view's operation: ``summary``, the request ``headers`` it reads (IF_MATCH...), its ``body`` (a
    request schema class or a JSON schema; ``body_required``, ``body_media_type``), its ``query`` schema, and its
    ``tag`` (default: its blueprint's name). Return the decorator, which returns the view unchanged."""

    def declare(view: View) -> View:
        contract = _contract(view)
        contract.summary, contract.tag, contract.headers, contract.query = summary, tag, headers, query
        contract.body, contract.body_required, contract.body_media_type = body, body_required, body_media_type
        return view

    return declare


def responds(
    status: int, schema: BodySchema, description: str, *headers: str, media_types: tuple[str, ...] = (JSON,)
) -> Callable[[View], View]:
    """Declare that a view answers ``status`` with a body of ``schema`` (None: no body), meaning ``description``,
    with ``headers`` (names of RESPONSE_HEADERS) besides X-Request-ID. Return the decorator.

    :raise ValueError: ``status`` declared twice for the view, or a header that is not in RESPONSE_HEADERS.
    """
    unknown = set(headers) - set(RESPONSE_HEADERS)
    if unknown:
        raise ValueError(f"unknown response headers {sorted(unknown)}: add them to RESPONSE_HEADERS")

    def declare(view: View) -> View:
        answers = _contract(view).answers
        if status in answers:
            raise ValueError(f"{view.__name__} declares {status} twice")
        answers[status] = Answer(status, description, schema, headers, media_types)
        return view

    return declare


def errors(*codes: int) -> Callable[[View], View]:
    """Declare the shared error answers (ERRORS, the error shape) a view gives besides the ones every operation
    has (PROTOCOL_ERRORS, and 401 on any route that needs the token). Return the decorator.

    :raise ValueError: a code that is not in ERRORS.
    """
    unknown = set(codes) - set(ERRORS)
    if unknown:
        raise ValueError(f"no shared error answer for {sorted(unknown)}: add it to ERRORS, or declare it with responds")

    def declare(view: View) -> View:
        contract = _contract(view)
        contract.errors = contract.errors | frozenset(codes)
        return view

    return declare


# --- the vocabulary ---------------------------------------------------------------------------------------------

RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id: the client's X-Request-ID when it sent a valid one.",
        "required": True,
        "schema": {"type": "string"},
    },
    "ETag": {
        "description": "The resource's version, to send back as If-Match.",
        "required": True,
        "schema": {"type": "string", "pattern": r'^"\d+"$'},
    },
    "Location": {"description": "Where the created resource is read.", "required": True, "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before retrying.", "required": True, "schema": {"type": "string"}},
    "Preference-Applied": {
        "description": "`wait=N` (N capped at WAIT_MAX_S): the request waited for the run, as `Prefer: wait=N` "
        "asked. Absent when it did not (no such preference, or WAIT_MAX_WAITERS requests already waited).",
        "required": False,
        "schema": {"type": "string", "pattern": r"^wait=\d+$"},
    },
    "Vary": {"description": "`Prefer`: the answer depends on it.", "required": True, "schema": {"type": "string"}},
    "WWW-Authenticate": {
        "description": 'The challenge: `Bearer realm="flowline"`, plus `error="invalid_token"` when '
        "the token sent is not one of API_TOKENS.",
        "required": True,
        "schema": {"type": "string"},
    },
}

# The shared error answers (all in the error shape), by status: what each means wherever it is declared.
ERRORS: dict[int, str] = {
    400: "The request is malformed: a JSON body that is not valid JSON, or a request line, header or chunked body "
    "HTTP/1.1 does not allow (refused by the HTTP server before the route: any operation).",
    401: "API_TOKENS is set and the request has no valid `Authorization: Bearer <token>`.",
    404: "Unknown id (also an id that is not a UUID, or not spelt lowercase and hyphenated).",
    409: "The resource is not in a state that allows this: a run already finished (cancel), or cancelled while "
    "it ran (sync run; persisted as Cancelled, `run_id` names it); a delivery in flight, or of a disabled "
    "subscription (retry).",
    412: "If-Match names a version that is no longer current; `etag` gives the current one. Nothing changed.",
    413: "The request body is too large.",
    414: "The request line (method, path and query string) is over 4094 bytes; refused by the HTTP server before "
    "the route.",
    415: "The body is not of the required content type.",
    417: "The Expect header asks for something other than 100-continue; refused by the HTTP server before the route.",
    422: "Invalid request: `errors` holds marshmallow's messages keyed by field, nested as the payload.",
    431: "The request has more than 100 headers, or one over 8190 bytes; refused by the HTTP server before the route.",
    500: "The run failed on a bug in a node (persisted as Failed; `run_id` names it).",
    502: "The run failed: the LLM provider failed (persisted as Failed; `run_id` names it).",
    501: "The Transfer-Encoding is not one the server reads (send Content-Length or chunked); refused by the HTTP "
    "server before the route.",
    504: "The run failed: it hit SYNC_RUN_TIMEOUT_S (persisted as Failed; `run_id` names it).",
    503: "The database is unreachable or busy; retry after Retry-After seconds.",
}
# The headers a shared error answer carries besides X-Request-ID.
ERROR_HEADERS: dict[int, tuple[str, ...]] = {503: ("Retry-After",), 401: ("WWW-Authenticate",)}

# What gunicorn's HTTP parser refuses before any route (flowline/api/serving.py answers it in the error shape): a
# malformed request line or header, a request line or headers too large, an Expect or Transfer-Encoding it does not
# do. Every operation answers them.
PROTOCOL_ERRORS = (400, 414, 417, 431, 501)

# The request headers a route may read, declared with operation(headers=...).
IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[!-~]+$"},
    "description": "Repeating a request with the same key (and body) answers the same run and "
    "queues nothing; the same key with a different body answers 422.",
}
PREFER_HANDLING: dict[str, Any] = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "RFC 7240. `handling=strict`: config keys the node type does not know are a 422 (with "
    "`Preference-Applied: handling=strict`) instead of being kept and named in `warnings`. "
    "Other preferences are ignored. Answers carry `Vary: Prefer`.",
}
PREFER_WAIT: dict[str, Any] = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "RFC 7240. `wait=N` (N whole seconds, capped at WAIT_MAX_S, 30 by default): answer as soon "
    "as the run is final or N seconds passed, with `Preference-Applied: wait=N`. A process lets at most "
    "WAIT_MAX_WAITERS requests wait at once: over it, the answer comes at once without Preference-Applied. A "
    "wait that is not whole seconds (`wait=abc`, `wait=-1`) and other preferences are ignored.",
}
IF_MATCH: dict[str, Any] = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": 'Only if the resource is still at this ETag (e.g. "3"); 412 otherwise. `*` or none: any.',
}

# A route's path parameters come from its Flask rule (``<workflow_id>``); each name says what it identifies.
PATH_PARAMETERS: dict[str, str] = {
    "workflow_id": "workflow",
    "node_id": "node",
    "run_id": "run",
    "file_id": "file",
    "webhook_id": "webhook subscription",
    "delivery_id": "webhook delivery",
    "schedule_id": "schedule",
}

# The path parameters that are names, not ids: each one's description and its JSON Schema.
NAME_PATH_PARAMETERS: dict[str, tuple[str, dict[str, Any]]] = {
    "model": (
        "The model name an LLM step calls (its node's config's model, else LLM_MODEL); it may contain `/`, "
        "as OpenRouter's `openai/gpt-4o` does.",
        {"type": "string", "minLength": 1, "maxLength": 200},
    ),
}


def ref(kind: str, name: str) -> dict[str, str]:
    """Return the OpenAPI reference to the component ``name`` of ``kind`` (schemas, responses, headers)."""
    return {"$ref": f"#/components/{kind}/{name}"}


# node_type -> (component of its config schema, component of the POST /workflows/{id}/nodes body for it)
NODE_CONFIG_COMPONENTS: dict[str, tuple[str, str]] = {
    node_type.name: (f"{node_type.component}Config", f"{node_type.component}NodeCreate") for node_type in nodes.ALL
}

# The body of POST /workflows/{id}/nodes: one variant per node type, told apart by node_type.
NODE_CREATE: dict[str, Any] = {
    "oneOf": [ref("schemas", body) for _, body in NODE_CONFIG_COMPONENTS.values()],
    "discriminator": {
        "propertyName": "node_type",
        "mapping": {t: f"#/components/schemas/{body}" for t, (_, body) in NODE_CONFIG_COMPONENTS.items()},
    },
}
