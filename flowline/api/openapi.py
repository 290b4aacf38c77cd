"""The OpenAPI 3 document served at ``GET /openapi.json``, generated with apispec from the marshmallow schemas.

Request bodies and query strings come from the schemas the views load with; responses from the output schemas
in flowline.api.schemas. The operations (statuses, headers) are written out here, route by route, from the views'
``:raise NNN:`` docstrings. tests/api/test_openapi.py checks that every route of the app is documented with its
methods (and nothing else is); tests/e2e/test_openapi.py runs schemathesis against a real server to check that
the answers match.
"""

import copy
import functools

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, jsonify

from .. import nodes
from . import auth, schemas

OPENAPI_VERSION = "3.0.3"
JSON = "application/json"


def _ref(kind, name):
    return {"$ref": f"#/components/{kind}/{name}"}


# --- components ---------------------------------------------------------------------------------------------

# Registered in this order: a schema another one nests must be registered first, or apispec registers it
# itself under the same name and the explicit registration raises DuplicateComponentNameError.
_SCHEMAS = {
    "Error": schemas.ErrorSchema,
    **{f"{node_type.component}Config": node_type.config_schema for node_type in nodes.ALL},
    "WorkflowCreate": schemas.WorkflowCreateSchema,
    "WorkflowPatch": schemas.WorkflowPatchSchema,
    "NodePatch": schemas.NodePatchSchema,
    "NodeOrder": schemas.NodeOrderSchema,
    "RunRequest": schemas.RunRequestSchema,
    "Workflow": schemas.WorkflowSchema,
    "WorkflowNode": schemas.WorkflowNodeSchema,
    "Node": schemas.NodeSchema,
    "NodeChanged": schemas.NodeChangedSchema,
    "WorkflowWithNodes": schemas.WorkflowWithNodesSchema,
    "WorkflowList": schemas.WorkflowListSchema,
    "NodeAdded": schemas.NodeAddedSchema,
    "Run": schemas.RunSchema,
    "Step": schemas.StepSchema,
    "RunDetail": schemas.RunDetailSchema,
    "RunList": schemas.RunListSchema,
    "RunPage": schemas.RunPageSchema,
    "RunResult": schemas.RunResultSchema,
    "RunQueued": schemas.RunQueuedSchema,
    "RunFinished": schemas.RunFinishedSchema,
    "RunCancelled": schemas.RunCancelledSchema,
    "RunEvent": schemas.RunEventSchema,
    "RunEvents": schemas.RunEventsSchema,
    "ScheduleCreate": schemas.ScheduleCreateSchema,
    "SchedulePatch": schemas.SchedulePatchSchema,
    "Schedule": schemas.ScheduleSchema,
    "ScheduleList": schemas.ScheduleListSchema,
    "WebhookCreate": schemas.WebhookCreateSchema,
    "WebhookPatch": schemas.WebhookPatchSchema,
    "Webhook": schemas.WebhookSchema,
    "WebhookCreated": schemas.WebhookCreatedSchema,
    "WebhookRotated": schemas.WebhookRotatedSchema,
    "WebhookList": schemas.WebhookListSchema,
    "DeliveryAttempt": schemas.DeliveryAttemptSchema,
    "Delivery": schemas.DeliverySchema,
    "DeliveryPage": schemas.DeliveryPageSchema,
    "DeliveryRetried": schemas.DeliveryRetriedSchema,
    "FileCreated": schemas.FileCreatedSchema,
    "File": schemas.FileSchema,
    "Liveness": schemas.LivenessSchema,
    "Readiness": schemas.ReadinessSchema,
}

# node_type -> (component of its config schema, component of the POST /workflows/{id}/nodes body for it)
NODE_CONFIG_COMPONENTS = {
    node_type.name: (f"{node_type.component}Config", f"{node_type.component}NodeCreate") for node_type in nodes.ALL
}

