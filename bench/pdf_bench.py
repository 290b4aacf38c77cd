#!/usr/bin/env python3
"""What hostile PDF uploads do to the rest of the API: /livez and GET /workflows/{id} latency with and without
eight uploads of a PDF that is slow to extract (issue #11), and how long one such upload takes.

    .venv/bin/python -m bench.pdf_bench [--uploads 8] [--pages 8] [--idle-s 10] [--app-root DIR] [--env K=V ...]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL); it
   creates a fresh database there, applies the migrations and drops the database at the end.
2. It serves Flowline as ``make run`` does: ``gunicorn -c gunicorn.conf.py 'app:create_app()'`` with the
   defaults (2 workers x 2 threads, PDF_EXTRACT_* at their defaults), access log off; ``--env`` adds settings.
   ``--app-root`` serves another checkout's code instead (e.g. ``git archive 44cac62 | tar -x -C /tmp/old``,
   to measure before a change); the migrations and the probes stay this checkout's.
3. It seeds one workflow with three nodes, then measures, in order:
   - idle: a prober sends GET /livez and GET /workflows/{id} in turn, back to back, for ``--idle-s`` seconds;
   - one hostile upload (tests/support/hostile_pdf.py, ``--pages`` pages, ~8 KB) alone: its status and seconds;
   - ``--uploads`` hostile uploads at once, the same prober running until the last upload has answered.
   A probe waits up to 120 s for its answer, so a pinned server shows up as latency, not as an error.
4. It prints the machine, p50/p99/max per probe and phase, and the uploads' statuses and seconds, and writes
   bench/results/pdf-<timestamp>.json.
"""

import argparse
import http.client as http_client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import machine, support
from bench.support import RESULTS, ROOT, say
from tests.support.hostile_pdf import hostile_pdf
from tests.support.urls import free_port, url_for_database

PROBE_TIMEOUT_S = 120
NODES = [
    {"node_type": "formatter", "config": {"rules": ["strip"]}},
    {"node_type": "formatter", "config": {"rules": ["normalize_width"]}},
    {"node_type": "formatter", "config": {}},
]


