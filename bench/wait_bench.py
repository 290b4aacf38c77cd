#!/usr/bin/env python3
"""Bounded waits (Prefer: wait=N): ordinary requests' throughput with and without 100 clients waiting at the same
time, and a wait's finish -> answer latency.

    .venv/bin/python -m bench.wait_bench [--waiters 100] [--threads 128] [--pool 8] [--duration 10] [--rounds 4]
                                         [--latency-samples 100] [--finish-runs 3000]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL); it
   creates a fresh database there, applies the migrations and drops the database at the end.
2. It serves Flowline with ``gunicorn -c gunicorn.conf.py`` (WEB_CONCURRENCY=2, GUNICORN_THREADS=--threads,
   DB_POOL_MAX_SIZE=--pool set explicitly, as waiters hold no connection; DB_POOL_MAX_WAITING=16, as all of wrk's
   16 connections may land on one process; WAIT_MAX_WAITERS at its default, threads - 1; access log off). The
   kernel decides which of the two processes accepts each waiter, so the threads leave room for a lopsided split.
3. It seeds a one-node workflow and ``--waiters`` runs no worker takes (available_at an hour away), finished later
   by the benchmark itself with an UPDATE, which fires the same trigger as a worker's finish_run.
4. Throughput, ``--rounds`` times (alone first in odd rounds, second in even ones): ``wrk -t2 -c16
   -d<duration>s --latency`` on GET /workflows/{id} alone, and while ``--waiters`` clients (one connection each)
   wait on GET /runs/{id} with ``Prefer: wait=30``; /metrics must show them all waiting before and after wrk.
   Each wrk run is restarted until both gunicorn workers hold at least 4 of its connections (as in
   http_bench.py) and reports the CPU time gunicorn's workers spent per request; before each one, gunicorn's CPU
   is measured for 3 s (only the waiters, or nobody, there). Then every parked run is finished in one UPDATE and
   each waiter's answer is timed against the run's finished_at (PostgreSQL's clock_timestamp(), on the same
   machine clock as this script's time.time()).
5. Latency: ``--latency-samples`` times, one client waits on a parked run, the run is finished 50 ms later, and
   the answer's arrival is compared with finished_at: p50/p99/max.
   Then what the NOTIFY of a finish costs: ``--finish-runs`` finishing UPDATEs (one transaction each) over 4
   connections at once, of runs marked as waited for (since migration 0020 only those notify), with migration
   0010's trigger enabled and disabled in turn (``2 x --rounds`` rounds each), while a LISTEN connection drains
   the notifications.
6. It prints the machine, the settings and a table, and writes bench/results/wait-<timestamp>.json.
"""

import argparse
import http.client as http_client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import machine, support
from bench.http_bench import (
    MAX_RESTARTS,
    MIN_CONNS_PER_WORKER,
    WRK_CONNECTIONS,
    cpu_times,
    cpu_usage,
    parse_wrk,
    process_cpu,
    worker_connections,
)
from bench.support import RESULTS, Server, draining, say
from flowline.data import migrations
from tests.support import wait_for
from tests.support.urls import url_for_database

WAIT_S = 30
WRK = ("wrk", "-t2", f"-c{WRK_CONNECTIONS}", "--latency")


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def post_json(base, path, body):
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def metric(base, name, labels=""):
    """Return the value of one sample of GET /metrics (summed over gunicorn's workers), 0 when absent."""
    text = get(base + "/metrics")[1].decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def park(conn, workflow_id, count, waited=False):
    """Queue ``count`` runs no worker takes for an hour, of a workflow without limits as enqueue_run queues them
    (``waited``: marked as a waiting request marks its run, so that their finish notifies); return their ids."""
    rows = conn.execute(
        "INSERT INTO runs (workflow_id, mode, status, input, max_attempts, available_at, notify_finish, limited) "
        "SELECT %s, 'async', 'Pending', '{\"input_text\": \"parked\"}', 1, now() + interval '1 hour', %s, false "
        "FROM generate_series(1, %s) RETURNING id",
        (workflow_id, waited, count),
    ).fetchall()
    return [str(r[0]) for r in rows]


def finish(conn, run_ids):
    conn.execute(
        "UPDATE runs SET status = 'Succeeded', final_output = 'done', finished_at = clock_timestamp() "
        "WHERE id = ANY(%s::uuid[])",
        (run_ids,),
    )


