#!/usr/bin/env python3
"""GET /runs at scale: the plan and latency of each query shape of the list of all runs with 1,000,000 runs.

    .venv/bin/python -m bench.runs_list_bench [--runs 1000000] [--workflows 200] [--samples 200] [--no-pages]

1. Without DATABASE_URL it re-executes itself under ``scripts/with_pg.sh`` (a private throwaway PostgreSQL), and
   works in a fresh database of that server, dropped at the end (bench/support.py's Database).
2. ``--runs`` runs over the last 90 days, each of a random one of ``--workflows`` workflows; statuses as a history has them:
   88 % Succeeded, 8 % Failed, 2 % Cancelled, 1 % Pending, 1 % Running. Then VACUUM ANALYZE.
3. For each shape (all; status=Failed; one workflow; that workflow and Failed), the query the API runs for it
   (flowline/api/runs.py ``list_all_runs``), a page of 50: EXPLAIN (ANALYZE, FORMAT JSON) of the first page and
   of a deep one (the cursor 80 % down the shape's rows), then ``--samples`` timed executions of each through
   ``db.many`` on one connection (prepared after psycopg's threshold, as in the app): p50 and p99 in ms.

4. The console's pages on the same runs, served by gunicorn as ``make run`` does (WEB_CONCURRENCY=2): the runs
   list (each filter shape, a deep page, with the last day's counts) and a run's page (a run of 5 steps, and one
   of 3 attempts x 5 steps whose texts are a million characters each, cut in SQL), and the queue page: ``--samples``
   GETs each, one after another on a keep-alive connection, p50 and p99 in ms (target: under 50 ms at p50); and
   the plan of the last day's counts (count_runs_by_status_since) on runs. ``--no-pages`` skips them.

It prints the machine and two tables, and writes bench/results/runs-list-<timestamp>.json.
"""

import argparse
import statistics
import time

import psycopg
from psycopg.types.json import Jsonb

from bench import machine, support
from bench.support import Database, say
from flowline.api.http import encode_cursor
from flowline.console import runs as console_runs
from flowline.data import db
from flowline.data.sql import QUERIES

PAGE = 50


def fill(conn, runs, workflows):
    workflow_ids = [
        row["id"]
        for row in conn.execute(
            "INSERT INTO workflows (name) SELECT 'runs list bench ' || g FROM generate_series(1, %s) AS g RETURNING id",
            (workflows,),
        )
    ]
    conn.execute(
        """INSERT INTO runs (workflow_id, mode, status, input, attempt, max_attempts, created_at,
                            finished_at, lease_token, lease_expires_at, final_output, error_message)
           SELECT workflow_id, 'async', status, '{"input_text": "bench"}', 1, 3, created_at,
                  CASE WHEN status IN ('Succeeded', 'Failed', 'Cancelled') THEN created_at END,
                  CASE WHEN status = 'Running' THEN gen_random_uuid() END,
                  CASE WHEN status = 'Running' THEN now() + interval '1 hour' END,
                  CASE WHEN status = 'Succeeded' THEN 'BENCH OUTPUT' END,
                  CASE WHEN status = 'Failed' THEN 'bench: the node failed' END
           FROM (SELECT (%(workflows)s::uuid[])[1 + floor(random() * cardinality(%(workflows)s::uuid[]))::int]
                            AS workflow_id,
                        CASE WHEN g %% 100 < 88 THEN 'Succeeded' WHEN g %% 100 < 96 THEN 'Failed'
                             WHEN g %% 100 < 98 THEN 'Cancelled' WHEN g %% 100 < 99 THEN 'Pending'
                             ELSE 'Running' END AS status,
                        now() - make_interval(secs => 90 * 86400.0 * g / %(runs)s) AS created_at
                 FROM generate_series(1, %(runs)s) AS g) AS spread""",
        {"workflows": workflow_ids, "runs": runs},
    )
    conn.execute("VACUUM ANALYZE runs")
    return workflow_ids


