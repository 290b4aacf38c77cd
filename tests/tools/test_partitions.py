"""History partitioned by time (issue #21, part 3): run_steps and run_events are range-partitioned by their run's
created_at (migrations 0021, 0022). A query by run id reads one partition; workers keep partitions ahead and
/readyz warns when they run out; the migration moves existing rows over and its rollback moves them back.

The plans are checked on 10,000 runs over 9 weekly partitions, made once for the module in one INSERT … SELECT, not
the issue's 1M runs: partition pruning is decided by the plan's shape (which partitions a query may touch), not by
the row counts, and the 1M-run figures are bench/partition_bench.py's."""

import itertools

import psycopg
import pytest
from psycopg.rows import dict_row
from yoyo.migrations import read_sql_migration

from flowline.data import migrations
from flowline.data import partitions as history
from flowline.data.sql import QUERIES
from tests.support.history import make_partitions_back
from tests.support.sessions import terminate_midway

UPKEEP = "0021.history-partition-upkeep"
MOVE = "0022.partition-run-history"


def _executed(plan, prefix):
    """Return {relation: scan type} of the relations named ``prefix``… that the EXPLAIN ANALYZE ``plan`` read
    (nodes that ran at least once)."""
    found = {}

    def walk(node):
        if node.get("Relation Name", "").startswith(prefix) and node.get("Actual Loops", 0) > 0:
            found[node["Relation Name"]] = node["Node Type"]
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return found


@pytest.fixture(scope="module")
def history_sql(module_database_url):
    """An autocommit connection to the module's database, which holds 10,000 finished runs over 60 days (3 steps
    and 2 events each), analysed."""
    with psycopg.connect(module_database_url, autocommit=True, row_factory=dict_row) as sql:
        _add_history(sql)
        yield sql


@pytest.fixture
def history_runs(history_sql):
    """A run 30 days old in the module's history."""
    return history_sql.execute(
        "SELECT id FROM runs WHERE created_at < now() - interval '30 days' ORDER BY created_at DESC LIMIT 1"
    ).fetchone()["id"]


def _add_history(sql):
    make_partitions_back(sql, 60)
    workflow_id = sql.execute("INSERT INTO workflows (name) VALUES ('w') RETURNING id").fetchone()["id"]
    sql.execute(
        """
        WITH run AS (
            INSERT INTO runs (workflow_id, mode, status, attempt, created_at, started_at, finished_at)
            SELECT %(w)s, 'async', 'Succeeded', 1, t, t, t + interval '1 second'
            FROM (SELECT now() - make_interval(mins => g * 8) AS t FROM generate_series(1, 10000) AS g) AS times
            RETURNING id, created_at
        ), steps AS (
            INSERT INTO run_steps (run_id, run_created_at, attempt, position, node_type, config_snapshot, status,
                                   finished_at, output_text, model, prompt_tokens, completion_tokens)
            SELECT id, created_at, 1, p, 'generative_ai', '{}', 'Succeeded', created_at, 'out', 'm', 10, 2
            FROM run, generate_series(0, 2) AS p
        )
        INSERT INTO run_events (run_id, run_created_at, attempt, status, at)
        SELECT id, created_at, 1, s, created_at
        FROM run, unnest(ARRAY['Running', 'Succeeded']) AS s""",
        {"w": workflow_id},
    )
    sql.execute("ANALYZE runs, run_steps, run_events")


@pytest.mark.parametrize(
    "query, params, tables",
    [
        ("get_run_json", {}, ("run_steps",)),
        ("list_run_events_json", {}, ("run_events",)),
        ("get_run_cut_json", {"text_cut": 100}, ("run_steps",)),
    ],
)
def test_a_run_by_id_reads_one_partition_of_its_steps_and_events(history_sql, history_runs, query, params, tables):
    sql = history_sql
    partitions = sql.execute("SELECT count(*) AS n FROM history_partitions WHERE parent = 'run_steps'").fetchone()["n"]
    assert partitions >= 9
    plan = sql.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES[query].text, {"run_id": history_runs, **params}
    ).fetchone()["QUERY PLAN"][0]
    for table in tables:
        read = _executed(plan, f"{table}_p")
        assert len(read) == 1 and "Seq Scan" not in read.values(), (query, read, plan)


def test_the_runs_list_reads_one_partition_per_run_for_its_usage(history_sql):
    plan = history_sql.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES["list_runs_page"].text,
        {"after_created_at": None, "after_id": None, "row_limit": 50},
    ).fetchone()["QUERY PLAN"][0]
    # 50 newest runs, all in the current week: their usage reads the newest partition only.
    assert len(_executed(plan, "run_steps_p")) == 1, plan