class Waiter(threading.Thread):
    """One client with its own connection, waiting on GET /runs/{id} with Prefer: wait=WAIT_S."""

    def __init__(self, port, run_id):
        super().__init__(daemon=True)
        self.port, self.run_id = port, run_id
        self.received = self.status = self.applied = self.answer = None

    def run(self):
        conn = http_client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_S + 30)
        try:
            conn.request("GET", f"/runs/{self.run_id}", headers={"Prefer": f"wait={WAIT_S}"})
            response = conn.getresponse()
            body = response.read()
            self.received = time.time()
            self.status, self.applied = response.status, response.getheader("Preference-Applied")
            self.answer = json.loads(body)["run"]
        finally:
            conn.close()

    def lag_s(self):
        return self.received - datetime.fromisoformat(self.answer["finished_at"]).timestamp()


def wrk(server, workflow_id, duration):
    """Run wrk on GET /workflows/{id}; return its numbers, the split of its connections over gunicorn's workers
    and the workers' CPU time per request.

    As in http_bench.py, a run is restarted (within its first second) while a worker holds fewer than
    MIN_CONNS_PER_WORKER of wrk's connections: the kernel's race for each connection, not the code, would
    otherwise halve the throughput of a 2-core box. The waiters' connections, open before, are not counted.
    """
    before_wrk = worker_connections(server)
    for restart in range(MAX_RESTARTS + 1):
        cpu_before, procs_before = cpu_times(), process_cpu(server.worker_pids())
        proc = subprocess.Popen(
            [*WRK, f"-d{duration}s", f"{server.base}/workflows/{workflow_id}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            counts = worker_connections(server)
            split = sorted((n - before_wrk.get(pid, 0) for pid, n in counts.items()), reverse=True)
            if sum(split) >= WRK_CONNECTIONS:
                break
        if min(split, default=0) >= MIN_CONNS_PER_WORKER or restart == MAX_RESTARTS:
            break
        proc.kill()
        proc.communicate()
        time.sleep(0.2)
    out, err = proc.communicate()
    result = parse_wrk(out)
    if proc.returncode != 0 or result["non_2xx"] or result["socket_errors"]:
        raise RuntimeError(f"wrk failed or saw errors:\n{out}\n{err}")
    procs_after = process_cpu(server.worker_pids())
    result["connection_split"], result["restarts"] = split, restart
    result["cpu"] = cpu_usage(cpu_before, cpu_times())
    result["gunicorn_us_per_request"] = round((procs_after[0] - procs_before[0]) / result["requests"] * 1e6)
    return result


def idle_cpu(server, seconds=3.0):
    """The CPU share of one core gunicorn's workers use over ``seconds`` while nothing but the waiters runs."""
    before = process_cpu(server.worker_pids())[0]
    time.sleep(seconds)
    return round(100 * (process_cpu(server.worker_pids())[0] - before) / seconds, 1)


def alone_phase(server, workflow_id, args):
    """wrk with nobody waiting, after the same idle CPU measurement as with_waiters makes."""
    cpu_idle = idle_cpu(server)
    result = wrk(server, workflow_id, args.duration)
    result["gunicorn_idle_cpu_pct"] = cpu_idle
    return result


def with_waiters(server, conn, workflow_id, args):
    """wrk while ``args.waiters`` clients wait; then finish their runs at once and time each answer."""
    base = server.base
    run_ids = park(conn, workflow_id, args.waiters)
    waiters = [Waiter(server.port, run_id) for run_id in run_ids]
    for waiter in waiters:
        waiter.start()
        # Clients arriving over half a second rather than in one burst: each wait's first read takes a pooled
        # connection, and a burst past DB_POOL_MAX_SIZE + DB_POOL_MAX_WAITING would be answered 503.
        time.sleep(0.005)

    def all_waiting():
        early = [(w.status, w.answer and w.answer["status"]) for w in waiters if w.received is not None]
        if early:
            raise RuntimeError(f"{len(early)} waiters answered before their runs finished: {early[:5]}")
        return metric(base, "flowline_waiters") == args.waiters

    wait_for(all_waiting, 30, message=f"{args.waiters} waiters")
    over_cap_before = metric(base, "flowline_waits_total", '{outcome="over_cap"}')
    cpu_idle = idle_cpu(server)
    result = wrk(server, workflow_id, args.duration)
    result["gunicorn_idle_cpu_pct"] = cpu_idle
    result["waiting_after"] = metric(base, "flowline_waiters")
    finish(conn, run_ids)
    for waiter in waiters:
        waiter.join(WAIT_S + 30)
    result["over_cap"] = metric(base, "flowline_waits_total", '{outcome="over_cap"}') - over_cap_before
    answered = [w for w in waiters if w.status == 200 and w.answer["status"] == "Succeeded" and w.applied]
    if len(answered) != len(waiters) or result["waiting_after"] != args.waiters:
        raise RuntimeError(f"{len(answered)} of {len(waiters)} waiters answered Succeeded after their wait")
    lags = sorted(w.lag_s() * 1000 for w in waiters)
    result["woken_at_once_ms"] = {"p50": _pct(lags, 0.5), "p99": _pct(lags, 0.99), "max": round(lags[-1], 1)}
    return result


def _pct(sorted_values, q):
    return round(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))], 1)


