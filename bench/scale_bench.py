#!/usr/bin/env python3
"""Flowline at scale: the API's and the console's history reads at 1M and at 5M runs, and prune-runs of 30 days at
5M by partition drop against row by row.

    .venv/bin/python -m bench.scale_bench [--runs 1000000,5000000] [--days 180] [--workflows 200] [--samples 200]
                                          [--prune-days 30] [--no-prune]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL), and
   works in a fresh database of that server at the newest migration, dropped at the end (bench/support.py).
2. The history, generated in SQL, one INSERT … SELECT per 50,000 runs: finished runs spread evenly at random over
   the last ``--days`` days, each of a random one of ``--workflows`` workflows (90 % Succeeded, 8 % Failed, 2 %
   Cancelled), each with 5 steps (100 characters of input and of output; the third an LLM step with its model and
   tokens, so the usage roll-up, the runs lists' usage and GET /usage have something to add) and 3 events
   (Pending, Running, its end); and, once, 100 Pending and 20 Running runs of the last ten minutes (the queue). The
   weekly partitions of run_steps and run_events are made first (make_history_partitions_at, as an import does).
   The scales of ``--runs`` are reached in turn (the later add runs to the earlier's). After each, runs is stored
   in created_at order (CLUSTER … USING runs_created_idx), as a service that inserts each run when it is created
   stores it: generated in random time order, the last day's runs lay one per page across the whole table, which
   no deployment's would. Then VACUUM ANALYZE of runs, the history and the usage roll-ups.
3. At each scale, gunicorn serves the database as ``make run`` does (WEB_CONCURRENCY=2) and each route below gets
   ``--samples`` GETs after 10 to warm up, one after another on a keep-alive connection: p50 and p99 in ms. A
   route that names a run asks for a different random run each time (any of the scale's runs, most of them
   months old); the lists' workflow is a random one; the deep page is the cursor 80 % down the list.
   GET /workflows/{id}/runs without ``limit`` (the milestone-1 contract's form: every run of the workflow) gets
   ``--samples`` / 20 GETs: its answer grows with the workflow's runs.
4. At the last scale, unless ``--no-prune``: prune-runs of the oldest ``--prune-days`` days twice from the same
   data (a copy of the database): by partition drop (flowline/tools/prune.py as the tables' owner: detach
   CONCURRENTLY and drop, then the runs' rows) and row by row (the same prune without the drop, as the app role
   runs it): seconds, size of run_steps and run_events (every partition's table, TOAST and indexes) and dead
   tuples after (bench/partition_bench.py's timed_prune; that bench also measures the plain tables before 0022).

It prints the machine and the figures, and writes bench/results/scale-<timestamp>.json.
"""

import argparse
import random
import time
from datetime import UTC, datetime, timedelta

import psycopg

from bench import machine, support
from bench.partition_bench import timed_prune
from bench.support import Database, say
from flowline.api.http import encode_cursor
from flowline.data import partitions
from tests.support.urls import url_for_database

RUNS_PER_BATCH = 50_000
WARM_UP = 10
# The goals the issue set: p50 under 50 ms at every scale, and the largest scale no slower than 1.2x the smallest.
P50_GOAL_MS = 50
RATIO_GOAL = 1.2


def make_partitions(conn, days):
    """Make the history partitions (the default period, weekly) holding the last ``days`` days and the next one."""
    now = datetime.now(UTC)
    made = partitions.make_for(conn, [now - timedelta(days=d) for d in range(-7, days + 1)], "week")
    say(f"  {made} pairs of history partitions made")


