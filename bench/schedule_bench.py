#!/usr/bin/env python3
"""Flowline's schedule benchmark: tick -> run Pending latency p50/p99 with one idle worker, and the cost of one
poll (the claim of due schedules) with 100,000 schedules.

    .venv/bin/python -m bench.schedule_bench [--ticks 200] [--schedules 100000] [--polls 200]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL).
2. Latency: one worker with the default SCHEDULE_POLL_INTERVAL_S (1 s); ``--ticks`` schedules (overlap queue) whose
   next tick is set, in one statement, to be due spread evenly over the next ``--ticks`` / 10 seconds. Latency =
   the run's created_at - its scheduled_for (both PostgreSQL's clock): the wait for the next poll (at most the
   poll interval), the claim, the insert.
3. Poll cost: ``--schedules`` enabled schedules of 1,000 workflows with next ticks spread over a day from an hour
   on, each with a finished latest run (VACUUM ANALYZE), then ``claim_due_schedules`` (batch 100) as a worker runs it: EXPLAIN (ANALYZE, BUFFERS) with
   nothing due (the usual poll) and with a full batch due (rolled back), and ``--polls`` timed executions of the
   usual poll on one connection: p50 and p99 in ms.

It prints the machine, the numbers and the plans, and writes bench/results/schedules-<timestamp>.json.
"""

import argparse
import json
import os
import statistics
import time
from datetime import UTC, datetime

import psycopg

from bench import machine, support
from bench.support import RESULTS, Database, running_workers, say
from flowline.data import db
from flowline.data.sql import QUERIES
from tests.support import wait_for

BATCH = 100


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def latency(server_url, ticks, log_dir):
    with Database(server_url) as database, database.connect() as conn:
        workflow_id = conn.execute("INSERT INTO workflows (name) VALUES ('schedule bench') RETURNING id").fetchone()[
            "id"
        ]
        conn.execute(
            "INSERT INTO schedules (workflow_id, cron, overlap, enabled, next_fire_at) "
            "SELECT %s, '0 0 1 1 *', 'queue', true, now() + interval '1 day' FROM generate_series(1, %s)",
            (workflow_id, ticks),
        )
        with running_workers(database.url, 1, log_dir / "latency"):
            conn.execute(
                "UPDATE schedules AS s SET next_fire_at = clock_timestamp() + interval '1 s' + n.i * interval '100 ms' "
                "FROM (SELECT id, row_number() OVER (ORDER BY id) AS i FROM schedules) AS n WHERE n.id = s.id"
            )
            wait_for(
                lambda: conn.execute("SELECT count(*) AS n FROM runs").fetchone()["n"] == ticks,
                ticks / 10 + 30,
                message="every tick's run",
            )
        lags = [
            row["lag"]
            for row in conn.execute(
                "SELECT extract(epoch FROM created_at - scheduled_for)::float8 * 1000 AS lag FROM runs"
            ).fetchall()
        ]
    return {
        "ticks": ticks,
        "p50_ms": round(statistics.median(lags), 1),
        "p99_ms": round(percentile(lags, 99), 1),
        "max_ms": round(max(lags), 1),
    }


def explain(conn):
    with conn.transaction(force_rollback=True):
        rows = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS) " + QUERIES["claim_due_schedules"].text, {"batch_size": BATCH}
        ).fetchall()
    return "\n".join(row["QUERY PLAN"] for row in rows)


def poll_cost(server_url, schedules, polls):
    with Database(server_url) as database, database.connect() as conn:
        conn.execute("INSERT INTO workflows (name) SELECT 'schedule bench ' || i FROM generate_series(1, 1000) AS i")
        conn.execute(
            "INSERT INTO schedules (workflow_id, cron, next_fire_at) "
            "SELECT w.id, '*/5 * * * *', now() + interval '1 hour' + random() * interval '1 day' "
            "FROM generate_series(1, %s) AS i "
            "JOIN (SELECT id, row_number() OVER () - 1 AS n FROM workflows) AS w ON w.n = i %% 1000",
            (schedules,),
        )
        # Each schedule's latest run, finished: what the claim joins to read its status.
        conn.execute(
            "WITH r AS (INSERT INTO runs (workflow_id, mode, status, input, attempt, max_attempts, started_at, "
            "finished_at, schedule_id, scheduled_for) "
            "SELECT workflow_id, 'async', 'Succeeded', '{}', 1, 1, now(), now(), id, now() - interval '5 minutes' "
            "FROM schedules RETURNING id, schedule_id) "
            "UPDATE schedules AS s SET last_run_id = r.id FROM r WHERE r.schedule_id = s.id"
        )
        conn.execute("VACUUM ANALYZE schedules")
        conn.execute("VACUUM ANALYZE runs")
        idle_plan = explain(conn)
        times = []
        for _ in range(polls):
            started = time.perf_counter()
            with conn.transaction():
                db.many(conn, "claim_due_schedules", batch_size=BATCH)
            times.append((time.perf_counter() - started) * 1000)
        # A full batch due (the first BATCH by next tick moved to the past), as after a short outage.
        with conn.transaction(force_rollback=True):
            conn.execute(
                "UPDATE schedules SET next_fire_at = now() - interval '1 minute' "
                "WHERE id IN (SELECT id FROM schedules ORDER BY next_fire_at LIMIT %s)",
                (BATCH * 2,),
            )
            due_plan = explain(conn)
    return {
        "schedules": schedules,
        "polls": polls,
        "idle_poll_p50_ms": round(statistics.median(times), 3),
        "idle_poll_p99_ms": round(percentile(times, 99), 3),
        "explain_nothing_due": idle_plan,
        "explain_full_batch_due": due_plan,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--polls", type=int, default=200)
    args = parser.parse_args()
    server_url = support.server_url()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = RESULTS / f"schedules-{stamp}-logs"
    with psycopg.connect(server_url, autocommit=True) as conn:
        facts = machine.facts(conn)
    results = {"machine": facts, "load_average_before": os.getloadavg()}
    say(f"latency: {args.ticks} ticks over {args.ticks / 10:g} s, one idle worker ...")
    results["latency"] = latency(server_url, args.ticks, log_dir)
    say(f"poll cost: {args.schedules} schedules ...")
    results["poll"] = poll_cost(server_url, args.schedules, args.polls)
    results["load_average_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"schedules-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    report(results)


def report(results):
    print(machine.describe(results["machine"], "worker and this script"))
    before, after = results["load_average_before"], results["load_average_after"]
    print(f"load avg    {before[0]:.2f} before, {after[0]:.2f} after (1 min; other work on the machine shows here)")
    lat, poll = results["latency"], results["poll"]
    print()
    print(
        f"tick -> run Pending ({lat['ticks']} ticks, SCHEDULE_POLL_INTERVAL_S=1): p50 {lat['p50_ms']} ms, "
        f"p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms"
    )
    print(
        f"one poll, {poll['schedules']} schedules, nothing due ({poll['polls']} polls): p50 "
        f"{poll['idle_poll_p50_ms']} ms, p99 {poll['idle_poll_p99_ms']} ms"
    )
    print("\nEXPLAIN (ANALYZE, BUFFERS) claim_due_schedules, nothing due:")
    print(poll["explain_nothing_due"])
    print(f"\nEXPLAIN (ANALYZE, BUFFERS) claim_due_schedules, {BATCH * 2} due (a batch of {BATCH} claimed):")
    print(poll["explain_full_batch_due"])


if __name__ == "__main__":
    main()