def latency(server, conn, workflow_id, samples):
    lags = []
    for run_id in park(conn, workflow_id, samples):
        waiter = Waiter(server.port, run_id)
        waiter.start()
        time.sleep(0.05)  # the request reaches its wait (it answers Pending otherwise: checked below)
        finish(conn, [run_id])
        waiter.join(WAIT_S + 30)
        if waiter.answer["status"] != "Succeeded" or waiter.applied is None:
            raise RuntimeError(f"a waiter answered {waiter.status} {waiter.answer}")
        lags.append(waiter.lag_s() * 1000)
    lags.sort()
    return {"n": len(lags), "p50": _pct(lags, 0.5), "p99": _pct(lags, 0.99), "max": round(lags[-1], 1)}


def finish_rate(db_url, workflow_id, runs, connections, waited=False):
    """Finish ``runs`` parked runs (``waited``: see park), one autocommit UPDATE each, over ``connections``
    connections at once; runs/s."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        run_ids = park(conn, workflow_id, runs, waited)
    chunks = [run_ids[n::connections] for n in range(connections)]

    def work(chunk):
        with psycopg.connect(db_url, autocommit=True) as conn:
            for run_id in chunk:
                finish(conn, [run_id])

    threads = [threading.Thread(target=work, args=(chunk,)) for chunk in chunks]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return runs / (time.monotonic() - started)


def notify_cost(db_url, workflow_id, args):
    """Finishing statements/s of waited-for runs with migration 0010's trigger on and off, interleaved, a LISTEN
    connection draining the notifications as a gunicorn worker's would: what the NOTIFY at each commit costs."""
    import psycopg

    rates = {"on": [], "off": []}
    with draining(db_url), psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(args.rounds * 2):
            for state in ("on", "off"):
                action = "ENABLE" if state == "on" else "DISABLE"
                conn.execute(f"ALTER TABLE runs {action} TRIGGER runs_notify_finished")
                rates[state].append(finish_rate(db_url, workflow_id, args.finish_runs, 4, waited=True))
                conn.execute("DELETE FROM runs WHERE available_at > now()")
        conn.execute("ALTER TABLE runs ENABLE TRIGGER runs_notify_finished")
    return {state: [round(r) for r in values] for state, values in rates.items()}