def _detach_future(sql):
    """Detach and drop every partition beginning after now (as if no worker had made any)."""
    for row in sql.execute("SELECT parent, partition FROM history_partitions WHERE from_at > now()").fetchall():
        sql.execute(f'ALTER TABLE {row["parent"]} DETACH PARTITION "{row["partition"]}"')
        sql.execute(f'DROP TABLE "{row["partition"]}"')


def test_workers_make_missing_partitions_ahead_one_at_a_time_and_readyz_warns_meanwhile(client, sql, database_url):
    assert client.get("/readyz").json["history_partitions"] == "ok"
    _detach_future(sql)
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["history_partitions"] == "running out"
    assert "flowline_history_partitions_ahead 0.0" in client.get("/metrics").text

    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        made = history.make_ahead(conn, "week", 3)
        assert history.count_ahead(conn) == 3
        assert history.make_ahead(conn, "week", 3) == []
        # A new period applies to the partitions made from then on, fitted after the weekly ones.
        days = history.make_ahead(conn, "day", 30)
    assert len(made) == 3 and all(name.startswith("run_events_p") for name in made)
    assert client.get("/readyz").json["history_partitions"] == "ok"
    bounds = sql.execute(
        "SELECT from_at, to_at FROM history_partitions WHERE parent = 'run_steps' ORDER BY from_at"
    ).fetchall()
    assert all(a["to_at"] == b["from_at"] for a, b in itertools.pairwise(bounds)), "no gap, no overlap"
    assert days and all((b["to_at"] - b["from_at"]).days <= 7 for b in bounds)


def test_a_step_of_a_day_without_partition_is_refused_not_lost_elsewhere(sql):
    workflow_id = sql.execute("INSERT INTO workflows (name) VALUES ('w') RETURNING id").fetchone()["id"]
    run_id = sql.execute(
        "INSERT INTO runs (workflow_id, mode, status, created_at) VALUES (%s, 'async', 'Pending', "
        "now() - interval '400 days') RETURNING id",
        (workflow_id,),
    ).fetchone()["id"]
    with pytest.raises(psycopg.errors.CheckViolation, match="no partition"):
        sql.execute(
            "INSERT INTO run_events (run_id, run_created_at, attempt, status) "
            "SELECT id, created_at, 0, 'Pending' FROM runs WHERE id = %s",
            (run_id,),
        )


def test_deleting_a_run_or_a_node_does_what_the_foreign_keys_did(client, workflow, sql):
    flow = workflow([("formatter", {"rules": ["uppercase"]})])
    run_id = client.post(f"/workflows/{flow}/run", json={"input_text": "hi"}).json["run_id"]
    node_id = client.get(f"/workflows/{flow}").json["nodes"][0]["id"]
    assert client.delete(f"/workflows/{flow}/nodes/{node_id}").status_code == 204
    assert sql.execute("SELECT node_id FROM run_steps WHERE run_id = %s", (run_id,)).fetchone()["node_id"] is None
    sql.execute("DELETE FROM runs WHERE id = %s", (run_id,))
    counts = sql.execute(
        "SELECT (SELECT count(*) FROM run_steps WHERE run_id = %(r)s) AS steps, "
        "(SELECT count(*) FROM run_events WHERE run_id = %(r)s) AS events",
        {"r": run_id},
    ).fetchone()
    assert counts == {"steps": 0, "events": 0}


PLAIN_RUNS = 12000


def _plain_history(url):
    """Migrate ``url`` up to 0021 (plain run_steps and run_events) and give it PLAIN_RUNS finished runs 10 minutes
    apart, each with two LLM steps (their usage rolled up) and an event; return the workflow's id."""
    migrations.apply_up_to(url, UPKEEP)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        workflow_id = conn.execute("INSERT INTO workflows (name) VALUES ('w') RETURNING id").fetchone()["id"]
        conn.execute(
            """
            WITH run AS (
                INSERT INTO runs (workflow_id, mode, status, attempt, created_at, finished_at)
                SELECT %(w)s, 'async', 'Succeeded', 1, now() - make_interval(mins => g * 10), now()
                FROM generate_series(1, %(n)s) AS g
                RETURNING id, created_at
            ), steps AS (
                INSERT INTO run_steps (run_id, attempt, position, node_type, config_snapshot, status, finished_at,
                                       model, prompt_tokens, completion_tokens)
                SELECT id, 1, p, 'generative_ai', '{}', 'Succeeded', created_at, 'm', 10, 2
                FROM run, generate_series(0, 1) AS p
            )
            INSERT INTO run_events (run_id, attempt, status) SELECT id, 1, 'Succeeded' FROM run""",
            {"w": workflow_id, "n": PLAIN_RUNS},
        )
    return workflow_id


