"""Export: one consistent snapshot (a REPEATABLE READ, READ ONLY transaction) read in keyset batches and written
as it is read, so its memory is bounded by a batch whatever the size of the database. Only finished runs are
exported (Pending and Running runs are queue state), and never the bytes of uploaded files."""

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Any, Protocol
from uuid import UUID

import click
import psycopg
from psycopg import Connection

from .. import nodes
from ..data import db
from .export_format import FORMAT, KINDS, VERSION, PortabilityError

# Rows per read: a batch of runs carries their steps' input and output texts, hence the smaller batch.
WORKFLOW_BATCH = 100
RUN_BATCH = 100


class Progress(Protocol):
    """What export and import tell of their progress: ``n`` more workflows done."""

    def update(self, n: int) -> None:
        """Count ``n`` more workflows done."""
        ...


# Makes the progress of a walk over ``length`` workflows, shown with ``label`` (or not at all).
ProgressFactory = Callable[[str, int], AbstractContextManager[Progress]]


class _NoProgress:
    def update(self, n: int) -> None:
        pass


def progress_bar(label: str, length: int) -> AbstractContextManager[Progress]:
    """A click progress bar on stderr when stderr is a terminal; nothing otherwise (a log, a pipe, cron)."""
    if length and sys.stderr.isatty():
        return click.progressbar(length=length, label=label, file=sys.stderr)
    return contextlib.nullcontext(_NoProgress())


@dataclass
class ExportResult:
    """What an export wrote: the counts of each kind, and how many nodes name an uploaded file."""

    counts: dict[str, int]
    file_references: int


def iter_runs(conn: Connection[Any], workflow_id: UUID, batch_size: int) -> Iterator[Mapping[str, Any]]:
    """Yield the finished runs of one workflow (rows with ``body`` JSON text), newest first, batch by batch."""
    after_created_at = after_id = None
    while True:
        rows = db.many(
            conn,
            "export_runs_batch",
            workflow_id=workflow_id,
            after_created_at=after_created_at,
            after_id=after_id,
            batch_size=batch_size,
        )
        yield from rows
        if len(rows) < batch_size:
            return
        after_created_at, after_id = rows[-1]["created_at"], rows[-1]["id"]


# The config keys that name an uploaded file, by node type, as the two parallel arrays export's query takes.
_FILE_KEYS = {
    "file_node_types": [t.name for t in nodes.ALL for _ in t.file_keys],
    "file_config_keys": [key for t in nodes.ALL for key in t.file_keys],
}


def workflows_batch(
    conn: Connection[Any], workflow_ids: list[UUID] | None, after_id: UUID | None, batch_size: int
) -> list[dict[str, Any]]:
    """Return up to ``batch_size`` workflows of ``workflow_ids`` (None: all) after ``after_id``, as export writes them."""
    return db.many(
        conn,
        "export_workflows_batch",
        workflow_ids=workflow_ids,
        after_id=after_id,
        batch_size=batch_size,
        **_FILE_KEYS,
    )


def _iter_workflows(
    conn: Connection[Any], workflow_ids: list[UUID] | None, batch_size: int
) -> Iterator[Mapping[str, Any]]:
    """Yield workflows (rows with ``body`` JSON text, nodes included) in id order, batch by batch."""
    after_id = None
    while True:
        rows = workflows_batch(conn, workflow_ids, after_id, batch_size)
        yield from rows
        if len(rows) < batch_size:
            return
        after_id = rows[-1]["id"]


def export(
    conn: Connection[Any],
    out: IO[bytes],
    *,
    workflow_ids: list[UUID] | None = None,
    with_runs: bool = False,
    batch_size: int = WORKFLOW_BATCH,
    run_batch_size: int = RUN_BATCH,
    progress: ProgressFactory = progress_bar,
) -> ExportResult:
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


def _export_snapshot(
    conn: Connection[Any],
    out: IO[bytes],
    workflow_ids: list[UUID] | None,
    with_runs: bool,
    batch_size: int,
    run_batch_size: int,
    progress: ProgressFactory,
) -> ExportResult:
    counts = dict.fromkeys(KINDS, 0)
    file_references = 0

    def write(text: str) -> None:
        out.write(text.encode("utf-8"))

    with conn.transaction():
        head = db.one(conn, "count_workflows_for_export", workflow_ids=workflow_ids)
        assert head is not None  # counts: always one row
        if head["missing"]:
            raise PortabilityError(
                "no workflow has the id(s) " + ", ".join(map(str, head["missing"])) + " (nothing was exported)"
            )
        write(
            f'{{"format": "{FORMAT}", "version": {VERSION}, '
            f'"exported_at": "{head["exported_at"].isoformat()}", "with_runs": {json.dumps(with_runs)},\n'
            f'"workflows": ['
        )
        with progress("Exporting workflows", head["workflows"]) as bar:
            for row in _iter_workflows(conn, workflow_ids, batch_size):
                write(",\n" if counts["workflows"] else "\n")
                body = row["body"]
                if with_runs:
                    # body is a JSON object written by PostgreSQL: its last character is the closing brace.
                    write(body[:-1] + ', "runs" : [')
                    for n, run in enumerate(iter_runs(conn, row["id"], run_batch_size)):
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
