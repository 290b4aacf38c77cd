"""Migrations: apply, roll back and re-apply to the same schema; pending migrations are seen and said loudly."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from flowline.data import migrations

ROOT = Path(__file__).resolve().parents[2]

# Partitions (of run_steps and run_events: migration 0022) are named by the day they were made for, as schema.sql
# leaves them out: only their parents are compared.
PARTITIONS = "(SELECT relname FROM pg_class WHERE relispartition)"

SNAPSHOT_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default
        FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name NOT LIKE '\\_yoyo%%' AND table_name <> 'yoyo_lock'
          AND table_name NOT IN """
    + PARTITIONS
    + """
        ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text AS table_name, conname, pg_get_constraintdef(oid) AS definition,
               condeferrable, condeferred
        FROM pg_constraint
        WHERE connamespace = 'public'::regnamespace
          AND conrelid::regclass::text NOT LIKE '\\_yoyo%%' AND conrelid::regclass::text <> 'yoyo_lock'
          AND conrelid::regclass::text NOT IN """
    + PARTITIONS
    + """
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef
        FROM pg_indexes
        WHERE schemaname = 'public' AND tablename NOT LIKE '\\_yoyo%%' AND tablename <> 'yoyo_lock'
          AND tablename NOT IN """
    + PARTITIONS
    + """
        ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_functiondef(oid) AS definition
        FROM pg_proc
        WHERE pronamespace = 'public'::regnamespace
        ORDER BY 1""",
    "triggers": """
        SELECT tgrelid::regclass::text AS table_name, tgname, pg_get_triggerdef(oid) AS definition
        FROM pg_trigger
        WHERE NOT tgisinternal
        ORDER BY 1, 2""",
    # Per-table storage settings (autovacuum, fillfactor): a rollback must reset what its migration set.
    "reloptions": """
        SELECT relname, reloptions::text
        FROM pg_class
        WHERE relnamespace = 'public'::regnamespace AND reloptions IS NOT NULL AND NOT relispartition
        ORDER BY 1""",
}


def _snapshot(url):
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query).fetchall() for name, query in SNAPSHOT_QUERIES.items()}


def test_apply_rollback_reapply_gives_the_same_schema(make_database):
    url = make_database()
    assert migrations.apply(url) == migrations.migration_ids()
    applied = _snapshot(url)
    assert {row[0] for row in applied["columns"]} == {
        "workflows",
        "nodes",
        "runs",
        "run_steps",
        "run_events",
        "files",
        "workers",
        "webhooks",
        "webhook_deliveries",
        "schedules",
        "llm_models",
        "llm_reservations",
        "llm_model_state",
        "llm_usage_daily",
        "llm_usage_hourly",
        "llm_usage_totals",
        "run_list",
        "run_lanes",
        "history_partitions",
    }
    assert [row[0] for row in applied["functions"]] == [
        "add_lane_running",
        "attach_history_partition",
        "delete_run_history",
        "forget_deleted_nodes",
        "hold_pending_run",
        "llm_usage_between",
        "lock_run_limits",
        "make_history_partition",
        "note_workflow_webhooks",
        "notify_run_finished",
        "queue_webhook_deliveries",
        "rebuild_run_holds",
        "release_held_runs",
        "release_key_runs",
        "release_workflow_runs",
        "reserve_llm_call",
        "roll_up_llm_usage",
        "run_steps_roll_up_usage",
        "save_run_steps",
    ]
    assert [row[1] for row in applied["triggers"]] == [
        "nodes_forget_run_steps",
        "run_steps_roll_up_inserted",
        "run_steps_roll_up_updated",
        "runs_delete_history",
        "runs_hold_inserted",
        "runs_hold_requeued",
        "runs_notify_finished",
        "runs_queue_webhook_deliveries",
        "runs_release_inserted",
        "runs_release_on_status",
        "webhooks_note_deleted",
        "webhooks_note_enabled",
        "webhooks_note_inserted",
    ]

    assert migrations.rollback(url, everything=True) == migrations.migration_ids()[::-1]
    assert _snapshot(url) == {
        "columns": [],
        "constraints": [],
        "indexes": [],
        "functions": [],
        "triggers": [],
        "reloptions": [],
    }

    migrations.apply(url)
    assert _snapshot(url) == applied


def test_the_schema_carries_the_invariants(database_url):
    snapshot = _snapshot(database_url)
    constraints = {
        (t, name): (definition, deferrable) for t, name, definition, deferrable, _ in snapshot["constraints"]
    }
    unique_position = [
        v for (t, _), v in constraints.items() if t == "nodes" and 'UNIQUE (workflow_id, "position")' in v[0]
    ]
    assert unique_position and unique_position[0][1] is True, "nodes (workflow_id, position) must be UNIQUE DEFERRABLE"
    definitions = " ".join(d for d, _ in constraints.values())
    assert definitions.count("ON DELETE CASCADE") >= 4
    # The partitioned run_steps and run_events have no foreign keys (migration 0022): triggers do their cascades.
    triggers = {(t, name) for t, name, _ in snapshot["triggers"]}
    assert {("runs", "runs_delete_history"), ("nodes", "nodes_forget_run_steps")} <= triggers
    indexes = " ".join(row[2] for row in snapshot["indexes"])
    assert "ON public.runs USING btree (workflow_id, created_at DESC, id)" in indexes


def test_pending_lists_unapplied_migrations_without_creating_anything(make_database):
    url = make_database()
    with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        assert migrations.pending(conn) == migrations.migration_ids()
        tables = conn.execute("SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'").fetchone()["n"]
        assert tables == 0, "reading migration status must not create yoyo's tables"
    migrations.apply(url)
    with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        assert migrations.pending(conn) == []


def test_readyz_is_503_naming_pending_migrations_until_they_are_applied(make_database, template_db):
    from app import create_app

    url = make_database()
    app = create_app({"TESTING": True, "DATABASE_URL": url})
    try:
        client = app.test_client()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "migration(s) pending" in response.json["detail"] and "0001" in response.json["detail"]
        assert response.json["checks"]["migrations"] == "pending"
        migrations.apply(url)
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json["checks"] == {"database": "ok", "migrations": "current"}
        assert response.json["llm_provider"] == "echo"
    finally:
        app.extensions["flowline.pool"].close()


def _cli(url, *args):
    return subprocess.run(
        [sys.executable, "-m", "flowline.data.migrations", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": url},
        timeout=60,
    )


def test_the_command_line_applies_reports_and_rolls_back(make_database):
    url = make_database()
    first = migrations.migration_ids()[0]
    status = _cli(url, "status")
    assert status.returncode == 0 and f"pending  {first}" in status.stdout
    applied = _cli(url, "apply")
    assert applied.returncode == 0 and first in applied.stdout
    assert f"applied  {first}" in _cli(url, "status").stdout
    assert "none pending" in _cli(url, "apply").stdout
    unknown = _cli(url, "rollback", "--id", "9999.nope")
    assert unknown.returncode != 0 and "is not an applied migration" in unknown.stderr
    rolled = _cli(url, "rollback", "--all")
    assert rolled.returncode == 0 and first in rolled.stdout
    assert f"pending  {first}" in _cli(url, "status").stdout


@pytest.mark.parametrize("path", sorted((ROOT / "migrations").glob("*.sql")), ids=lambda p: p.name)
def test_every_migration_file_states_its_intent(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("-- ") and len(first) > 20
    if path.name.endswith(".rollback.sql"):
        assert "lost" in path.read_text(encoding="utf-8").lower(), "a rollback must say whether data is lost"
    else:
        assert path.with_name(path.name[: -len(".sql")] + ".rollback.sql").exists()