def http(method, url, body=None, headers=None, timeout=PROBE_TIMEOUT_S):
    """Return (status, body bytes, seconds); status None when no answer came (timeout, connection closed)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, error.read(), time.monotonic() - started
    except (OSError, http_client.HTTPException) as error:
        return None, type(error).__name__.encode(), time.monotonic() - started


def upload(base, data):
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="hostile.pdf"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, answer, seconds = http(
        "POST", base + "/files", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    detail = json.loads(answer).get("detail", "stored") if status is not None else f"no answer ({answer.decode()})"
    return {"status": status, "seconds": round(seconds, 3), "detail": detail}


class Prober:
    """Sends GET /livez and GET /workflows/{id} in turn, back to back, from one thread until stopped."""

    def __init__(self, base, workflow_id):
        self.paths = {"livez": "/livez", "get_workflow": f"/workflows/{workflow_id}"}
        self.base = base
        self.samples = {name: [] for name in self.paths}
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for name, path in self.paths.items():
                status, _, seconds = http("GET", self.base + path)
                (self.samples[name] if status == 200 else self.errors).append(seconds if status == 200 else status)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(PROBE_TIMEOUT_S + 5)


def summary(seconds):
    values = sorted(seconds)
    if not values:
        return {"n": 0}

    def pct(q):
        return round(values[min(len(values) - 1, int(len(values) * q))] * 1000, 1)

    return {"n": len(values), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(values[-1] * 1000, 1)}


def serve(app_root, env, log_path):
    port = free_port()
    log = open(log_path, "w")  # noqa: SIM115 -- the server writes it until the bench stops it
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "app:create_app()"],
        cwd=app_root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}: see {log_path}")
        try:
            if http("GET", base + "/readyz", timeout=2)[0] == 200:
                return process, log, base
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn not ready after 30 s: see {log_path}")


def stop(process, log):
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.close()


def seed(base):
    status, body, _ = http(
        "POST", base + "/workflows", json.dumps({"name": "pdf bench"}).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200, body
    workflow_id = json.loads(body)["id"]
    for node in NODES:
        status, body, _ = http(
            "POST",
            f"{base}/workflows/{workflow_id}/nodes",
            json.dumps(node).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200, body
    return workflow_id


def measure(base, workflow_id, args):
    data = hostile_pdf(args.pages)
    say(f"idle: probing for {args.idle_s} s")
    with Prober(base, workflow_id) as idle:
        time.sleep(args.idle_s)
    say(f"one hostile upload ({args.pages} pages, {len(data)} bytes)")
    single = upload(base, data)
    say(f"{args.uploads} hostile uploads at once, probing until the last answers")
    started = time.monotonic()
    with Prober(base, workflow_id) as loaded, ThreadPoolExecutor(args.uploads) as pool:
        uploads = list(pool.map(lambda _: upload(base, data), range(args.uploads)))
    return {
        "pdf_bytes": len(data),
        "pages": args.pages,
        "single_upload": single,
        "uploads": uploads,
        "uploads_wall_s": round(time.monotonic() - started, 3),
        "idle": {name: summary(s) for name, s in idle.samples.items()},
        "idle_errors": idle.errors,
        "loaded": {name: summary(s) for name, s in loaded.samples.items()},
        "loaded_errors": loaded.errors,
    }


def report(facts, settings, result):
    f, p = facts, facts["postgresql_settings"]
    print(
        f"machine     {f['hostname']}: {f['cpu_model']}, {f['cores']} cores ({f['cores_usable']} usable), "
        f"{f['ram_gib']} GiB, {f['os']}, kernel {f['kernel']}, Python {f['python']}"
    )
    print(
        f"postgresql  {f['postgresql']} via {f['postgresql_via']} (fsync={p['fsync']}, "
        f"synchronous_commit={p['synchronous_commit']}); load average at start {f['load_average_at_start']}"
    )
    print(f"served      {settings['app_root']} with gunicorn -c gunicorn.conf.py, settings {settings['env']}")
    print(f"hostile PDF {result['pages']} pages, {result['pdf_bytes']} bytes")
    print()
    single = result["single_upload"]
    print(f"one upload alone: {single['status']} in {single['seconds']:.2f} s ({single['detail']})")
    print(f"{len(result['uploads'])} uploads at once: all answered within {result['uploads_wall_s']:.2f} s")
    for status in sorted({u["status"] for u in result["uploads"]}, key=str):
        times = [u["seconds"] for u in result["uploads"] if u["status"] == status]
        details = sorted({u["detail"] for u in result["uploads"] if u["status"] == status})
        print(f"  {status}: {len(times)} uploads, {min(times):.2f}-{max(times):.2f} s: {'; '.join(details)}")
    print()
    print(f"{'probe':<14} {'phase':<16} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for name in ("livez", "get_workflow"):
        for phase, label in (("idle", "no uploads"), ("loaded", "during uploads")):
            s = result[phase][name]
            print(
                f"{name:<14} {label:<16} {s['n']:>5} {s.get('p50_ms', '-'):>9} {s.get('p99_ms', '-'):>9} "
                f"{s.get('max_ms', '-'):>9}"
            )
    if result["idle_errors"] or result["loaded_errors"]:
        print(f"probe errors: idle {result['idle_errors']}, during uploads {result['loaded_errors']}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--app-root", type=Path, default=ROOT, help="the checkout to serve (default: this one)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="an extra setting")
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    pg_url = support.server_url()
    dbname = f"flowline_pdfbench_{uuid.uuid4().hex[:10]}"
    db_url = url_for_database(pg_url, dbname)
    extra = dict(item.split("=", 1) for item in args.env)
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "WEB_CONCURRENCY": "2",
        "ACCESS_LOG": "",
        "LOG_LEVEL": "warning",
        **extra,
    }
    env.pop("BIND", None)
    tmp = Path(tempfile.mkdtemp(prefix="flowline-pdfbench."))
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        migrate = subprocess.run(
            [sys.executable, "-m", "flowline.data.migrations", "apply"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrations failed:\n{migrate.stdout}{migrate.stderr}")
        process, log, base = serve(args.app_root.resolve(), env, tmp / "gunicorn.log")
        try:
            with psycopg.connect(db_url) as conn:
                facts = machine.facts(conn)
            result = measure(base, seed(base), args)
            with psycopg.connect(db_url) as conn:
                result["files_stored"] = conn.execute("SELECT count(*) FROM files").fetchone()[0]
        finally:
            stop(process, log)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    settings = {"app_root": str(args.app_root), "env": extra or "defaults"}
    report(facts, settings, result)
    print(f"files stored afterwards: {result['files_stored']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"pdf-{stamp}.json").write_text(
        json.dumps({"machine": facts, "settings": settings, **result}, indent=2, default=str)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
