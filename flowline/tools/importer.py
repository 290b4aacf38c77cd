"""Import: the whole file validated (export_format) before anything is written, then written in one transaction;
a conflicting id, a constraint violation or a failed verification (every imported workflow read back and
compared with the file: counts, and the md5 of its canonical JSON) rolls all of it back."""

import functools
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from marshmallow import ValidationError
from psycopg import Connection
from psycopg.types.json import Jsonb

from .. import nodes
from ..data import db, partitions
from .checksums import workflow_checksum
from .export import RUN_BATCH, WORKFLOW_BATCH, Progress, ProgressFactory, iter_runs, progress_bar, workflows_batch
from .export_format import KINDS, PortabilityError, add_counts, counts_text, listing, workflow_label, workflow_schema

# Rows per INSERT statement, and ids per conflict lookup.
ROW_BATCH = 1000

T = TypeVar("T")
# A workflow of the file with its index there, and how a problem in the one at an index is named.
Indexed = tuple[int, dict[str, Any]]
Label = Callable[[int], str]


@dataclass
class ImportResult:
    """What an import did: counts of each kind imported, skipped (their workflow existed) and left out (runs
    without --with-runs), the nodes naming a file this database lacks, and the checksum of what was written."""

    imported: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    runs_left_out: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    missing_files: list[str] = field(default_factory=list)
    # Runs whose schedule_id names no schedule of this database: imported with schedule_id null.
    unlinked_schedule_runs: int = 0
    checksum: str = ""


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    """Yield ``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _rows(rows: Sequence[Mapping[str, Any]]) -> Jsonb:
    return Jsonb(rows, dumps=functools.partial(json.dumps, default=_json_default))


def _ids_in_file(workflows: Sequence[Mapping[str, Any]], with_runs: bool) -> dict[tuple[str, UUID], int]:
    """Return {(kind, id): index of its workflow} for every id an import would insert."""
    ids: dict[tuple[str, UUID], int] = {}
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


def _existing(conn: Connection[Any], ids: Mapping[tuple[str, UUID], int]) -> list[tuple[str, UUID, UUID]]:
    """Return [(kind, id, workflow_id in the database)] for the ``ids`` that are already taken."""
    by_kind = {kind: [id_ for k, id_ in ids if k == kind] for kind in ("workflow", "node", "run", "step", "event")}
    found = []
    longest = max(len(v) for v in by_kind.values())
    for start in range(0, longest, ROW_BATCH):
        part = {kind: values[start : start + ROW_BATCH] for kind, values in by_kind.items()}
        rows = db.many(
            conn,
            "find_existing_ids",
            workflow_ids=part["workflow"],
            node_ids=part["node"],
            run_ids=part["run"],
            step_ids=part["step"],
            event_ids=part["event"],
        )
        found += [(row["kind"], row["id"], row["workflow_id"]) for row in rows]
    return found


def _missing_files(conn: Connection[Any], workflows: list[Indexed], document_label: Label) -> list[str]:
    """Return a line per file reference of a node (the config keys its type declares) that this database lacks."""
    referencing = [
        (w, n, node["node_type"], UUID(file_id))
        for w, workflow in workflows
        for n, node in enumerate(workflow["nodes"])
        for _, file_id in nodes.BY_NAME[node["node_type"]].files(node["config"])
    ]
    wanted = sorted({file_id for *_, file_id in referencing})
    present: set[UUID] = set()
    for chunk in chunks(wanted, ROW_BATCH):
        present |= {row["id"] for row in db.many(conn, "find_existing_files", file_ids=chunk)}
    return [
        f"{document_label(w)}: nodes[{n}] ({node_type}) names file {file_id}, which this database does not have"
        for w, n, node_type, file_id in referencing
        if file_id not in present
    ]


def _unlink_missing_schedules(conn: Connection[Any], workflows: list[Indexed]) -> int:
    """Set null the ``schedule_id`` of the runs in ``workflows`` whose schedule this database lacks (schedules are
    not exported); return how many. Done on the loaded file, so the verification compares what was written."""
    runs = [run for _, workflow in workflows for run in workflow["runs"] if run["schedule_id"] is not None]
    wanted = sorted({run["schedule_id"] for run in runs})
    present: set[UUID] = set()
    for chunk in chunks(wanted, ROW_BATCH):
        present |= {row["id"] for row in db.many(conn, "find_existing_schedules", schedule_ids=chunk)}
    unlinked = [run for run in runs if run["schedule_id"] not in present]
    for run in unlinked:
        run["schedule_id"] = None
    return len(unlinked)


_INSERTS: dict[str, Callable[[Connection[Any], Jsonb], int]] = {
    "workflows": lambda conn, rows: db.execute(conn, "import_workflows", rows=rows),
    "nodes": lambda conn, rows: db.execute(conn, "import_nodes", rows=rows),
    "runs": lambda conn, rows: db.execute(conn, "import_runs", rows=rows),
    "steps": lambda conn, rows: db.execute(conn, "import_run_steps", rows=rows),
    "events": lambda conn, rows: db.execute(conn, "import_run_events", rows=rows),
}


def _insert(conn: Connection[Any], workflows: list[Indexed], with_runs: bool, bar: Progress) -> dict[str, int]:
    """Insert ``workflows`` [(index, workflow)] with their nodes (and runs), batch by batch; return the counts."""
    counts = dict.fromkeys(KINDS, 0)
    for chunk in chunks(workflows, WORKFLOW_BATCH):
        tables: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        for _, workflow in chunk:
            tables["workflows"].append(
                {
                    k: workflow[k]
                    for k in (
                        "id",
                        "name",
                        "created_at",
                        "updated_at",
                        "version",
                        "max_concurrent_runs",
                        "max_concurrent_runs_per_key",
                        "max_tokens_per_run",
                    )
                }
            )
            tables["nodes"] += [dict(node, workflow_id=workflow["id"]) for node in workflow["nodes"]]
            for run in workflow["runs"] if with_runs else ():
                tables["runs"].append(
                    dict({k: v for k, v in run.items() if k not in ("steps", "events")}, workflow_id=workflow["id"])
                )
                tables["steps"] += [dict(step, run_id=run["id"]) for step in run["steps"]]
                tables["events"] += [dict(event, run_id=run["id"]) for event in run["events"]]
        # Parents first (KINDS is in that order): the foreign keys are checked row by row.
        for kind in KINDS:
            for rows in chunks(tables[kind], ROW_BATCH):
                counts[kind] += _INSERTS[kind](conn, _rows(rows))
        bar.update(len(chunk))
    return counts


def _read_back(
    conn: Connection[Any], workflow_ids: list[UUID], with_runs: bool
) -> Iterator[tuple[UUID, dict[str, Any]]]:
    """Yield (id, document) for each of ``workflow_ids`` the database holds, read as export reads it."""
    for chunk in chunks(workflow_ids, WORKFLOW_BATCH):
        for row in workflows_batch(conn, chunk, None, len(chunk)):
            document = json.loads(row["body"])
            if with_runs:
                document["runs"] = [json.loads(run["body"]) for run in iter_runs(conn, row["id"], RUN_BATCH)]
            yield row["id"], document


def _verify(
    conn: Connection[Any], workflows: list[Indexed], with_runs: bool, document_label: Label, bar: Progress
) -> str:
    """Read every imported workflow back and compare it with the file (counts, and each workflow's md5); return
    the checksum of the whole import (the md5 of the workflows' md5s in id order).

    :raise PortabilityError: anything differs (the caller's transaction then rolls back).
    """
    expected = {workflow["id"]: (w, workflow_checksum(workflow, with_runs=with_runs)) for w, workflow in workflows}
    expected_counts, counts = dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0)
    for _, workflow in workflows:
        add_counts(expected_counts, workflow, with_runs=with_runs)
    found: dict[UUID, str] = {}
    problems: list[str] = []
    for workflow_id, document in _read_back(conn, list(expected), with_runs):
        try:
            # Loaded with the file's schema, so both sides are compared in one form.
            workflow = workflow_schema.load(document)
        except ValidationError as exc:
            problems.append(f"{document_label(expected[workflow_id][0])}: reads back invalid: {exc.messages}")
            continue
        add_counts(counts, workflow, with_runs=with_runs)
        found[workflow_id] = workflow_checksum(workflow, with_runs=with_runs)
        bar.update(1)
    for workflow_id, (w, checksum) in expected.items():
        if workflow_id not in found:
            problems.append(f"{document_label(w)}: not found after import")
        elif found[workflow_id] != checksum:
            problems.append(f"{document_label(w)}: md5 {found[workflow_id]} read back, {checksum} in the file")
    if counts != expected_counts:
        problems.append(f"read back {counts_text(counts)}; the file has {counts_text(expected_counts)}")
    if problems:
        raise PortabilityError(
            "verification failed, the import was rolled back (nothing was imported):\n" + listing(problems)
        )
    digest = hashlib.md5()
    for workflow_id in sorted(found, key=str):
        digest.update(found[workflow_id].encode())
    return digest.hexdigest()


def import_data(
    conn: Connection[Any],
    data: Mapping[str, Any],
    *,
    dry_run: bool = False,
    skip_existing: bool = False,
    with_runs: bool = False,
    partition_period: str,
    progress: ProgressFactory = progress_bar,
) -> ImportResult:
    """Import validated export ``data`` (from :func:`read_document`) in one transaction on the autocommit
    connection ``conn``; return an :class:`ImportResult`. With ``dry_run`` everything is done and checked, then
    rolled back. With ``with_runs``, the history partitions the runs' steps and events need are made first (each
    ``partition_period`` long), in a short transaction of their own, kept even by a dry run or a refused import
    (they are empty): made inside the import's transaction, each would hold its parent's lock and the makers'
    advisory lock until the import ends, holding the workers' partition upkeep back as long.

    :raise PortabilityError: ids already taken (all listed; with ``skip_existing`` only those outside workflows
        that exist), or the verification failed. Nothing is written.
    :raise psycopg.Error: the database refused a row (a constraint) or failed. Nothing is written.
    """
    result = ImportResult()
    listed = data["workflows"]
    names = {"workflows": [{"id": str(workflow["id"]), "name": workflow["name"]} for workflow in listed]}
    label = functools.partial(workflow_label, names)
    if with_runs:
        partitions.make_for(
            conn, (run["created_at"] for workflow in listed for run in workflow["runs"]), partition_period
        )
    with conn.transaction(force_rollback=dry_run):
        ids = _ids_in_file(listed, with_runs)
        existing = _existing(conn, ids)
        existing_workflows = {id_ for kind, id_, _ in existing if kind == "workflow"}
        skipped = existing_workflows if skip_existing else set()
        # One line per workflow that exists; ids inside it are not listed again. Other ids that exist belong to
        # another workflow of the database: never skippable.
        conflicts = [
            f"{label(ids[kind, id_])}: workflow already exists"
            for kind, id_, _ in existing
            if kind == "workflow" and id_ not in skipped
        ]
        conflicts += [
            f"{label(ids[kind, id_])}: {kind} {id_} already exists in workflow {workflow_id}"
            for kind, id_, workflow_id in existing
            if kind != "workflow" and listed[ids[kind, id_]]["id"] not in existing_workflows
        ]
        if conflicts:
            hint = (
                "--skip-existing skips whole workflows that exist; these ids belong to other workflows in the database"
                if skip_existing
                else "pass --skip-existing to skip workflows that already exist"
            )
            raise PortabilityError(
                f"{len(conflicts)} id(s) in the file already exist in the database; nothing was "
                f"imported ({hint}):\n{listing(conflicts)}"
            )
        todo = [(w, workflow) for w, workflow in enumerate(listed) if workflow["id"] not in skipped]
        for workflow in listed:
            if workflow["id"] in skipped:
                add_counts(result.skipped, workflow, with_runs=with_runs)
            if not with_runs:
                add_counts(result.runs_left_out, workflow, with_runs=True)
        result.missing_files = _missing_files(conn, todo, label)
        if with_runs:
            result.unlinked_schedule_runs = _unlink_missing_schedules(conn, todo)
        with progress("Importing workflows", len(todo)) as bar:
            result.imported = _insert(conn, todo, with_runs, bar)
        with progress("Verifying workflows", len(todo)) as bar:
            result.checksum = _verify(conn, todo, with_runs, label, bar)
    return result
