"""marshmallow schemas: one per request body (each node type's ``config`` schema lives in its flowline/nodes/ module).

Unknown keys in a request body are rejected (marshmallow's default ``unknown=RAISE``), so a typo is a 422, not a
silent no-op. A node's ``config`` is the exception the earlier service's contract forces (docs/CONTRACT.md route 3):
keys its type does not know are kept, ignored when it runs and reported as warnings, unless the client asks for
``Prefer: handling=strict``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from .. import nodes
from ..core import cron
from ..core.fields import PG_INTEGER_MAX, StrictFloat, StrictInteger, Text, not_blank, unstorable_reason
from ..core.statuses import (
    DELIVERY_STATUSES,
    FINISHED_STATUSES,
    RUN_STATUSES,
    WEBHOOK_EVENTS,
    DeliveryStatus,
    RunStatus,
)

NODE_TYPES = nodes.NAMES


def config_warnings(node_type: str, config: dict[str, Any]) -> list[str]:
    """Return one warning per key of ``config`` that ``node_type`` does not know (empty when there is none)."""
    return [
        f"config.{key} is not used by {node_type} nodes: kept, ignored"
        for key in nodes.BY_NAME[node_type].ignored_keys(config)
    ]


# --- request bodies -----------------------------------------------------------------------------------------


# A run's priority: higher is claimed first (README, "Concurrency limits and priorities").
PRIORITY_MIN, PRIORITY_MAX = -100, 100
_LIMIT_DESCRIPTION = "a positive integer, or null for no limit"


def _limit() -> StrictInteger:
    return StrictInteger(
        allow_none=True,
        validate=validate.Range(min=1, max=PG_INTEGER_MAX),
        metadata={"description": _LIMIT_DESCRIPTION},
    )


def _priority() -> StrictInteger:
    return StrictInteger(
        validate=validate.Range(min=PRIORITY_MIN, max=PRIORITY_MAX),
        metadata={"description": f"{PRIORITY_MIN}..{PRIORITY_MAX}, higher claimed first (default 0)"},
    )


def _tokens_per_run() -> StrictInteger:
    return StrictInteger(
        allow_none=True,
        validate=validate.Range(min=1, max=PG_INTEGER_MAX),
        metadata={
            "description": "most tokens (prompt and completion, every attempt) one run's LLM steps may use; a step "
            "whose reservation would pass it fails before calling. A positive integer, or null for no limit"
        },
    )


class WorkflowCreateSchema(Schema):
    """Body of ``POST /workflows``."""

    name = Text(required=True, validate=[validate.Length(min=1, max=200), not_blank])
    max_concurrent_runs = _limit()
    max_concurrent_runs_per_key = _limit()
    max_tokens_per_run = _tokens_per_run()


def _unstorable_parts(value: Any) -> Iterator[tuple[tuple[str, ...], str]]:
    """Yield ``(path, reason)`` for every key or string inside the JSON ``value`` that PostgreSQL cannot store."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            reason = unstorable_reason(item)
            if reason:
                yield path, reason
        elif isinstance(item, dict):
            for key, child in item.items():
                reason = unstorable_reason(key)
                if reason:
                    yield (*path, key), "This key: " + reason[0].lower() + reason[1:]
                else:
                    stack.append(((*path, key), child))
        elif isinstance(item, list):
            stack.extend(((*path, str(index)), child) for index, child in enumerate(item))


