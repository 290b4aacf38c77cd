"""Schema migrations: yoyo under the hood (``python -m flowline.data.migrations apply|rollback|status``).

yoyo needs ``postgresql+psycopg://`` (plain ``postgresql://`` means psycopg2 to it); Flowline's DATABASE_URL
stays a plain libpq URL and is converted here, for yoyo only.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from ..core.config import mask_url
from . import db

if TYPE_CHECKING:
    from yoyo.backends import DatabaseBackend

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def yoyo_url(database_url: str) -> str:
    """Return ``database_url`` in the form yoyo's psycopg 3 backend accepts."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError("DATABASE_URL must start with postgresql:// or postgres://")


def migration_ids() -> list[str]:
    """Return the ids of the migrations on disk, in apply order."""
    return list(_migration_ids_on_disk())


@functools.lru_cache(maxsize=1)
def _migration_ids_on_disk() -> tuple[str, ...]:
    # Read once per process: /readyz asks on every probe, and the files only change with a deploy (a restart).
    from yoyo import read_migrations

    return tuple(m.id for m in read_migrations(str(MIGRATIONS_DIR)))


def pending(conn: psycopg.Connection[Any]) -> list[str]:
    """Return the ids of migrations on disk not yet applied, reading yoyo's table without its lock.

    Runs in its own transaction on ``conn`` so a missing table (nothing applied yet) leaves ``conn`` usable.
    """
    try:
        with conn.transaction():
            applied = {row["migration_id"] for row in db.many(conn, "list_applied_migrations")}
    except psycopg.errors.UndefinedTable:
        applied = set()
    return [m for m in migration_ids() if m not in applied]


def _backend(database_url: str) -> DatabaseBackend:
    from yoyo import get_backend

    return get_backend(yoyo_url(database_url))


def apply(database_url: str) -> list[str]:
    """Apply every pending migration; return the ids applied."""
    return apply_up_to(database_url, None)


def apply_up_to(database_url: str, migration_id: str | None) -> list[str]:
    """Apply the pending migrations up to and including ``migration_id`` (None: all); return the ids applied.

    :raise SystemExit: ``migration_id`` is not a migration on disk.
    """
    from yoyo import read_migrations

    with _backend(database_url) as backend, backend.lock():
        todo = backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))
        if migration_id is not None:
            ids = migration_ids()
            if migration_id not in ids:
                raise SystemExit(f"{migration_id} is not a migration (on disk: {', '.join(ids)})")
            todo = todo.filter(lambda m: ids.index(m.id) <= ids.index(migration_id))
        backend.apply_migrations(todo)
    return [m.id for m in todo]


def rollback(database_url: str, migration_id: str | None = None, everything: bool = False) -> list[str]:
    """Roll back the newest applied migration, or ``migration_id`` and those after it, or ``everything``."""
    from yoyo import read_migrations

    with _backend(database_url) as backend, backend.lock():
        todo = backend.to_rollback(read_migrations(str(MIGRATIONS_DIR)))
        if migration_id:
            ids = [m.id for m in todo]
            if migration_id not in ids:
                raise SystemExit(f"{migration_id} is not an applied migration (applied: {', '.join(ids) or 'none'})")
            todo = todo[: ids.index(migration_id) + 1]
        elif not everything:
            todo = todo[:1]
        backend.rollback_migrations(todo)
    return [m.id for m in todo]


def main(argv: list[str] | None = None) -> int:
    """Run the command line (apply, rollback, status) on the server itself (DATABASE_DIRECT_URL, else
    DATABASE_URL: yoyo's lock and DDL want one session, not a pooler's transactions); return the exit status 0.

    :raise SystemExit: neither is set, or an unknown migration to roll back to.
    """
    parser = argparse.ArgumentParser(prog="python -m flowline.data.migrations", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ap = sub.add_parser("apply", help="apply every pending migration")
    ap.add_argument("--to", help="apply the pending migrations up to and including this one only")
    rb = sub.add_parser("rollback", help="roll back the newest migration (data in what it created is lost)")
    rb.add_argument("--id", help="roll back this migration and every one applied after it")
    rb.add_argument("--all", action="store_true", help="roll back every migration")
    sub.add_parser("status", help="list migrations and whether each is applied")
    args = parser.parse_args(argv)

    url = os.environ.get("DATABASE_DIRECT_URL") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    if args.command == "apply":
        done = apply_up_to(url, args.to)
        print(f"applied {len(done)} migration(s) to {mask_url(url)}: {', '.join(done) or 'none pending'}")
    elif args.command == "rollback":
        done = rollback(url, args.id, args.all)
        print(f"rolled back {len(done)} migration(s) on {mask_url(url)}: {', '.join(done) or 'none applied'}")
    else:
        with psycopg.connect(url, row_factory=psycopg.rows.dict_row, autocommit=True) as conn:
            todo = set(pending(conn))
        for mid in migration_ids():
            print(f"{'pending' if mid in todo else 'applied'}  {mid}")
        if todo:
            print(f"{len(todo)} pending: run `make migrate`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