def add_active_runs(conn, workflow_ids):
    """Insert 100 Pending and 20 Running runs of the last ten minutes, the queue a busy deployment has."""
    conn.execute(
        """INSERT INTO runs (workflow_id, mode, status, input, attempt, max_attempts, created_at, available_at,
                             started_at, lease_token, lease_expires_at, worker_id)
           SELECT (%(w)s::uuid[])[1 + g %% cardinality(%(w)s::uuid[])], 'async',
                  CASE WHEN g <= 100 THEN 'Pending' ELSE 'Running' END,
                  '{"input_text": "bench", "file_id": null}', CASE WHEN g <= 100 THEN 0 ELSE 1 END, 3, t, t,
                  CASE WHEN g > 100 THEN t END, CASE WHEN g > 100 THEN gen_random_uuid() END,
                  CASE WHEN g > 100 THEN now() + interval '1 hour' END, CASE WHEN g > 100 THEN 'bench-worker' END
           FROM (SELECT g, now() - make_interval(secs => random() * 600) AS t
                 FROM generate_series(1, 120) AS g) AS active""",
        {"w": workflow_ids},
    )


def fill(conn, workflow_ids, count, days):
    """Insert ``count`` finished runs over the last ``days`` days with 5 steps and 3 events each; return seconds."""
    started = time.perf_counter()
    for first in range(0, count, RUNS_PER_BATCH):
        n = min(RUNS_PER_BATCH, count - first)
        say(f"  runs {first:,}..{first + n:,} of {count:,} ({time.perf_counter() - started:.0f} s) ...")
        conn.execute(
            """
            WITH run AS (
                INSERT INTO runs (workflow_id, mode, status, input, attempt, max_attempts, created_at, available_at,
                                  started_at, finished_at, final_output, error_message)
                SELECT workflow_id, 'async', status, '{"input_text": "bench input", "file_id": null}', 1, 3, t, t,
                       t + interval '0.1 seconds', t + interval '2 seconds',
                       CASE WHEN status = 'Succeeded' THEN 'BENCH OUTPUT' END,
                       CASE WHEN status = 'Failed' THEN 'bench: the node failed' END
                FROM (SELECT (%(w)s::uuid[])[1 + floor(random() * cardinality(%(w)s::uuid[]))::int] AS workflow_id,
                             CASE WHEN r < 0.90 THEN 'Succeeded' WHEN r < 0.98 THEN 'Failed' ELSE 'Cancelled' END
                                 AS status,
                             -- Ten minutes back at the latest: the active runs' time is theirs.
                             now() - make_interval(secs => 600 + random() * (%(days)s * 86400 - 600)) AS t
                      FROM (SELECT random() AS r FROM generate_series(1, %(n)s)) AS draws) AS spread
                RETURNING id, workflow_id, created_at, status
            ), steps AS (
                INSERT INTO run_steps (run_id, run_created_at, attempt, position, node_type, config_snapshot, status,
                                       started_at, finished_at, input_text, output_text, model, prompt_tokens,
                                       completion_tokens, note)
                SELECT id, created_at, 1, p, CASE WHEN p = 2 THEN 'generative_ai' ELSE 'formatter' END,
                       '{"rules": ["uppercase"]}',
                       CASE WHEN p = 4 AND status <> 'Succeeded' THEN status ELSE 'Succeeded' END,
                       created_at + make_interval(secs => 0.1 + p * 0.3),
                       created_at + make_interval(secs => 0.3 + p * 0.3),
                       repeat('input text of a step ', 5), repeat('OUTPUT TEXT OF A STEP ', 5),
                       CASE WHEN p = 2 THEN 'gpt-4o-mini' END, CASE WHEN p = 2 THEN 120 END,
                       CASE WHEN p = 2 THEN 40 END, CASE WHEN p = 2 THEN 'openai gpt-4o-mini, 120+40 tokens' END
                FROM run, generate_series(0, 4) AS p
            )
            INSERT INTO run_events (run_id, run_created_at, attempt, status, at, worker_id)
            SELECT id, created_at, CASE WHEN e.status = 'Pending' THEN 0 ELSE 1 END, e.status,
                   created_at + e.after, CASE WHEN e.status <> 'Pending' THEN 'bench-worker' END
            FROM run, LATERAL (VALUES ('Pending', interval '0'), ('Running', interval '0.1 seconds'),
                                      (run.status, interval '2 seconds')) AS e (status, after)""",
            {"w": workflow_ids, "days": days, "n": n},
        )
    seconds = time.perf_counter() - started
    say("  CLUSTER runs, VACUUM ANALYZE ...")
    conn.execute("CLUSTER runs USING runs_created_idx")
    conn.execute("VACUUM ANALYZE runs, run_steps, run_events, llm_usage_hourly, llm_usage_daily, llm_usage_totals")
    return seconds