class ConfigObject(fields.Dict):
    """A node's ``config``: any JSON object PostgreSQL can store (no NUL, no unpaired surrogate in any key or
    string, however deep); what its node type makes of it is checked by ``check_node_config``."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> dict[str, Any]:
        value = super()._deserialize(value, attr, data, **kwargs)
        errors: dict[str, Any] = {}
        for path, reason in _unstorable_parts(value):
            place = errors
            for key in path[:-1]:
                place = place.setdefault(key, {})
            place[path[-1]] = [reason]
        if errors:
            raise ValidationError(errors)
        return value


def check_node_config(node_type: str, config: dict[str, Any], *, strict: bool = False) -> list[str]:
    """Validate ``config`` for ``node_type`` as a node body's ``config``; return its warnings (ignored keys).

    :raise ValidationError: a known key's value is invalid, or (``strict``) a key is unknown; the messages are
        nested under ``config``, as the body is.
    """
    try:
        nodes.BY_NAME[node_type].load_config(config, strict=strict)
    except ValidationError as exc:
        raise ValidationError({"config": exc.messages}) from None
    return config_warnings(node_type, config)


class NodeCreateSchema(Schema):
    """Body of ``POST /workflows/{id}/nodes``. The view validates ``config`` for ``node_type`` (check_node_config),
    after this schema has loaded a known type and an object.

    The loaded ``config`` is the client's object unchanged (it is stored as sent); defaults apply at execution.
    """

    node_type = fields.String(required=True, validate=validate.OneOf(NODE_TYPES))
    config = ConfigObject(required=True)


class RunRequestSchema(Schema):
    """Body of ``POST /workflows/{id}/run`` (optional): the text the first node receives, and a file that
    ``extract_text`` nodes without a ``file_id`` of their own read."""

    input_text = Text(load_default="")
    file_id = fields.UUID(load_default=None)


class QueueRunRequestSchema(RunRequestSchema):
    """Body of ``POST /workflows/{id}/runs`` (optional): a run's input, and where it queues: its
    ``concurrency_key`` (runs of one key count against the workflow's ``max_concurrent_runs_per_key`` and take
    turns with other keys) and ``priority``."""

    concurrency_key = Text(load_default=None, validate=validate.Length(min=1, max=200))
    priority = _priority()


class WorkflowPatchSchema(Schema):
    """Body of ``PATCH /workflows/{id}``: any of the fields of a create, at least one."""

    name = Text(validate=[validate.Length(min=1, max=200), not_blank])
    max_concurrent_runs = _limit()
    max_concurrent_runs_per_key = _limit()
    max_tokens_per_run = _tokens_per_run()

    @validates_schema
    def _something_to_change(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError(
                "Give name, max_concurrent_runs, max_concurrent_runs_per_key, max_tokens_per_run, or several.",
                field_name="_schema",
            )


class NodePatchSchema(Schema):
    """Body of ``PATCH /workflows/{id}/nodes/{node_id}``: a new ``config`` (replacing the old one), a new
    ``node_type``, or both; the resulting config must be valid for the resulting type (checked by the view)."""

    node_type = fields.String(validate=validate.OneOf(NODE_TYPES))
    config = ConfigObject()

    @validates_schema
    def _something_to_change(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give node_type, config, or both.", field_name="_schema")


class NodeOrderSchema(Schema):
    """Body of ``PUT /workflows/{id}/nodes/order``: every node id of the workflow, once each, in the new order."""

    node_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(max=10_000))


class WebhookUrl(fields.String):
    """A webhook's URL: http or https, with a host, without a user:password part, at most 2000 characters."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        value = super()._deserialize(value, attr, data, **kwargs)
        if not 1 <= len(value) <= 2000 or not value.isprintable() or any(ch.isspace() for ch in value):
            raise ValidationError("Must be a URL of at most 2000 printable characters without spaces.")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in 0..65535
        except ValueError:
            raise ValidationError("Not a valid URL.") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError("Must be an http or https URL with a host, such as https://example.com/hook.")
        if parts.username is not None or parts.password is not None:
            raise ValidationError("Must not contain a user or password (user:password@).")
        return value


class WebhookEvents(fields.List[str]):
    """A subscription's events: at least one of WEBHOOK_EVENTS; duplicates are dropped, the order kept."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            fields.String(validate=validate.OneOf(WEBHOOK_EVENTS)), validate=validate.Length(min=1, max=10), **kwargs
        )

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[str | None]:
        return list(dict.fromkeys(super()._deserialize(value, attr, data, **kwargs)))


class WebhookCreateSchema(Schema):
    """Body of ``POST /workflows/{id}/webhooks``: the receiver's URL and the events it wants (default: all)."""

    url = WebhookUrl(required=True)
    events = WebhookEvents(load_default=lambda: list(WEBHOOK_EVENTS))
    enabled = fields.Boolean(load_default=True)


