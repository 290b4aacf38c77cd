"""PostgreSQL clusters a test may stop and start."""

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from flowline.data import pgbin

# The server programs scripts/with_pg.sh runs: $PGBIN, else the newest installed PostgreSQL.
PGBIN = pgbin.directory()


def cluster_url(home):
    """Return the URL of database postgres on the throwaway cluster whose socket folder is ``home`` (the ``home``
    throwaway_cluster yields, when its options keep port 5432)."""
    return f"postgresql://postgres@/postgres?host={home}&port=5432"


def _new_home(prefix, options):
    """Make a temporary folder for a cluster (the server's user's, as root); return ``(home, data folder,
    the command prefix running a program as the server's user, pg_ctl)``, the server ``options`` added to the
    socket-only, no-fsync ones."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(home, "postgres")
    data = home / "data"
    options = f"-k {home} -c listen_addresses='' -p 5432 -c fsync=off {options}"
    return home, data, as_postgres, _pg_ctl(home, data, options, as_postgres)


def _pg_ctl(home, data, options, as_postgres):
    """Return ``pg_ctl(*args)``: pg_ctl on the cluster in ``data`` (log in ``home``), passing the server ``options``
    again on a start or restart; a failure raises with the end of the server's log."""

    def pg_ctl(*args):
        if args and args[-1] in ("start", "restart"):
            args = ("-o", options, *args)
        done = subprocess.run(
            [*as_postgres, f"{PGBIN}/pg_ctl", "-D", data, "-l", home / "server.log", "-w", *args],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            log = (home / "server.log").read_text() if (home / "server.log").exists() else ""
            raise AssertionError(f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}\n{log[-3000:]}")

    return pg_ctl


@contextmanager
def throwaway_cluster(prefix="flowline-cluster-", options="", configure=None):
    """Run a PostgreSQL cluster of the caller's own in a temporary folder (trust auth on its unix socket there,
    port 5432 unless ``options`` says otherwise); yield ``(home, pg_ctl)``.

    ``configure(data_dir)`` runs after initdb and before the first start (to add certificates, edit pg_hba.conf);
    the files it writes are handed to the server's user. ``pg_ctl(*args)`` runs pg_ctl on the cluster (``"stop"``,
    ``"-m", "fast", "restart"``...), passing the server ``options`` again on a start or restart.
    """
    if PGBIN is None or not Path(PGBIN, "pg_ctl").exists():
        pytest.fail("PostgreSQL server binaries are needed (Debian: apt-get install postgresql)")
    home, data, as_postgres, pg_ctl = _new_home(prefix, options)

    try:
        subprocess.run(
            [
                *as_postgres,
                f"{PGBIN}/initdb",
                "-D",
                data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
        )
        if configure is not None:
            configure(data)
            if as_postgres:
                subprocess.run(["chown", "-R", "postgres:", data], check=True)
        pg_ctl("start")
        yield home, pg_ctl
    finally:
        subprocess.run([*as_postgres, f"{PGBIN}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def streaming_replica(primary_home, prefix="flowline-replica-"):
    """Run a streaming replica of the throwaway cluster whose socket folder is ``primary_home`` (a hot standby made
    with ``pg_basebackup -R``, on its own socket folder, port 5432); yield ``(home, pg_ctl)`` as throwaway_cluster
    does."""
    home, data, as_postgres, pg_ctl = _new_home(prefix, "-c hot_standby=on")

    try:
        subprocess.run(
            [
                *as_postgres,
                *(f"{PGBIN}/pg_basebackup", "-D", data, "-h", primary_home, "-p", "5432", "-U", "postgres"),
                *("-R", "--checkpoint=fast", "--no-sync"),
            ],
            check=True,
            capture_output=True,
        )
        pg_ctl("start")
        yield home, pg_ctl
    finally:
        subprocess.run([*as_postgres, f"{PGBIN}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