def shapes(workflow_id):
    """(label, query name, filter parameters, SQL condition selecting the same rows) per shape of GET /runs."""
    return [
        ("all", "list_runs_page", {}, "true"),
        ("status=Failed", "list_runs_by_status_page", {"status": "Failed"}, "status = 'Failed'"),
        (
            "workflow_id",
            "list_workflow_runs_page",
            {"workflow_id": workflow_id, "status": None},
            "workflow_id = %(wf)s",
        ),
        (
            "workflow_id+status=Failed",
            "list_workflow_runs_by_status_page",
            {"workflow_id": workflow_id, "status": "Failed"},
            "workflow_id = %(wf)s AND status = 'Failed'",
        ),
    ]


def runs_scans(plan):
    found = []

    def walk(node):
        if node.get("Relation Name") == "runs":
            found.append(
                {
                    "node": node["Node Type"],
                    "index": node.get("Index Name"),
                    "rows": node["Actual Rows"],
                    "removed_by_filter": node.get("Rows Removed by Filter", 0),
                }
            )
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return found


def measure(conn, name, params, samples):
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        rows = db.many(conn, name, **params)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    assert len(rows) == PAGE + 1, f"{name}: expected a full page, got {len(rows)} rows"
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
    }


def add_stepped_run(conn, workflow_id, attempts, text_chars):
    """Insert a Succeeded run of ``workflow_id`` created now, with ``attempts`` x 5 steps whose input and output
    are ``text_chars`` characters each; return its id."""
    text = "x" * text_chars
    run_id = conn.execute(
        """INSERT INTO runs (workflow_id, mode, status, input, attempt, max_attempts, started_at, finished_at,
                             final_output)
           VALUES (%s, 'async', 'Succeeded', %s, %s, 3, now(), now() + interval '1 second', %s) RETURNING id""",
        (workflow_id, Jsonb({"input_text": text, "file_id": None}), attempts, text),
    ).fetchone()["id"]
    conn.execute(
        """INSERT INTO run_steps (run_id, run_created_at, attempt, position, node_type, config_snapshot, status,
                                  started_at, finished_at, input_text, output_text)
           SELECT r.id, r.created_at, a, p, 'formatter', '{"rules": ["uppercase"]}', 'Succeeded',
                  now() + make_interval(secs => a + p * 0.1), now() + make_interval(secs => a + p * 0.1 + 0.05),
                  %(text)s, %(text)s
           FROM runs AS r, generate_series(1, %(attempts)s) AS a, generate_series(0, 4) AS p
           WHERE r.id = %(run)s""",
        {"run": run_id, "text": text, "attempts": attempts},
    )
    return run_id


