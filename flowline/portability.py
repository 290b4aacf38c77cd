"""Export and import of workflows, their nodes and (optionally) their run history, as one versioned JSON file.

    flask --app app export [--workflow ID ...] [--with-runs] [--output FILE]   (stdout unless --output)
    flask --app app import FILE [--dry-run] [--skip-existing] [--with-runs]   (FILE may be - for stdin)

The format, version 1 (every id and timestamp as the API writes them)::

    {"format": "flowline-export", "version": 1, "exported_at": "...", "with_runs": true,
     "workflows": [{"id", "name", "created_at", "updated_at", "version",
                    "nodes": [{"id", "position", "node_type", "config", "created_at", "updated_at", "version"}],
                    "runs": [{"id", "mode", "status", "input", "final_output", "error_message", "attempt",
                              "max_attempts", "worker_id", "idempotency_key", "request_hash",
                              "cancel_requested_at", "created_at", "started_at", "finished_at",
                              "steps": [{"id", "node_id", "attempt", "position", "node_type", "config_snapshot",
                                         "status", "started_at", "finished_at", "input_text", "output_text",
                                         "error_message", "note"}],
                              "events": [{"id", "attempt", "status", "at", "worker_id", "note"}]}]}],
     "counts": {"workflows", "nodes", "runs", "steps", "events"}}

Export reads one consistent snapshot (a REPEATABLE READ, READ ONLY transaction) in keyset batches and writes each
batch as it is read, so its memory is bounded by a batch whatever the size of the database. Only finished runs are
exported (Pending and Running runs are queue state), and never the bytes of uploaded files.

Import validates the whole file with the API's schemas before writing anything, then writes in one transaction:
a conflicting id, a constraint violation or a failed verification (every imported workflow read back and compared
with the file: counts, and the md5 of its canonical JSON) rolls all of it back.
"""

import contextlib
import functools
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from uuid import UUID

import click
import psycopg
from flask import current_app
from flask.cli import with_appcontext
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import db, nodes
from .config import connection_kwargs, mask_url
from .schemas import RUN_STATUSES, NodeCreateSchema, Text, WorkflowCreateSchema, check_node_config

FORMAT = "flowline-export"
VERSION = 1
FINISHED_STATUSES = ("Succeeded", "Failed", "Cancelled")
KINDS = ("workflows", "nodes", "runs", "steps", "events")
# Rows per read: a batch of runs carries their steps' input and output texts, hence the smaller batch.
WORKFLOW_BATCH = 100
RUN_BATCH = 100
# Rows per INSERT statement on import, and ids per conflict lookup.
ROW_BATCH = 1000
# Where export's keyset walk over workflow ids starts; refused as an id so that walk can never pass one by.
NIL_UUID = UUID(int=0)
# Most problems listed in one error message.
MAX_LISTED = 50


class PortabilityError(Exception):
    """An export or import that cannot be done; the message says why and where. Nothing was written."""


# --- the file format, validated with the API's own schemas ----------------------------------------------------


def _not_nil(value):
    if value == NIL_UUID:
        raise ValidationError("Must not be the nil UUID.")


def _id():
    return fields.UUID(required=True, validate=_not_nil)


def _timestamp(**kwargs):
    # With an offset, as export writes them: a naive time would be read in whatever zone the server is in.
    return fields.AwareDateTime(required=True, **kwargs)


def _optional_text():
    return Text(required=True, allow_none=True)


def _integer(minimum):
    # An integer column: a larger number would only fail later, in the database, without saying where.
    return fields.Integer(strict=True, required=True, validate=validate.Range(min=minimum, max=2**31 - 1))