class WebhookPatchSchema(Schema):
    """Body of ``PATCH /webhooks/{id}``: any of url, events, enabled."""

    url = WebhookUrl()
    events = WebhookEvents()
    enabled = fields.Boolean()

    @validates_schema
    def _something_to_change(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give url, events, enabled, or several.", field_name="_schema")


class CronExpression(fields.String):
    """A schedule's cron: five fields (minute hour day-of-month month day-of-week) or a name such as @daily."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        value = super()._deserialize(value, attr, data, **kwargs)
        try:
            cron.check_cron(value)
        except cron.CronError as exc:
            raise ValidationError(str(exc)) from None
        return value.strip()


class TimeZoneName(fields.String):
    """An IANA time zone name, such as UTC or Europe/Berlin."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        value = super()._deserialize(value, attr, data, **kwargs)
        try:
            cron.zone(value)
        except cron.CronError as exc:
            raise ValidationError(str(exc)) from None
        return value


SCHEDULE_OVERLAPS = ("skip", "queue", "cancel_previous")
SCHEDULE_CATCHUPS = ("none", "last", "all")


class ScheduleCreateSchema(Schema):
    """Body of ``POST /workflows/{id}/schedules``: when (cron, timezone), on what input, and the policies."""

    cron = CronExpression(required=True)
    timezone = TimeZoneName(load_default="UTC")
    input_text = Text(load_default="")
    file_id = fields.UUID(load_default=None, allow_none=True)
    overlap = fields.String(validate=validate.OneOf(SCHEDULE_OVERLAPS), load_default="skip")
    catchup = fields.String(validate=validate.OneOf(SCHEDULE_CATCHUPS), load_default="last")
    enabled = fields.Boolean(load_default=True)
    priority = _priority()


class SchedulePatchSchema(Schema):
    """Body of ``PATCH /schedules/{id}``: any of the fields of a create."""

    cron = CronExpression()
    timezone = TimeZoneName()
    input_text = Text()
    file_id = fields.UUID(allow_none=True)
    overlap = fields.String(validate=validate.OneOf(SCHEDULE_OVERLAPS))
    catchup = fields.String(validate=validate.OneOf(SCHEDULE_CATCHUPS))
    enabled = fields.Boolean()
    priority = _priority()

    @validates_schema
    def _something_to_change(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError(
                "Give cron, timezone, input_text, file_id, overlap, catchup, enabled, priority, or several.",
                field_name="_schema",
            )


class PageQuerySchema(Schema):
    """Query of a paginated list: ``limit`` (1..200) and the opaque ``cursor`` of the previous page."""

    limit = fields.Integer(validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Length(min=1, max=200))


class RunsQuerySchema(PageQuerySchema):
    """Query of ``GET /workflows/{id}/runs``: ``status`` and ``schedule_id`` filter; ``limit`` or ``cursor`` turn
    pagination on."""

    status = fields.String(validate=validate.OneOf(RUN_STATUSES))
    schedule_id = fields.UUID()


class AllRunsQuerySchema(PageQuerySchema):
    """Query of ``GET /runs``: ``status``, ``workflow_id`` and ``schedule_id`` filter (together or alone); always
    one page."""

    status = fields.String(validate=validate.OneOf(RUN_STATUSES))
    workflow_id = fields.UUID()
    schedule_id = fields.UUID()


# The largest price per million tokens a model takes, in US dollars.
MAX_USD_PER_MILLION = 1_000_000


def _per_minute(description: str) -> fields.Integer:
    return fields.Integer(
        strict=True,
        allow_none=True,
        load_default=None,
        validate=validate.Range(min=1, max=PG_INTEGER_MAX),
        metadata={"description": description},
    )


def _price(description: str) -> StrictFloat:
    return StrictFloat(
        allow_none=True,
        load_default=None,
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_USD_PER_MILLION),
        metadata={"description": description},
    )


class LLMModelPutSchema(Schema):
    """Body of ``PUT /llm-models/{model}``: the model's budget and prices, replacing what it had (a key left out
    is null: no limit, no price); at least one key."""

    requests_per_minute = _per_minute("Requests the provider may see for this model in any 60 s; null: no limit.")
    tokens_per_minute = _per_minute(
        "Tokens (estimated before a call, corrected to the reported usage after) per 60 s; null: no limit."
    )
    usd_per_million_input_tokens = _price("US dollars per million prompt tokens; null: no price.")
    usd_per_million_output_tokens = _price("US dollars per million completion tokens; null: no price.")

    @validates_schema(pass_original=True)
    def _something_given(self, data: dict[str, Any], original: Any, **kwargs: Any) -> None:
        if isinstance(original, Mapping) and not original:
            raise ValidationError(
                "Give requests_per_minute, tokens_per_minute, usd_per_million_input_tokens, "
                "usd_per_million_output_tokens, or several.",
                field_name="_schema",
            )


# GET /usage: its groupings, and the longest window it sums (the roll-up is read hour by hour).
USAGE_GROUPS = ("day", "workflow", "model")
MAX_USAGE_DAYS = 366


class UsageQuerySchema(Schema):
    """Query of ``GET /usage``: ``since`` and ``until`` (ISO-8601 instants with their offset; default: the last
    30 days) and ``group_by`` (day, workflow or model; default day)."""

    since = fields.AwareDateTime(
        metadata={
            "description": "Count steps that finished in an hour overlapping [since, until); default until - 30 days."
        }
    )
    until = fields.AwareDateTime(metadata={"description": "The window's end (exclusive); default now."})
    group_by = fields.String(load_default="day", validate=validate.OneOf(USAGE_GROUPS))


# --- responses (never used to load or dump: views name them in @contract.responds, flowline/api/openapi.py makes
# them components of the document, and the API tests check every answer against them: tests/support/contract.py)
# ``required=True`` marks a key every such response carries; ``allow_none=True`` one that may be null.


class WorkflowSchema(Schema):
    """A workflow, without its nodes."""

    id = fields.UUID(required=True)
    name = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    version = fields.Integer(required=True, metadata={"description": "Bumped on every change (the ETag)."})


class WorkflowNodeSchema(Schema):
    """A node as listed in its workflow (``config`` exactly as sent)."""

    id = fields.UUID(required=True)
    node_type = fields.String(required=True, metadata={"enum": list(NODE_TYPES)})
    config = fields.Dict(required=True)
    position = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    version = fields.Integer(required=True)


class NodeSchema(WorkflowNodeSchema):
    """One node, read or changed on its own."""

    workflow_id = fields.UUID(required=True)


class WorkflowLimitsSchema(WorkflowSchema):
    """A workflow with its concurrency limits and tokens per run (``GET /workflows/{id}``, a create's and a
    PATCH's answer)."""

    max_concurrent_runs = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "most of its queued runs running at once; null: no limit"},
    )
    max_concurrent_runs_per_key = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "most of its queued runs of one concurrency_key running at once; null: no limit"},
    )
    max_tokens_per_run = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "most tokens one run's LLM steps may use, every attempt; null: no limit"},
    )