def routes(conn, workflow_ids, samples):
    """(label, paths) per route measured: one path per GET (a run's routes ask for a different run each time)."""
    total = conn.execute("SELECT count(*) AS n FROM runs").fetchone()["n"]
    count = samples + WARM_UP
    run_ids = [
        row["id"]
        for row in conn.execute(
            "SELECT id FROM runs WHERE finished_at IS NOT NULL ORDER BY random() LIMIT %s",
            (count,),
        )
    ]
    assert len(run_ids) == count, "too few runs to sample"
    workflow_id = random.choice(workflow_ids)
    deep = conn.execute(
        "SELECT created_at, id FROM runs ORDER BY created_at DESC, id OFFSET %s LIMIT 1", (total * 4 // 5,)
    ).fetchone()
    cursor = encode_cursor(deep)
    every = max(1, samples // 20) + WARM_UP
    return [
        ("GET /runs/{id}", [f"/runs/{r}" for r in run_ids]),
        ("GET /runs/{id}/events", [f"/runs/{r}/events" for r in run_ids]),
        ("GET /runs", ["/runs"] * count),
        ("GET /runs?status=Failed", ["/runs?status=Failed"] * count),
        ("GET /runs?workflow_id=", [f"/runs?workflow_id={workflow_id}"] * count),
        ("GET /runs?workflow_id=&status=Failed", [f"/runs?workflow_id={workflow_id}&status=Failed"] * count),
        ("GET /runs, 80 % down", [f"/runs?cursor={cursor}"] * count),
        ("GET /workflows/{id}/runs?limit=50", [f"/workflows/{workflow_id}/runs?limit=50"] * count),
        ("GET /workflows/{id}/runs (every run)", [f"/workflows/{workflow_id}/runs"] * every),
        ("GET /usage (30 days by day)", ["/usage"] * count),
        ("console runs list", ["/console/runs"] * count),
        ("console runs list, Failed", ["/console/runs?status=Failed"] * count),
        ("console runs list, workflow", [f"/console/runs?workflow_id={workflow_id}"] * count),
        ("console runs list, 80 % down", [f"/console/runs?cursor={cursor}"] * count),
        ("console run page", [f"/console/runs/{r}" for r in run_ids]),
        ("console workflow page", [f"/console/workflows/{workflow_id}"] * count),
        ("console queue", ["/console/queue"] * count),
        ("console usage", ["/console/usage"] * count),
    ]


def sizes(conn):
    """Rows and bytes (tables, TOAST, indexes; every partition) of runs, run_steps and run_events."""
    return conn.execute(
        """SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM run_steps) AS steps,
                  (SELECT count(*) FROM run_events) AS events,
                  (pg_total_relation_size('runs')
                   + (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('run_steps'))
                   + (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('run_events')))::bigint
                      AS bytes,
                  (SELECT count(*) FROM pg_partition_tree('run_steps') WHERE isleaf) AS partitions"""
    ).fetchone()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="1000000,5000000", help="the scales, comma-separated, ascending")
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--prune-days", type=int, default=30)
    parser.add_argument("--no-prune", action="store_true", help="skip the prune-runs comparison (item 4)")
    args = parser.parse_args()
    scales = [int(n) for n in args.runs.split(",")]
    assert scales == sorted(scales), "--runs: the scales go ascending"
    server_url = support.server_url()
    with psycopg.connect(server_url, autocommit=True) as conn:
        results = {"machine": machine.facts(conn), "args": vars(args), "scales": []}
    copy = None
    with Database(server_url) as database:
        try:
            with database.connect() as conn:
                workflow_ids = [
                    row["id"]
                    for row in conn.execute(
                        "INSERT INTO workflows (name) SELECT 'scale bench ' || g FROM generate_series(1, %s) AS g "
                        "RETURNING id",
                        (args.workflows,),
                    )
                ]
                make_partitions(conn, args.days)
                add_active_runs(conn, workflow_ids)
            have = 0
            for scale in scales:
                with database.connect() as conn:
                    say(f"filling up to {scale:,} finished runs over {args.days} days ...")
                    fill_seconds = fill(conn, workflow_ids, scale - have, args.days)
                    have = scale
                    size = sizes(conn)
                    measured = routes(conn, workflow_ids, args.samples)
                say(f"measuring at {scale:,} runs ...")
                results["scales"].append(
                    {
                        "runs": scale,
                        "fill_seconds": round(fill_seconds, 1),
                        "size": size,
                        "routes": support.time_gets(database.url, measured, WARM_UP),
                    }
                )
            if not args.no_prune:
                copy = f"{database.name}_rows"
                with psycopg.connect(server_url, autocommit=True) as conn:
                    say("copying the database for the row-by-row prune ...")
                    conn.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{database.name}"')
                older_than_s = (args.days - args.prune_days) * 86400
                say(f"prune of the oldest {args.prune_days} days by partition drop ...")
                results["prune_by_partition_drop"] = timed_prune(database.url, older_than_s, "drop")
                say("... row by row ...")
                results["prune_row_by_row"] = timed_prune(url_for_database(server_url, copy), older_than_s, "rows")
        finally:
            if copy:
                with psycopg.connect(server_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
    support.save_results("scale", results)
    report(results)


def report(results):
    print(machine.describe(results["machine"], "gunicorn, the server and this script"))
    scales = results["scales"]
    for s in scales:
        size = s["size"]
        print(
            f"{s['runs']:,} finished runs (+120 active) over {results['args']['days']} days: {size['steps']:,} steps, "
            f"{size['events']:,} events, {size['bytes'] / 2**30:.1f} GiB, {size['partitions']} partitions; "
            f"generated in {s['fill_seconds']} s"
        )
    print()
    first, last = scales[0], scales[-1]
    header = f"{'route':>38}"
    for s in scales:
        header += f"  {'p50 @' + format(s['runs'] / 1e6, 'g') + 'M':>10}  {'p99':>8}"
    print(header + f"  {'p50 ratio':>9}  goal (p50 < {P50_GOAL_MS} ms, ratio <= {RATIO_GOAL})")
    for i, route in enumerate(first["routes"]):
        line = f"{route['route']:>38}"
        for s in scales:
            r = s["routes"][i]
            line += f"  {r['p50_ms']:>10.2f}  {r['p99_ms']:>8.2f}"
        ratio = last["routes"][i]["p50_ms"] / route["p50_ms"]
        met = last["routes"][i]["p50_ms"] < P50_GOAL_MS and ratio <= RATIO_GOAL
        print(line + f"  {ratio:>9.2f}  {'met' if met else 'NOT met'}")
    for how in ("prune_by_partition_drop", "prune_row_by_row"):
        if how in results:
            p = results[how]
            print(
                f"{how}: {p['seconds']} s, {p['runs_deleted']:,} runs, {p['partitions_dropped']} partitions dropped; "
                f"run_steps + run_events {p['bytes_before'] / 2**20:,.0f} MB before, {p['bytes_after'] / 2**20:,.0f} "
                f"MB after, {p['dead_tuples_after']:,} dead tuples after"
            )


if __name__ == "__main__":
    main()
