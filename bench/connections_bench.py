#!/usr/bin/env python3
"""Flowline beyond one box, connections (issue #21): 8 worker processes of 4 threads and 2 gunicorn hosts, on
the server directly and through PgBouncer in transaction mode (``default_pool_size`` 10): the server connections
they hold, the queue's runs/s and enqueue-to-start latency.

    .venv/bin/python -m bench.connections_bench [--workers 8] [--threads 4] [--hosts 2] [--backlog 4000]
                                                [--rate 100] [--seconds 20] [--pool-size 10]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL).
2. Each way is a fresh database: ``--hosts`` gunicorns (``WEB_CONCURRENCY`` 2 each, their defaults otherwise) and
   ``--workers`` worker processes of ``--threads`` threads. Direct: ``DATABASE_URL`` is the server. Through
   PgBouncer: ``DATABASE_URL`` is a real PgBouncer (tests/support/pgbouncer.py) and ``DATABASE_DIRECT_URL`` the
   server, as the README's "Scaling Flowline" section wires it.
3. Throughput: ``--backlog`` runs of a one-formatter-node workflow queued in one transaction with the API's own
   statement (the workers are up and idle); runs/s = runs / (last finished_at - first started_at).
4. Latency: runs queued through the API (POST /workflows/{id}/runs, alternating hosts) at ``--rate`` a second
   for ``--seconds``; enqueue-to-start = started_at - created_at (PostgreSQL's clock), p50 and p99.
5. Server connections: the database's client backends in pg_stat_activity, sampled every 0.2 s through both
   phases: the most seen, and how many were LISTENing or idle (a LISTEN connection stays idle between
   notifications).

It prints the machine and a table, and writes bench/results/connections-<timestamp>.json.
"""

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import machine, support
from bench.queue_bench import enqueue, one_node_workflow
from bench.support import RESULTS, Database, Server, http, running_workers, say
from tests.support import wait_for
from tests.support.pgbouncer import running_pgbouncer


def sample_connections(conn, database, samples, stop):
    """Append (client backends, of them idle) of ``database`` to ``samples`` every 0.2 s until ``stop``."""
    while not stop.wait(0.2):
        row = conn.execute(
            """SELECT count(*) AS n, count(*) FILTER (WHERE state = 'idle') AS idle
               FROM pg_stat_activity
               WHERE datname = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()""",
            (database,),
        ).fetchone()
        samples.append((row["n"], row["idle"]))


def unfinished(conn):
    return conn.execute("SELECT count(*) AS n FROM runs WHERE status IN ('Pending', 'Running')").fetchone()["n"]


def one_way(database, env, args, log_dir):
    """Serve ``database`` with ``env``'s URLs; return its numbers."""
    tmp = Path(tempfile.mkdtemp(prefix="flowline-connections-"))
    base_env = {**os.environ, "WEB_CONCURRENCY": "2", "LOG_LEVEL": "WARNING", **env}
    hosts = [Server(f"host{i}", "app:create_app()", base_env, tmp) for i in range(args.hosts)]
    samples, stop = [], threading.Event()
    with database.connect() as conn, database.connect() as watcher:
        workflow_id = one_node_workflow(conn)
        try:
            for host in hosts:
                host.wait_ready("/readyz")
            with running_workers(env["DATABASE_URL"], args.workers, log_dir, args.threads, env=env):
                sampler = threading.Thread(target=sample_connections, args=(watcher, database.name, samples, stop))
                sampler.start()
                time.sleep(3)  # the workers connect, LISTEN and go idle
                with conn.transaction():  # the API's own statement, which wakes the workers at commit
                    for i in range(args.backlog):
                        enqueue(conn, workflow_id, f"run {i}")
                wait_for(lambda: unfinished(conn) == 0, 600, interval=0.1, message="the backlog")
                row = conn.execute(
                    """SELECT count(*) FILTER (WHERE status = 'Succeeded') AS ok,
                              extract(epoch FROM max(finished_at) - min(started_at))::float8 AS seconds
                       FROM runs"""
                ).fetchone()
                if row["ok"] != args.backlog:
                    raise RuntimeError(f"{row['ok']} of {args.backlog} backlog runs succeeded")
                throughput = args.backlog / row["seconds"]
                conn.execute("TRUNCATE runs CASCADE")
                started = time.monotonic()
                for i in range(int(args.rate * args.seconds)):
                    time.sleep(max(0.0, started + i / args.rate - time.monotonic()))
                    http("POST", f"{hosts[i % len(hosts)].base}/workflows/{workflow_id}/runs", {"input_text": "x"}, 202)
                wait_for(lambda: unfinished(conn) == 0, 120, interval=0.1, message="the steady runs")
                stop.set()
                sampler.join()
            latencies = sorted(
                r["ms"]
                for r in conn.execute(
                    "SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 AS ms FROM runs"
                ).fetchall()
            )
        finally:
            stop.set()
            for host in hosts:
                host.stop()
    return {
        "server_connections_max": max(n for n, _ in samples),
        "server_connections_idle_at_max": max(samples)[1],
        "runs_per_s": round(throughput, 1),
        "enqueue_to_start_p50_ms": round(statistics.median(latencies), 1),
        "enqueue_to_start_p99_ms": round(latencies[int(len(latencies) * 0.99)], 1),
        "steady_runs": len(latencies),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args()
    url = support.server_url()
    with psycopg.connect(url) as conn:
        facts = machine.facts(conn)
    log_dir = RESULTS / f"connections-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-logs"
    load_before = os.getloadavg()[0]
    results = {}
    with Database(url) as database:
        say("direct ...")
        results["direct"] = one_way(database, {"DATABASE_URL": database.url}, args, log_dir / "direct")
    with Database(url) as database, running_pgbouncer(url, pool_size=args.pool_size) as through:
        say("through PgBouncer ...")
        env = {"DATABASE_URL": through(database.url), "DATABASE_DIRECT_URL": database.url}
        results["pgbouncer"] = one_way(database, env, args, log_dir / "pgbouncer")
    print(machine.describe(facts, "the gunicorns, the workers, PgBouncer and this script"))
    print(f"load avg    {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (1 min)")
    print(
        f"{args.workers} workers x {args.threads} threads, {args.hosts} gunicorn hosts (2 processes each); backlog "
        f"{args.backlog} runs; steady {args.rate:g} runs/s for {args.seconds:g} s through the API; "
        f"PgBouncer default_pool_size {args.pool_size}"
    )
    columns = (
        ("server_connections_max", "server conns (max)"),
        ("server_connections_idle_at_max", "of them idle"),
        ("runs_per_s", "runs/s (backlog)"),
        ("enqueue_to_start_p50_ms", "start p50 ms"),
        ("enqueue_to_start_p99_ms", "start p99 ms"),
    )
    print(f"{'':20}" + "".join(f"{title:>20}" for _, title in columns))
    for way, numbers in results.items():
        print(f"{way:20}" + "".join(f"{numbers[key]:>20}" for key, _ in columns))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"connections-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"machine": facts, "args": vars(args), "results": results}, indent=2))
    say(f"wrote {out}")


if __name__ == "__main__":
    main()
