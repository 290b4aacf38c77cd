#!/usr/bin/env python3
"""What clients see while the database is down, and how soon after it is back they are served again.

    .venv/bin/python -m bench.failfast_bench [--code DIR ...] [--outages 3] [--outage-s 8] [--clients 4]

For each code tree (``--code``, default this checkout; e.g. ``git archive 44cac62 | tar -x -C /tmp/before`` gives
the tree before fail-fast) it starts a throwaway PostgreSQL cluster of its own (unix socket only, so it can stop
it), applies the migrations, and serves the tree with ``gunicorn -c gunicorn.conf.py`` (WEB_CONCURRENCY=2,
GUNICORN_THREADS=2, DB_POOL_TIMEOUT_S=2: the defaults; access log off) using this checkout's virtualenv. Then
``--clients`` threads send ``GET /workflows/{id}`` back to back (one connection per request), and ``--outages``
times the cluster is stopped (``pg_ctl -m fast stop``) for ``--outage-s`` seconds and started again. It reports:

- while down: the latency of every answer (median, p90, p99), their statuses, answers per second; also the same
  without the first 3 s of each outage (when requests find their pooled connections dead and wait the pool
  timeout whatever the code does);
- once back: the time from ``pg_ctl start`` returning to the first 2xx, per outage.

It prints the machine and a table, and writes bench/results/failfast-<timestamp>.json.
"""

import argparse
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
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import machine
from bench.support import RESULTS, ROOT, say
from tests.support.clusters import cluster_url, throwaway_cluster
from tests.support.urls import free_port

SETTLE_S = 3.0  # the part of an outage reported apart: pooled connections found dead, each waits the pool timeout


def get(url):
    sent = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            status = response.status
            response.read()
    except urllib.error.HTTPError as error:
        status = error.code
        error.read()
    except OSError:
        status = None
    return sent, time.monotonic(), status


def pct(values, q):
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def summary(answers):
    latencies = sorted(done - sent for sent, done, _ in answers)
    statuses = {}
    for _, _, status in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "answers": len(answers),
        "statuses": statuses,
        "median_ms": round(pct(latencies, 0.5) * 1000, 1) if latencies else None,
        "p90_ms": round(pct(latencies, 0.9) * 1000, 1) if latencies else None,
        "p99_ms": round(pct(latencies, 0.99) * 1000, 1) if latencies else None,
    }


def measure(code, args, venv_bin):
    with throwaway_cluster("flowline-failfast-") as (home, pg_ctl):
        url = cluster_url(home)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "WEB_CONCURRENCY": "2",
            "GUNICORN_THREADS": "2",
            "DB_POOL_TIMEOUT_S": "2",
            "ACCESS_LOG": "",
            "LOG_LEVEL": "warning",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        # The module moved in the layout of #12; a tree from before it has it at flowline/migrations.py.
        module = "flowline.data.migrations" if (code / "flowline" / "data").is_dir() else "flowline.migrations"
        subprocess.run([venv_bin / "python", "-m", module, "apply"], cwd=code, env=env, check=True, capture_output=True)
        port = free_port()
        log = open(Path(tempfile.gettempdir()) / f"failfast-gunicorn-{port}.log", "w")  # noqa: SIM115 -- the server writes it until the bench stops it
        server = subprocess.Popen(
            [venv_bin / "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "app:create_app()"],
            cwd=code,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while get(base + "/readyz")[2] != 200:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"gunicorn did not become ready in {code}")
                time.sleep(0.1)
            request = urllib.request.Request(
                base + "/workflows",
                data=b'{"name": "bench"}',
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                target = base + "/workflows/" + json.loads(response.read())["id"]

            answers, stop = [], threading.Event()

            def client():
                while not stop.is_set():
                    answers.append(get(target))

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for thread in threads:
                thread.start()
            outages = []
            try:
                time.sleep(1.0)
                for _ in range(args.outages):
                    pg_ctl("-m", "fast", "stop")
                    stopped = time.monotonic()
                    time.sleep(args.outage_s)
                    pg_ctl("start")
                    back = time.monotonic()
                    while not any(sent >= back and status == 200 for sent, _, status in answers[-200:]):
                        if time.monotonic() - back > 60:
                            raise RuntimeError("no 2xx within 60 s of the database being back")
                        time.sleep(0.01)
                    first_ok = min(done for sent, done, status in answers if sent >= back and status == 200)
                    outages.append((stopped, back, first_ok))
                    time.sleep(2.0)
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
        finally:
            stopping = time.monotonic()
            os.killpg(server.pid, signal.SIGINT)  # gunicorn's quick shutdown
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                say(f"gunicorn did not stop within 20 s of SIGINT; killed (log: {log.name})")
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
            stopped_in = time.monotonic() - stopping
            log.close()

    down = [a for a in answers for stopped, back, _ in outages if stopped <= a[0] and a[1] <= back]
    settled = [a for a in answers for stopped, back, _ in outages if stopped + SETTLE_S <= a[0] and a[1] <= back]
    down_seconds = sum(back - stopped for stopped, back, _ in outages)
    return {
        "code": str(code),
        "while_down": {**summary(down), "answers_per_s": round(len(down) / down_seconds, 1)},
        f"while_down_after_first_{SETTLE_S:g}_s": summary(settled),
        "first_2xx_after_back_ms": [round((first_ok - back) * 1000) for _, back, first_ok in outages],
        "gunicorn_stopped_in_s": round(stopped_in, 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", action="append", type=Path, help="a Flowline tree to serve (repeatable)")
    parser.add_argument("--outages", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    venv_bin = Path(sys.executable).parent
    codes = [c.resolve() for c in (args.code or [ROOT])]

    results = []
    for code in codes:
        say(f"measuring {code}")
        results.append(measure(code, args, venv_bin))
    with throwaway_cluster("flowline-failfast-") as (home, _), psycopg.connect(cluster_url(home)) as conn:
        os.environ["DATABASE_URL"] = cluster_url(home)
        facts = machine.facts(conn)
    report = {
        "at": datetime.now(UTC).isoformat(),
        "machine": facts,
        "settings": {
            "outages": args.outages,
            "outage_s": args.outage_s,
            "clients": args.clients,
            "DB_POOL_TIMEOUT_S": 2,
            "WEB_CONCURRENCY": 2,
            "GUNICORN_THREADS": 2,
        },
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"failfast-{datetime.now().strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))

    print(
        f"machine: {facts['cpu_model']}, {facts['cores']} cores, {facts['ram_gib']} GiB, {facts['os']}, "
        f"PostgreSQL {facts['postgresql']}, load {facts['load_average_at_start']}"
    )
    print(f"{args.outages} outages of {args.outage_s:g} s, {args.clients} clients, DB_POOL_TIMEOUT_S=2")
    header = f"{'code':40} {'down: n':>8} {'med ms':>8} {'p99 ms':>8} {'/s':>6} {'after 3s med':>13} {'p99':>8} {'first 2xx ms':>18}"
    print(header)
    for r in results:
        d, s = r["while_down"], r[f"while_down_after_first_{SETTLE_S:g}_s"]
        print(
            f"{r['code'][-40:]:40} {d['answers']:>8} {d['median_ms']!s:>8} {d['p99_ms']!s:>8} "
            f"{d['answers_per_s']:>6} {s['median_ms']!s:>13} {s['p99_ms']!s:>8} "
            f"{','.join(map(str, r['first_2xx_after_back_ms'])):>18}"
        )
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
