"""What a benchmark ran on: CPU, memory, OS, Python, PostgreSQL and its durability settings."""

import os
import platform
import socket
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit


def _first_value(path, prefix):
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":" if ":" in line else "=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def facts(pg_conn, packages=("flask", "gunicorn", "psycopg", "psycopg-binary", "psycopg-pool", "marshmallow")):
    """Return the machine's facts as a dict; ``pg_conn`` is a connection to the server the benchmark used."""
    mem_kib = _first_value("/proc/meminfo", "MemTotal:")
    pg = pg_conn.execute(
        "SELECT current_setting('server_version'), current_setting('fsync'), "
        "current_setting('synchronous_commit'), current_setting('shared_buffers'), "
        "current_setting('max_connections')"
    ).fetchone()
    versions = {}
    for dist in packages:
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    host = urlsplit(os.environ["DATABASE_URL"])
    return {
        "hostname": socket.gethostname(),
        "cpu_model": _first_value("/proc/cpuinfo", "model name") or "unknown",
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": round(int(mem_kib.split()[0]) / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "os": _first_value("/etc/os-release", "PRETTY_NAME=") or platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg[0],
        "postgresql_settings": {
            "fsync": pg[1],
            "synchronous_commit": pg[2],
            "shared_buffers": pg[3],
            "max_connections": pg[4],
        },
        "postgresql_via": (
            "unix socket" if "host=/" in (host.query or "") or not host.hostname else f"tcp {host.hostname}"
        ),
        "load_average_at_start": os.getloadavg(),
        "packages": versions,
    }


def describe(facts, sharing):
    """Return the two lines a benchmark prints first: the machine from ``facts`` (facts()), then its PostgreSQL,
    with ``sharing`` saying which processes shared the machine (e.g. "workers, server and this script")."""
    p = facts["postgresql_settings"]
    return (
        f"machine     {facts['hostname']}: {facts['cpu_model']}, {facts['cores']} cores, {facts['ram_gib']} GiB, "
        f"{facts['os']}, kernel {facts['kernel']}, Python {facts['python']}\n"
        f"postgresql  {facts['postgresql']} via {facts['postgresql_via']} (fsync={p['fsync']}, "
        f"synchronous_commit={p['synchronous_commit']}); {sharing} share the machine"
    )