_HEADERS = {
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

_ERRORS = {
    "400": "The request is malformed: a JSON body that is not valid JSON, or a request line, header or chunked body "
    "HTTP/1.1 does not allow (refused by the HTTP server before the route: any operation).",
    "401": "API_TOKENS is set and the request has no valid `Authorization: Bearer <token>`.",
    "404": "Unknown id (also an id that is not a UUID, or not spelt lowercase and hyphenated).",
    "409": "The resource is not in a state that allows this: a run already finished (cancel), or cancelled while "
    "it ran (sync run; persisted as Cancelled, `run_id` names it); a delivery in flight, or of a disabled "
    "subscription (retry).",
    "412": "If-Match names a version that is no longer current; `etag` gives the current one. Nothing changed.",
    "413": "The request body is too large.",
    "414": "The request line (method, path and query string) is over 4094 bytes; refused by the HTTP server before "
    "the route.",
    "415": "The body is not of the required content type.",
    "417": "The Expect header asks for something other than 100-continue; refused by the HTTP server before the route.",
    "422": "Invalid request: `errors` holds marshmallow's messages keyed by field, nested as the payload.",
    "431": "The request has more than 100 headers, or one over 8190 bytes; refused by the HTTP server before the "
    "route.",
    "500": "The run failed on a bug in a node (persisted as Failed; `run_id` names it).",
    "502": "The run failed: the LLM provider failed (persisted as Failed; `run_id` names it).",
    "501": "The Transfer-Encoding is not one the server reads (send Content-Length or chunked); refused by the HTTP "
    "server before the route.",
    "504": "The run failed: it hit SYNC_RUN_TIMEOUT_S (persisted as Failed; `run_id` names it).",
    "503": "The database is unreachable or busy; retry after Retry-After seconds.",
}

_ID = {"type": "string", "format": "uuid", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[!-~]+$"},
    "description": "Repeating a request with the same key (and body) answers the same run and "
    "queues nothing; the same key with a different body answers 422.",
}
_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "RFC 7240. `handling=strict`: config keys the node type does not know are a 422 (with "
    "`Preference-Applied: handling=strict`) instead of being kept and named in `warnings`. "
    "Other preferences are ignored. Answers carry `Vary: Prefer`.",
}
_PREFER_WAIT = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "RFC 7240. `wait=N` (N whole seconds, capped at WAIT_MAX_S, 30 by default): answer as soon "
    "as the run is final or N seconds passed, with `Preference-Applied: wait=N`. A process lets at most "
    "WAIT_MAX_WAITERS requests wait at once: over it, the answer comes at once without Preference-Applied. A "
    "wait that is not whole seconds (`wait=abc`, `wait=-1`) and other preferences are ignored.",
}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": 'Only if the resource is still at this ETag (e.g. "3"); 412 otherwise. `*` or none: any.',
}


def _path_param(name, what):
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": _ID,
        "description": f"The {what}'s id, lowercase and hyphenated as Flowline sends it (anything else, "
        "such as the same id in uppercase, answers 404 like an unknown id).",
    }


def _headers(*names):
    return {name: _ref("headers", name) for name in ("X-Request-ID", *names)}


def _ok(schema, description, *headers, status="200"):
    response = {"description": description, "headers": _headers(*headers)}
    if schema is not None:
        response["content"] = {JSON: {"schema": _ref("schemas", schema)}}
    return {status: response}


def _no_content(description):
    return {"204": {"description": description, "headers": _headers()}}


# What gunicorn's HTTP parser refuses before any route (flowline/api/serving.py answers it in the error shape): a
# malformed request line or header, a request line or headers too large, an Expect or Transfer-Encoding it does not do.
_PROTOCOL_ERRORS = (400, 414, 417, 431, 501)


def _errors(*codes):
    return {str(code): _ref("responses", f"Error{code}") for code in sorted({*codes, *_PROTOCOL_ERRORS})}


def _error(description, *headers):
    return {
        "description": description,
        "headers": _headers(*headers),
        "content": {JSON: {"schema": _ref("schemas", "Error")}},
    }


# POST /files' own reasons for a 422 and a 503, beyond the shared ones.
_UPLOAD_REFUSED = {
    "422": _error(
        "No `file` field, or a PDF that cannot be used (nothing is stored; `detail` says which): empty, "
        "corrupt, encrypted or page-less; too complex to extract within PDF_EXTRACT_TIMEOUT_S (`The PDF "
        "is too complex to extract within 5 s`) or PDF_EXTRACT_MEMORY_MB (`... within 512 MB of "
        "memory`); or text longer than MAX_INPUT_CHARS, more than a run accepts."
    ),
    "503": _error(
        "The server process already runs PDF_EXTRACT_CONCURRENCY extractions (refused at once, not "
        "queued), or the database is unreachable or busy; retry after Retry-After seconds.",
        "Retry-After",
    ),
}


