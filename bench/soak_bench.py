#!/usr/bin/env python3
"""Flowline's soak test: a steady mixed load for ten minutes; errors, p50/p99 per route, and memory over time.

    .venv/bin/python -m bench.soak_bench [--duration 600] [--rate 60] [--connections 8]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL), then
   creates and migrates a fresh database on that server.
2. It starts Flowline as ``make run`` does: gunicorn (``gunicorn.conf.py``: 2 workers x 2 threads) and two
   ``python -m flowline.worker`` processes, and seeds a few workflows through the API.
3. For ``--duration`` seconds it sends ``--rate`` requests per second, on a fixed schedule (open loop: a slow
   answer does not slow the schedule down; how late requests left is reported), spread over ``--connections``
   keep-alive connections, in this mix: reads of a workflow, of the workflow list and a run list (paginated), of
   runs and their events; creating workflows and appending nodes; sync runs; async runs through the workers.
4. Every 10 s it reads the resident memory (VmRSS) of each gunicorn worker and each run worker. At the end it
   waits for the queue to drain and checks that every async run Succeeded.
5. It prints the machine, per route the count, errors, p50/p99/max latency, and per process the RSS at the
   start of the load, at its end and at its peak; it writes bench/results/soak-<timestamp>.json. Any error
   (a non-2xx answer, a connection failure, an async run that did not succeed) makes the run INVALID (status 1).
"""

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import machine, support
from bench.support import RESULTS, ROOT, Server, say
from bench.support import http as api
from flowline.data import migrations
from tests.support.urls import url_for_database

FORMATTERS = [
    {"rules": ["strip"]},
    {"rules": ["collapse_whitespace"]},
    {"rules": ["normalize_width"]},
    {"rules": ["lowercase"]},
    {"rules": ["uppercase"]},
]
INPUT = "  Hello,   Ｆｌｏｗｌｉｎｅ   ﾃｽﾄ  world  "
RSS_EVERY_S = 10
WORKERS = 2


def rss_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Load:
    """The route mix: each entry is (weight, route label, function returning (method, path, body, expected))."""

    def __init__(self, ids):
        self.ids = ids
        self.lock = threading.Lock()
        self.recent_runs = list(ids["runs"])
        self.async_runs = []
        self.mix = [
            (25, "GET /workflows/{id}", lambda: ("GET", f"/workflows/{ids['w10']}", None, 200)),
            (10, "GET /workflows?limit=20", lambda: ("GET", "/workflows?limit=20", None, 200)),
            (
                10,
                "GET /workflows/{id}/runs?limit=20",
                lambda: ("GET", f"/workflows/{ids['w5']}/runs?limit=20", None, 200),
            ),
            (10, "GET /runs/{id}", lambda: ("GET", f"/runs/{self.a_run()}", None, 200)),
            (5, "GET /runs/{id}/events", lambda: ("GET", f"/runs/{self.a_run()}/events", None, 200)),
            (10, "POST /workflows", lambda: ("POST", "/workflows", {"name": f"soak {random.random()}"}, 200)),
            (
                5,
                "POST /workflows/{id}/nodes",
                lambda: (
                    "POST",
                    f"/workflows/{random.choice(ids['spread'])}/nodes",
                    {"node_type": "formatter", "config": {"rules": ["strip"]}},
                    200,
                ),
            ),
            (
                15,
                "POST /workflows/{id}/run",
                lambda: ("POST", f"/workflows/{ids['w5']}/run", {"input_text": INPUT}, 200),
            ),
            (
                10,
                "POST /workflows/{id}/runs",
                lambda: ("POST", f"/workflows/{ids['w5']}/runs", {"input_text": INPUT}, 202),
            ),
        ]
        self.labels = [label for _, label, _ in self.mix]
        self.weights = [weight for weight, _, _ in self.mix]
        self.makers = {label: make for _, label, make in self.mix}

    def a_run(self):
        with self.lock:
            return random.choice(self.recent_runs[-500:])

    def next_request(self):
        label = random.choices(self.labels, self.weights)[0]
        return (label, *self.makers[label]())

    def saw(self, label, body):
        if label in ("POST /workflows/{id}/run", "POST /workflows/{id}/runs"):
            run_id = json.loads(body)["run_id"]
            with self.lock:
                self.recent_runs.append(run_id)
                if label.endswith("/runs"):
                    self.async_runs.append(run_id)