class WorkflowWithNodesSchema(WorkflowLimitsSchema):
    """A workflow and its nodes in position order."""

    nodes = fields.List(fields.Nested(WorkflowNodeSchema), required=True)


class WorkflowListSchema(Schema):
    """One page of workflows, newest first."""

    workflows = fields.List(fields.Nested(WorkflowSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True, metadata={"description": "null on the last page"})


_WARNINGS_DESCRIPTION = (
    "One sentence per config key the node type does not use (kept as sent, ignored when the "
    "node runs); left out when there is none."
)


class NodeAddedSchema(Schema):
    """Answer of ``POST /workflows/{id}/nodes``."""

    message = fields.String(required=True, metadata={"enum": ["Node added"]})
    node_id = fields.UUID(required=True)
    position = fields.Integer(required=True)
    warnings = fields.List(fields.String(), metadata={"description": _WARNINGS_DESCRIPTION})


class NodeChangedSchema(NodeSchema):
    """Answer of ``PATCH /workflows/{id}/nodes/{node_id}``: the node, and what its config holds that is not used."""

    warnings = fields.List(fields.String(), metadata={"description": _WARNINGS_DESCRIPTION})


class RunUsageSchema(Schema):
    """What a run's LLM steps used over all its attempts: tokens summed (0 without any LLM step) and their cost."""

    prompt_tokens = fields.Integer(required=True)
    completion_tokens = fields.Integer(required=True)
    cost_usd = fields.Float(
        required=True, allow_none=True, metadata={"description": "US dollars; null while a step lacks a price"}
    )


class RunSchema(Schema):
    """A run: every key is always present (null when empty)."""

    id = fields.UUID(required=True)
    workflow_id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": list(RUN_STATUSES)})
    started_at = fields.DateTime(required=True, allow_none=True)
    finished_at = fields.DateTime(required=True, allow_none=True)
    error_message = fields.String(required=True, allow_none=True)
    final_output = fields.String(required=True, allow_none=True)
    mode = fields.String(required=True, metadata={"enum": ["sync", "async"]})
    attempt = fields.Integer(required=True)
    max_attempts = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)
    schedule_id = fields.UUID(
        required=True,
        allow_none=True,
        metadata={"description": "the schedule that made it (null otherwise, or once deleted)"},
    )
    scheduled_for = fields.DateTime(
        required=True, allow_none=True, metadata={"description": "the schedule's tick it was made for"}
    )
    priority = fields.Integer(required=True, metadata={"description": "higher claimed first"})
    concurrency_key = fields.String(required=True, allow_none=True, metadata={"description": "null: none"})
    usage = fields.Nested(
        RunUsageSchema, required=True, metadata={"description": "its LLM steps' tokens and cost, every attempt"}
    )


