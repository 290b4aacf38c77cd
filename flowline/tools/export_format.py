"""The export file: its format (version 2; version 1 files still import), read and validated with the API's own schemas before anything is
written (``read_document``).

    flask --app app export [--workflow ID ...] [--with-runs] [--output FILE]   (stdout unless --output)
    flask --app app import FILE [--dry-run] [--skip-existing] [--with-runs]   (FILE may be - for stdin)

The format, version 2 (every id and timestamp as the API writes them)::

    {"format": "flowline-export", "version": 2, "exported_at": "...", "with_runs": true,
     "workflows": [{"id", "name", "created_at", "updated_at", "version", "max_concurrent_runs",
                    "max_concurrent_runs_per_key", "max_tokens_per_run",
                    "nodes": [{"id", "position", "node_type", "config", "created_at", "updated_at", "version"}],
                    "runs": [{"id", "mode", "status", "input", "final_output", "error_message", "attempt",
                              "max_attempts", "worker_id", "idempotency_key", "request_hash",
                              "cancel_requested_at", "created_at", "started_at", "finished_at",
                              "schedule_id", "scheduled_for", "priority", "concurrency_key",
                              "steps": [{"id", "node_id", "attempt", "position", "node_type", "config_snapshot",
                                         "status", "started_at", "finished_at", "input_text", "output_text",
                                         "error_message", "note",
                                         "model", "prompt_tokens", "completion_tokens", "cost_usd"}],
                              "events": [{"id", "attempt", "status", "at", "worker_id", "note"}]}]}],
     "counts": {"workflows", "nodes", "runs", "steps", "events"}}

Export reads one consistent snapshot (a REPEATABLE READ, READ ONLY transaction) in keyset batches and writes each
batch as it is read, so its memory is bounded by a batch whatever the size of the database. Only finished runs are
exported (Pending and Running runs are queue state), and never the bytes of uploaded files, webhook subscriptions
or schedules. A run's ``schedule_id`` and ``scheduled_for`` (which schedule made it, for which tick) came with
schedules: a file without them (an older export) imports them null, and a schedule_id the target database has no
schedule for is imported null (the run is kept). A step's usage (``model``, ``prompt_tokens``,
``completion_tokens``, ``cost_usd``: null but for LLM steps) came with usage: a file without it imports it null.
Imported steps count in the usage roll-up (GET /usage) like saved ones; the roll-up itself does not travel.

Import validates the whole file with the API's schemas before writing anything, then writes in one transaction:
a conflicting id, a constraint violation or a failed verification (every imported workflow read back and compared
with the file: counts, and the md5 of its canonical JSON) rolls all of it back.
"""

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any, NoReturn
from uuid import UUID

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ..api.schemas import PRIORITY_MAX, PRIORITY_MIN, NodeCreateSchema, WorkflowCreateSchema, check_node_config
from ..core.fields import PG_INTEGER_MAX, StrictFloat, StrictInteger, Text
from ..core.statuses import FINISHED_STATUSES, RUN_STATUSES

FORMAT = "flowline-export"
VERSION = 2
# The versions import reads: 1 lacks the concurrency limits and the runs' priority and key (their defaults then).
READABLE_VERSIONS = (1, 2)
KINDS = ("workflows", "nodes", "runs", "steps", "events")
# Where export's keyset walk over workflow ids starts; refused as an id so that walk can never pass one by.
NIL_UUID = UUID(int=0)
# Most problems listed in one error message.
MAX_LISTED = 50


class PortabilityError(Exception):
    """An export or import that cannot be done; the message says why and where. Nothing was written."""


def _not_nil(value: UUID) -> None:
    if value == NIL_UUID:
        raise ValidationError("Must not be the nil UUID.")


def _id() -> fields.UUID:
    return fields.UUID(required=True, validate=_not_nil)


def _timestamp(**kwargs: Any) -> fields.AwareDateTime:
    # With an offset, as export writes them: a naive time would be read in whatever zone the server is in.
    return fields.AwareDateTime(required=True, **kwargs)


