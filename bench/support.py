"""What the benchmarks share: their PostgreSQL (a throwaway one when DATABASE_URL is unset), fresh databases on it,
Flowline's gunicorn and workers started the way `make run` starts them, JSON requests, and progress lines.

Free ports and database URLs are the tests' (tests/support/urls.py).
"""

import http.client as http_client
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from flowline.data import migrations
from tests.support.paths import ROOT
from tests.support.urls import free_port, url_for_database

RESULTS = ROOT / "bench" / "results"


def save_results(kind, results):
    """Write ``results`` as JSON to bench/results/<kind>-<UTC timestamp>.json; return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    return path


def say(msg):
    """Print a progress line on stderr (stdout is the report's)."""
    print(msg, file=sys.stderr, flush=True)


def server_url():
    """Return DATABASE_URL, the server a benchmark uses. When it is unset, the running benchmark module is started
    again (same arguments) under scripts/with_pg.sh, against a private throwaway PostgreSQL: this returns only there.
    """
    if not os.environ.get("DATABASE_URL"):
        say("DATABASE_URL is unset: starting a throwaway PostgreSQL with scripts/with_pg.sh")
        script = str(ROOT / "scripts" / "with_pg.sh")
        module = sys.modules["__main__"].__spec__.name
        os.execv(script, [script, sys.executable, "-m", module, *sys.argv[1:]])
    return os.environ["DATABASE_URL"]


def http(method, url, body=None, expect=200):
    """Send ``body`` as JSON; return the answer's JSON (None when empty). Raises RuntimeError on another status."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    if status != expect:
        raise RuntimeError(f"seeding: {method} {url} answered {status}: {payload[:300]!r}")
    return json.loads(payload) if payload else None


class Database:
    """A fresh database on the benchmark's server (migrated unless ``migrate=False``), dropped when its with-block
    ends."""

    def __init__(self, server_url, migrate=True):
        self.server_url = server_url
        self.name = f"flowline_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = url_for_database(server_url, self.name)
        if migrate:
            migrations.apply(self.url)

    def connect(self):
        """Return an autocommit connection to the database, with dict rows."""
        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Server:
    """One gunicorn master serving ``app_spec`` (``"app:create_app()"``, or the bare app) with gunicorn.conf.py on a
    free port, started at once; stopped by its own pid."""

    def __init__(self, name, app_spec, env, tmp):
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tmp) / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 -- the server writes it until stop() closes it
        cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{self.port}", app_spec]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, path, timeout=30):
        """Return once GET ``path`` answers 200; raises RuntimeError if gunicorn exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base + path, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def worker_pids(self):
        """Return the pids of gunicorn's worker processes (none once it stopped)."""
        try:
            return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        except OSError:
            return []

    def log_tail(self, lines=30):
        """Return the last ``lines`` lines of gunicorn's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, signum=signal.SIGINT, timeout=15):
        """Stop gunicorn: by default SIGINT, its quick shutdown (SIGTERM waits graceful_timeout for requests)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def time_gets(db_url, routes, warm_up=10):
    """Serve ``db_url`` with gunicorn as ``make run`` does (WEB_CONCURRENCY=2) and GET each route's paths in turn,
    one after another on a keep-alive connection (``routes``: [(label, [path, ...])]); return per route its label,
    the p50 and p99 in ms of all but the first ``warm_up`` GETs (they warm the pool, the plans and the templates),
    how many those were, and the last answer's size. Every answer must be 200."""
    env = dict(os.environ, DATABASE_URL=db_url, WEB_CONCURRENCY="2", ACCESS_LOG="", LOG_LEVEL="warning")
    env["SECRET_KEY"] = secrets.token_urlsafe(32)
    env.pop("BIND", None)
    results = []
    with tempfile.TemporaryDirectory(prefix="flowline-gets.") as tmp:
        server = Server("flowline", "app:create_app()", env, tmp)
        try:
            server.wait_ready("/livez")
            for label, paths in routes:
                say(f"  {label} ...")
                connection = http_client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                times = []
                for i, path in enumerate(paths):
                    start = time.perf_counter()
                    connection.request("GET", path)
                    response = connection.getresponse()
                    body = response.read()
                    elapsed = (time.perf_counter() - start) * 1000
                    assert response.status == 200, (path, response.status, body[:500])
                    if i >= warm_up:
                        times.append(elapsed)
                connection.close()
                times.sort()
                results.append(
                    {
                        "route": label,
                        "samples": len(times),
                        "bytes": len(body),
                        "p50_ms": round(statistics.median(times), 2),
                        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
                    }
                )
        finally:
            server.stop()
    return results


@contextmanager
def running_workers(url, count, log_dir, threads=1, env=None):
    """Run ``count`` worker processes of ``threads`` threads on ``url`` (with ``env`` added to the environment) for
    the block, which gets their Popen objects; each must exit 0 on SIGTERM (RuntimeError otherwise)."""
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "INFO", **(env or {})}
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    for i in range(count):
        with open(log_dir / f"worker{i}.log", "ab") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "flowline.worker", "--concurrency", str(threads)],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            )
    try:
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            if process.wait(timeout=60) != 0:
                raise RuntimeError(f"a worker exited with status {process.returncode}")


@contextmanager
def draining(url):
    """Hold a connection LISTENing on flowline_run_finished and draining it, as a gunicorn process does."""
    stopping = threading.Event()

    def drain():
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("LISTEN flowline_run_finished")
            while not stopping.is_set():
                for _ in conn.notifies(timeout=0.2):
                    pass

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        thread.join(2)
