#!/usr/bin/env python3
"""History partitioned by time: what migration 0022 costs per million rows, and prune-runs by partition drop
against the row-by-row delete.

    .venv/bin/python -m bench.partition_bench [--runs 200000] [--steps-per-run 5] [--events-per-run 3] [--days 180]
                                               [--prune-days 30]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL), and
   works in fresh databases of that server, dropped at the end (bench/support.py's Database).
2. A database migrated up to 0019 (plain run_steps and run_events) gets ``--runs`` finished runs spread over the
   last ``--days`` days, each with ``--steps-per-run`` steps (formatter steps, 200 characters of output) and
   ``--events-per-run`` events, in one INSERT … SELECT per 50,000 runs; then VACUUM ANALYZE.
3. Migration 0021, then 0022's statements one by one as yoyo runs them (autocommit), each timed: building the
   partitioned tables, the batched copy (the long part, done live), and the swap (the only exclusive locks).
   Printed: seconds per phase, and the copy's seconds per million rows (steps + events).
4. A run's reads after the move: for ``--samples`` random runs, EXPLAIN ANALYZE of get_run_json (GET /runs/{id}),
   list_run_events_json (its events) and get_run_cut_json (the console's run page): the most partitions of
   run_steps or run_events any of them read (1: pruned to the run's), and their execution p50 and p99 in ms.
5. prune-runs of the oldest ``--prune-days`` days, three times from the same data (copies of the database): by
   partition drop (flowline/tools/prune.py as the owner: detach CONCURRENTLY + drop, then the runs' rows); row by
   row on the partitioned tables (the same prune without the drop: prune-runs run as the app role); and row by row
   on the plain tables as before 0022 (a copy made before the move: batches of 1,000 runs deleted oldest first,
   steps and events by their foreign keys' cascade, as prune_runs_batch did). For each: seconds, the size of
   run_steps and run_events (tables, TOAST and indexes, every partition) and their dead tuples after.

It prints the machine and the figures, and writes bench/results/partition-<timestamp>.json.
"""

import argparse
import statistics
import time

import psycopg
from psycopg.rows import dict_row
from yoyo.migrations import read_sql_migration

from bench import machine, support
from bench.support import Database, say
from flowline.core.statuses import FINISHED_STATUSES
from flowline.data import migrations
from flowline.data.sql import QUERIES
from flowline.tools import prune
from tests.support.urls import url_for_database

RUNS_PER_BATCH = 50_000
UPKEEP = "0021.history-partition-upkeep"
MOVE = "0022.partition-run-history"


def fill(conn, runs, steps_per_run, events_per_run, days):
    """Insert a workflow and ``runs`` finished runs over ``days`` days with their steps and events; return seconds."""
    workflow_id = conn.execute("INSERT INTO workflows (name) VALUES ('partition bench') RETURNING id").fetchone()["id"]
    started = time.perf_counter()
    for first in range(0, runs, RUNS_PER_BATCH):
        count = min(RUNS_PER_BATCH, runs - first)
        say(f"  runs {first:,}..{first + count:,} of {runs:,} ...")
        conn.execute(
            """
            WITH run AS (
                INSERT INTO runs (workflow_id, mode, status, attempt, created_at, started_at, finished_at)
                SELECT %(w)s, 'async', 'Succeeded', 1, t, t, t + interval '2 seconds'
                FROM (SELECT now() - make_interval(secs => random() * %(days)s * 86400) AS t
                      FROM generate_series(1, %(count)s)) AS times
                RETURNING id, created_at
            ), steps AS (
                INSERT INTO run_steps (run_id, attempt, position, node_type, config_snapshot, status, started_at,
                                       finished_at, input_text, output_text)
                SELECT id, 1, p, 'formatter', '{"rules": ["uppercase"]}', 'Succeeded', created_at, created_at,
                       repeat('x', 200), repeat('X', 200)
                FROM run, generate_series(0, %(steps)s - 1) AS p
            )
            INSERT INTO run_events (run_id, attempt, status, at)
            SELECT id, 1, 'Running', created_at
            FROM run, generate_series(1, %(events)s)""",
            {"w": workflow_id, "days": days, "count": count, "steps": steps_per_run, "events": events_per_run},
        )
    seconds = time.perf_counter() - started
    conn.execute("VACUUM ANALYZE runs, run_steps, run_events")
    return seconds