def page_paths(conn, workflow_id):
    """(label, path) of the console pages measured."""
    total = conn.execute("SELECT count(*) AS n FROM runs").fetchone()["n"]
    deep = conn.execute(
        "SELECT created_at, id FROM runs ORDER BY created_at DESC, id OFFSET %s LIMIT 1", (total * 4 // 5,)
    ).fetchone()
    small = add_stepped_run(conn, workflow_id, 1, 100)
    large = add_stepped_run(conn, workflow_id, 3, 1_000_000)
    conn.execute("VACUUM ANALYZE run_steps")
    return [
        ("runs list, all", "/console/runs"),
        ("runs list, status=Failed", "/console/runs?status=Failed"),
        ("runs list, workflow_id", f"/console/runs?workflow_id={workflow_id}"),
        ("runs list, workflow_id+Failed", f"/console/runs?workflow_id={workflow_id}&status=Failed"),
        ("runs list, all, 80 % down", f"/console/runs?cursor={encode_cursor(deep)}"),
        ("run, 5 steps", f"/console/runs/{small}"),
        ("run, 15 steps of 1M chars", f"/console/runs/{large}"),
        ("queue and workers", "/console/queue"),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--no-pages", action="store_true", help="skip the console pages (item 4)")
    args = parser.parse_args()
    server_url = support.server_url()
    with psycopg.connect(server_url, autocommit=True) as conn:
        results = {"machine": machine.facts(conn), "runs": args.runs, "workflows": args.workflows, "shapes": []}
    with Database(server_url) as database, database.connect() as conn:
        say(f"inserting {args.runs:,} runs over 90 days in {args.workflows} workflows ...")
        workflow_ids = fill(conn, args.runs, args.workflows)
        for label, name, filters, where in shapes(workflow_ids[0]):
            matching = conn.execute(f"SELECT count(*) AS n FROM runs WHERE {where}", {"wf": workflow_ids[0]})
            matching = matching.fetchone()["n"]
            deep = conn.execute(
                f"SELECT created_at, id FROM runs WHERE {where} ORDER BY created_at DESC, id OFFSET %(skip)s LIMIT 1",
                {"wf": workflow_ids[0], "skip": matching * 4 // 5},
            ).fetchone()
            shape = {"shape": label, "query": name, "matching_rows": matching}
            for page, (after_created_at, after_id) in (
                ("first", (None, None)),
                ("deep", (deep["created_at"], deep["id"])),
            ):
                say(f"  {label}: {page} page ...")
                params = {**filters, "after_created_at": after_created_at, "after_id": after_id, "row_limit": PAGE + 1}
                plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES[name].text, params).fetchone()
                plan = plan["QUERY PLAN"][0]
                shape[page] = {
                    "runs_scans": runs_scans(plan),
                    "explain_execution_ms": plan["Execution Time"],
                    **measure(conn, name, params, args.samples),
                }
            results["shapes"].append(shape)
        if not args.no_pages:
            plan = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES["count_runs_by_status_since"].text,
                {"since_s": console_runs.COUNTS_SINCE_S},
            ).fetchone()["QUERY PLAN"][0]
            results["counts_plan"] = {"runs_scans": runs_scans(plan), "explain_execution_ms": plan["Execution Time"]}
            paths = page_paths(conn, workflow_ids[0])
            results["pages"] = support.time_gets(
                database.url, [(label, [path] * (args.samples + 10)) for label, path in paths]
            )
    support.save_results("runs-list", results)
    report(results)


def report(results):
    f = results["machine"]
    print(
        f"machine     {f['hostname']}: {f['cpu_model']}, {f['cores']} cores, {f['ram_gib']} GiB, {f['os']}, "
        f"PostgreSQL {f['postgresql']}"
    )
    print(f"{results['runs']:,} runs over 90 days in {results['workflows']} workflows; pages of {PAGE}")
    print()
    print(f"{'shape':>26}  {'page':>5}  {'p50 ms':>8}  {'p99 ms':>8}  plan on runs (rows read, removed by filter)")
    for shape in results["shapes"]:
        for page in ("first", "deep"):
            m = shape[page]
            scans = ", ".join(
                f"{s['node']}"
                + (f" using {s['index']}" if s["index"] else "")
                + f" ({s['rows']}, {s['removed_by_filter']})"
                for s in m["runs_scans"]
            )
            print(f"{shape['shape']:>26}  {page:>5}  {m['p50_ms']:>8.3f}  {m['p99_ms']:>8.3f}  {scans}")
    if "pages" in results:
        counts = results["counts_plan"]
        scans = ", ".join(
            f"{s['node']}" + (f" using {s['index']}" if s["index"] else "") + f" ({s['rows']} rows)"
            for s in counts["runs_scans"]
        )
        print()
        print(f"last 24 hours' counts: {scans}, {counts['explain_execution_ms']:.1f} ms in EXPLAIN ANALYZE")
        print("console pages through gunicorn (WEB_CONCURRENCY=2), one request at a time; target p50 < 50 ms")
        print(f"{'page':>30}  {'p50 ms':>8}  {'p99 ms':>8}  {'bytes':>9}")
        for page in results["pages"]:
            print(f"{page['route']:>30}  {page['p50_ms']:>8.2f}  {page['p99_ms']:>8.2f}  {page['bytes']:>9,}")


if __name__ == "__main__":
    main()
