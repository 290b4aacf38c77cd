#!/usr/bin/env python3
"""Flowline's queue benchmark: async runs/s with 1 and 4 worker processes, before and after migrations 0020, 0023
and 0024, next to procrastinate's no-op jobs/s on the same machine and server; bare finishing UPDATEs/s with the runs
triggers before and after 0020 and 0023 and without them; enqueue-to-start latency with idle workers and the
claim's plan with 1M finished runs.

    .venv/bin/python -m bench.queue_bench [--runs 3000] [--rounds 1] [--latency-samples 300]
                                          [--finished-rows 1000000] [--finish-runs 3000] [--finish-rounds 3]
                                          [--skip-procrastinate]

"Before" is this code and schema with the triggers on runs that fired for every run until migrations 0020 and
0023, re-created exactly as migrations 0010, 0009 and 0016 define them (their CREATE TRIGGER statements are read
from those files): ``runs_notify_finished`` (a NOTIFY for every finished run), ``runs_queue_webhook_deliveries``
(a look for subscriptions the workflow does not have), and ``runs_hold_inserted``, ``runs_hold_requeued`` and
``runs_release_on_status`` (the workflow's concurrency lock and limits read at every enqueue, claim and finish
of a workflow without limits). "After" is the schema as migrated (0020's and 0023's WHEN clauses: nobody waits
for these runs, the workflow has no subscription and no limit). Everything else (the enqueue's FOR SHARE, the new
columns) is the same in both, so the difference is the triggers'. "Before" also has save_run_steps,
roll_up_llm_usage and add_lane_running as LANGUAGE sql functions, as they were until migration 0024 (its rollback
file's definitions): their statements planned again at every call; "after", 0024's plpgsql ones, planned once per
connection. The bare finishing UPDATEs (6.) call none of those functions: only the triggers differ there.

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL).
2. Throughput, ``--rounds`` times (odd rounds before then after, even ones after then before), for 1 and 4 worker
   processes of one thread each, and one process of 4 threads:
   a fresh database, a workflow with one formatter node, ``--runs`` runs queued with the API's own statement
   (``enqueue_run``) and ANALYZEd, then the ``python -m flowline.worker --concurrency T`` processes, while one
   connection LISTENs on flowline_run_finished and drains it, as a gunicorn process that served a wait does.
   Runs/s = runs / (last finished_at - first started_at), read from the runs table, so worker start-up is not
   counted. Every run must end Succeeded with one attempt. CPU per run, less troubled by other work on the
   machine than runs/s: the user + system seconds (/proc) the worker processes and their PostgreSQL backends
   used from the moment a tenth of the runs had finished to the last, over the runs finished meanwhile.
3. Latency: one idle worker; runs queued one at a time (each its own transaction, as a request would), each
   waited for before the next. Latency = started_at - created_at (both PostgreSQL clocks): the NOTIFY sent on
   commit, the worker's wake-up and its claim.
4. The claim with ``--finished-rows`` Succeeded runs in the table, plus 1 and then 100,000 Pending ones:
   EXPLAIN ANALYZE, the plan's node types on ``runs`` and its execution time.
5. procrastinate (bench/procrastinate_noop.py, in a throwaway venv of its own) with the same job count and
   1 and 4 worker processes of concurrency 1, on another fresh database of the same server, in each round.
   The table shows each figure's median over the rounds (and the ratio of the medians), then every round's.
6. Bare finishing UPDATEs (bench/wait_bench.py's finish_rate: ``--finish-runs`` parked runs finished one
   autocommit UPDATE each over 4 connections, the LISTEN connection draining), with the triggers before, after,
   and dropped, interleaved for ``--finish-rounds`` rounds on one database, each round starting with the next.

It prints the machine and a table, and writes bench/results/queue-<timestamp>.json.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from bench import machine, support
from bench.support import RESULTS, ROOT, Database, draining, running_workers, say
from bench.wait_bench import finish_rate
from flowline.data import db
from flowline.data.sql import QUERIES
from tests.support import wait_for

# (worker processes, threads each): the 1 and 4 processes, and 4 threads in one process beside them.
SHAPES = ((1, 1), (4, 1), (1, 4))
TARGET_RATIO = 1.5
LATENCY_P50_TARGET_MS = 10.0


# The triggers 0020 and 0023 redefined: (the migration whose definition "before" re-creates, the one "after" has).
_LIMITS = ("0016.add-concurrency-limits-and-priorities.sql", "0023.skip-limit-triggers-for-unlimited-runs.sql")
TRIGGERS = {
    "runs_notify_finished": ("0010.notify-run-finished.sql", "0020.fire-run-triggers-only-when-used.sql"),
    "runs_queue_webhook_deliveries": ("0009.create-webhooks.sql", "0020.fire-run-triggers-only-when-used.sql"),
    "runs_hold_inserted": _LIMITS,
    "runs_hold_requeued": _LIMITS,
    "runs_release_on_status": _LIMITS,
}
STATES = ("before", "after")
# The functions migration 0024 made plpgsql: (the file defining them as "before" has them, as "after" has them).
FUNCTIONS = (
    "0024.plan-hot-functions-once-per-connection.rollback.sql",
    "0024.plan-hot-functions-once-per-connection.sql",
)


def trigger_definition(name, migration):
    """Return the CREATE TRIGGER statement of ``name`` in migrations/``migration``."""
    text = (ROOT / "migrations" / migration).read_text(encoding="utf-8")
    return re.search(rf"^CREATE TRIGGER {name}\b.*?;$", text, re.S | re.M).group(0)


def use_schema(conn, state):
    """Define the runs triggers of TRIGGERS as ``state`` has them: before (0009, 0010, 0016), after (0020, 0023) or
    none; and the functions of FUNCTIONS as SQL before, as plpgsql (0024) otherwise. One database may go through
    several states (finishing() does)."""
    for name, (old, new) in TRIGGERS.items():
        conn.execute(f"DROP TRIGGER IF EXISTS {name} ON runs")
        if state != "none":
            conn.execute(trigger_definition(name, old if state == "before" else new))
    functions = FUNCTIONS[0] if state == "before" else FUNCTIONS[1]
    conn.execute((ROOT / "migrations" / functions).read_text(encoding="utf-8"))


def cpu_seconds(conn, processes):
    """Return the CPU seconds (user + system, from /proc) used so far by each worker process and by each PostgreSQL
    backend of the workers' connections: {"workers": {pid: s}, "backends": {pid: s}}."""
    backends = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'flowline-worker%%'"
    ).fetchall()

    def used(pids):
        seconds = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone since
            seconds[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return seconds

    return {"workers": used(p.pid for p in processes), "backends": used(r["pid"] for r in backends)}


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


def throughput(server_url, runs, workers, threads, log_dir, state):
    with Database(server_url) as database, database.connect() as conn:
        use_schema(conn, state)
        workflow_id = one_node_workflow(conn)
        with conn.transaction():
            for i in range(runs):
                enqueue(conn, workflow_id, f"run {i}")
        # As procrastinate_noop.py does for its jobs table: statistics a production table would have.
        conn.execute("ANALYZE runs")
        with (
            draining(database.url),
            running_workers(
                database.url, workers, log_dir / f"throughput-{state}-{workers}x{threads}", threads
            ) as processes,
        ):

            def finished():
                return (
                    runs
                    - conn.execute(
                        "SELECT count(*) AS n FROM runs WHERE status = 'Pending' OR status = 'Running'"
                    ).fetchone()["n"]
                )

            # CPU is counted from a tenth of the runs on, so the workers' start-up is left out.
            wait_for(lambda: finished() >= runs // 10, 600, message=f"{runs // 10} runs")
            first = finished(), cpu_seconds(conn, processes)
            wait_for(lambda: finished() == runs, 600, message=f"{runs} runs")
            last = finished(), cpu_seconds(conn, processes)
        row = conn.execute("""SELECT count(*) FILTER (WHERE status = 'Succeeded' AND attempt = 1) AS ok,
                                     count(*) AS total,
                                     extract(epoch FROM max(finished_at) - min(started_at)) AS seconds
                              FROM runs""").fetchone()
    if row["ok"] != runs or row["total"] != runs:
        raise RuntimeError(f"{row['ok']} of {row['total']} runs succeeded at their first attempt")
    seconds = float(row["seconds"])
    return {
        "triggers": state,
        "workers": workers,
        "threads": threads,
        "runs": runs,
        "seconds": round(seconds, 3),
        "runs_per_s": round(runs / seconds, 1),
        # CPU milliseconds per run: the worker processes', and their PostgreSQL backends'.
        **{
            f"{side}_cpu_ms_per_run": round(
                sum(used - first[1][side].get(pid, 0) for pid, used in last[1][side].items())
                / (last[0] - first[0])
                * 1000,
                3,
            )
            for side in ("workers", "backends")
        },
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


def finishing(server_url, runs, rounds):
    """Bare finishing UPDATEs/s with the triggers before, after and none, interleaved (see the docstring, 6.)."""
    rates = {"before": [], "after": [], "none": []}
    with Database(server_url) as database, database.connect() as conn, draining(database.url):
        workflow_id = one_node_workflow(conn)
        states = list(rates)
        for n in range(rounds):
            # Each round starts with another state: a state's place in the round does not favour it.
            for state in states[n % len(states) :] + states[: n % len(states)]:
                use_schema(conn, state)
                rates[state].append(round(finish_rate(database.url, workflow_id, runs, 4)))
                conn.execute("DELETE FROM runs")
    return {"runs": runs, "connections": 4, **rates}


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
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--finish-runs", type=int, default=3000)
    parser.add_argument("--finish-rounds", type=int, default=3)
    parser.add_argument("--skip-procrastinate", action="store_true")
    args = parser.parse_args()
    server_url = support.server_url()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = RESULTS / f"queue-{stamp}-logs"
    with psycopg.connect(server_url, autocommit=True) as conn:
        facts = machine.facts(conn)
    results = {"machine": facts, "flowline": [], "procrastinate": []}
    for n in range(args.rounds):
        for workers, threads in SHAPES:
            # Odd rounds measure after first: the order within a round does not favour either.
            for state in STATES[::-1] if n % 2 else STATES:
                say(
                    f"round {n + 1}: flowline, {state} 0020, 0023 and 0024: {args.runs} runs, "
                    f"{workers} worker process(es) x {threads} thread(s) ..."
                )
                results["flowline"].append(throughput(server_url, args.runs, workers, threads, log_dir, state))
            if threads == 1 and not args.skip_procrastinate:
                say(f"round {n + 1}: procrastinate: {args.runs} no-op jobs, {workers} worker process(es) ...")
                results["procrastinate"].append(procrastinate(server_url, args.runs, workers))
    say(
        f"finishing UPDATEs: {args.finish_runs} over 4 connections, triggers before / after / none, {args.finish_rounds} rounds ..."
    )
    results["finishing"] = finishing(server_url, args.finish_runs, args.finish_rounds)
    say(f"latency: {args.latency_samples} runs one at a time, one idle worker ...")
    results["latency"] = latency(server_url, args.latency_samples, log_dir)
    results["claim_plans"] = []
    for pending in (1, 100_000):
        say(f"claim plan with {args.finished_rows:,} finished runs and {pending:,} pending ...")
        results["claim_plans"].append(claim_plan(server_url, args.finished_rows, pending))
    results["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"queue-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    report(results)


def report(results):
    print(machine.describe(results["machine"], "workers, server and this script"))
    start, end = results["machine"]["load_average_at_start"], results["load_average_at_end"]
    print(
        f"load average (1, 5, 15 min) at start {', '.join(f'{v:.2f}' for v in start)}, at end "
        f"{', '.join(f'{v:.2f}' for v in end)}"
    )
    print()
    jobs = {}
    for r in results["procrastinate"]:
        jobs.setdefault(r["workers"], []).append(r["jobs_per_s"])
    runs = {}
    for r in results["flowline"]:
        runs.setdefault((r["triggers"], r["workers"], r["threads"]), []).append(r["runs_per_s"])
    median = {key: statistics.median(values) for key, values in (runs | jobs).items()}
    print(
        "flowline runs/s before 0020, 0023 and 0024 (triggers of 0009, 0010, 0016; SQL functions) and after; "
        "ratio to procrastinate"
    )
    print(
        f"{'processes x threads':>19}  {'before':>9}  {'after':>9}  {'procrastinate jobs/s':>20}  "
        f"{'ratio before':>12}  {'ratio after':>11}"
    )
    nan = float("nan")
    for workers, threads in SHAPES:
        before, after = median.get(("before", workers, threads)), median.get(("after", workers, threads))
        other = median.get(workers) if threads == 1 else None

        def ratio(value, other=other):
            return f"{value / other:.2f}x" if other and value else "-"

        shape = f"{workers} x {threads}"
        print(
            f"{shape:>19}  {before or nan:>9,.1f}  {after or nan:>9,.1f}  {other or nan:>20,.1f}  "
            f"{ratio(before):>12}  {ratio(after):>11}"
        )
    if len(next(iter(runs.values()), [])) > 1:
        print("every round:")
        for workers, threads in SHAPES:
            rounds = [
                f"{state} {' / '.join(f'{v:,.0f}' for v in runs.get((state, workers, threads), []))}"
                for state in STATES
            ]
            if threads == 1 and workers in jobs:
                rounds.append(f"procrastinate {' / '.join(f'{v:,.0f}' for v in jobs[workers])}")
            print(f"{workers:>17} x {threads}  {'; '.join(rounds)}")
    print("CPU ms per run (from a tenth of the runs on; medians): worker processes + their PostgreSQL backends")
    for workers, threads in SHAPES:
        cells = []
        for state in STATES:
            rows = [
                r
                for r in results["flowline"]
                if (r["triggers"], r["workers"], r["threads"]) == (state, workers, threads)
            ]
            if rows:
                worker_ms = statistics.median(r["workers_cpu_ms_per_run"] for r in rows)
                backend_ms = statistics.median(r["backends_cpu_ms_per_run"] for r in rows)
                cells.append(f"{state} {worker_ms:.3f} + {backend_ms:.3f} = {worker_ms + backend_ms:.3f}")
        print(f"{workers:>17} x {threads}  {'; '.join(cells)}")
    fin = results["finishing"]
    print()
    print(f"bare finishing UPDATEs/s ({fin['runs']} runs, one transaction each, {fin['connections']} connections):")
    for state in ("before", "after", "none"):
        values = fin[state]
        print(
            f"  triggers {state:<6} {' / '.join(f'{v:,}' for v in values)}  (median {statistics.median(values):,.0f})"
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
    four = median.get(("after", 4, 1))
    if four and median.get(4):
        target = TARGET_RATIO * median[4]
        print(
            f"target: 4 workers >= {TARGET_RATIO}x procrastinate = {target:,.1f} runs/s: "
            f"{'met' if four >= target else 'MISSED'} ({four:,.1f})"
        )


if __name__ == "__main__":
    main()