def move(url):
    """Apply 0021, then 0022 statement by statement as yoyo does (autocommit); return the seconds of each phase."""
    started = time.perf_counter()
    migrations.apply_up_to(url, UPKEEP)
    phases = {"0021 upkeep functions": time.perf_counter() - started}
    _, _, statements = read_sql_migration(str(migrations.MIGRATIONS_DIR / f"{MOVE}.sql"))
    names = [
        "trigger function (steps)",
        "trigger function (events)",
        "copy procedure",
        "build",
        "copy",
        "swap",
        "truncate the plain tables",
        "drop the plain tables",
        "roll_up_llm_usage",
        "reserve_llm_call",
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        for name, statement in zip(names, statements, strict=True):
            say(f"  0022 {name} ...")
            started = time.perf_counter()
            conn.execute(statement)
            phases[f"0022 {name}"] = time.perf_counter() - started
    return {name: round(seconds, 2) for name, seconds in phases.items()}


def _partitions_read(node):
    """Return the run_steps and run_events partitions an EXPLAIN ANALYZE plan node (and its children) read."""
    found = set()
    if node.get("Relation Name", "").startswith(("run_steps_p", "run_events_p")) and node.get("Actual Loops", 0) > 0:
        found.add(node["Relation Name"])
    for child in node.get("Plans", []):
        found |= _partitions_read(child)
    return found


def run_reads(conn, samples):
    """EXPLAIN ANALYZE a run's reads for ``samples`` random runs; return per query the most partitions read and
    the execution p50 and p99 in ms."""
    run_ids = [row["id"] for row in conn.execute("SELECT id FROM runs ORDER BY random() LIMIT %s", (samples,))]
    results = {}
    for name, params in (("get_run_json", {}), ("list_run_events_json", {}), ("get_run_cut_json", {"text_cut": 200})):
        times, most = [], 0
        for run_id in run_ids:
            plan = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES[name].text, {"run_id": run_id, **params}
            ).fetchone()["QUERY PLAN"][0]
            times.append(plan["Execution Time"])
            most = max(most, len(_partitions_read(plan["Plan"])))
        times.sort()
        results[name] = {
            "most_partitions_read": most,
            "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(times[int(len(times) * 0.99) - 1], 2),
        }
    return results


