"""Where PostgreSQL's programs are on this machine, found as scripts/with_pg.sh finds initdb: ``$PGBIN``, else the
newest Debian installation (/usr/lib/postgresql/<major>/bin), else PATH. ``make schema`` uses it for pg_dump; the
tests and benches for pg_ctl, initdb, psql and pgbench."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_DEBIAN = Path("/usr/lib/postgresql")


def directory() -> Path | None:
    """Return ``$PGBIN``, else the bin folder of the newest PostgreSQL under /usr/lib/postgresql, else None."""
    if os.environ.get("PGBIN"):
        return Path(os.environ["PGBIN"])
    majors = [path for path in _DEBIAN.glob("*/bin") if path.parent.name.isdigit()]
    return max(majors, key=lambda path: int(path.parent.name), default=None)


def program(name: str) -> str | None:
    """Return the path of PostgreSQL's program ``name`` (pg_dump, psql...): in ``directory()``, else on PATH; None
    when there is none."""
    folder = directory()
    if folder is not None and os.access(folder / name, os.X_OK):
        return str(folder / name)
    return shutil.which(name)