class ExportNodeSchema(NodeCreateSchema):
    """A node in an export: the API's node body (node_type, and a config valid for it) plus what the database
    keeps."""

    id = _id()
    position = _integer(0)
    created_at = _timestamp()
    updated_at = _timestamp()
    version = _integer(1)

    @validates_schema
    def _config_matches_type(self, data, **kwargs):
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
    steps = fields.List(fields.Nested(ExportStepSchema), required=True)
    events = fields.List(fields.Nested(ExportEventSchema), required=True)

    @validates_schema
    def _steps_unique_per_attempt(self, data, **kwargs):
        seen = set()
        for index, step in enumerate(data["steps"]):
            key = (step["attempt"], step["position"])
            if key in seen:
                raise ValidationError({index: {"position": [f"A second step at attempt {key[0]}, position {key[1]}."]}},
                                      field_name="steps")
            seen.add(key)


class ExportWorkflowSchema(WorkflowCreateSchema):
    """A workflow in an export: the API's create body (name) plus its ids, times, version, nodes and runs."""

    id = _id()
    created_at = _timestamp()
    updated_at = _timestamp()
    version = _integer(1)
    nodes = fields.List(fields.Nested(ExportNodeSchema), required=True)
    runs = fields.List(fields.Nested(ExportRunSchema), load_default=list)

    @validates_schema
    def _consistent(self, data, **kwargs):
        errors = {}
        positions = sorted(node["position"] for node in data["nodes"])
        if positions != list(range(len(positions))):
            errors["nodes"] = [f"Node positions must be 0..{len(positions) - 1}, each once; found {positions}."]
        node_ids = {node["id"] for node in data["nodes"]}
        keys = set()
        for r, run in enumerate(data["runs"]):
            key = run["idempotency_key"]
            if key is not None and key in keys:
                errors.setdefault("runs", {}).setdefault(r, {})["idempotency_key"] = [
                    "Another run of this workflow has this idempotency_key."]
            keys.add(key)
            for s, step in enumerate(run["steps"]):
                if step["node_id"] is not None and step["node_id"] not in node_ids:
                    errors.setdefault("runs", {}).setdefault(r, {}).setdefault("steps", {})[s] = {
                        "node_id": ["Must be null or the id of one of this workflow's nodes."]}
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
    version = fields.Integer(strict=True, required=True, validate=validate.Equal(VERSION))
    exported_at = _timestamp()
    with_runs = fields.Boolean(load_default=False)
    workflows = fields.List(fields.Nested(ExportWorkflowSchema), required=True)
    counts = fields.Nested(CountsSchema, load_default=None)


_file_schema = ExportFileSchema()
_workflow_schema = ExportWorkflowSchema()


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _path_text(path):
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part != "_schema":
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _flatten(messages, path=()):
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


def _workflow_label(document, index):
    """Return how a problem in workflows[index] is named: its index, and its id and name when the file has them."""
    try:
        workflow = document["workflows"][index]
        return f'workflows[{index}] (id {workflow.get("id")}, name {json.dumps(workflow.get("name"), ensure_ascii=False)})'
    except (KeyError, IndexError, TypeError, AttributeError):
        return f"workflows[{index}]"


def _describe(path, document):
    if len(path) >= 2 and path[0] == "workflows" and isinstance(path[1], int):
        rest = _path_text(path[2:])
        label = _workflow_label(document, path[1])
        return label if rest == "(top level)" else f"{label}: {rest}"
    return _path_text(path)


def _listing(lines):
    shown = [f"  {line}" for line in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"  … and {len(lines) - MAX_LISTED} more")
    return "\n".join(shown)


