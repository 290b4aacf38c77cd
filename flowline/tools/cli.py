"""The tools' commands: ``flask --app app export [--workflow ID ...] [--with-runs] [--output FILE]`` and
``flask --app app import FILE [--dry-run] [--skip-existing] [--with-runs]`` (FILE may be - for stdin), and what
every tool command shares: a direct connection, counted words."""

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from typing import IO
from uuid import UUID

import click
import psycopg
from flask import current_app
from flask.cli import with_appcontext
from psycopg.rows import DictRow, dict_row

from ..core.config import connection_kwargs, mask_url, settings_of
from .export import export
from .export_format import PortabilityError, read_document
from .importer import import_data


@contextlib.contextmanager
def command_connection(application_name: str) -> Iterator[psycopg.Connection[DictRow]]:
    """Yield a direct autocommit connection (dict rows) to the server itself (DATABASE_DIRECT_URL, else
    DATABASE_URL) for a command, with the pool's session settings (statement_timeout, UTC) and ``application_name``
    (what a DBA sees in pg_stat_activity).

    A one-off command needs no pool, and an export's long snapshot or a prune's batches would hold one of a
    pooler's server connections for as long anyway. Database errors become a one-line click error (exit status 1).
    """
    config = settings_of(current_app)
    try:
        with psycopg.connect(
            connection_kwargs(config.direct_url, config.statement_timeout_ms, application_name),
            autocommit=True,
            row_factory=dict_row,
        ) as conn:
            yield conn
    except psycopg.errors.IntegrityError as exc:
        detail = f" ({exc.diag.message_detail})" if exc.diag.message_detail else ""
        raise click.ClickException(
            f"the database refused the data: {exc.diag.message_primary}{detail}; nothing was written"
        ) from None
    except psycopg.OperationalError as exc:
        reason = (exc.diag.message_primary or str(exc).strip().splitlines()[0]) if str(exc) else type(exc).__name__
        raise click.ClickException(f"database {mask_url(config.direct_url)}: {reason}") from None
    except psycopg.Error as exc:
        raise click.ClickException(f"database error: {exc.diag.message_primary or str(exc).splitlines()[0]}") from None


def plural(n: int, word: str, words: str | None = None) -> str:
    """Return ``n`` and ``word`` in the number ``n`` calls for (``words``, default word + "s")."""
    return f"{n} {word if n == 1 else words or word + 's'}"


def _summary(counts: Mapping[str, int]) -> str:
    return (
        f"{plural(counts['workflows'], 'workflow')}, {plural(counts['nodes'], 'node')}, "
        f"{plural(counts['runs'], 'run')}, {plural(counts['steps'], 'step')}, {plural(counts['events'], 'event')}"
    )


@click.command("export")
@click.option(
    "--workflow",
    "workflow_ids",
    type=click.UUID,
    multiple=True,
    metavar="ID",
    help="Export only this workflow (repeat for more). Default: every workflow.",
)
@click.option("--with-runs", is_flag=True, help="Include each workflow's finished runs with their steps and events.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to this file (complete or not at all: written aside, then renamed) instead of stdout.",
)
@with_appcontext
def export_command(workflow_ids: tuple[UUID, ...], with_runs: bool, output: str | None) -> None:
    """Write workflows and their nodes (and run history) as one versioned JSON document to stdout."""
    wanted = list(dict.fromkeys(workflow_ids)) or None
    with command_connection("flowline-export") as conn:
        if output is None:
            stream = sys.stdout.buffer
            try:
                result = export(conn, stream, workflow_ids=wanted, with_runs=with_runs)
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
            handle = tempfile.NamedTemporaryFile("wb", dir=directory, prefix=".flowline-export-", delete=False)  # noqa: SIM115 -- closed by the with below; kept to rename
            try:
                with handle:
                    result = export(conn, handle, workflow_ids=wanted, with_runs=with_runs)
                os.replace(handle.name, output)
            except PortabilityError as exc:
                raise click.ClickException(str(exc)) from None
            finally:
                if os.path.exists(handle.name):
                    os.unlink(handle.name)
            where = output
    click.echo(f"exported {_summary(result.counts)} to {where}", err=True)
    # Their secrets must not leave the database, and a copy elsewhere would deliver the same events twice.
    click.echo(
        "note: webhook subscriptions (and their secrets and delivery history) are not exported: subscribe again "
        "where you import (POST /workflows/{id}/webhooks)",
        err=True,
    )
    # A copy elsewhere would fire the same ticks twice; the runs keep schedule_id and scheduled_for.
    click.echo(
        "note: schedules are not exported: create them again where you import (POST /workflows/{id}/schedules); "
        "exported runs keep their schedule_id, imported null where that schedule does not exist",
        err=True,
    )
    if result.file_references:
        click.echo(
            f"note: {plural(result.file_references, 'node')} in the export name an uploaded "
            "file; files are not exported: where they are missing, such nodes fail their runs until they are "
            "pointed at a file uploaded there",
            err=True,
        )


@click.command("import")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--dry-run",
    is_flag=True,
    help="Do the whole import and its verification in a transaction, then roll it back: nothing is written.",
)
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Skip the workflows whose id already exists (with their nodes and runs) instead of refusing the file.",
)
@click.option("--with-runs", is_flag=True, help="Also import the run history the file holds (runs, steps, events).")
@with_appcontext
def import_command(file: IO[bytes], dry_run: bool, skip_existing: bool, with_runs: bool) -> None:
    """Import an export file in one transaction: all of it, or nothing. FILE may be - for stdin."""
    source = "stdin" if file.name == "<stdin>" else file.name
    try:
        data = read_document(file, source)
    except PortabilityError as exc:
        raise click.ClickException(str(exc)) from None
    with command_connection("flowline-import") as conn:
        try:
            result = import_data(
                conn,
                data,
                dry_run=dry_run,
                skip_existing=skip_existing,
                with_runs=with_runs,
                partition_period=settings_of(current_app).history_partition_period,
            )
        except PortabilityError as exc:
            raise click.ClickException(str(exc)) from None
    for line in result.missing_files:
        click.echo(
            f"warning: {line}; its runs fail until the node names an uploaded file "
            "(upload the PDF, then PATCH the node's config)",
            err=True,
        )
    verb = "would import" if dry_run else "imported"
    click.echo(f"{verb} {_summary(result.imported)}")
    if any(result.skipped.values()):
        click.echo(f"skipped (the workflow already exists): {_summary(result.skipped)}")
    if not with_runs and result.runs_left_out["runs"]:
        left = result.runs_left_out
        click.echo(
            f"not imported: {plural(left['runs'], 'run')} with {plural(left['steps'], 'step')} and "
            f"{plural(left['events'], 'event')} (pass --with-runs to import the run history)"
        )
    if with_runs and not any(workflow["runs"] for workflow in data["workflows"]):
        click.echo("note: the file holds no run history (exported without --with-runs?)")
    click.echo(
        f"verified: {plural(result.imported['workflows'], 'workflow')} read back identical to the file "
        f"(counts, and the md5 of each workflow's canonical JSON); checksum {result.checksum}"
    )
    if result.missing_files:
        click.echo(
            f"warning: {plural(len(result.missing_files), 'node')} imported name a file "
            "this database does not have (listed on stderr)"
        )
    if result.unlinked_schedule_runs:
        click.echo(
            f"note: {plural(result.unlinked_schedule_runs, 'run')} name a schedule this database does not have: "
            "imported with schedule_id null (scheduled_for kept)"
        )
    if dry_run:
        click.echo("dry run: rolled back, nothing was written")
