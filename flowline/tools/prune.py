"""Retention: ``flask --app app prune-runs --older-than 30d [--status Succeeded ...] [--dry-run]``.

First it drops the partitions of run_steps and run_events (by their run's created_at) that lie wholly before the
cutoff and hold only runs it deletes (none Pending or Running, none of a status ``--status`` keeps, none finished
after the cutoff): each is detached ``CONCURRENTLY`` (reads and writes go on) and dropped, which frees its space at
once where deleting its rows would leave them dead for vacuum. A detach that was interrupted is finished with
``FINALIZE`` by the next prune, and a partition detached but not yet dropped is dropped. Detaching and dropping need
the owner of those tables (PostgreSQL has no privilege for it, and ``DETACH … CONCURRENTLY`` cannot run inside a
SECURITY DEFINER function: no transaction block): run as another role, prune-runs says so and deletes row by row.

Then it deletes finished runs (Succeeded, Failed, Cancelled; never Pending or Running, which are the queue) that
finished before the cutoff, with their steps and events (the trigger runs_delete_history, migration 0022) and webhook
deliveries (ON DELETE CASCADE), and, whatever ``--status`` says, the webhook deliveries that became Delivered or
Dead before the same cutoff (never Pending or Delivering ones, which are the outbox). It deletes in batches, each
its own short transaction that locks only the rows it deletes (``FOR UPDATE SKIP LOCKED``), walking
runs_finished_idx oldest first with a keyset cursor: the queue, the API and other prunes go on meanwhile, and a
prune stopped half-way (Ctrl-C, a timeout) keeps what it deleted and can simply be run again.
"""

import re
from collections.abc import Collection
from datetime import datetime
from typing import Any

import click
from flask.cli import with_appcontext
from psycopg import Connection

from ..core.statuses import FINISHED_STATUSES
from ..data import db
from .cli import command_connection, plural

DEFAULT_BATCH_SIZE = 1000
_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([hdw])\s*$")


def parse_duration(text: str) -> int:
    """Return the seconds in a duration such as ``12h``, ``30d`` or ``2w`` (hours, days, weeks; at least 1).

    :raise ValueError: for anything else, with a message saying what is accepted.
    """
    match = _DURATION.match(text or "")
    if not match or int(match[1]) < 1:
        raise ValueError(
            f"{text!r} is not a duration: use a whole number of hours, days or weeks, such as 12h, 30d or 2w"
        )
    return int(match[1]) * _UNITS[match[2]]


