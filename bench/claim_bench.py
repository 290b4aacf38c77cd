#!/usr/bin/env python3
"""The claim's throughput with 1,000 concurrency keys at their limit vs none (issue #20), before (a git ref's
claim_run on that ref's migrations, default main) and after (this tree's).

    .venv/bin/python -m bench.claim_bench [--runs 4000] [--connections 4] [--keys 1000] [--behind 20] [--before main]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL).
2. Each case is a fresh database with ``--runs`` available Pending runs of a workflow without limits, ANALYZEd;
   ``--connections`` threads, each its own connection, call ``claim_run`` (the worker's statement, autocommit)
   until none is left. Claims/s = runs / wall time of that loop. Every run must end Running once.
   * before, none: the ``--before`` ref's migrations and claim_run.
   * after, none: this tree's.
   * after, 1,000 limited keys: as "none", plus a workflow with ``max_concurrent_runs_per_key = 1`` whose
     ``--keys`` keys each have one run Running (at their limit) and ``--behind`` runs queued behind it.
   * after, 100k waiting: as "none", plus 100,000 Pending runs of priority 10 whose available_at is an hour away
     (runs waiting for an LLM budget).
3. The issue's target: "1,000 limited keys" claims at least 90 % of "none"'s rate (same tree, same run).

It prints the machine and a table, and writes bench/results/claim-<timestamp>.json.
"""

import argparse
import json
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import psycopg
from yoyo import get_backend, read_migrations

from bench import machine, support
from bench.support import RESULTS, ROOT, Database, say
from flowline.data import sql as named_sql
from flowline.data.sql import QUERIES

TARGET_RATIO = 0.9


