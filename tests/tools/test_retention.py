"""Retention (issue #5): `flask --app app prune-runs` deletes old finished runs in small batches and nothing else;
migration 0005 tunes autovacuum on the high-churn tables and gives the prune its index."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from flowline.core.statuses import FINISHED_STATUSES
from flowline.data import migrations
from flowline.data import sql as sql_files
from flowline.tools import prune as retention
from tests.support.history import make_partitions_back
from tests.support.sessions import terminate_midway

ROOT = Path(__file__).resolve().parents[2]
FLASK = str(Path(sys.executable).with_name("flask"))
MIGRATION = "0005.tune-run-tables-and-index-finished-runs"


def prune_runs(url, *args):
    """Run `flask --app app prune-runs ARGS` as an operator does; return the CompletedProcess (text)."""
    return subprocess.run(
        [FLASK, "--app", "app", "prune-runs", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DATABASE_URL": url},
    )


def add_run(sql, workflow_id, status, age_hours):
    """Insert a run in ``status`` created (and, when finished, finished) ``age_hours`` ago, with one step and two
    events; return its id."""
    finished = status in FINISHED_STATUSES
    run_id = sql.execute(
        """
        INSERT INTO runs (workflow_id, mode, status, attempt, lease_token, lease_expires_at, created_at, started_at,
                          finished_at)
        VALUES (%(workflow_id)s, 'async', %(status)s, 1,
                CASE WHEN %(status)s = 'Running' THEN gen_random_uuid() END,
                CASE WHEN %(status)s = 'Running' THEN now() + interval '1 minute' END,
                now() - make_interval(hours => %(age)s + 1), now() - make_interval(hours => %(age)s + 1),
                CASE WHEN %(finished)s THEN now() - make_interval(hours => %(age)s) END)
        RETURNING id""",
        {"workflow_id": workflow_id, "status": status, "age": age_hours, "finished": finished},
    ).fetchone()["id"]
    sql.execute(
        """INSERT INTO run_steps (run_id, run_created_at, attempt, position, node_type, config_snapshot, status)
                   SELECT id, created_at, 1, 0, 'formatter', '{}', %s FROM runs WHERE id = %s""",
        (status, run_id),
    )
    sql.execute(
        """INSERT INTO run_events (run_id, run_created_at, attempt, status, note)
                   SELECT id, created_at, a, s, n
                   FROM runs, (VALUES (0, 'Pending', 'queued'), (1, %(status)s, 'then')) AS e (a, s, n)
                   WHERE id = %(id)s""",
        {"id": run_id, "status": status},
    )
    return run_id


@pytest.fixture
def history(sql):
    """Runs of every status, old (40 days) and recent (1 day); Pending and Running ones created 100 days ago."""
    make_partitions_back(sql, 101)
    workflow_id = sql.execute("INSERT INTO workflows (name) VALUES ('w') RETURNING id").fetchone()["id"]
    runs = {
        "old Succeeded": [add_run(sql, workflow_id, "Succeeded", 40 * 24) for _ in range(5)],
        "new Succeeded": [add_run(sql, workflow_id, "Succeeded", 24)],
        "old Failed": [add_run(sql, workflow_id, "Failed", 40 * 24) for _ in range(2)],
        "new Failed": [add_run(sql, workflow_id, "Failed", 24)],
        "old Cancelled": [add_run(sql, workflow_id, "Cancelled", 40 * 24)],
        "Pending": [add_run(sql, workflow_id, "Pending", 100 * 24)],
        "Running": [add_run(sql, workflow_id, "Running", 100 * 24)],
    }
    return runs


def remaining(sql, history):
    """Return the groups of ``history`` still present, with how many of their runs, steps and events remain."""
    left = {}
    for group, ids in history.items():
        row = sql.execute(
            """
            SELECT (SELECT count(*) FROM runs WHERE id = ANY (%(ids)s)) AS runs,
                   (SELECT count(*) FROM run_steps WHERE run_id = ANY (%(ids)s)) AS steps,
                   (SELECT count(*) FROM run_events WHERE run_id = ANY (%(ids)s)) AS events""",
            {"ids": ids},
        ).fetchone()
        if row["runs"] or row["steps"] or row["events"]:
            left[group] = (row["runs"], row["steps"], row["events"])
    return left


ALL = {
    "old Succeeded": (5, 5, 10),
    "new Succeeded": (1, 1, 2),
    "old Failed": (2, 2, 4),
    "new Failed": (1, 1, 2),
    "old Cancelled": (1, 1, 2),
    "Pending": (1, 1, 2),
    "Running": (1, 1, 2),
}


def test_prune_deletes_only_old_runs_of_the_status_in_batches(database_url, sql, history):
    result = prune_runs(database_url, "--older-than", "30d", "--status", "Succeeded", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "Succeeded: deleted 5 runs, 5 steps, 10 events in 3 batches" in result.stdout
    assert "total: deleted 5 runs, 5 steps, 10 events in 3 batches" in result.stdout
    assert "Failed" not in result.stdout and "cutoff: runs that finished before " in result.stdout
    assert remaining(sql, history) == {k: v for k, v in ALL.items() if k != "old Succeeded"}


def test_prune_by_default_takes_every_finished_status_and_never_the_queue(database_url, sql, history):
    result = prune_runs(database_url, "--older-than", "2w")
    assert result.returncode == 0, result.stderr
    # The old runs share their week's partitions with nothing to keep: those are dropped whole (their steps and
    # events with them, before the runs are deleted).
    for line in (
        "partitions: dropped",
        "run_steps_p",
        "Succeeded: deleted 5 runs, 0 steps, 0 events in 1 batch",
        "Failed: deleted 2 runs",
        "Cancelled: deleted 1 run, 0 steps, 0 events",
        "total: deleted 8 runs, 0 steps, 0 events",
    ):
        assert line in result.stdout
    assert remaining(sql, history) == {k: ALL[k] for k in ("new Succeeded", "new Failed", "Pending", "Running")}

    # Even with a cutoff after everything: Pending and Running runs are the queue.
    assert prune_runs(database_url, "--older-than", "1h").returncode == 0
    assert remaining(sql, history) == {k: ALL[k] for k in ("Pending", "Running")}


def test_a_dry_run_counts_the_same_runs_and_deletes_nothing(database_url, sql, history):
    dry = prune_runs(
        database_url,
        "--older-than",
        "30d",
        "--status",
        "Failed",
        "--status",
        "Cancelled",
        "--dry-run",
        "--batch-size",
        "1",
    )
    assert dry.returncode == 0, dry.stderr
    assert "Failed: would delete 2 runs, 2 steps, 4 events in 2 batches" in dry.stdout
    assert "Cancelled: would delete 1 run, 1 step, 2 events in 1 batch" in dry.stdout
    assert "dry run: nothing was deleted" in dry.stdout
    assert remaining(sql, history) == ALL
    real = prune_runs(database_url, "--older-than", "30d", "--status", "Failed", "--status", "Cancelled")
    assert "total: deleted 3 runs, 3 steps, 6 events" in real.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--older-than", "30"], "'30' is not a duration: use a whole number of hours, days or weeks, such as 12h"),
        (["--older-than", "3m"], "'3m' is not a duration"),
        (["--older-than", "0d"], "'0d' is not a duration"),
        (["--older-than", "30d", "--status", "Pending"], "'Pending' is not one of 'Succeeded', 'Failed', 'Cancelled'"),
        (["--older-than", "30d", "--status", "Running"], "'Running' is not one of"),
        (["--status", "Failed"], "Missing option '--older-than'"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_deleted(database_url, sql, history, args, message):
    result = prune_runs(database_url, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert remaining(sql, history) == ALL


@pytest.mark.parametrize("text, seconds", [("12h", 43200), ("30d", 2592000), ("2w", 1209600), (" 1d ", 86400)])
def test_durations(text, seconds):
    assert retention.parse_duration(text) == seconds


def test_a_detach_killed_half_way_is_finished_by_the_next_prune(database_url, sql, history):
    """A prune's DETACH … CONCURRENTLY whose session dies while it waits for readers of run_steps leaves the
    partition "detach pending"; the next prune finishes it (FINALIZE), drops it and deletes the runs as usual."""
    partition = sql.execute(
        "SELECT tableoid::regclass::text AS p FROM run_steps WHERE run_id = %s", (history["old Succeeded"][0],)
    ).fetchone()["p"]
    with psycopg.connect(database_url) as reader:  # a transaction reading run_steps stays open until the block ends
        reader.execute("SELECT count(*) FROM run_steps")
        # Its first transaction marks the partition; its second waits for the reader, and is killed there.
        terminate_midway(
            database_url,
            f"ALTER TABLE run_steps DETACH PARTITION {partition} CONCURRENTLY",
            sql,
            lambda pid: sql.execute(
                "SELECT wait_event_type = 'Lock' AS waiting FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()["waiting"],
            "the detach waiting for the reader",
        )
    pending = sql.execute(
        "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = %s::regclass", (partition,)
    ).fetchone()
    assert pending["inhdetachpending"], "left half-detached"

    result = prune_runs(database_url, "--older-than", "2w")
    assert result.returncode == 0, result.stderr
    assert partition in result.stdout
    assert sql.execute("SELECT to_regclass(%s) AS t", (partition,)).fetchone()["t"] is None
    assert remaining(sql, history) == {k: ALL[k] for k in ("new Succeeded", "new Failed", "Pending", "Running")}


def test_runs_locked_by_another_transaction_are_skipped_not_waited_for(database_url, sql, history):
    locked = history["old Succeeded"][0]
    with psycopg.connect(database_url) as other:  # a transaction stays open until the block ends
        other.execute("SELECT id FROM runs WHERE id = %s FOR UPDATE", (locked,))
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
            _, results, _ = retention.prune(conn, 30 * 86400, ("Succeeded",), batch_size=2)
        assert results["Succeeded"]["runs"] == 4
        assert remaining(sql, history)["old Succeeded"] == (1, 1, 2)
    # The next prune takes it.
    assert prune_runs(database_url, "--older-than", "30d").returncode == 0
    assert "old Succeeded" not in remaining(sql, history)


def test_only_finished_statuses_can_be_pruned_from_python_too(database_url):
    with (
        psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn,
        pytest.raises(ValueError, match="only finished runs can be pruned, not Running"),
    ):
        retention.prune(conn, 3600, ("Succeeded", "Running"))


def _params(status="Succeeded"):
    return {"status": status, "cutoff": None, "after_finished_at": None, "after_id": None, "batch_size": 1000}


def _scans(sql, query, params):
    """Return (node type, relation, index) for every scan in the plan of the named query."""
    plan = sql.execute("EXPLAIN (FORMAT JSON) " + sql_files.QUERIES[query].text, params).fetchone()["QUERY PLAN"]
    scans, todo = [], [plan[0]["Plan"]]
    while todo:
        node = todo.pop()
        if ("Scan" in node["Node Type"] and "Relation Name" in node) or "Index Name" in node:
            scans.append((node["Node Type"], node.get("Relation Name"), node.get("Index Name")))
        todo += node.get("Plans", [])
    return scans


def test_the_batch_select_reads_the_index_not_the_table(sql):
    """With 30,000 recent finished runs and a few old ones, a batch finds its runs through runs_finished_idx."""
    workflow_id = sql.execute("INSERT INTO workflows (name) VALUES ('w') RETURNING id").fetchone()["id"]
    sql.execute(
        """
        INSERT INTO runs (workflow_id, mode, status, attempt, created_at, started_at, finished_at)
        SELECT %(w)s, 'async', (ARRAY['Succeeded', 'Failed', 'Cancelled'])[1 + i %% 3], 1,
               now() - make_interval(hours => CASE WHEN i <= 30 THEN 2000 ELSE 1 END),
               now() - make_interval(hours => CASE WHEN i <= 30 THEN 2000 ELSE 1 END),
               now() - make_interval(hours => CASE WHEN i <= 30 THEN 2000 ELSE 1 END)
        FROM generate_series(1, 30000) AS i""",
        {"w": workflow_id},
    )
    sql.execute("ANALYZE runs")
    cutoff = sql.execute("SELECT now() - interval '30 days' AS c").fetchone()["c"]
    for query in ("prune_runs_batch", "count_prunable_runs_batch"):
        scans = _scans(sql, query, {**_params(), "cutoff": cutoff})
        assert any(index == "runs_finished_idx" for _, _, index in scans), f"{query}: {scans}"
        assert ("Seq Scan", "runs", None) not in scans, f"{query}: {scans}"


def _reloptions(url):
    """Return the storage settings of runs, run_steps and run_events (since migration 0022, those of each of their
    partitions: a partitioned table holds none), and runs_finished_idx's definition."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        rows = conn.execute("""SELECT coalesce(parent.relname, c.relname) AS relname, c.reloptions
                               FROM pg_class AS c
                               LEFT JOIN pg_inherits AS i ON i.inhrelid = c.oid
                               LEFT JOIN pg_class AS parent ON parent.oid = i.inhparent
                               WHERE c.relnamespace = 'public'::regnamespace AND c.reloptions IS NOT NULL
                                 AND c.relkind = 'r'
                                 AND coalesce(parent.relname, c.relname) IN ('runs', 'run_steps', 'run_events')
                               """).fetchall()
        index = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'runs_finished_idx'").fetchone()
    return {row["relname"]: sorted(row["reloptions"]) for row in rows}, index and index["indexdef"]


def test_migration_0005_tunes_the_churn_tables_and_its_rollback_resets_them(make_database):
    url = make_database()
    migrations.apply(url)
    options, index = _reloptions(url)
    assert options == {
        "runs": [
            "autovacuum_analyze_scale_factor=0.02",
            "autovacuum_vacuum_cost_delay=1",
            "autovacuum_vacuum_scale_factor=0.01",
            "fillfactor=85",
        ],
        "run_steps": [
            "autovacuum_analyze_scale_factor=0.02",
            "autovacuum_vacuum_insert_scale_factor=0.05",
            "autovacuum_vacuum_scale_factor=0.05",
            "fillfactor=90",
        ],
        "run_events": [
            "autovacuum_analyze_scale_factor=0.02",
            "autovacuum_vacuum_insert_scale_factor=0.05",
            "autovacuum_vacuum_scale_factor=0.05",
        ],
    }
    assert index == (
        "CREATE INDEX runs_finished_idx ON public.runs USING btree (status, finished_at, id) "
        "WHERE (finished_at IS NOT NULL)"
    )

    migrations.rollback(url, migration_id=MIGRATION)
    assert _reloptions(url) == ({}, None)
    migrations.apply(url)
    assert _reloptions(url) == (options, index)


def test_pruning_history_keeps_the_workflow(database_url, sql, history):
    assert prune_runs(database_url, "--older-than", "1h").returncode == 0
    assert sql.execute("SELECT count(*) AS n FROM workflows").fetchone()["n"] == 1


def test_prune_deletes_old_delivered_and_dead_webhook_deliveries_never_the_outbox(database_url, sql, history):
    run_id = history["new Succeeded"][0]
    webhook_id = sql.execute(
        """INSERT INTO webhooks (workflow_id, url, events, secret)
           SELECT workflow_id, 'https://h.example/', ARRAY['run.succeeded'], 'whsec_x' FROM runs WHERE id = %s
           RETURNING id""",
        (run_id,),
    ).fetchone()["id"]
    for status, age_days in [("Delivered", 40), ("Dead", 40), ("Delivered", 1), ("Pending", 40), ("Dead", 1)]:
        sql.execute(
            """INSERT INTO webhook_deliveries (webhook_id, run_id, event_type, status, created_at, finished_at)
               VALUES (%(w)s, %(r)s, 'run.succeeded', %(s)s, now() - make_interval(days => %(d)s),
                       CASE WHEN %(s)s <> 'Pending' THEN now() - make_interval(days => %(d)s) END)""",
            {"w": webhook_id, "r": run_id, "s": status, "d": age_days},
        )
    dry = prune_runs(database_url, "--older-than", "30d", "--dry-run")
    assert dry.returncode == 0 and "webhook deliveries: would delete 2 deliveries" in dry.stdout, dry.stdout
    result = prune_runs(database_url, "--older-than", "30d", "--batch-size", "1")
    assert result.returncode == 0 and "webhook deliveries: deleted 2 deliveries" in result.stdout, result.stdout
    left = sql.execute("SELECT status, finished_at IS NULL AS open FROM webhook_deliveries ORDER BY 1").fetchall()
    assert [(r["status"], r["open"]) for r in left] == [("Dead", False), ("Delivered", False), ("Pending", True)]