def _json_body(schema, *, required=True):
    body = schema if isinstance(schema, dict) else _ref("schemas", schema)
    return {"required": required, "content": {JSON: {"schema": body}}}


def _operation(summary, responses, *, params=(), body=None, query=None, tag):
    operation = {"summary": summary, "tags": [tag], "parameters": list(params), "responses": responses}
    if query is not None:
        operation["parameters"].append({"in": "query", "schema": query})
    if body is not None:
        operation["requestBody"] = body
    return operation


_WF = _path_param("workflow_id", "workflow")
_NODE = _path_param("node_id", "node")
_RUN = _path_param("run_id", "run")
_FILE = _path_param("file_id", "file")
_WEBHOOK = _path_param("webhook_id", "webhook subscription")
_DELIVERY = _path_param("delivery_id", "webhook delivery")
_SCHEDULE = _path_param("schedule_id", "schedule")

_NODE_CREATE = {
    "oneOf": [_ref("schemas", body) for _, body in NODE_CONFIG_COMPONENTS.values()],
    "discriminator": {
        "propertyName": "node_type",
        "mapping": {t: f"#/components/schemas/{body}" for t, (_, body) in NODE_CONFIG_COMPONENTS.items()},
    },
}

# Flask path -> method -> operation. Paths use OpenAPI's {name} for Flask's <name>.
PATHS = {
    "/workflows": {
        "post": _operation(
            "Create a workflow",
            {**_ok("Workflow", "The workflow.", "ETag"), **_errors(400, 413, 415, 422, 503)},
            body=_json_body("WorkflowCreate"),
            tag="workflows",
        ),
        "get": _operation(
            "List workflows, newest first (keyset pagination)",
            {**_ok("WorkflowList", "One page of workflows."), **_errors(422, 503)},
            query=schemas.PageQuerySchema,
            tag="workflows",
        ),
    },
    "/workflows/{workflow_id}": {
        "get": _operation(
            "Read a workflow with its nodes in position order",
            {**_ok("WorkflowWithNodes", "The workflow.", "ETag"), **_errors(404, 503)},
            params=[_WF],
            tag="workflows",
        ),
        "patch": _operation(
            "Rename a workflow",
            {**_ok("Workflow", "The renamed workflow.", "ETag"), **_errors(400, 404, 412, 413, 415, 422, 503)},
            params=[_WF, _IF_MATCH],
            body=_json_body("WorkflowPatch"),
            tag="workflows",
        ),
        "delete": _operation(
            "Delete a workflow with its nodes and run history",
            {**_no_content("Deleted."), **_errors(404, 412, 503)},
            params=[_WF, _IF_MATCH],
            tag="workflows",
        ),
    },
    "/workflows/{workflow_id}/nodes": {
        "post": _operation(
            "Append a node; the config keys its node_type knows are validated, others kept",
            {
                **_ok("NodeAdded", "The node was added (`warnings` names config keys its type does not use)."),
                **_errors(400, 404, 412, 413, 415, 422, 503),
            },
            params=[_WF, _IF_MATCH, _PREFER],
            body=_json_body(_NODE_CREATE),
            tag="nodes",
        ),
    },
    "/workflows/{workflow_id}/nodes/{node_id}": {
        "get": _operation(
            "Read one node", {**_ok("Node", "The node.", "ETag"), **_errors(404, 503)}, params=[_WF, _NODE], tag="nodes"
        ),
        "patch": _operation(
            "Change a node's config, its type, or both (the result must be valid for the type)",
            {
                **_ok("NodeChanged", "The changed node (`warnings` names config keys its type does not use).", "ETag"),
                **_errors(400, 404, 412, 413, 415, 422, 503),
            },
            params=[_WF, _NODE, _IF_MATCH, _PREFER],
            body=_json_body("NodePatch"),
            tag="nodes",
        ),
        "delete": _operation(
            "Delete a node; later nodes move up one position",
            {**_no_content("Deleted."), **_errors(404, 412, 503)},
            params=[_WF, _NODE, _IF_MATCH],
            tag="nodes",
        ),
    },
    "/workflows/{workflow_id}/nodes/order": {
        "put": _operation(
            "Reorder a workflow's nodes (node_ids names every node once)",
            {
                **_ok("WorkflowWithNodes", "The workflow in its new order.", "ETag"),
                **_errors(400, 404, 412, 413, 415, 422, 503),
            },
            params=[_WF, _IF_MATCH],
            body=_json_body("NodeOrder"),
            tag="nodes",
        ),
    },
    "/workflows/{workflow_id}/run": {
        "post": _operation(
            "Run a workflow synchronously on input_text",
            {**_ok("RunResult", "The run succeeded."), **_errors(400, 404, 409, 413, 415, 422, 500, 502, 503, 504)},
            params=[_WF],
            body=_json_body("RunRequest", required=False),
            tag="runs",
        ),
    },
    "/workflows/{workflow_id}/runs": {
        "get": _operation(
            "List a workflow's runs, newest first (paginated with limit or cursor)",
            {**_ok("RunList", "The runs (one page when limit or cursor is given)."), **_errors(404, 422, 503)},
            params=[_WF],
            query=schemas.RunsQuerySchema,
            tag="runs",
        ),
        "post": _operation(
            "Queue a run for a worker (async); poll Location for its outcome, or wait for it with Prefer: wait=N",
            {
                **_ok(
                    "RunFinished",
                    "With `Prefer: wait=N`: the run finished within N seconds (Succeeded, Failed or Cancelled).",
                    "Location",
                    "Vary",
                    "Preference-Applied",
                ),
                **_ok(
                    "RunQueued",
                    "Queued (or, for a repeated Idempotency-Key, the run it queued before: then "
                    "with `Idempotent-Replayed: true`); with `Prefer: wait=N`, not finished within N seconds.",
                    "Location",
                    "Vary",
                    "Preference-Applied",
                    status="202",
                ),
                **_errors(400, 404, 413, 415, 422, 503),
            },
            params=[_WF, _IDEMPOTENCY_KEY, _PREFER_WAIT],
            body=_json_body("RunRequest", required=False),
            tag="runs",
        ),
    },
    "/runs": {
        "get": _operation(
            "List the runs of every workflow, newest first (keyset pagination); filter by status, workflow_id or both",
            {
                **_ok("RunPage", "One page of runs (empty for a workflow_id that names no workflow)."),
                **_errors(422, 503),
            },
            query=schemas.AllRunsQuerySchema,
            tag="runs",
        ),
    },
    "/runs/{run_id}/rerun": {
        "post": _operation(
            "Queue a new run of a run's workflow (its current nodes) on the run's input; poll Location",
            {
                **_ok(
                    "RunQueued",
                    "Queued (or, for a repeated Idempotency-Key, the run it queued before: then "
                    "with `Idempotent-Replayed: true`).",
                    "Location",
                    status="202",
                ),
                **_errors(404, 422, 503),
            },
            params=[_RUN, _IDEMPOTENCY_KEY],
            tag="runs",
        ),
    },
    "/runs/{run_id}/cancel": {
        "post": _operation(
            "Cancel a run: Pending at once, Running at its next node boundary",
            {
                **_ok("RunCancelled", "Cancelled: it was Pending and never starts."),
                **_ok("RunCancelled", "Requested: it was Running and stops at its next node boundary.", status="202"),
                **_errors(404, 409, 503),
            },
            params=[_RUN],
            tag="runs",
        ),
    },
    "/runs/{run_id}": {
        "get": _operation(
            "Read a run with its steps in execution order; with Prefer: wait=N, once it is final or N seconds passed",
            {**_ok("RunDetail", "The run.", "Vary", "Preference-Applied"), **_errors(404, 503)},
            params=[_RUN, _PREFER_WAIT],
            tag="runs",
        ),
    },
    "/runs/{run_id}/events": {
        "get": _operation(
            "A run's status transitions, oldest first",
            {**_ok("RunEvents", "The events."), **_errors(404, 503)},
            params=[_RUN],
            tag="runs",
        ),
    },
    "/workflows/{workflow_id}/webhooks": {
        "post": _operation(
            "Subscribe a URL to a workflow's run.succeeded, run.failed, run.cancelled events (signed Standard Webhooks)",
            {
                **_ok(
                    "WebhookCreated",
                    "The subscription, with its secret (shown only here).",
                    "ETag",
                    "Location",
                    status="201",
                ),
                **_errors(400, 404, 413, 415, 422, 503),
            },
            params=[_WF],
            body=_json_body("WebhookCreate"),
            tag="webhooks",
        ),
        "get": _operation(
            "A workflow's webhook subscriptions, newest first (never their secrets)",
            {**_ok("WebhookList", "The subscriptions."), **_errors(404, 503)},
            params=[_WF],
            tag="webhooks",
        ),
    },
    "/webhooks/{webhook_id}": {
        "get": _operation(
            "Read a webhook subscription (never its secret)",
            {**_ok("Webhook", "The subscription.", "ETag"), **_errors(404, 503)},
            params=[_WEBHOOK],
            tag="webhooks",
        ),
        "patch": _operation(
            "Change a subscription's url, events or enabled",
            {**_ok("Webhook", "The changed subscription.", "ETag"), **_errors(400, 404, 412, 413, 415, 422, 503)},
            params=[_WEBHOOK, _IF_MATCH],
            body=_json_body("WebhookPatch"),
            tag="webhooks",
        ),
        "delete": _operation(
            "Delete a subscription and its delivery history",
            {**_no_content("Deleted."), **_errors(404, 412, 503)},
            params=[_WEBHOOK, _IF_MATCH],
            tag="webhooks",
        ),
    },
    "/webhooks/{webhook_id}/rotate-secret": {
        "post": _operation(
            "Give a subscription a new secret; the old one goes on signing beside it for 24 hours",
            {**_ok("WebhookRotated", "The new secret (shown only here).", "ETag"), **_errors(404, 412, 503)},
            params=[_WEBHOOK, _IF_MATCH],
            tag="webhooks",
        ),
    },
    "/webhooks/{webhook_id}/deliveries": {
        "get": _operation(
            "A subscription's deliveries, newest first, with every attempt (keyset pagination)",
            {**_ok("DeliveryPage", "One page of deliveries."), **_errors(404, 422, 503)},
            params=[_WEBHOOK],
            query=schemas.PageQuerySchema,
            tag="webhooks",
        ),
    },
    "/deliveries/{delivery_id}/retry": {
        "post": _operation(
            "Send a delivery again now (it keeps its webhook-id)",
            {**_ok("DeliveryRetried", "Due now.", status="202"), **_errors(404, 409, 503)},
            params=[_DELIVERY],
            tag="webhooks",
        ),
    },
    "/workflows/{workflow_id}/schedules": {
        "post": _operation(
            "Schedule runs of a workflow on a cron expression in a time zone; the workers fire each tick once",
            {
                **_ok("Schedule", "The schedule, with its next five fire times.", "ETag", "Location", status="201"),
                **_errors(400, 404, 413, 415, 422, 503),
            },
            params=[_WF],
            body=_json_body("ScheduleCreate"),
            tag="schedules",
        ),
        "get": _operation(
            "A workflow's schedules, newest first, with their next five fire times",
            {**_ok("ScheduleList", "The schedules."), **_errors(404, 503)},
            params=[_WF],
            tag="schedules",
        ),
    },
    "/schedules/{schedule_id}": {
        "get": _operation(
            "Read a schedule with its next five fire times",
            {**_ok("Schedule", "The schedule.", "ETag"), **_errors(404, 503)},
            params=[_SCHEDULE],
            tag="schedules",
        ),
        "patch": _operation(
            "Change a schedule; enabling it again (or a new cron or time zone) starts it from now",
            {**_ok("Schedule", "The changed schedule.", "ETag"), **_errors(400, 404, 412, 413, 415, 422, 503)},
            params=[_SCHEDULE, _IF_MATCH],
            body=_json_body("SchedulePatch"),
            tag="schedules",
        ),
        "delete": _operation(
            "Delete a schedule (its runs are kept, their schedule_id null)",
            {**_no_content("Deleted."), **_errors(404, 412, 503)},
            params=[_SCHEDULE, _IF_MATCH],
            tag="schedules",
        ),
    },
    "/files": {
        "post": _operation(
            "Upload a PDF (multipart field `file`); its text is extracted now, in a bounded child process",
            {
                **_ok("FileCreated", "The file was stored.", "Location", status="201"),
                **_errors(400, 413, 415),
                **_UPLOAD_REFUSED,
            },
            body={
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {
                                    "type": "string",
                                    "format": "binary",
                                    "description": "A PDF (its bytes must start with %PDF-).",
                                }
                            },
                        }
                    }
                },
            },
            tag="files",
        ),
    },
    "/files/{file_id}": {
        "get": _operation(
            "Read a file's metadata",
            {**_ok("File", "The file's metadata."), **_errors(404, 503)},
            params=[_FILE],
            tag="files",
        ),
        "delete": _operation(
            "Delete a file", {**_no_content("Deleted."), **_errors(404, 503)}, params=[_FILE], tag="files"
        ),
    },
    "/livez": {
        "get": _operation(
            "Liveness: the process serves requests (no database)",
            {**_ok("Liveness", "Alive."), **_errors()},
            tag="health",
        ),
    },
    "/readyz": {
        "get": _operation(
            "Readiness: the database answers and no migration is pending",
            {
                **_ok("Readiness", "Ready."),
                "503": {
                    "description": "Not ready: `checks` names the failing check.",
                    "headers": _headers(),
                    "content": {JSON: {"schema": _ref("schemas", "Error")}},
                },
                **_errors(),
            },
            tag="health",
        ),
    },
    "/openapi.json": {
        "get": _operation(
            "This document",
            {
                "200": {
                    "description": "The OpenAPI document.",
                    "headers": _headers(),
                    "content": {JSON: {"schema": {"type": "object"}}},
                },
                **_errors(),
            },
            tag="meta",
        ),
    },
    "/metrics": {
        "get": _operation(
            "Prometheus metrics: requests by route and status, the pool, runs, the queue, workers",
            {
                "200": {
                    "description": "Every `flowline_*` series (the README lists them), in Prometheus' text format, "
                    "or OpenMetrics when the Accept header asks for it. Series read from the "
                    "database are left out, with `flowline_database_up 0`, while it is unreachable.",
                    "headers": _headers(),
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                    },
                },
                **_errors(),
            },
            tag="meta",
        ),
    },
}