def tree_of(ref):
    """Return ``ref``'s claim_run text and a folder holding its migrations (kept until the process exits)."""
    runs_sql = subprocess.run(
        ["git", "show", f"{ref}:sql/runs.sql"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    claim = {q.name: q for q in named_sql.parse(runs_sql, f"{ref}:sql/runs.sql")}["claim_run"].text
    archive = subprocess.run(["git", "archive", ref, "migrations"], cwd=ROOT, capture_output=True, check=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="claim-bench-"))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return claim, folder / "migrations"


def migrate(url, folder):
    backend = get_backend(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with backend.lock():
        backend.apply_migrations(backend.to_apply(read_migrations(str(folder))))


def seed(conn, runs, keys=0, behind=0, waiting=0):
    """Queue ``runs`` available runs of a workflow without limits; with ``keys``, a second workflow limited to one
    run per key whose ``keys`` keys each have one run Running and ``behind`` Pending; with ``waiting``, that many
    priority-10 runs available only in an hour."""
    free = conn.execute("INSERT INTO workflows (name) VALUES ('free') RETURNING id").fetchone()["id"]
    conn.execute(
        "INSERT INTO runs (workflow_id, mode, input, available_at) "
        "SELECT %s, 'async', '{}', now() - make_interval(secs => g) FROM generate_series(1, %s) AS g",
        (free, runs),
    )
    if keys:
        limited = conn.execute(
            "INSERT INTO workflows (name, max_concurrent_runs_per_key) VALUES ('limited', 1) RETURNING id"
        ).fetchone()["id"]
        # Through the triggers, as the API queues them: the first of each key is released, the rest held.
        conn.execute(
            "INSERT INTO runs (workflow_id, mode, input, concurrency_key) "
            "SELECT %s, 'async', '{}', 'key-' || k FROM generate_series(1, %s) AS k, generate_series(0, %s) AS n",
            (limited, keys, behind),
        )
        # Each key's released run starts (as a claim would): every key is now at its limit.
        conn.execute(
            "UPDATE runs SET status = 'Running', attempt = 1, lease_token = gen_random_uuid(), "
            "lease_expires_at = now() + interval '1 hour', started_at = now() "
            "WHERE workflow_id = %s AND status = 'Pending' AND held_by IS NULL",
            (limited,),
        )
    if waiting:
        conn.execute(
            "INSERT INTO runs (workflow_id, mode, input, priority, available_at) "
            "SELECT %s, 'async', '{}', 10, now() + make_interval(hours => 1, secs => g) "
            "FROM generate_series(1, %s) AS g",
            (free, waiting),
        )
    conn.execute("VACUUM ANALYZE runs")
    return free


def claim_rate(url, claim_text, free, runs, connections):
    claimed = [0] * connections
    errors = []
    start = threading.Barrier(connections + 1)

    def claim_loop(index):
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                start.wait()
                params = {"lease_seconds": 300, "worker_id": f"bench:{index}"}
                while conn.execute(claim_text, {**params, "lease_token": uuid.uuid4()}).fetchone() is not None:
                    claimed[index] += 1
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim_loop, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"claims failed: {errors[:3]}")
    with psycopg.connect(url, autocommit=True) as conn:
        running = conn.execute(
            "SELECT count(*) FROM runs WHERE workflow_id = %s AND status = 'Running' AND attempt = 1", (free,)
        ).fetchone()[0]
    if running != runs or sum(claimed) != runs:
        raise RuntimeError(f"{sum(claimed)} claims, {running} of {runs} runs Running")
    return {"runs": runs, "seconds": round(seconds, 3), "claims_per_s": round(runs / seconds, 1)}


def case(server_url, name, claim_text, folder, args, **shape):
    say(f"{name} ...")
    with Database(server_url, migrate=folder is None) as database:
        if folder is not None:
            migrate(database.url, folder)
        with database.connect() as conn:
            free = seed(conn, args.runs, **shape)
        return {"case": name, **claim_rate(database.url, claim_text, free, args.runs, args.connections)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--behind", type=int, default=20)
    parser.add_argument("--before", default="main", help="the git ref measured as 'before'")
    parser.add_argument("--rounds", type=int, default=3, help="each case this many times, interleaved; best kept")
    args = parser.parse_args()
    server_url = support.server_url()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    before_claim, before_folder = tree_of(args.before)
    after_claim = QUERIES["claim_run"].text
    with psycopg.connect(server_url, autocommit=True) as conn:
        facts = machine.facts(conn)
    cases = [
        (f"before ({args.before}), none", before_claim, before_folder, {}),
        ("after, none", after_claim, None, {}),
        (f"after, {args.keys:,} limited keys", after_claim, None, {"keys": args.keys, "behind": args.behind}),
        ("after, 100k waiting", after_claim, None, {"waiting": 100_000}),
    ]
    rounds = {name: [] for name, *_ in cases}
    for _ in range(args.rounds):
        for name, claim_text, folder, shape in cases:
            rounds[name].append(case(server_url, name, claim_text, folder, args, **shape))
    best = {name: max(results, key=lambda r: r["claims_per_s"]) for name, results in rounds.items()}
    none, limited = best["after, none"], best[f"after, {args.keys:,} limited keys"]
    ratio = limited["claims_per_s"] / none["claims_per_s"]
    results = {
        "machine": facts,
        "connections": args.connections,
        "keys": args.keys,
        "behind": args.behind,
        "rounds": rounds,
        "best": best,
        "limited_vs_none": round(ratio, 3),
        "target": TARGET_RATIO,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"claim-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    print(machine.describe(facts, "this script's claim threads"))
    print(f"{args.runs} claims by {args.connections} connections; best of {args.rounds} interleaved rounds")
    print(f"{'case':40} {'claims/s':>10}   all rounds")
    for name, result in best.items():
        everything = ", ".join(str(r["claims_per_s"]) for r in rounds[name])
        print(f"{name:40} {result['claims_per_s']:>10}   {everything}")
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"limited keys vs none: {ratio:.0%} ({verdict} the target of {TARGET_RATIO:.0%})")


if __name__ == "__main__":
    main()