class StepUsageSchema(Schema):
    """What one LLM step used: its model, the tokens its provider reported, their cost at the model's prices when
    the step ran (each null when not reported or not priced)."""

    model = fields.String(required=True)
    prompt_tokens = fields.Integer(required=True, allow_none=True)
    completion_tokens = fields.Integer(required=True, allow_none=True)
    cost_usd = fields.Float(required=True, allow_none=True, metadata={"description": "US dollars"})


class StepSchema(Schema):
    """One executed node of a run attempt: every key is always present (null when empty)."""

    id = fields.UUID(required=True)
    run_id = fields.UUID(required=True)
    node_id = fields.UUID(required=True, allow_none=True, metadata={"description": "null once the node is deleted"})
    node_type = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": list(RUN_STATUSES)})
    started_at = fields.DateTime(required=True, allow_none=True)
    finished_at = fields.DateTime(required=True, allow_none=True)
    input_text = fields.String(required=True, allow_none=True)
    output_text = fields.String(required=True, allow_none=True)
    error_message = fields.String(required=True, allow_none=True)
    attempt = fields.Integer(required=True)
    position = fields.Integer(required=True)
    config_snapshot = fields.Dict(required=True)
    note = fields.String(required=True, allow_none=True)
    usage = fields.Nested(
        StepUsageSchema,
        required=True,
        allow_none=True,
        metadata={"description": "what an LLM step called and used (null for other steps)"},
    )


class RunDetailSchema(Schema):
    """Answer of ``GET /runs/{run_id}``: the run and its steps in execution order."""

    run = fields.Nested(RunSchema, required=True)
    steps = fields.List(fields.Nested(StepSchema), required=True)


class RunListSchema(Schema):
    """A workflow's runs, newest first; ``next_cursor`` only when paginated (``limit`` or ``cursor`` given)."""

    runs = fields.List(fields.Nested(RunSchema), required=True)
    next_cursor = fields.String(
        allow_none=True, metadata={"description": "present when paginated; null on the last page"}
    )


class RunPageSchema(Schema):
    """One page of runs, newest first."""

    runs = fields.List(fields.Nested(RunSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True, metadata={"description": "null on the last page"})


class RunResultSchema(Schema):
    """Answer of a successful ``POST /workflows/{id}/run``."""

    final_output = fields.String(required=True, allow_none=True)
    run_id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": [RunStatus.SUCCEEDED]})


class RunQueuedSchema(Schema):
    """Answer of ``POST /workflows/{id}/runs``: the queued run (also for a repeat with the same Idempotency-Key)."""

    run_id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": [RunStatus.PENDING]})


class RunFinishedSchema(Schema):
    """Answer of ``POST /workflows/{id}/runs`` with ``Prefer: wait=N`` when the run finished within N seconds: the
    202's body with the run's final status and outcome."""

    run_id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": list(FINISHED_STATUSES)})
    final_output = fields.String(required=True, allow_none=True)
    error_message = fields.String(required=True, allow_none=True)


class RunCancelledSchema(Schema):
    """Answer of ``POST /runs/{run_id}/cancel``: Cancelled (it was Pending), or Running with a ``note`` (it stops
    at its next node boundary)."""

    run_id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": [RunStatus.CANCELLED, RunStatus.RUNNING]})
    note = fields.String()


class RunEventSchema(Schema):
    """One status transition of a run."""

    id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": list(RUN_STATUSES)})
    at = fields.DateTime(required=True)
    attempt = fields.Integer(required=True)
    worker_id = fields.String(required=True, allow_none=True)
    note = fields.String(required=True, allow_none=True)


class RunEventsSchema(Schema):
    """Answer of ``GET /runs/{run_id}/events``, oldest first."""

    events = fields.List(fields.Nested(RunEventSchema), required=True)


class FileCreatedSchema(Schema):
    """Answer of ``POST /files``."""

    file_id = fields.UUID(required=True)
    filename = fields.String(required=True)
    size = fields.Integer(required=True)


class FileSchema(FileCreatedSchema):
    """A file's metadata (never its bytes)."""

    content_type = fields.String(required=True)
    sha256 = fields.String(required=True)
    page_count = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)