def report(facts, settings, rounds, lat, cost):
    f, p = facts, facts["postgresql_settings"]
    print(
        f"machine     {f['hostname']}: {f['cpu_model']}, {f['cores']} cores ({f['cores_usable']} usable), "
        f"{f['ram_gib']} GiB, {f['os']}, kernel {f['kernel']}, Python {f['python']}"
    )
    print(
        f"postgresql  {f['postgresql']} via {f['postgresql_via']} (fsync={p['fsync']}, "
        f"synchronous_commit={p['synchronous_commit']}); load average at start {f['load_average_at_start']}"
    )
    print(f"served      gunicorn -c gunicorn.conf.py with {settings}; wrk, server and waiters share the machine")
    print()
    print(
        f"{'GET /workflows/{id}':<28} {'round':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'us CPU/req':>10} "
        f"{'split':>8} {'busy %':>7}"
    )
    for n, (alone, loaded) in enumerate(rounds, 1):
        for label, r in (("alone", alone), (f"{settings['waiters']} clients waiting", loaded)):
            split = "/".join(str(c) for c in r["connection_split"])
            print(
                f"{label:<28} {n:>5} {r['requests_per_s']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r['gunicorn_us_per_request']:>10} {split:>8} {r['cpu']['busy_pct']:>7}"
            )
    alone = statistics.median(a["requests_per_s"] for a, _ in rounds)
    loaded = statistics.median(b["requests_per_s"] for _, b in rounds)
    print(f"median req/s: alone {alone:,.0f}, with waiters {loaded:,.0f} ({loaded / alone:.0%})")
    for n, (_, loaded_round) in enumerate(rounds, 1):
        w = loaded_round["woken_at_once_ms"]
        print(
            f"round {n}: {settings['waiters']} waiters woken by one UPDATE: finish -> answer p50 {w['p50']} ms, "
            f"p99 {w['p99']} ms, max {w['max']} ms; over the cap: {loaded_round['over_cap']:.0f}; gunicorn's idle "
            f"CPU: {loaded_round['gunicorn_idle_cpu_pct']}% of a core while only they waited, "
            f"{rounds[n - 1][0]['gunicorn_idle_cpu_pct']}% with nobody"
        )
    print(
        f"one wait, finish -> answer ({lat['n']} samples): p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms"
    )
    on, off = statistics.median(cost["on"]), statistics.median(cost["off"])
    print(
        f"finishing UPDATEs/s over 4 connections, NOTIFY trigger on {cost['on']} / off {cost['off']}: "
        f"median {on:,.0f} vs {off:,.0f} ({on / off:.0%})"
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waiters", type=int, default=100)
    parser.add_argument("--threads", type=int, default=128, help="GUNICORN_THREADS per gunicorn worker process")
    parser.add_argument("--pool", type=int, default=8, help="DB_POOL_MAX_SIZE per gunicorn worker process")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--finish-runs", type=int, default=3000, help="UPDATEs per round of the NOTIFY cost")
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    pg_url = support.server_url()
    dbname = f"flowline_waitbench_{uuid.uuid4().hex[:10]}"
    db_url = url_for_database(pg_url, dbname)
    settings = {
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": str(args.threads),
        "DB_POOL_MAX_SIZE": str(args.pool),
        # wrk's 16 connections may all land on one process: let the ones beyond the pool queue, not get 503.
        "DB_POOL_MAX_WAITING": "16",
        "WAIT_MAX_S": str(WAIT_S),
    }
    env = {**os.environ, "DATABASE_URL": db_url, "ACCESS_LOG": "", "LOG_LEVEL": "warning", **settings}
    env.pop("BIND", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn makes a private one
    tmp = Path(tempfile.mkdtemp(prefix="flowline-waitbench."))
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        migrations.apply(db_url)
        server = Server("gunicorn", "app:create_app()", env, tmp)
        server.wait_ready("/readyz")
        base = server.base
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                facts = machine.facts(conn)
                workflow_id = post_json(base, "/workflows", {"name": "wait bench"})["id"]
                post_json(base, f"/workflows/{workflow_id}/nodes", {"node_type": "formatter", "config": {}})
                say("warm-up: wrk 2 s")
                wrk(server, workflow_id, 2)
                rounds = []
                for n in range(1, args.rounds + 1):
                    # Odd rounds measure alone first, even rounds with waiters first: a phase's place in the
                    # round showed in its p99 on the shared VM (as much with 1 waiter as with 100).
                    first = "alone" if n % 2 else "with waiters"
                    say(
                        f"round {n}: wrk {args.duration} s alone and with {args.waiters} clients waiting, {first} first"
                    )
                    if n % 2:
                        alone = alone_phase(server, workflow_id, args)
                        loaded = with_waiters(server, conn, workflow_id, args)
                    else:
                        loaded = with_waiters(server, conn, workflow_id, args)
                        alone = alone_phase(server, workflow_id, args)
                    rounds.append((alone, loaded))
                say(f"latency: {args.latency_samples} waits one at a time")
                lat = latency(server, conn, workflow_id, args.latency_samples)
                say(
                    f"NOTIFY cost: {args.finish_runs} finishing UPDATEs, trigger on and off, {args.rounds * 2} rounds each"
                )
                cost = notify_cost(db_url, workflow_id, args)
        finally:
            server.stop(signal.SIGTERM, timeout=30)  # graceful: the waits end at once
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    shown = {**settings, "waiters": args.waiters, "WAIT_MAX_WAITERS": f"{args.threads - 1} (default)"}
    report(facts, shown, rounds, lat, cost)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"wait-{stamp}.json").write_text(
        json.dumps(
            {"machine": facts, "settings": shown, "rounds": rounds, "latency_ms": lat, "finishes_per_s": cost},
            indent=2,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
