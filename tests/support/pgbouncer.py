"""A real PgBouncer in transaction pooling mode in front of a test server, as a busy deployment runs one.

Debian's pgbouncer (1.18 on this machine's release) is started from its binary with a config of its own, listening
on a unix socket in a temporary folder; it refuses to run as root, so as root it runs as the `postgres` user, as
the servers do (tests/support/clusters.py).
"""

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import psycopg
import pytest

PGBOUNCER = os.environ.get("PGBOUNCER") or shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PORT = 6432


def require_pgbouncer():
    """Skip the calling test when pgbouncer is not installed, saying so; under CI (.ci/run sets CI=true) fail."""
    if not Path(PGBOUNCER).exists():
        reason = "the PgBouncer tests need pgbouncer: apt-get install pgbouncer (or set PGBOUNCER to its path)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def _server_of(url):
    """Return (socket folder or host, port, user) of the libpq URL ``url``."""
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return query.get("host") or parts.hostname, query.get("port") or parts.port or 5432, parts.username or "postgres"


@contextmanager
def running_pgbouncer(server_url, pool_size=20):
    """Run PgBouncer (transaction pooling, ``pool_size`` server connections per database) in front of the server
    of ``server_url``; yield ``through(url)``, which returns a URL of that server's as one through PgBouncer."""
    require_pgbouncer()
    host, port, user = _server_of(server_url)
    home = Path(tempfile.mkdtemp(prefix="flowline-pgbouncer-"))
    as_postgres = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
    (home / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={host} port={port} user={user}

[pgbouncer]
listen_addr =
unix_socket_dir = {home}
listen_port = {PORT}
auth_type = any
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 2000
admin_users = {user}
logfile = {home}/pgbouncer.log
pidfile = {home}/pgbouncer.pid
"""
    )
    if as_postgres:
        shutil.chown(home, "postgres", "postgres")
    process = subprocess.Popen(
        [PGBOUNCER, str(home / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **as_postgres,
    )

    def through(url):
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=f"{user}@", query=f"host={home}&port={PORT}"))

    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, f"pgbouncer exited: {_log(home)}"
            try:
                psycopg.connect(through(server_url), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, f"pgbouncer did not start: {_log(home)}"
                time.sleep(0.05)
        yield through
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(home, ignore_errors=True)


def _log(home):
    log = home / "pgbouncer.log"
    return log.read_text()[-3000:] if log.exists() else "(no log)"