def read_document(stream, source):
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
        raise PortabilityError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise PortabilityError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise PortabilityError(f'{source} is not a Flowline export (it needs "format": "{FORMAT}" at the top level)')
    if document.get("version") != VERSION or isinstance(document.get("version"), bool):
        raise PortabilityError(f"{source} is in export format version {json.dumps(document.get('version'))}; "
                               f"this Flowline reads version {VERSION} only")
    try:
        data = _file_schema.load(document)
    except ValidationError as exc:
        lines = [f"{_describe(path, document)}: {message}" for path, message in _flatten(exc.messages)]
        raise PortabilityError(f"{source} is not a valid Flowline export ({len(lines)} problem(s), nothing was "
                               f"imported):\n{_listing(lines)}") from None
    _check_ids_unique(data, document, source)
    counts = _file_counts(data["workflows"])
    if data["counts"] is not None and data["counts"] != counts:
        raise PortabilityError(f"{source} says it holds {_counts_text(data['counts'])} but holds {_counts_text(counts)}: "
                               "it was changed or cut short after export")
    return data


def _check_ids_unique(data, document, source):
    """Every id is a primary key: each must appear once in the whole file.

    :raise PortabilityError: naming each repeated id and where it appears.
    """
    seen, lines = {}, []
    for w, workflow in enumerate(data["workflows"]):
        items = [("workflow", workflow["id"], "")]
        items += [("node", node["id"], f"nodes[{n}]") for n, node in enumerate(workflow["nodes"])]
        for r, run in enumerate(workflow["runs"]):
            items.append(("run", run["id"], f"runs[{r}]"))
            items += [("step", step["id"], f"runs[{r}].steps[{s}]") for s, step in enumerate(run["steps"])]
            items += [("event", event["id"], f"runs[{r}].events[{e}]") for e, event in enumerate(run["events"])]
        for kind, id_, where in items:
            label = _workflow_label(document, w) + (f": {where}" if where else "")
            if (kind, id_) in seen:
                lines.append(f"{label}: {kind} id {id_} already used at {seen[kind, id_]}")
            else:
                seen[kind, id_] = label
    if lines:
        raise PortabilityError(f"{source} uses an id twice (nothing was imported):\n{_listing(lines)}")


def _file_counts(workflows):
    counts = dict.fromkeys(KINDS, 0)
    for workflow in workflows:
        _add_counts(counts, workflow, with_runs=True)
    return counts


def _add_counts(counts, workflow, *, with_runs):
    counts["workflows"] += 1
    counts["nodes"] += len(workflow["nodes"])
    if with_runs:
        counts["runs"] += len(workflow["runs"])
        counts["steps"] += sum(len(run["steps"]) for run in workflow["runs"])
        counts["events"] += sum(len(run["events"]) for run in workflow["runs"])


def _counts_text(counts):
    return ", ".join(f"{counts[kind]} {kind}" for kind in KINDS)


# --- canonical form and checksums -----------------------------------------------------------------------------