def _history_state(conn):
    """A digest of every step and event, and the usage rolled up."""
    return conn.execute(
        """SELECT (SELECT md5(string_agg(id::text || run_id || position || status || coalesce(output_text, ''),
                                         ',' ORDER BY id))
                   FROM run_steps) AS steps,
                  (SELECT md5(string_agg(id::text || run_id || status, ',' ORDER BY id)) FROM run_events) AS events,
                  (SELECT sum(prompt_tokens) FROM llm_usage_hourly) AS usage"""
    ).fetchone()


def _move_statements():
    """0022's statements, as yoyo runs them one by one."""
    return read_sql_migration(str(migrations.MIGRATIONS_DIR / f"{MOVE}.sql"))[2]


def test_the_migration_moves_every_row_while_writes_go_on_and_its_rollback_moves_them_back(make_database):
    """Before 0022: plain tables with rows (their usage rolled up). 0022's first statements run (the new tables and
    the triggers, then the copy); the old version goes on writing (a new run's step and event, an update of a copied
    step, a deleted run), which only the triggers carry over; the swap: the same rows, partitioned, the usage counted
    once. The rollback: plain tables, the same rows."""
    url = make_database()
    workflow_id = _plain_history(url)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        assert _history_state(conn)["usage"] == PLAIN_RUNS * 2 * 10
        for statement in _move_statements()[:5]:  # the triggers' functions, the copy's procedure, the new tables,
            conn.execute(statement)  # the copy
        old_run = conn.execute("SELECT id FROM runs ORDER BY created_at LIMIT 1").fetchone()["id"]
        conn.execute("UPDATE run_steps SET output_text = 'changed' WHERE run_id = %s", (old_run,))
        conn.execute("DELETE FROM runs WHERE id = (SELECT id FROM runs ORDER BY created_at DESC LIMIT 1)")
        new_run = conn.execute(
            "INSERT INTO runs (workflow_id, mode, status) VALUES (%s, 'async', 'Pending') RETURNING id", (workflow_id,)
        ).fetchone()["id"]
        conn.execute("INSERT INTO run_events (run_id, attempt, status) VALUES (%s, 0, 'Pending')", (new_run,))
        conn.execute(
            "INSERT INTO run_steps (run_id, attempt, position, node_type, config_snapshot, status) "
            "VALUES (%s, 1, 0, 'formatter', '{}', 'Running')",
            (new_run,),
        )
        written = _history_state(conn)
        # All of 0022 again: the copy finds nothing left, then the swap.
        assert migrations.apply_up_to(url, MOVE) == [MOVE]
        assert _history_state(conn) == written
        assert conn.execute("SELECT relkind FROM pg_class WHERE relname = 'run_steps'").fetchone()["relkind"] == "p"
        # 83 days back in weekly partitions, each table's.
        assert conn.execute("SELECT count(*) AS n FROM history_partitions").fetchone()["n"] >= 2 * 12
        assert conn.execute("SELECT to_regclass('history_move') AS t").fetchone()["t"] is None
        migrations.rollback(url, migration_id=MOVE)
        assert _history_state(conn) == written
        assert conn.execute("SELECT relkind FROM pg_class WHERE relname = 'run_steps'").fetchone()["relkind"] == "r"


def test_a_copy_killed_half_way_resumes_where_it_stopped(make_database):
    """0022's copy, its session terminated half-way (as a lost connection or a killed psql would leave it): run
    again, it goes on from its last committed batch (history_move counts each run once), and the swap then has every
    row."""
    url = make_database()
    _plain_history(url)
    statements = _move_statements()
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        before = _history_state(conn)
        for statement in statements[:4]:  # the triggers' functions, the copy's procedure, the new tables
            conn.execute(statement)
        terminate_midway(
            url,
            "CALL move_history_rows(20)",  # small batches: many commits to stop between
            conn,
            lambda _pid: conn.execute("SELECT moved_runs FROM history_move").fetchone()["moved_runs"] >= 2000,
            "a part of the copy",
        )
        stopped_at = conn.execute("SELECT moved_runs FROM history_move").fetchone()["moved_runs"]
        assert 2000 <= stopped_at < PLAIN_RUNS
        conn.execute(statements[4])  # the copy, again
        assert conn.execute("SELECT moved_runs FROM history_move").fetchone()["moved_runs"] == PLAIN_RUNS
    assert migrations.apply_up_to(url, MOVE) == [MOVE]  # the rest: the swap
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        assert _history_state(conn) == before
        assert conn.execute("SELECT relkind FROM pg_class WHERE relname = 'run_steps'").fetchone()["relkind"] == "p"