def seed(base):
    w10 = api("POST", f"{base}/workflows", {"name": "soak: 10 nodes"})["id"]
    for i in range(10):
        api("POST", f"{base}/workflows/{w10}/nodes", {"node_type": "formatter", "config": FORMATTERS[i % 5]})
    w5 = api("POST", f"{base}/workflows", {"name": "soak: 5 formatters"})["id"]
    for config in FORMATTERS:
        api("POST", f"{base}/workflows/{w5}/nodes", {"node_type": "formatter", "config": config})
    runs = [api("POST", f"{base}/workflows/{w5}/run", {"input_text": INPUT})["run_id"] for _ in range(20)]
    spread = [api("POST", f"{base}/workflows", {"name": f"soak: nodes {i}"})["id"] for i in range(32)]
    return {"w10": w10, "w5": w5, "runs": runs, "spread": spread}


def drive(port, load, start, rate, duration, index, connections, results, stop):
    """Send this connection's share of the schedule: request k (k = index, index + connections, ...) at
    ``start + k / rate``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    k = index
    while not stop.is_set():
        due = start + k / rate
        if due >= start + duration:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        label, method, path, body, expected = load.next_request()
        late = max(0.0, time.monotonic() - due)
        sent = time.monotonic()
        try:
            data = None if body is None else json.dumps(body)
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            response = conn.getresponse()
            payload = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            status, payload = f"{type(exc).__name__}", b""
        elapsed_ms = (time.monotonic() - sent) * 1000
        ok = status == expected
        if ok:
            load.saw(label, payload)
        results.append((label, elapsed_ms, ok, status, late))
        k += connections
    conn.close()


def sample_rss(pids_by_name, samples, stop):
    while True:
        now = time.monotonic()
        samples.append((now, {name: rss_kib(pid) for name, pid in pids_by_name().items()}))
        if stop.wait(RSS_EVERY_S):
            return


def percentile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--rate", type=float, default=60, help="requests per second, all routes together")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    server_url = support.server_url()

    name = f"flowline_soak_{int(time.time())}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        facts = machine.facts(conn)
    url = url_for_database(server_url, name)
    migrations.apply(url)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    tmp = RESULTS / f"soak-{stamp}-logs"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DATABASE_URL": url, "WEB_CONCURRENCY": "2"}
    server = Server("flowline", "app:create_app()", env, tmp)
    workers = []
    try:
        server.wait_ready("/readyz")
        for i in range(WORKERS):
            log = open(tmp / f"worker{i}.log", "w")  # noqa: SIM115 -- the worker writes it until the soak ends
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "flowline.worker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        ids = seed(server.base)
        load = Load(ids)

        def pids():
            found = {f"gunicorn worker {pid}": pid for pid in server.worker_pids()}
            found.update({f"run worker {w.pid}": w.pid for w in workers})
            return found

        say(f"soak: {args.rate:g} req/s for {args.duration:g} s over {args.connections} connections ...")
        stop, results, rss = threading.Event(), [], []
        sampler = threading.Thread(target=sample_rss, args=(pids, rss, stop), daemon=True)
        sampler.start()
        start = time.monotonic() + 0.5
        drivers = [
            threading.Thread(
                target=drive,
                args=(server.port, load, start, args.rate, args.duration, i, args.connections, results, stop),
            )
            for i in range(args.connections)
        ]
        for thread in drivers:
            thread.start()
        for thread in drivers:
            thread.join()
        elapsed = time.monotonic() - start
        stop.set()
        sampler.join()
        rss.append((time.monotonic(), {n: rss_kib(p) for n, p in pids().items()}))

        say("waiting for the queue to drain ...")
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while conn.execute("SELECT count(*) FROM runs WHERE status IN ('Pending', 'Running')").fetchone()[0]:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            async_status = dict(
                conn.execute(
                    "SELECT status, count(*) FROM runs WHERE id = ANY(%s::uuid[]) GROUP BY status", (load.async_runs,)
                ).fetchall()
            )
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(60)
        server.stop()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    summary = summarise(results, rss, async_status, load, elapsed, args)
    summary["machine"] = facts
    (RESULTS / f"soak-{stamp}.json").write_text(json.dumps(summary, indent=2, default=str))
    valid = report(summary)
    sys.exit(0 if valid else 1)


def summarise(results, rss, async_status, load, elapsed, args):
    routes = {}
    for label in load.labels:
        rows = [r for r in results if r[0] == label]
        times = sorted(r[1] for r in rows)
        errors = [r[3] for r in rows if not r[2]]
        routes[label] = {
            "count": len(rows),
            "errors": len(errors),
            "error_statuses": sorted(set(map(str, errors))),
            "p50_ms": round(statistics.median(times), 1) if times else None,
            "p99_ms": round(percentile(times, 0.99), 1) if times else None,
            "max_ms": round(times[-1], 1) if times else None,
        }
    lateness = sorted(r[4] * 1000 for r in results)
    first, last = rss[0][1], rss[-1][1]
    memory = {
        name: {
            "start_mib": round(first[name] / 1024, 1) if first.get(name) else None,
            "end_mib": round(last[name] / 1024, 1) if last.get(name) else None,
            "peak_mib": round(max(s.get(name) or 0 for _, s in rss) / 1024, 1),
        }
        for name in first
    }
    return {
        "duration_s": round(elapsed, 1),
        "rate": args.rate,
        "connections": args.connections,
        "requests": len(results),
        "achieved_rate": round(len(results) / elapsed, 1),
        "late_p99_ms": round(percentile(lateness, 0.99), 1) if lateness else None,
        "routes": routes,
        "memory": memory,
        "rss_samples_mib": [
            {"t": round(t - rss[0][0]), **{n: round(v / 1024, 1) for n, v in sample.items() if v}} for t, sample in rss
        ],
        "async_runs": len(load.async_runs),
        "async_status": async_status,
    }


def report(s):
    f = s["machine"]
    print(
        f"machine     {f['hostname']}: {f['cpu_model']}, {f['cores']} cores, {f['ram_gib']} GiB, {f['os']}, "
        f"Python {f['python']}, PostgreSQL {f['postgresql']} via {f['postgresql_via']}"
    )
    print(
        f"load        {s['requests']:,} requests in {s['duration_s']:g} s ({s['achieved_rate']:g}/s of "
        f"{s['rate']:g} scheduled, {s['connections']} connections); p99 start lateness {s['late_p99_ms']} ms"
    )
    print()
    print(f"{'route':<36} {'count':>7} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    errors = 0
    for label, r in s["routes"].items():
        errors += r["errors"]
        p50, p99, top = (str(r[k]) if r[k] is not None else "-" for k in ("p50_ms", "p99_ms", "max_ms"))
        print(
            f"{label:<36} {r['count']:>7,} {r['errors']:>6} {p50:>8} {p99:>8} {top:>8}"
            + (f"  {r['error_statuses']}" if r["errors"] else "")
        )
    print()
    print(f"{'process':<28} {'RSS start MiB':>14} {'end MiB':>8} {'peak MiB':>9}")
    for name, m in s["memory"].items():
        print(f"{name:<28} {m['start_mib']:>14} {m['end_mib']:>8} {m['peak_mib']:>9}")
    print()
    succeeded = s["async_status"].get("Succeeded", 0)
    print(f"async runs: {s['async_runs']:,} queued, {s['async_status']}")
    valid = errors == 0 and succeeded == s["async_runs"]
    print(
        "VALID: 0 errors, every async run Succeeded"
        if valid
        else f"INVALID: {errors} errors, {succeeded} of {s['async_runs']} async runs Succeeded"
    )
    return valid


if __name__ == "__main__":
    main()
