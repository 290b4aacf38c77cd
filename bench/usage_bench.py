#!/usr/bin/env python3
"""GET /usage at scale: its latency for 30 days at 1,000,000 LLM steps, and what the roll-up costs a step's save.

    .venv/bin/python -m bench.usage_bench [--steps 1000000] [--workflows 50] [--models 3] [--samples 200]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL), and
   works in a fresh database of that server, dropped at the end (bench/support.py's Database).
2. ``--steps`` LLM steps finished over the last 30 days, 4 per run (runs of a random one of ``--workflows``
   workflows, each step of a random one of ``--models`` models, priced), inserted in batches of 10,000 runs so
   the roll-up triggers of migration 0019 count them as they would saved steps (the time it took is printed);
   then VACUUM ANALYZE.
3. ``GET /usage`` for the last 30 days, ``group_by`` day, workflow and model: ``--samples`` requests each through
   the app (Flask's test client: the view, its query, the JSON), p50 and p99 in ms (target: under 50 ms at p50),
   with the EXPLAIN ANALYZE of each query (rows of the roll-up read).
4. ``GET /runs?limit=50`` (the run list, whose rows now sum their steps' usage) the same way.
5. What the triggers cost a save: ``--samples`` save_run_steps calls of a 3-step attempt (2 LLM steps, 1
   formatter) with the triggers, then as many with them disabled: p50 and p99 in ms.

It prints the machine and a table, and writes bench/results/usage-<timestamp>.json.
"""

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from bench import machine, support
from bench.support import Database, say
from flowline.data.sql import QUERIES

RUNS_PER_BATCH = 10_000
STEPS_PER_RUN = 4
GROUPS = ("day", "workflow", "model")


def fill(conn, steps, workflows, models):
    """Insert the workflows, models (priced), runs and their LLM steps; return (workflow ids, seconds inserting)."""
    workflow_ids = [
        row["id"]
        for row in conn.execute(
            "INSERT INTO workflows (name) SELECT 'usage bench ' || g FROM generate_series(1, %s) AS g RETURNING id",
            (workflows,),
        )
    ]
    for m in range(models):
        conn.execute(
            "INSERT INTO llm_models (model, usd_per_million_input_tokens, usd_per_million_output_tokens) "
            "VALUES (%s, %s, %s)",
            (f"bench-model-{m}", 0.15 * (m + 1), 0.6 * (m + 1)),
        )
    runs = steps // STEPS_PER_RUN
    started = time.perf_counter()
    for first in range(0, runs, RUNS_PER_BATCH):
        count = min(RUNS_PER_BATCH, runs - first)
        say(f"  runs {first:,}..{first + count:,} of {runs:,} ...")
        conn.execute(
            """WITH run AS (
                   INSERT INTO runs (workflow_id, mode, status, input, attempt, max_attempts, created_at,
                                     started_at, finished_at)
                   SELECT (%(workflows)s::uuid[])[1 + floor(random() * cardinality(%(workflows)s::uuid[]))::int],
                          'async', 'Succeeded', '{"input_text": "bench"}', 1, 3, at, at, at + interval '4 seconds'
                   FROM (SELECT now() - make_interval(secs => 30 * 86400.0 * (g + %(first)s) / %(runs)s) AS at
                         FROM generate_series(1, %(count)s) AS g) AS spread
                   RETURNING id, started_at
               )
               INSERT INTO run_steps (run_id, attempt, position, node_type, config_snapshot, status, started_at,
                                      finished_at, model, prompt_tokens, completion_tokens, cost_usd)
               SELECT step.run_id, 1, step.p, 'generative_ai', '{}', 'Succeeded', step.started_at,
                      step.started_at + interval '1 second', m.model, step.prompt, step.completion,
                      (step.prompt * m.usd_per_million_input_tokens
                       + step.completion * m.usd_per_million_output_tokens) / 1000000
               -- Each step's model and tokens follow from its run and position (a hash, not random(), which a
               -- join condition would evaluate once per pair).
               FROM (SELECT run.id AS run_id, p, run.started_at + make_interval(secs => p) AS started_at,
                            'bench-model-' || abs(hashtext(run.id::text || p)) %% %(models)s AS model,
                            200 + abs(hashtext(run.id::text || p || 'prompt')) %% 2000 AS prompt,
                            20 + abs(hashtext(run.id::text || p || 'completion')) %% 400 AS completion
                     FROM run
                     CROSS JOIN generate_series(0, %(per_run)s - 1) AS p) AS step
               JOIN llm_models AS m ON m.model = step.model""",
            {
                "workflows": workflow_ids,
                "first": first,
                "runs": runs,
                "count": count,
                "per_run": STEPS_PER_RUN,
                "models": models,
            },
        )
    seconds = time.perf_counter() - started
    conn.execute("VACUUM ANALYZE runs")
    conn.execute("VACUUM ANALYZE run_steps")
    conn.execute("VACUUM ANALYZE llm_usage_hourly")
    conn.execute("VACUUM ANALYZE llm_usage_daily")
    return workflow_ids, seconds


def percentiles(timings):
    timings = sorted(timings)
    return {
        "p50_ms": round(statistics.median(timings), 2),
        "p99_ms": round(timings[min(len(timings) - 1, int(len(timings) * 0.99))], 2),
    }


def time_requests(client, path, samples):
    """GET ``path`` ``samples`` times (after 5 unmeasured); return p50, p99 and the last answer's size."""
    for _ in range(5):
        assert client.get(path).status_code == 200
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        response = client.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.get_data(as_text=True)
    return {**percentiles(timings), "answer_bytes": len(response.get_data())}


