#!/usr/bin/env python3
"""Flowline's queue benchmark: async runs/s with 1 and 4 worker processes, enqueue-to-start latency with idle
workers, the claim's plan with 1M finished runs, and procrastinate's no-op jobs/s on the same machine and server.

    .venv/bin/python -m bench.queue_bench [--runs 3000] [--latency-samples 300] [--finished-rows 1000000]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL).
2. Throughput, for 1 and 4 worker processes of one thread each, and one process of 4 threads: a fresh database, a workflow with one formatter node, ``--runs``
   runs queued with the API's own statement (``enqueue_run``) and ANALYZEd, then the ``python -m flowline.worker
   --concurrency T`` processes. Runs/s = runs / (last finished_at - first started_at), read from the runs table,
   so worker start-up is not counted. Every run must end Succeeded with one attempt.
3. Latency: one idle worker; runs queued one at a time (each its own transaction, as a request would), each
   waited for before the next. Latency = started_at - created_at (both PostgreSQL clocks): the NOTIFY sent on
   commit, the worker's wake-up and its claim.
4. The claim with ``--finished-rows`` Succeeded runs in the table, plus 1 and then 100,000 Pending ones:
   EXPLAIN ANALYZE, the plan's node types on ``runs`` and its execution time.
5. procrastinate (bench/procrastinate_noop.py, in a throwaway venv of its own) with the same job count and
   1 and 4 worker processes of concurrency 1, on another fresh database of the same server.

It prints the machine and a table, and writes bench/results/queue-<timestamp>.json.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import psycopg
from psycopg.types.json import Jsonb

from bench import machine, support
from bench.support import RESULTS, ROOT, Database, running_workers, say
from flowline.data import db
from flowline.data.sql import QUERIES
from tests.support import wait_for

# (worker processes, threads each): the 1 and 4 processes, and 4 threads in one process beside them.
SHAPES = ((1, 1), (4, 1), (1, 4))
TARGET_RATIO = 1.5
LATENCY_P50_TARGET_MS = 10.0


def one_node_workflow(conn):
    workflow_id = conn.execute("INSERT INTO workflows (name) VALUES ('queue bench') RETURNING id").fetchone()["id"]
    conn.execute(
        "INSERT INTO nodes (workflow_id, position, node_type, config) "
        "VALUES (%s, 0, 'formatter', '{\"rules\": [\"uppercase\"]}')",
        (workflow_id,),
    )
    return workflow_id


def enqueue(conn, workflow_id, text):
    return db.one(
        conn,
        "enqueue_run",
        workflow_id=workflow_id,
        input=Jsonb({"input_text": text, "file_id": None}),
        max_attempts=3,
        idempotency_key=None,
        request_hash=None,
        concurrency_key=None,
        priority=0,
    )["id"]


def throughput(server_url, runs, workers, threads, log_dir):
    with Database(server_url) as database, database.connect() as conn:
        workflow_id = one_node_workflow(conn)
        with conn.transaction():
            for i in range(runs):
                enqueue(conn, workflow_id, f"run {i}")
        # As procrastinate_noop.py does for its jobs table: statistics a production table would have.
        conn.execute("ANALYZE runs")
        with running_workers(database.url, workers, log_dir / f"throughput-{workers}x{threads}", threads):
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) AS n FROM runs WHERE status = 'Pending' OR status = 'Running'"
                    ).fetchone()["n"]
                    == 0
                ),
                600,
                message=f"{runs} runs",
            )
        row = conn.execute("""SELECT count(*) FILTER (WHERE status = 'Succeeded' AND attempt = 1) AS ok,
                                     count(*) AS total,
                                     extract(epoch FROM max(finished_at) - min(started_at)) AS seconds
                              FROM runs""").fetchone()
    if row["ok"] != runs or row["total"] != runs:
        raise RuntimeError(f"{row['ok']} of {row['total']} runs succeeded at their first attempt")
    seconds = float(row["seconds"])
    return {
        "workers": workers,
        "threads": threads,
        "runs": runs,
        "seconds": round(seconds, 3),
        "runs_per_s": round(runs / seconds, 1),
    }


def latency(server_url, samples, log_dir):
    with Database(server_url) as database, database.connect() as conn:
        workflow_id = one_node_workflow(conn)
        with running_workers(database.url, 1, log_dir / "latency"):
            # Let the worker connect and LISTEN, then warm it up.
            time.sleep(2)
            for i in range(samples + 20):
                run_id = enqueue(conn, workflow_id, f"sample {i}")
                wait_for(
                    lambda run_id=run_id: (
                        conn.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"]
                        == "Succeeded"
                    ),
                    30,
                    message="a run",
                )
                time.sleep(0.01)
        rows = conn.execute("""SELECT extract(epoch FROM started_at - created_at) * 1000 AS ms
                               FROM runs ORDER BY created_at OFFSET 20""").fetchall()
    values = sorted(float(r["ms"]) for r in rows)
    return {
        "samples": len(values),
        "p50_ms": round(statistics.median(values), 2),
        "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
        "max_ms": round(values[-1], 2),
    }


def claim_plan(server_url, finished_rows, pending_rows):
    with Database(server_url) as database, database.connect() as conn:
        workflow_id = one_node_workflow(conn)
        say(f"  inserting {finished_rows:,} finished runs ...")
        conn.execute(
            """INSERT INTO runs (workflow_id, mode, status, attempt, started_at, finished_at, final_output)
                        SELECT %s, 'async', 'Succeeded', 1, now(), now(), 'x'
                        FROM generate_series(1, %s)""",
            (workflow_id, finished_rows),
        )
        conn.execute(
            """INSERT INTO runs (workflow_id, mode, input)
                        SELECT %s, 'async', '{"input_text": "waiting"}' FROM generate_series(1, %s)""",
            (workflow_id, pending_rows),
        )
        conn.execute("VACUUM ANALYZE runs")
        plan = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES["claim_run"].text,
            {"lease_token": uuid.uuid4(), "lease_seconds": 30, "worker_id": "bench"},
        ).fetchone()["QUERY PLAN"][0]
    scans = []

    def walk(node):
        if node.get("Relation Name") == "runs":
            scans.append(f"{node['Node Type']}" + (f" using {node['Index Name']}" if "Index Name" in node else ""))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return {
        "finished_rows": finished_rows,
        "pending_rows": pending_rows,
        "runs_scans": scans,
        "seq_scan_on_runs": any(s.startswith("Seq Scan") for s in scans),
        "execution_ms": plan["Execution Time"],
    }


def procrastinate(server_url, jobs, workers):
    with Database(server_url, migrate=False) as database:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.procrastinate_noop",
                "--database-url",
                database.url,
                "--jobs",
                str(jobs),
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if result.returncode != 0:
            raise RuntimeError(f"procrastinate benchmark failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--finished-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-procrastinate", action="store_true")
    args = parser.parse_args()
    server_url = support.server_url()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = RESULTS / f"queue-{stamp}-logs"
    with psycopg.connect(server_url, autocommit=True) as conn:
        facts = machine.facts(conn)
    results = {"machine": facts, "flowline": [], "procrastinate": []}
    for workers, threads in SHAPES:
        say(f"flowline: {args.runs} runs, {workers} worker process(es) x {threads} thread(s) ...")
        results["flowline"].append(throughput(server_url, args.runs, workers, threads, log_dir))
        if threads == 1 and not args.skip_procrastinate:
            say(f"procrastinate: {args.runs} no-op jobs, {workers} worker process(es) ...")
            results["procrastinate"].append(procrastinate(server_url, args.runs, workers))
    say(f"latency: {args.latency_samples} runs one at a time, one idle worker ...")
    results["latency"] = latency(server_url, args.latency_samples, log_dir)
    results["claim_plans"] = []
    for pending in (1, 100_000):
        say(f"claim plan with {args.finished_rows:,} finished runs and {pending:,} pending ...")
        results["claim_plans"].append(claim_plan(server_url, args.finished_rows, pending))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"queue-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    report(results)


def report(results):
    print(machine.describe(results["machine"], "workers, server and this script"))
    print()
    print(f"{'processes x threads':>19}  {'flowline runs/s':>15}  {'procrastinate jobs/s':>20}  {'ratio':>6}")
    by_workers = {r["workers"]: r for r in results["procrastinate"]}
    for run in results["flowline"]:
        other = by_workers.get(run["workers"]) if run["threads"] == 1 else None
        ratio = f"{run['runs_per_s'] / other['jobs_per_s']:.2f}x" if other else "-"
        shape = f"{run['workers']} x {run['threads']}"
        print(
            f"{shape:>19}  {run['runs_per_s']:>15,.1f}  "
            f"{(other['jobs_per_s'] if other else float('nan')):>20,.1f}  {ratio:>6}"
        )
    lat = results["latency"]
    print()
    print(
        f"enqueue->start with an idle worker ({lat['samples']} runs): p50 {lat['p50_ms']} ms, "
        f"p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms (target p50 < {LATENCY_P50_TARGET_MS:g} ms)"
    )
    for plan in results["claim_plans"]:
        print(
            f"claim with {plan['finished_rows']:,} finished and {plan['pending_rows']:,} pending runs: "
            f"{', '.join(plan['runs_scans'])}; {plan['execution_ms']:.3f} ms; "
            f"sequential scan on runs: {'YES' if plan['seq_scan_on_runs'] else 'no'}"
        )
    four = {(r["workers"], r["threads"]): r for r in results["flowline"]}.get((4, 1))
    if four and by_workers.get(4):
        target = TARGET_RATIO * by_workers[4]["jobs_per_s"]
        print(
            f"target: 4 workers >= {TARGET_RATIO}x procrastinate = {target:,.1f} runs/s: "
            f"{'met' if four['runs_per_s'] >= target else 'MISSED'} ({four['runs_per_s']:,.1f})"
        )


if __name__ == "__main__":
    main()
