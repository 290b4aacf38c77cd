"""Migrations 0011 and 0012 on a runs table holding history: runs gains its two columns without being rewritten
(PostgreSQL 15 adds a nullable column without a default in the catalog only), the foreign key ends validated and
both runs indexes valid; their rollbacks keep the runs."""

import psycopg
from psycopg.rows import dict_row

from flowline.data import migrations


def _facts(conn):
    return conn.execute(
        """SELECT pg_relation_filenode('runs') AS filenode,
                  (SELECT convalidated FROM pg_constraint WHERE conname = 'runs_schedule_id_fkey') AS fk_validated,
                  (SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                   WHERE i.indrelid = 'runs'::regclass AND i.indisvalid AND c.relname LIKE 'runs_schedule%%') AS indexes,
                  (SELECT count(*) FROM runs) AS runs"""
    ).fetchone()


def test_runs_gain_their_schedule_columns_without_a_rewrite(make_database):
    url = make_database()
    migrations.apply(url)
    assert migrations.rollback(url, "0011.create-schedules") == [
        "0016.add-concurrency-limits-and-priorities",
        "0013.create-run-list-view",
        "0012.index-runs-by-schedule",
        "0011.create-schedules",
    ]
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        workflow_id = conn.execute("INSERT INTO workflows (name) VALUES ('history') RETURNING id").fetchone()["id"]
        conn.execute(
            "INSERT INTO runs (workflow_id, mode, status, input, attempt, max_attempts, started_at, finished_at) "
            "SELECT %s, 'async', 'Succeeded', '{}', 1, 1, now(), now() FROM generate_series(1, 1000)",
            (workflow_id,),
        )
        before = conn.execute("SELECT pg_relation_filenode('runs') AS filenode").fetchone()["filenode"]
        assert migrations.apply(url) == [
            "0011.create-schedules",
            "0012.index-runs-by-schedule",
            "0013.create-run-list-view",
            "0016.add-concurrency-limits-and-priorities",
        ]
        after = _facts(conn)
        assert after == {
            "filenode": before,
            "fk_validated": True,
            "indexes": ["runs_schedule_created_idx", "runs_schedule_tick_key"],
            "runs": 1000,
        }
        migrations.rollback(url, "0011.create-schedules")
        assert conn.execute("SELECT count(*) AS n FROM runs").fetchone()["n"] == 1000