def rows_read(plan):
    """Return the rows the plan's scans of the roll-ups read."""
    found, stack = [], [plan["Plan"]]
    while stack:
        node = stack.pop()
        if node.get("Relation Name") in ("llm_usage_hourly", "llm_usage_daily"):
            found.append(
                f"{node['Node Type']} {node.get('Index Name', node['Relation Name'])}: {node['Actual Rows']:,} rows"
            )
        stack.extend(node.get("Plans", []))
    return found


def time_saves(conn, workflow_id, samples):
    """Save ``samples`` 3-step attempts (2 LLM steps and a formatter) with save_run_steps; return p50 and p99."""
    timings = []
    for n in range(samples):
        run_id = conn.execute(
            "INSERT INTO runs (workflow_id, mode, status, attempt, lease_token, lease_expires_at) "
            "VALUES (%s, 'async', 'Running', 1, gen_random_uuid(), now() + interval '1 hour') RETURNING id",
            (workflow_id,),
        ).fetchone()["id"]
        now = datetime.now(UTC).isoformat()
        steps = [
            {
                "position": p,
                "node_type": "generative_ai" if p < 2 else "formatter",
                "config_snapshot": {},
                "status": "Succeeded",
                "started_at": now,
                "finished_at": now,
                "input_text": "bench input",
                "output_text": "bench output",
                "model": f"bench-model-{(n + p) % 2}" if p < 2 else None,
                "prompt_tokens": 900 if p < 2 else None,
                "completion_tokens": 120 if p < 2 else None,
            }
            for p in range(3)
        ]
        started = time.perf_counter()
        conn.execute("SELECT save_run_steps(%s, 1, %s)", (run_id, Jsonb(steps)))
        timings.append((time.perf_counter() - started) * 1000)
    return percentiles(timings)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--workflows", type=int, default=50)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    server_url = support.server_url()
    with psycopg.connect(server_url, autocommit=True) as conn:
        results = {
            "machine": machine.facts(conn),
            "steps": args.steps,
            "workflows": args.workflows,
            "models": args.models,
            "usage": [],
        }
    with Database(server_url) as database, database.connect() as conn:
        say(f"inserting {args.steps:,} LLM steps over 30 days in {args.workflows} workflows ...")
        workflow_ids, seconds = fill(conn, args.steps, args.workflows, args.models)
        results["insert_seconds"] = round(seconds, 1)
        results["roll_up_rows"] = conn.execute(
            "SELECT (SELECT count(*) FROM llm_usage_hourly) AS hourly, (SELECT count(*) FROM llm_usage_daily) AS daily"
        ).fetchone()
        from app import create_app

        app = create_app({"DATABASE_URL": database.url})
        client = app.test_client()
        until = datetime.now(UTC)
        since = until - timedelta(days=30)
        for group in GROUPS:
            say(f"  GET /usage?group_by={group} ...")
            name = f"sum_llm_usage_by_{group}"
            plan = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES[name].text, {"since": since, "until": until}
            ).fetchone()["QUERY PLAN"][0]
            results["usage"].append(
                {
                    "group_by": group,
                    "query": name,
                    "plan": rows_read(plan),
                    "explain_execution_ms": plan["Execution Time"],
                    **time_requests(client, f"/usage?group_by={group}", args.samples),
                }
            )
        say("  GET /runs?limit=50 ...")
        results["runs_page"] = time_requests(client, "/runs?limit=50", args.samples)
        say("  save_run_steps with the roll-up triggers, then without ...")
        results["save_with_triggers"] = time_saves(conn, workflow_ids[0], args.samples)
        conn.execute("ALTER TABLE run_steps DISABLE TRIGGER run_steps_roll_up_inserted")
        conn.execute("ALTER TABLE run_steps DISABLE TRIGGER run_steps_roll_up_updated")
        results["save_without_triggers"] = time_saves(conn, workflow_ids[0], args.samples)
        app.extensions["flowline.pool"].close()
    support.save_results("usage", results)
    report(results)


def report(results):
    f = results["machine"]
    print(
        f"machine     {f['hostname']}: {f['cpu_model']}, {f['cores']} cores, {f['ram_gib']} GiB, {f['os']}, "
        f"PostgreSQL {f['postgresql']}"
    )
    print(
        f"{results['steps']:,} LLM steps over 30 days in {results['workflows']} workflows, {results['models']} "
        f"models: inserted (and rolled up by the triggers) in {results['insert_seconds']} s; "
        f"{results['roll_up_rows']['hourly']:,} hourly and {results['roll_up_rows']['daily']:,} daily roll-up rows"
    )
    print()
    print(f"{'request':>32}  {'p50 ms':>8}  {'p99 ms':>8}  {'bytes':>7}  plan on the roll-ups (EXPLAIN ms)")
    for row in results["usage"]:
        print(
            f"{'GET /usage?group_by=' + row['group_by']:>32}  {row['p50_ms']:>8}  {row['p99_ms']:>8}  "
            f"{row['answer_bytes']:>7}  {'; '.join(row['plan'])} ({row['explain_execution_ms']:.1f})"
        )
    page = results["runs_page"]
    print(f"{'GET /runs?limit=50':>32}  {page['p50_ms']:>8}  {page['p99_ms']:>8}  {page['answer_bytes']:>7}")
    print()
    with_t, without_t = results["save_with_triggers"], results["save_without_triggers"]
    print(
        f"save_run_steps of 3 steps (2 LLM): p50 {with_t['p50_ms']} ms, p99 {with_t['p99_ms']} ms with the roll-up "
        f"triggers; p50 {without_t['p50_ms']} ms, p99 {without_t['p99_ms']} ms without"
    )


if __name__ == "__main__":
    main()