class Duration(click.ParamType):
    """A click parameter read with :func:`parse_duration` (seconds)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _walk(conn: Connection[Any], status: str, cutoff: datetime, batch_size: int, *, dry_run: bool) -> dict[str, int]:
    """Delete (or with ``dry_run`` only count) the runs in ``status`` that finished before ``cutoff``, batch by
    batch; return {"runs", "steps", "events", "batches"}."""
    totals = {"runs": 0, "steps": 0, "events": 0, "batches": 0}
    after_finished_at = after_id = None
    while True:
        params = dict(
            status=status, cutoff=cutoff, after_finished_at=after_finished_at, after_id=after_id, batch_size=batch_size
        )
        if dry_run:
            row = db.one(conn, "count_prunable_runs_batch", **params)
        else:
            # Autocommit: this statement is its own transaction, so its row locks end with it.
            row = db.one(conn, "prune_runs_batch", **params)
        if row is None or not row["runs"]:
            return totals
        for key in ("runs", "steps", "events"):
            totals[key] += row[key]
        totals["batches"] += 1
        after_finished_at, after_id = row["last_finished_at"], row["last_id"]


def drop_partitions(
    conn: Connection[Any], cutoff: datetime, statuses: Collection[str], *, dry_run: bool = False
) -> list[str] | None:
    """Detach (``CONCURRENTLY``) and drop the history partitions lying wholly before ``cutoff`` whose runs are all
    in ``statuses`` and finished before it, on the autocommit connection ``conn``; return their names (with
    ``dry_run``, those it would drop), or None when the connected role does not own the tables (nothing dropped).
    Finishes what an interrupted prune left: a half-done detach (``FINALIZE``), a detached partition not dropped.
    """
    owner = db.one(conn, "owns_history_tables")
    if owner is None or not owner["owner"]:
        return None
    if dry_run:
        rows = db.many(conn, "list_droppable_history_partitions", cutoff=cutoff, statuses=list(statuses))
        return [row["partition"] for row in rows]
    for row in db.many(conn, "list_half_detached_history_partitions"):
        db.execute_ddl(conn, "finalize_history_partition_detach", parent=row["parent"], partition=row["partition"])
    dropped = [row["partition"] for row in db.many(conn, "list_detached_history_tables")]
    for row in db.many(conn, "list_droppable_history_partitions", cutoff=cutoff, statuses=list(statuses)):
        # Returns once no transaction can still read the partition through its parent: the DROP takes its lock
        # at once (no foreign key ties it to runs, migration 0022).
        db.execute_ddl(conn, "detach_history_partition", parent=row["parent"], partition=row["partition"])
        dropped.append(row["partition"])
    for partition in dropped:
        db.execute_ddl(conn, "drop_history_partition", partition=partition)
    return dropped


def prune(
    conn: Connection[Any],
    older_than_seconds: int,
    statuses: Collection[str] = FINISHED_STATUSES,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
) -> tuple[datetime, dict[str, dict[str, int]], list[str] | None]:
    """Drop the history partitions that hold only runs to delete (:func:`drop_partitions`), then delete (or with
    ``dry_run`` count) the finished runs in ``statuses`` older than ``older_than_seconds`` on the autocommit
    connection ``conn``; return (cutoff, {status: totals}, the partitions dropped or None: not the tables' owner).
    The steps and events of the runs whose partitions were dropped are gone before their runs are deleted, so the
    totals do not count them.

    :raise ValueError: a status that is not a finished one.
    """
    unknown = set(statuses) - set(FINISHED_STATUSES)
    if unknown:
        raise ValueError(f"only finished runs can be pruned, not {', '.join(sorted(unknown))}")
    row = db.one(conn, "prune_cutoff", older_than_seconds=older_than_seconds)
    assert row is not None  # a SELECT without FROM: always one row
    cutoff = row["cutoff"]
    dropped = drop_partitions(conn, cutoff, statuses, dry_run=dry_run)
    return cutoff, {status: _walk(conn, status, cutoff, batch_size, dry_run=dry_run) for status in statuses}, dropped


def prune_deliveries(
    conn: Connection[Any], cutoff: datetime, *, batch_size: int = DEFAULT_BATCH_SIZE, dry_run: bool = False
) -> int:
    """Delete (or count) the Delivered and Dead webhook deliveries that finished before ``cutoff``, batch by
    batch on the autocommit connection ``conn``; return how many."""
    if dry_run:
        counted = db.one(conn, "count_prunable_webhook_deliveries", cutoff=cutoff)
        assert counted is not None  # a count: always one row
        return int(counted["deliveries"])
    total = 0
    while True:
        row = db.one(conn, "prune_webhook_deliveries_batch", cutoff=cutoff, batch_size=batch_size)
        if row is None or not row["deliveries"]:
            return total
        total += row["deliveries"]


@click.command("prune-runs")
@click.option(
    "--older-than",
    "older_than",
    type=Duration(),
    required=True,
    metavar="DURATION",
    help="Prune runs that finished longer ago than this: 12h, 30d, 2w (hours, days, weeks).",
)
@click.option(
    "--status",
    "statuses",
    # The values: given members of a StrEnum, click would take their names (SUCCEEDED).
    type=click.Choice([status.value for status in FINISHED_STATUSES]),
    multiple=True,
    help="Only runs that ended in this status (repeatable). Default: Succeeded, Failed and Cancelled.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Runs deleted per transaction.",
)
@with_appcontext
def prune_runs_command(older_than: int, statuses: tuple[str, ...], dry_run: bool, batch_size: int) -> None:
    """Drop the history partitions wholly older than a duration, delete finished runs (with their steps and events)
    older than it in small batches, and the webhook deliveries delivered or dead before the same cutoff."""
    statuses = tuple(dict.fromkeys(statuses)) or FINISHED_STATUSES
    with command_connection("flowline-prune") as conn:
        cutoff, results, dropped = prune(conn, older_than, statuses, batch_size=batch_size, dry_run=dry_run)
        deliveries = prune_deliveries(conn, cutoff, batch_size=batch_size, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    if dropped is None:
        click.echo(
            "partitions: none dropped: this role does not own run_steps and run_events; run prune-runs as their "
            "owner (the role that runs the migrations) to drop whole partitions instead of deleting rows"
        )
    else:
        names = f": {', '.join(dropped)}" if dropped else ""
        click.echo(f"partitions: {'would drop' if dry_run else 'dropped'} {plural(len(dropped), 'partition')}{names}")
    total = {key: sum(r[key] for r in results.values()) for key in ("runs", "steps", "events", "batches")}
    for status, r in [*results.items(), ("total", total)]:
        click.echo(
            f"{status}: {verb} {plural(r['runs'], 'run')}, {plural(r['steps'], 'step')}, "
            f"{plural(r['events'], 'event')} in {plural(r['batches'], 'batch', 'batches')}"
        )
    click.echo(
        f"webhook deliveries: {verb} {plural(deliveries, 'delivery', 'deliveries')} delivered or dead before the cutoff"
    )
    click.echo(f"cutoff: runs that finished before {cutoff.isoformat()}")
    if dry_run:
        click.echo("dry run: nothing was deleted")