class LivenessSchema(Schema):
    """Answer of ``GET /livez``."""

    status = fields.String(required=True, metadata={"enum": ["ok"]})


class ReadinessSchema(Schema):
    """Answer of ``GET /readyz`` when ready."""

    status = fields.String(required=True, metadata={"enum": ["ready"]})
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    llm_provider = fields.String(required=True)
    replica = fields.String(
        required=True,
        metadata={
            "enum": ["ok", "lagging", "unreachable", "not configured"],
            "description": "The history reads' replica (DATABASE_REPLICA_URL): within REPLICA_MAX_LAG_S, behind it, "
            "not answering, or none. Never makes the service not ready: its reads go to the primary meanwhile.",
        },
    )
    history_partitions = fields.String(
        required=True,
        metadata={
            "enum": ["ok", "running out"],
            "description": "Whether at least 2 partitions of run_steps and run_events are made ahead of the current "
            "one (workers make them: HISTORY_PARTITIONS_AHEAD). Never makes the service not ready.",
        },
    )


class WebhookSchema(Schema):
    """A webhook subscription (never its secret)."""

    id = fields.UUID(required=True)
    workflow_id = fields.UUID(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(metadata={"enum": list(WEBHOOK_EVENTS)}), required=True)
    enabled = fields.Boolean(required=True)
    disabled_reason = fields.String(
        required=True, allow_none=True, metadata={"description": "why Flowline disabled it (a 410 Gone answer)"}
    )
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    version = fields.Integer(required=True, metadata={"description": "Bumped on every change (the ETag)."})


class WebhookCreatedSchema(WebhookSchema):
    """Answer of ``POST /workflows/{id}/webhooks``: the subscription with its signing secret, shown only here."""

    secret = fields.String(
        required=True, metadata={"description": "whsec_ + base64 of 32 random bytes; never shown again"}
    )


class WebhookRotatedSchema(WebhookCreatedSchema):
    """Answer of ``POST /webhooks/{id}/rotate-secret``: the new secret (shown only here); the old one goes on
    signing beside it until ``previous_secret_expires_at``."""

    previous_secret_expires_at = fields.DateTime(required=True)


class ScheduleSchema(Schema):
    """A schedule, with its next five fire times."""

    id = fields.UUID(required=True)
    workflow_id = fields.UUID(required=True)
    cron = fields.String(required=True)
    timezone = fields.String(required=True)
    input_text = fields.String(required=True)
    file_id = fields.UUID(required=True, allow_none=True, metadata={"description": "null once the file is deleted"})
    overlap = fields.String(required=True, metadata={"enum": list(SCHEDULE_OVERLAPS)})
    catchup = fields.String(required=True, metadata={"enum": list(SCHEDULE_CATCHUPS)})
    enabled = fields.Boolean(required=True)
    priority = fields.Integer(required=True, metadata={"description": "the priority of the runs it fires"})
    next_fire_at = fields.DateTime(required=True, allow_none=True, metadata={"description": "null while disabled"})
    next_fire_times = fields.List(
        fields.DateTime(),
        required=True,
        metadata={
            "description": "the next five ticks, ISO 8601 with the schedule's time zone's offset; [] while disabled"
        },
    )
    skipped_count = fields.Integer(required=True, metadata={"description": "ticks not fired by the overlap policy"})
    last_skipped_at = fields.DateTime(required=True, allow_none=True)
    last_fired_at = fields.DateTime(required=True, allow_none=True)
    last_run_id = fields.UUID(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    version = fields.Integer(
        required=True, metadata={"description": "Bumped on every change a client makes (the ETag)."}
    )


class ScheduleListSchema(Schema):
    """A workflow's schedules, newest first."""

    schedules = fields.List(fields.Nested(ScheduleSchema), required=True)


class WebhookListSchema(Schema):
    """A workflow's subscriptions, newest first."""

    webhooks = fields.List(fields.Nested(WebhookSchema), required=True)


class DeliveryAttemptSchema(Schema):
    """One attempt of a delivery, as its history records it."""

    attempt = fields.Integer(required=True)
    at = fields.DateTime(required=True)
    outcome = fields.String(
        required=True, metadata={"enum": ["delivered", "retry", "dead", "gone", "disabled", "lost"]}
    )
    worker_id = fields.String(allow_none=True)
    status_code = fields.Integer(allow_none=True)
    latency_ms = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)