def _optional_text() -> Text:
    return Text(required=True, allow_none=True)


def _integer(minimum: int) -> fields.Integer:
    # An integer column: a larger number would only fail later, in the database, without saying where.
    return fields.Integer(strict=True, required=True, validate=validate.Range(min=minimum, max=PG_INTEGER_MAX))


def _optional_count() -> fields.Integer:
    # A token count, absent from older files: null.
    return fields.Integer(
        strict=True, allow_none=True, load_default=None, validate=validate.Range(min=0, max=2**31 - 1)
    )


class ExportNodeSchema(NodeCreateSchema):
    """A node in an export: the API's node body (node_type, and a config valid for it) plus what the database
    keeps."""

    id = _id()
    position = _integer(0)
    created_at = _timestamp()
    updated_at = _timestamp()
    version = _integer(1)

    @validates_schema
    def _config_matches_type(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        # As the API does: known keys validated, the others imported as sent (and verified with the rest).
        check_node_config(data["node_type"], data["config"])


class ExportStepSchema(Schema):
    """One executed node of a run attempt (history: its node_type and config are as they were then)."""

    id = _id()
    node_id = fields.UUID(required=True, allow_none=True)
    attempt = _integer(1)
    position = _integer(0)
    node_type = Text(required=True, validate=validate.Length(min=1, max=50))
    config_snapshot = fields.Dict(required=True)
    status = fields.String(required=True, validate=validate.OneOf(RUN_STATUSES))
    started_at = _timestamp(allow_none=True)
    finished_at = _timestamp(allow_none=True)
    input_text = _optional_text()
    output_text = _optional_text()
    error_message = _optional_text()
    note = _optional_text()
    # Optional: files exported before steps recorded their usage lack them (null).
    model = Text(allow_none=True, load_default=None, validate=validate.Length(min=1, max=200))
    prompt_tokens = _optional_count()
    completion_tokens = _optional_count()
    cost_usd = StrictFloat(allow_none=True, load_default=None, validate=validate.Range(min=0))


class ExportEventSchema(Schema):
    """One status transition of a run."""

    id = _id()
    attempt = _integer(0)
    status = fields.String(required=True, validate=validate.OneOf(RUN_STATUSES))
    at = _timestamp()
    worker_id = _optional_text()
    note = _optional_text()


class ExportRunSchema(Schema):
    """A finished run with its steps and events (no lease or queue bookkeeping)."""

    id = _id()
    mode = fields.String(required=True, validate=validate.OneOf(("sync", "async")))
    status = fields.String(required=True, validate=validate.OneOf(FINISHED_STATUSES))
    input = fields.Dict(required=True)
    final_output = _optional_text()
    error_message = _optional_text()
    attempt = _integer(0)
    max_attempts = _integer(1)
    worker_id = _optional_text()
    idempotency_key = Text(required=True, allow_none=True, validate=validate.Length(min=1, max=255))
    request_hash = _optional_text()
    cancel_requested_at = _timestamp(allow_none=True)
    created_at = _timestamp()
    started_at = _timestamp(allow_none=True)
    finished_at = _timestamp()
    # Optional: files exported before schedules lack them (null).
    schedule_id = fields.UUID(allow_none=True, load_default=None)
    scheduled_for = fields.AwareDateTime(allow_none=True, load_default=None)
    # Optional: version 1 files lack them (priority 0, no key).
    priority = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=PRIORITY_MIN, max=PRIORITY_MAX))
    concurrency_key = Text(allow_none=True, load_default=None, validate=validate.Length(min=1, max=200))
    steps = fields.List(fields.Nested(ExportStepSchema), required=True)
    events = fields.List(fields.Nested(ExportEventSchema), required=True)

    @validates_schema
    def _steps_unique_per_attempt(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        seen = set()
        for index, step in enumerate(data["steps"]):
            key = (step["attempt"], step["position"])
            if key in seen:
                raise ValidationError(
                    {index: {"position": [f"A second step at attempt {key[0]}, position {key[1]}."]}},
                    field_name="steps",
                )
            seen.add(key)


class ExportWorkflowSchema(WorkflowCreateSchema):
    """A workflow in an export: the API's create body (name) plus its ids, times, version, nodes and runs."""

    id = _id()
    created_at = _timestamp()
    updated_at = _timestamp()
    version = _integer(1)
    # Optional: version 1 files lack them (no limit).
    max_concurrent_runs = StrictInteger(
        allow_none=True, load_default=None, validate=validate.Range(min=1, max=PG_INTEGER_MAX)
    )
    max_concurrent_runs_per_key = StrictInteger(
        allow_none=True, load_default=None, validate=validate.Range(min=1, max=PG_INTEGER_MAX)
    )
    max_tokens_per_run = StrictInteger(
        allow_none=True, load_default=None, validate=validate.Range(min=1, max=PG_INTEGER_MAX)
    )
    nodes = fields.List(fields.Nested(ExportNodeSchema), required=True)
    runs = fields.List(fields.Nested(ExportRunSchema), load_default=list)

    @validates_schema
    def _consistent(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        errors: dict[str, Any] = {}
        positions = sorted(node["position"] for node in data["nodes"])
        if positions != list(range(len(positions))):
            errors["nodes"] = [f"Node positions must be 0..{len(positions) - 1}, each once; found {positions}."]
        node_ids = {node["id"] for node in data["nodes"]}
        keys = set()
        for r, run in enumerate(data["runs"]):
            key = run["idempotency_key"]
            if key is not None and key in keys:
                errors.setdefault("runs", {}).setdefault(r, {})["idempotency_key"] = [
                    "Another run of this workflow has this idempotency_key."
                ]
            keys.add(key)
            for s, step in enumerate(run["steps"]):
                if step["node_id"] is not None and step["node_id"] not in node_ids:
                    errors.setdefault("runs", {}).setdefault(r, {}).setdefault("steps", {})[s] = {
                        "node_id": ["Must be null or the id of one of this workflow's nodes."]
                    }
        if errors:
            raise ValidationError(errors)


class CountsSchema(Schema):
    """The export's own count of what it wrote, checked on import."""

    workflows = fields.Integer(strict=True, required=True)
    nodes = fields.Integer(strict=True, required=True)
    runs = fields.Integer(strict=True, required=True)
    steps = fields.Integer(strict=True, required=True)
    events = fields.Integer(strict=True, required=True)


class ExportFileSchema(Schema):
    """The whole file."""

    format = fields.String(required=True, validate=validate.Equal(FORMAT))
    version = fields.Integer(strict=True, required=True, validate=validate.OneOf(READABLE_VERSIONS))
    exported_at = _timestamp()
    with_runs = fields.Boolean(load_default=False)
    workflows = fields.List(fields.Nested(ExportWorkflowSchema), required=True)
    counts = fields.Nested(CountsSchema, load_default=None)


_file_schema = ExportFileSchema()
workflow_schema = ExportWorkflowSchema()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _path_text(path: Sequence[str | int]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part != "_schema":
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _flatten(messages: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Yield (path, message) for marshmallow's nested error messages."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            yield from _flatten(value, (*path, key))
    elif isinstance(messages, list):
        for i, value in enumerate(messages):
            if isinstance(value, str):
                yield path, value
            else:
                yield from _flatten(value, (*path, i))
    else:
        yield path, str(messages)


def workflow_label(document: Any, index: int) -> str:
    """Return how a problem in workflows[index] is named: its index, and its id and name when the file has them."""
    try:
        workflow = document["workflows"][index]
        return (
            f"workflows[{index}] (id {workflow.get('id')}, name {json.dumps(workflow.get('name'), ensure_ascii=False)})"
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        return f"workflows[{index}]"


def _describe(path: tuple[str | int, ...], document: Any) -> str:
    if len(path) >= 2 and path[0] == "workflows" and isinstance(path[1], int):
        rest = _path_text(path[2:])
        label = workflow_label(document, path[1])
        return label if rest == "(top level)" else f"{label}: {rest}"
    return _path_text(path)


def listing(lines: Sequence[str]) -> str:
    """Return ``lines`` indented, one a line, at most MAX_LISTED of them (and how many more there are)."""
    shown = [f"  {line}" for line in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"  … and {len(lines) - MAX_LISTED} more")
    return "\n".join(shown)


def read_document(stream: IO[bytes], source: str) -> dict[str, Any]:
    """Return the validated content of the export file read from ``stream`` (named ``source`` in messages).

    :raise PortabilityError: the file is not JSON, not a Flowline export, of another format version, or invalid;
        the message names every problem by where it is (workflow index, id and name, node, field).
    """
    try:
        # RFC 8259: JSON exchanged between systems is UTF-8 (a leading byte order mark is ignored).
        document = json.loads(stream.read().decode("utf-8-sig"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise PortabilityError(f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise PortabilityError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise PortabilityError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise PortabilityError(f'{source} is not a Flowline export (it needs "format": "{FORMAT}" at the top level)')
    if document.get("version") not in READABLE_VERSIONS or isinstance(document.get("version"), bool):
        raise PortabilityError(
            f"{source} is in export format version {json.dumps(document.get('version'))}; "
            f"this Flowline reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    try:
        data = _file_schema.load(document)
    except ValidationError as exc:
        lines = [f"{_describe(path, document)}: {message}" for path, message in _flatten(exc.messages)]
        raise PortabilityError(
            f"{source} is not a valid Flowline export ({len(lines)} problem(s), nothing was "
            f"imported):\n{listing(lines)}"
        ) from None
    _check_ids_unique(data, document, source)
    counts = _file_counts(data["workflows"])
    if data["counts"] is not None and data["counts"] != counts:
        raise PortabilityError(
            f"{source} says it holds {counts_text(data['counts'])} but holds {counts_text(counts)}: "
            "it was changed or cut short after export"
        )
    return data


def _check_ids_unique(data: Mapping[str, Any], document: Any, source: str) -> None:
    """Every id is a primary key: each must appear once in the whole file.

    :raise PortabilityError: naming each repeated id and where it appears.
    """
    seen: dict[tuple[str, UUID], str] = {}
    lines: list[str] = []
    for w, workflow in enumerate(data["workflows"]):
        items = [("workflow", workflow["id"], "")]
        items += [("node", node["id"], f"nodes[{n}]") for n, node in enumerate(workflow["nodes"])]
        for r, run in enumerate(workflow["runs"]):
            items.append(("run", run["id"], f"runs[{r}]"))
            items += [("step", step["id"], f"runs[{r}].steps[{s}]") for s, step in enumerate(run["steps"])]
            items += [("event", event["id"], f"runs[{r}].events[{e}]") for e, event in enumerate(run["events"])]
        for kind, id_, where in items:
            label = workflow_label(document, w) + (f": {where}" if where else "")
            if (kind, id_) in seen:
                lines.append(f"{label}: {kind} id {id_} already used at {seen[kind, id_]}")
            else:
                seen[kind, id_] = label
    if lines:
        raise PortabilityError(f"{source} uses an id twice (nothing was imported):\n{listing(lines)}")


def _file_counts(workflows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    for workflow in workflows:
        add_counts(counts, workflow, with_runs=True)
    return counts


def add_counts(counts: dict[str, int], workflow: Mapping[str, Any], *, with_runs: bool) -> None:
    """Add ``workflow``'s workflow, nodes and (``with_runs``) runs, steps and events to ``counts``."""
    counts["workflows"] += 1
    counts["nodes"] += len(workflow["nodes"])
    if with_runs:
        counts["runs"] += len(workflow["runs"])
        counts["steps"] += sum(len(run["steps"]) for run in workflow["runs"])
        counts["events"] += sum(len(run["events"]) for run in workflow["runs"])


def counts_text(counts: Mapping[str, int]) -> str:
    """Return ``counts`` as words: "1 workflows, 2 nodes, ..." in KINDS' order."""
    return ", ".join(f"{counts[kind]} {kind}" for kind in KINDS)
