#!/usr/bin/env python3
"""Flowline's LLM budget benchmark: does a model's requests-per-minute budget hold across worker processes, and how
much of it do runs get, with twice the budget's load?

    .venv/bin/python -m bench.budget_bench [--duration 300] [--rpm 60] [--workers 2] [--threads 4]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL).
2. A local OpenAI-compatible server (tests/support/fake_llm.py) that enforces its own ``--rpm`` with 429 and
   Retry-After and records when each request arrived; the model gets the same budget in ``llm_models``.
3. For ``--duration`` seconds, runs of a one-node generative_ai workflow are queued at twice the budget's rate
   (``2 * rpm`` a minute, evenly), worked by ``--workers`` worker processes of ``--threads`` threads (default
   settings). Then queueing stops; a minute later (the provider's window past the load) the runs are counted.
4. Reported: the most requests the provider saw in any 60-second window against the limit, the 429s it answered,
   the throughput achieved while the load lasted against the budget's (rpm per minute), and how the runs ended
   (none may fail, none may spend a second attempt).

It prints the machine, the numbers, and writes bench/results/budget-<timestamp>.json.
"""

import argparse
import json
import os
import threading
import time
from datetime import UTC, datetime

import psycopg
from psycopg.types.json import Jsonb

from bench import machine, support
from bench.queue_bench import enqueue
from bench.support import RESULTS, Database, running_workers, say
from tests.support.fake_llm import FakeLLM

MODEL = "bench-model"


def feed(url, workflow_id, rate_per_s, duration, stop):
    """Queue runs at ``rate_per_s`` for ``duration`` seconds (until ``stop``); return how many were queued."""
    queued = 0
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate_per_s) + 1
            if time.monotonic() - started >= duration:
                return queued
            while queued < due:
                enqueue(conn, workflow_id, f"run {queued}")
                queued += 1
            stop.wait(min(0.2, 1 / rate_per_s))
    return queued


def run(server_url, duration, rpm, workers, threads, log_dir):
    with Database(server_url) as database, database.connect() as conn, FakeLLM(rpm=rpm) as fake:
        conn.execute("INSERT INTO llm_models (model, requests_per_minute) VALUES (%s, %s)", (MODEL, rpm))
        workflow_id = conn.execute("INSERT INTO workflows (name) VALUES ('budget bench') RETURNING id").fetchone()["id"]
        conn.execute(
            "INSERT INTO nodes (workflow_id, position, node_type, config) VALUES (%s, 0, 'generative_ai', %s)",
            (workflow_id, Jsonb({"prompt": "{text}", "model": MODEL, "max_tokens": 16})),
        )
        env = {"LLM_API_KEY": "sk-bench", "LLM_BASE_URL": fake.url, "LOG_LEVEL": "WARNING"}
        stop = threading.Event()
        with running_workers(database.url, workers, log_dir, threads=threads, env=env):
            started = fake.now()
            queued = feed(database.url, workflow_id, 2 * rpm / 60, duration, stop)
            during = [r.at for r in fake.requests if r.at - started <= duration]
            say(f"queued {queued} runs in {duration} s; {len(during)} requests in that time; letting it settle ...")
            # The provider's window after the load: what it saw in the minute after the feed stopped counts too.
            time.sleep(min(65, duration))
            rows = conn.execute(
                "SELECT status, attempt, count(*) AS n FROM runs GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
        accepted = len(fake.accepted)
        return {
            "duration_s": duration,
            "rpm": rpm,
            "workers": workers,
            "threads": threads,
            "queued": queued,
            "requests": len(fake.requests),
            "answered_429": len(fake.requests) - accepted,
            "max_requests_in_any_60s": fake.max_in_window(60),
            "requests_during_load": len(during),
            "achieved_per_minute": round(len(during) / (duration / 60), 2),
            "achieved_vs_budget": round(len(during) / (duration / 60) / rpm, 3),
            "runs_by_status_and_attempt": [dict(r) for r in rows],
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=300, help="seconds of load (the issue asks for 300)")
    parser.add_argument("--rpm", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    server_url = support.server_url()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = RESULTS / f"budget-{stamp}-logs"
    with psycopg.connect(server_url, autocommit=True) as conn:
        facts = machine.facts(conn)
    results = {"machine": facts, "load_average_before": os.getloadavg()}
    say(f"budget: {args.rpm} requests a minute, {2 * args.rpm} runs a minute queued for {args.duration} s ...")
    results["budget"] = run(server_url, args.duration, args.rpm, args.workers, args.threads, log_dir)
    results["load_average_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"budget-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    report(results)


def report(results):
    print(machine.describe(results["machine"], "the workers, the fake provider and this script"))
    before, after = results["load_average_before"], results["load_average_after"]
    print(f"load avg    {before[0]:.2f} before, {after[0]:.2f} after (1 min; other work on the machine shows here)")
    b = results["budget"]
    print()
    print(
        f"budget {b['rpm']} requests/minute, load {2 * b['rpm']} runs/minute for {b['duration_s']} s, "
        f"{b['workers']} workers x {b['threads']} threads"
    )
    print(
        f"max requests in any 60 s window: {b['max_requests_in_any_60s']} (limit {b['rpm']}); 429s: {b['answered_429']}"
    )
    print(
        f"throughput during the load: {b['achieved_per_minute']} requests/minute = "
        f"{b['achieved_vs_budget']:.1%} of the budget"
    )
    print(
        "runs (status, attempt, count): "
        + ", ".join(f"{r['status']} {r['attempt']} {r['n']}" for r in b["runs_by_status_and_attempt"])
    )


if __name__ == "__main__":
    main()