class DeliverySchema(Schema):
    """One webhook delivery: a finished run's event for one subscription, with every attempt."""

    id = fields.UUID(required=True, metadata={"description": "Also the webhook-id header, the same on every attempt."})
    webhook_id = fields.UUID(required=True)
    run_id = fields.UUID(required=True)
    event_type = fields.String(required=True, metadata={"enum": list(WEBHOOK_EVENTS)})
    status = fields.String(required=True, metadata={"enum": list(DELIVERY_STATUSES)})
    attempts = fields.Integer(required=True)
    last_status_code = fields.Integer(required=True, allow_none=True)
    last_latency_ms = fields.Integer(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True)
    next_attempt_at = fields.DateTime(
        required=True, allow_none=True, metadata={"description": "null once Delivered or Dead"}
    )
    created_at = fields.DateTime(required=True)
    finished_at = fields.DateTime(required=True, allow_none=True)
    history = fields.List(fields.Nested(DeliveryAttemptSchema), required=True)


class DeliveryPageSchema(Schema):
    """One page of a subscription's deliveries, newest first."""

    deliveries = fields.List(fields.Nested(DeliverySchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True, metadata={"description": "null on the last page"})


class DeliveryRetriedSchema(Schema):
    """Answer of ``POST /deliveries/{id}/retry``: the delivery is due now."""

    delivery_id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": [DeliveryStatus.PENDING]})


class ErrorSchema(Schema):
    """Every error: ``detail``; on 422 ``errors`` (marshmallow's messages keyed by field, nested as the payload);
    some errors add keys: ``run_id`` and ``status`` (a failed run), ``etag`` (412), ``checks`` (503 from /readyz)."""

    class Meta:
        unknown = INCLUDE

    detail = fields.String(required=True)
    errors = fields.Dict(metadata={"description": "422 only: messages keyed by field"})
    run_id = fields.UUID()
    status = fields.String()
    etag = fields.String()
    checks = fields.Dict(keys=fields.String(), values=fields.String())


class LLMModelSchema(Schema):
    """A model's budget and prices."""

    model = fields.String(required=True, metadata={"description": "the model name LLM steps call"})
    requests_per_minute = fields.Integer(required=True, allow_none=True)
    tokens_per_minute = fields.Integer(required=True, allow_none=True)
    usd_per_million_input_tokens = fields.Float(required=True, allow_none=True)
    usd_per_million_output_tokens = fields.Float(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class LLMModelListSchema(Schema):
    """Every model with a budget or a price, by name."""

    llm_models = fields.List(fields.Nested(LLMModelSchema), required=True)


class UsageRowSchema(Schema):
    """The LLM usage of one group: steps that finished in the window's hours."""

    key = fields.String(
        required=True, metadata={"description": "the UTC date (YYYY-MM-DD), the workflow's id or the model's name"}
    )
    runs = fields.Integer(required=True, metadata={"description": "runs counted in this group (see the README)"})
    prompt_tokens = fields.Integer(required=True)
    completion_tokens = fields.Integer(required=True)
    cost_usd = fields.Float(
        required=True, allow_none=True, metadata={"description": "US dollars; null while a step lacks a price"}
    )


class UsageSchema(Schema):
    """Answer of ``GET /usage``: one row per group with usage, in key order."""

    usage = fields.List(fields.Nested(UsageRowSchema), required=True)