def history_size(conn):
    """Return the bytes of run_steps and run_events (every partition's table, TOAST and indexes) and their dead
    tuples, as the statistics collector last counted them."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    return conn.execute(
        """SELECT sum(pg_total_relation_size(t.relid))::bigint AS bytes,
                  sum(coalesce(s.n_dead_tup, 0))::bigint AS dead_tuples
           FROM (SELECT relid FROM pg_partition_tree('run_steps') WHERE isleaf
                 UNION SELECT relid FROM pg_partition_tree('run_events') WHERE isleaf
                 -- the plain tables, before 0022
                 UNION SELECT oid FROM pg_class WHERE relname IN ('run_steps', 'run_events') AND relkind = 'r') AS t
           LEFT JOIN pg_stat_user_tables AS s ON s.relid = t.relid"""
    ).fetchone()


def delete_as_before(conn, cutoff):
    """Delete the finished runs that finished before ``cutoff`` as prune-runs did before 0022 (plain tables: the
    steps and events go by their foreign keys' cascade), 1,000 runs a batch; return how many."""
    deleted = 0
    while True:
        n = conn.execute(
            """DELETE FROM runs
               WHERE id IN (SELECT id FROM runs
                            WHERE status IN ('Succeeded', 'Failed', 'Cancelled') AND finished_at < %s
                            ORDER BY finished_at, id
                            LIMIT 1000
                            FOR UPDATE SKIP LOCKED)""",
            (cutoff,),
        ).rowcount
        if not n:
            return deleted
        deleted += n


def timed_prune(url, older_than_s, how):
    """Prune the finished runs older than ``older_than_s`` on ``url``: ``how`` is "drop" (prune-runs as the owner),
    "rows" (without the drop) or "before" (plain tables, delete_as_before); return its figures."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        before = history_size(conn)
        cutoff = conn.execute("SELECT now() - make_interval(secs => %s) AS c", (older_than_s,)).fetchone()["c"]
        started = time.perf_counter()
        dropped = []
        if how == "drop":
            _, totals, dropped = prune.prune(conn, older_than_s)
            runs = sum(t["runs"] for t in totals.values())
        elif how == "rows":
            totals = {
                s: prune._walk(conn, s, cutoff, prune.DEFAULT_BATCH_SIZE, dry_run=False) for s in FINISHED_STATUSES
            }
            runs = sum(t["runs"] for t in totals.values())
        else:
            runs = delete_as_before(conn, cutoff)
        seconds = time.perf_counter() - started
        time.sleep(1)  # the statistics of the last statements reach the collector
        after = history_size(conn)
    return {
        "seconds": round(seconds, 2),
        "runs_deleted": runs,
        "partitions_dropped": len(dropped or []),
        "bytes_before": before["bytes"],
        "bytes_after": after["bytes"],
        "dead_tuples_after": after["dead_tuples"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--steps-per-run", type=int, default=5)
    parser.add_argument("--events-per-run", type=int, default=3)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--prune-days", type=int, default=30)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    server_url = support.server_url()
    with psycopg.connect(server_url, autocommit=True) as conn:
        results = {"machine": machine.facts(conn), "args": vars(args)}
    copies = []
    with Database(server_url, migrate=False) as database:
        migrations.apply_up_to(database.url, "0019.roll-up-llm-usage")
        with database.connect() as conn:
            say(f"inserting {args.runs:,} runs over {args.days} days ...")
            results["fill_seconds"] = round(
                fill(conn, args.runs, args.steps_per_run, args.events_per_run, args.days), 1
            )
            rows = conn.execute(
                "SELECT (SELECT count(*) FROM run_steps) AS steps, (SELECT count(*) FROM run_events) AS events"
            ).fetchone()
            copies.append(f"{database.name}_plain")
            conn.execute(f'CREATE DATABASE "{copies[-1]}" TEMPLATE "{database.name}"')
        results["rows"] = rows
        say("migrating (0021, 0022) ...")
        results["move"] = move(database.url)
        copy_s = results["move"]["0022 copy"]
        results["copy_seconds_per_million_rows"] = round(copy_s / ((rows["steps"] + rows["events"]) / 1e6), 1)
        with database.connect() as conn:
            conn.execute("VACUUM ANALYZE runs, run_steps, run_events")
            say(f"a run's reads, {args.samples} random runs ...")
            results["run_reads"] = run_reads(conn, args.samples)
            copies.append(f"{database.name}_rows")
            conn.execute(f'CREATE DATABASE "{copies[-1]}" TEMPLATE "{database.name}"')
        older_than_s = (args.days - args.prune_days) * 86400
        try:
            say(f"prune of the oldest {args.prune_days} days by partition drop ...")
            results["prune_by_partition_drop"] = timed_prune(database.url, older_than_s, "drop")
            say("... row by row, partitioned ...")
            results["prune_row_by_row"] = timed_prune(url_for_database(server_url, copies[1]), older_than_s, "rows")
            say("... row by row, plain tables as before 0022 ...")
            results["prune_before"] = timed_prune(url_for_database(server_url, copies[0]), older_than_s, "before")
        finally:
            with psycopg.connect(server_url, autocommit=True) as conn:
                for name in copies:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    support.save_results("partition", results)
    report(results)


def report(results):
    print(machine.describe(results["machine"], "this script and the server"))
    a, rows = results["args"], results["rows"]
    print(
        f"{a['runs']:,} runs over {a['days']} days: {rows['steps']:,} steps and {rows['events']:,} events "
        f"(inserted in {results['fill_seconds']} s)"
    )
    print()
    print("migration 0021 + 0022, phase by phase (s):")
    for name, seconds in results["move"].items():
        print(f"  {name:<32} {seconds:>8}")
    print(f"  the copy: {results['copy_seconds_per_million_rows']} s per million rows (steps + events)")
    print()
    print(f"a run's reads ({a['samples']} random runs, EXPLAIN ANALYZE):")
    for name, r in results["run_reads"].items():
        print(
            f"  {name:<24} at most {r['most_partitions_read']} partition(s) read; execution p50 {r['p50_ms']} ms, "
            f"p99 {r['p99_ms']} ms"
        )
    print()
    print(f"prune-runs of the oldest {a['prune_days']} days:")
    print(f"  {'':<24} {'s':>8} {'runs':>9} {'partitions':>10} {'MB before':>10} {'MB after':>9} {'dead tuples':>12}")
    for key, label in (
        ("prune_by_partition_drop", "by partition drop"),
        ("prune_row_by_row", "row by row, partitioned"),
        ("prune_before", "row by row, before 0022"),
    ):
        r = results[key]
        print(
            f"  {label:<24} {r['seconds']:>8} {r['runs_deleted']:>9,} {r['partitions_dropped']:>10} "
            f"{r['bytes_before'] / 2**20:>10.0f} {r['bytes_after'] / 2**20:>9.0f} {r['dead_tuples_after']:>12,}"
        )


if __name__ == "__main__":
    main()