def _canonical_value(value):
    if isinstance(value, dict):
        return {str(k): _canonical_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical_value(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        # PostgreSQL's jsonb keeps 1e2 as 100: a number is compared by value, not by how it was spelled.
        return int(value)
    return value


def canonical_workflow(workflow, *, with_runs):
    """Return the canonical JSON text of a loaded workflow: keys sorted, timestamps in UTC, nodes by position,
    runs by id, steps by (attempt, position), events by (at, id); without runs unless ``with_runs``."""
    workflow = dict(workflow, nodes=sorted(workflow["nodes"], key=lambda n: n["position"]))
    if with_runs:
        workflow["runs"] = [
            dict(run, steps=sorted(run["steps"], key=lambda s: (s["attempt"], s["position"])),
                 events=sorted(run["events"], key=lambda e: (e["at"], str(e["id"]))))
            for run in sorted(workflow["runs"], key=lambda r: str(r["id"]))]
    else:
        workflow.pop("runs", None)
    return json.dumps(_canonical_value(workflow), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def workflow_checksum(workflow, *, with_runs):
    """Return the md5 (hex) of :func:`canonical_workflow`: equal for a workflow in the file and read back."""
    return hashlib.md5(canonical_workflow(workflow, with_runs=with_runs).encode("utf-8")).hexdigest()


# --- export ---------------------------------------------------------------------------------------------------


class _NoProgress:
    def update(self, n):
        pass


def _progress(label, length):
    """A click progress bar on stderr when stderr is a terminal; nothing otherwise (a log, a pipe, cron)."""
    if length and sys.stderr.isatty():
        return click.progressbar(length=length, label=label, file=sys.stderr)
    return contextlib.nullcontext(_NoProgress())


@dataclass
class ExportResult:
    counts: dict
    file_references: int


def _iter_runs(conn, workflow_id, batch_size):
    """Yield the finished runs of one workflow (rows with ``body`` JSON text), newest first, batch by batch."""
    after_created_at = after_id = None
    while True:
        rows = db.many(conn, "export_runs_batch", workflow_id=workflow_id, after_created_at=after_created_at,
                       after_id=after_id, batch_size=batch_size)
        yield from rows
        if len(rows) < batch_size:
            return
        after_created_at, after_id = rows[-1]["created_at"], rows[-1]["id"]


# The config keys that name an uploaded file, by node type, as the two parallel arrays export's query takes.
_FILE_KEYS = {"file_node_types": [t.name for t in nodes.ALL for _ in t.file_keys],
              "file_config_keys": [key for t in nodes.ALL for key in t.file_keys]}


def _workflows_batch(conn, workflow_ids, after_id, batch_size):
    """Return up to ``batch_size`` workflows of ``workflow_ids`` (None: all) after ``after_id``, as export writes them."""
    return db.many(conn, "export_workflows_batch", workflow_ids=workflow_ids, after_id=after_id,
                   batch_size=batch_size, **_FILE_KEYS)


def _iter_workflows(conn, workflow_ids, batch_size):
    """Yield workflows (rows with ``body`` JSON text, nodes included) in id order, batch by batch."""
    after_id = None
    while True:
        rows = _workflows_batch(conn, workflow_ids, after_id, batch_size)
        yield from rows
        if len(rows) < batch_size:
            return
        after_id = rows[-1]["id"]


def export(conn, out, *, workflow_ids=None, with_runs=False, batch_size=WORKFLOW_BATCH, run_batch_size=RUN_BATCH,
           progress=_progress):
    """Write the export of ``workflow_ids`` (None: every workflow) to the binary stream ``out``; return an
    :class:`ExportResult`.

    ``conn`` is an autocommit connection with dict rows; the export reads one snapshot of it.

    :raise PortabilityError: a listed workflow does not exist (nothing is written).
    """
    # One snapshot for the whole walk: a workflow changed meanwhile is written as it was when the export began.
    conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
    try:
        return _export_snapshot(conn, out, workflow_ids, with_runs, batch_size, run_batch_size, progress)
    finally:
        conn.isolation_level, conn.read_only = None, None


def _export_snapshot(conn, out, workflow_ids, with_runs, batch_size, run_batch_size, progress):
    counts = dict.fromkeys(KINDS, 0)
    file_references = 0

    def write(text):
        out.write(text.encode("utf-8"))

    with conn.transaction():
        head = db.one(conn, "count_workflows_for_export", workflow_ids=workflow_ids)
        if head["missing"]:
            raise PortabilityError("no workflow has the id(s) " + ", ".join(map(str, head["missing"])) +
                                   " (nothing was exported)")
        write(f'{{"format": "{FORMAT}", "version": {VERSION}, '
              f'"exported_at": "{head["exported_at"].isoformat()}", "with_runs": {json.dumps(with_runs)},\n'
              f'"workflows": [')
        with progress("Exporting workflows", head["workflows"]) as bar:
            for row in _iter_workflows(conn, workflow_ids, batch_size):
                write(",\n" if counts["workflows"] else "\n")
                body = row["body"]
                if with_runs:
                    # body is a JSON object written by PostgreSQL: its last character is the closing brace.
                    write(body[:-1] + ', "runs" : [')
                    for n, run in enumerate(_iter_runs(conn, row["id"], run_batch_size)):
                        write((",\n  " if n else "\n  ") + run["body"])
                        counts["runs"] += 1
                        counts["steps"] += run["step_count"]
                        counts["events"] += run["event_count"]
                    write("]}")
                else:
                    write(body)
                counts["workflows"] += 1
                counts["nodes"] += row["node_count"]
                file_references += row["file_references"]
                bar.update(1)
        write(f'\n],\n"counts": {json.dumps(counts)}}}\n')
    return ExportResult(counts, file_references)


# --- import ---------------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    imported: dict = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    skipped: dict = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    runs_left_out: dict = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    missing_files: list = field(default_factory=list)
    checksum: str = ""


def _chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _rows(rows):
    return Jsonb(rows, dumps=functools.partial(json.dumps, default=_json_default))


def _ids_in_file(workflows, with_runs):
    """Return {(kind, id): index of its workflow} for every id an import would insert."""
    ids = {}
    for w, workflow in enumerate(workflows):
        ids["workflow", workflow["id"]] = w
        for node in workflow["nodes"]:
            ids["node", node["id"]] = w
        for run in workflow["runs"] if with_runs else ():
            ids["run", run["id"]] = w
            for step in run["steps"]:
                ids["step", step["id"]] = w
            for event in run["events"]:
                ids["event", event["id"]] = w
    return ids


def _existing(conn, ids):
    """Return [(kind, id, workflow_id in the database)] for the ``ids`` that are already taken."""
    by_kind = {kind: [id_ for k, id_ in ids if k == kind] for kind in ("workflow", "node", "run", "step", "event")}
    found = []
    longest = max(len(v) for v in by_kind.values())
    for start in range(0, longest, ROW_BATCH):
        part = {kind: values[start:start + ROW_BATCH] for kind, values in by_kind.items()}
        rows = db.many(conn, "find_existing_ids", workflow_ids=part["workflow"], node_ids=part["node"],
                       run_ids=part["run"], step_ids=part["step"], event_ids=part["event"])
        found += [(row["kind"], row["id"], row["workflow_id"]) for row in rows]
    return found


def _missing_files(conn, workflows, document_label):
    """Return a line per file reference of a node (the config keys its type declares) that this database lacks."""
    referencing = [(w, n, node["node_type"], UUID(file_id))
                   for w, workflow in workflows for n, node in enumerate(workflow["nodes"])
                   for _, file_id in nodes.BY_NAME[node["node_type"]].files(node["config"])]
    wanted = sorted({file_id for *_, file_id in referencing})
    present = set()
    for chunk in _chunks(wanted, ROW_BATCH):
        present |= {row["id"] for row in db.many(conn, "find_existing_files", file_ids=chunk)}
    return [f"{document_label(w)}: nodes[{n}] ({node_type}) names file {file_id}, which this database does not have"
            for w, n, node_type, file_id in referencing if file_id not in present]


_INSERTS = {
    "workflows": lambda conn, rows: db.execute(conn, "import_workflows", rows=rows),
    "nodes": lambda conn, rows: db.execute(conn, "import_nodes", rows=rows),
    "runs": lambda conn, rows: db.execute(conn, "import_runs", rows=rows),
    "steps": lambda conn, rows: db.execute(conn, "import_run_steps", rows=rows),
    "events": lambda conn, rows: db.execute(conn, "import_run_events", rows=rows),
}


def _insert(conn, workflows, with_runs, bar):
    """Insert ``workflows`` [(index, workflow)] with their nodes (and runs), batch by batch; return the counts."""
    counts = dict.fromkeys(KINDS, 0)
    for chunk in _chunks(workflows, WORKFLOW_BATCH):
        tables = {kind: [] for kind in KINDS}
        for _, workflow in chunk:
            tables["workflows"].append({k: workflow[k] for k in ("id", "name", "created_at", "updated_at", "version")})
            tables["nodes"] += [dict(node, workflow_id=workflow["id"]) for node in workflow["nodes"]]
            for run in workflow["runs"] if with_runs else ():
                tables["runs"].append(dict({k: v for k, v in run.items() if k not in ("steps", "events")},
                                           workflow_id=workflow["id"]))
                tables["steps"] += [dict(step, run_id=run["id"]) for step in run["steps"]]
                tables["events"] += [dict(event, run_id=run["id"]) for event in run["events"]]
        # Parents first (KINDS is in that order): the foreign keys are checked row by row.
        for kind in KINDS:
            for rows in _chunks(tables[kind], ROW_BATCH):
                counts[kind] += _INSERTS[kind](conn, _rows(rows))
        bar.update(len(chunk))
    return counts


def _read_back(conn, workflow_ids, with_runs):
    """Yield (id, document) for each of ``workflow_ids`` the database holds, read as export reads it."""
    for chunk in _chunks(workflow_ids, WORKFLOW_BATCH):
        for row in _workflows_batch(conn, chunk, None, len(chunk)):
            document = json.loads(row["body"])
            if with_runs:
                document["runs"] = [json.loads(run["body"]) for run in _iter_runs(conn, row["id"], RUN_BATCH)]
            yield row["id"], document


def _verify(conn, workflows, with_runs, document_label, bar):
    """Read every imported workflow back and compare it with the file (counts, and each workflow's md5); return
    the checksum of the whole import (the md5 of the workflows' md5s in id order).

    :raise PortabilityError: anything differs (the caller's transaction then rolls back).
    """
    expected = {workflow["id"]: (w, workflow_checksum(workflow, with_runs=with_runs)) for w, workflow in workflows}
    expected_counts, counts = dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0)
    for _, workflow in workflows:
        _add_counts(expected_counts, workflow, with_runs=with_runs)
    found, problems = {}, []
    for workflow_id, document in _read_back(conn, list(expected), with_runs):
        try:
            # Loaded with the file's schema, so both sides are compared in one form.
            workflow = _workflow_schema.load(document)
        except ValidationError as exc:
            problems.append(f"{document_label(expected[workflow_id][0])}: reads back invalid: {exc.messages}")
            continue
        _add_counts(counts, workflow, with_runs=with_runs)
        found[workflow_id] = workflow_checksum(workflow, with_runs=with_runs)
        bar.update(1)
    for workflow_id, (w, checksum) in expected.items():
        if workflow_id not in found:
            problems.append(f"{document_label(w)}: not found after import")
        elif found[workflow_id] != checksum:
            problems.append(f"{document_label(w)}: md5 {found[workflow_id]} read back, {checksum} in the file")
    if counts != expected_counts:
        problems.append(f"read back {_counts_text(counts)}; the file has {_counts_text(expected_counts)}")
    if problems:
        raise PortabilityError("verification failed, the import was rolled back (nothing was imported):\n"
                               + _listing(problems))
    digest = hashlib.md5()
    for workflow_id in sorted(found, key=str):
        digest.update(found[workflow_id].encode())
    return digest.hexdigest()


def import_data(conn, data, *, dry_run=False, skip_existing=False, with_runs=False, progress=_progress):
    """Import validated export ``data`` (from :func:`read_document`) in one transaction on the autocommit
    connection ``conn``; return an :class:`ImportResult`. With ``dry_run`` everything is done and checked, then
    rolled back.

    :raise PortabilityError: ids already taken (all listed; with ``skip_existing`` only those outside workflows
        that exist), or the verification failed. Nothing is written.
    :raise psycopg.Error: the database refused a row (a constraint) or failed. Nothing is written.
    """
    result = ImportResult()
    listed = data["workflows"]
    names = {"workflows": [{"id": str(workflow["id"]), "name": workflow["name"]} for workflow in listed]}
    label = functools.partial(_workflow_label, names)
    with conn.transaction(force_rollback=dry_run):
        ids = _ids_in_file(listed, with_runs)
        existing = _existing(conn, ids)
        existing_workflows = {id_ for kind, id_, _ in existing if kind == "workflow"}
        skipped = existing_workflows if skip_existing else set()
        # One line per workflow that exists; ids inside it are not listed again. Other ids that exist belong to
        # another workflow of the database: never skippable.
        conflicts = [f"{label(ids[kind, id_])}: workflow already exists" for kind, id_, _ in existing
                     if kind == "workflow" and id_ not in skipped]
        conflicts += [f"{label(ids[kind, id_])}: {kind} {id_} already exists in workflow {workflow_id}"
                      for kind, id_, workflow_id in existing
                      if kind != "workflow" and listed[ids[kind, id_]]["id"] not in existing_workflows]
        if conflicts:
            hint = ("--skip-existing skips whole workflows that exist; these ids belong to other workflows in the "
                    "database" if skip_existing else "pass --skip-existing to skip workflows that already exist")
            raise PortabilityError(f"{len(conflicts)} id(s) in the file already exist in the database; nothing was "
                                   f"imported ({hint}):\n{_listing(conflicts)}")
        todo = [(w, workflow) for w, workflow in enumerate(listed) if workflow["id"] not in skipped]
        for workflow in listed:
            if workflow["id"] in skipped:
                _add_counts(result.skipped, workflow, with_runs=with_runs)
            if not with_runs:
                _add_counts(result.runs_left_out, workflow, with_runs=True)
        result.missing_files = _missing_files(conn, todo, label)
        with progress("Importing workflows", len(todo)) as bar:
            result.imported = _insert(conn, todo, with_runs, bar)
        with progress("Verifying workflows", len(todo)) as bar:
            result.checksum = _verify(conn, todo, with_runs, label, bar)
    return result


# --- commands -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def command_connection(application_name):
    """Yield a direct autocommit connection (dict rows) to the app's DATABASE_URL for a command, with the pool's
    session settings (statement_timeout, UTC) and ``application_name`` (what a DBA sees in pg_stat_activity).

    A one-off command needs no pool. Database errors become a one-line click error (exit status 1).
    """
    config = current_app.config
    try:
        with psycopg.connect(connection_kwargs(config["DATABASE_URL"], config["STATEMENT_TIMEOUT_MS"],
                                               application_name), autocommit=True, row_factory=dict_row) as conn:
            yield conn
    except psycopg.errors.IntegrityError as exc:
        detail = f" ({exc.diag.message_detail})" if exc.diag.message_detail else ""
        raise click.ClickException(
            f"the database refused the data: {exc.diag.message_primary}{detail}; nothing was written") from None
    except psycopg.OperationalError as exc:
        reason = (exc.diag.message_primary or str(exc).strip().splitlines()[0]) if str(exc) else type(exc).__name__
        raise click.ClickException(f"database {mask_url(config['DATABASE_URL'])}: {reason}") from None
    except psycopg.Error as exc:
        raise click.ClickException(f"database error: {exc.diag.message_primary or str(exc).splitlines()[0]}") from None


def plural(n, word, words=None):
    """Return ``n`` and ``word`` in the number ``n`` calls for (``words``, default word + "s")."""
    return f"{n} {word if n == 1 else words or word + 's'}"


def _summary(counts):
    return (f"{plural(counts['workflows'], 'workflow')}, {plural(counts['nodes'], 'node')}, "
            f"{plural(counts['runs'], 'run')}, {plural(counts['steps'], 'step')}, {plural(counts['events'], 'event')}")


@click.command("export")
@click.option("--workflow", "workflow_ids", type=click.UUID, multiple=True, metavar="ID",
              help="Export only this workflow (repeat for more). Default: every workflow.")
@click.option("--with-runs", is_flag=True, help="Include each workflow's finished runs with their steps and events.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write to this file (complete or not at all: written aside, then renamed) instead of stdout.")
@with_appcontext
def export_command(workflow_ids, with_runs, output):
    """Write workflows and their nodes (and run history) as one versioned JSON document to stdout."""
    workflow_ids = list(dict.fromkeys(workflow_ids)) or None
    with command_connection("flowline-export") as conn:
        if output is None:
            stream = click.get_binary_stream("stdout")
            try:
                result = export(conn, stream, workflow_ids=workflow_ids, with_runs=with_runs)
                stream.flush()
            except PortabilityError as exc:
                raise click.ClickException(str(exc)) from None
            except BrokenPipeError:
                # The reader went away (`| head`): say so once, without a traceback, and keep Python's exit flush
                # of stdout from failing again.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise click.ClickException("stdout was closed before the end: the document is incomplete") from None
            where = "stdout"
        else:
            directory = os.path.dirname(os.path.abspath(output))
            handle = tempfile.NamedTemporaryFile("wb", dir=directory, prefix=".flowline-export-", delete=False)
            try:
                with handle:
                    result = export(conn, handle, workflow_ids=workflow_ids, with_runs=with_runs)
                os.replace(handle.name, output)
            except PortabilityError as exc:
                raise click.ClickException(str(exc)) from None
            finally:
                if os.path.exists(handle.name):
                    os.unlink(handle.name)
            where = output
    click.echo(f"exported {_summary(result.counts)} to {where}", err=True)
    if result.file_references:
        click.echo(f"note: {plural(result.file_references, 'node')} in the export name an uploaded "
                   "file; files are not exported: where they are missing, such nodes fail their runs until they are "
                   "pointed at a file uploaded there", err=True)


@click.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True,
              help="Do the whole import and its verification in a transaction, then roll it back: nothing is written.")
@click.option("--skip-existing", is_flag=True,
              help="Skip the workflows whose id already exists (with their nodes and runs) instead of refusing the file.")
@click.option("--with-runs", is_flag=True, help="Also import the run history the file holds (runs, steps, events).")
@with_appcontext
def import_command(file, dry_run, skip_existing, with_runs):
    """Import an export file in one transaction: all of it, or nothing. FILE may be - for stdin."""
    source = "stdin" if file.name == "<stdin>" else file.name
    try:
        data = read_document(file, source)
    except PortabilityError as exc:
        raise click.ClickException(str(exc)) from None
    with command_connection("flowline-import") as conn:
        try:
            result = import_data(conn, data, dry_run=dry_run, skip_existing=skip_existing, with_runs=with_runs)
        except PortabilityError as exc:
            raise click.ClickException(str(exc)) from None
    for line in result.missing_files:
        click.echo(f"warning: {line}; its runs fail until the node names an uploaded file "
                   "(upload the PDF, then PATCH the node's config)", err=True)
    verb = "would import" if dry_run else "imported"
    click.echo(f"{verb} {_summary(result.imported)}")
    if any(result.skipped.values()):
        click.echo(f"skipped (the workflow already exists): {_summary(result.skipped)}")
    if not with_runs and result.runs_left_out["runs"]:
        left = result.runs_left_out
        click.echo(f"not imported: {plural(left['runs'], 'run')} with {plural(left['steps'], 'step')} and "
                   f"{plural(left['events'], 'event')} (pass --with-runs to import the run history)")
    if with_runs and not any(workflow["runs"] for workflow in data["workflows"]):
        click.echo("note: the file holds no run history (exported without --with-runs?)")
    click.echo(f"verified: {plural(result.imported['workflows'], 'workflow')} read back identical to the file "
               f"(counts, and the md5 of each workflow's canonical JSON); checksum {result.checksum}")
    if result.missing_files:
        click.echo(f"warning: {plural(len(result.missing_files), 'node')} imported name a file "
                   "this database does not have (listed on stderr)")
    if dry_run:
        click.echo("dry run: rolled back, nothing was written")