def _node_create_variant(node_type, config_component):
    return {
        "type": "object",
        "description": nodes.BY_NAME[node_type].description,
        "required": ["node_type", "config"],
        "properties": {
            "node_type": {"type": "string", "enum": [node_type]},
            "config": _ref("schemas", config_component),
        },
        "additionalProperties": False,
    }


def _error_response(code):
    extra = {"503": ["Retry-After"], "401": ["WWW-Authenticate"]}.get(code, [])
    response = {
        "description": _ERRORS[code],
        "headers": _headers(*extra),
        "content": {JSON: {"schema": _ref("schemas", "Error")}},
    }
    return response


def build():
    """Return a new OpenAPI document (a dict)."""
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
    for name, schema in _SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    for config, _ in NODE_CONFIG_COMPONENTS.values():
        # Any object is a valid config (CONTRACT.md route 3): keys the type does not know are kept and ignored.
        component = spec.components.schemas[config]
        component["additionalProperties"] = True
        component["description"] = (
            "Keys listed here are validated; any other key is kept as sent, ignored when "
            "the node runs and named in the answer's `warnings` (a 422 with "
            "`Prefer: handling=strict`)."
        )
    for node_type, (config, body) in NODE_CONFIG_COMPONENTS.items():
        spec.components.schema(body, component=_node_create_variant(node_type, config))
    for name, header in _HEADERS.items():
        spec.components.header(name, header)
    for code in _ERRORS:
        spec.components.response(f"Error{code}", _error_response(code))
    for path, operations in PATHS.items():
        operations = copy.deepcopy(operations)
        for operation in operations.values():
            if path in auth.PUBLIC_PATHS:
                operation["security"] = []  # probes answer without a token
            else:
                operation["responses"]["401"] = _ref("responses", "Error401")
        spec.path(path=path, operations=operations)
    return spec.to_dict()


@functools.cache
def document():
    """Return the OpenAPI document, built once per process (do not mutate it)."""
    return build()


bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi_json():
    """Return the OpenAPI 3 document of this API (built once per process from the marshmallow schemas)."""
    return jsonify(document())
