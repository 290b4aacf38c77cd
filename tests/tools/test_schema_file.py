"""schema.sql, what a DBA reads instead of replaying the migrations, is the migrations' schema, and stays stable."""

import difflib

import psycopg

from flowline.data import migrations, schema


def test_schema_sql_is_what_the_migrations_build(make_database):
    url = make_database()
    migrations.apply(url)
    built = schema.dump(url)
    committed = schema.SCHEMA_FILE.read_text(encoding="utf-8")
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True), built.splitlines(keepends=True), "schema.sql", "the migrations"
        )
    )
    assert built == committed, f"schema.sql differs from the migrations' schema: run `{schema.REGENERATE}`\n{diff}"


def test_schema_sql_holds_no_bookkeeping_no_version_noise_and_no_dated_partition(make_database):
    """A partition made by date (by a maintenance job, or a migration on the day it ran) would change the file
    from one day or database to the next: only its parent is shown. yoyo's tables, SET lines and pg_dump's
    version lines are left out too."""
    url = make_database()
    migrations.apply(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE run_archive (finished_at date NOT NULL) PARTITION BY RANGE (finished_at)")
        conn.execute(
            "CREATE TABLE run_archive_2026_12 PARTITION OF run_archive FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')"
        )
        conn.execute("CREATE TABLE run_archive_default PARTITION OF run_archive DEFAULT")
    dumped = schema.dump(url)
    assert "CREATE TABLE public.run_archive (" in dumped
    assert "run_archive_default" in dumped
    assert "run_archive_2026_12" not in dumped
    assert "CREATE TABLE public.runs (" in dumped
    assert "yoyo" not in dumped
    assert not any(line.startswith(("SET ", "-- Dumped", "\\restrict")) for line in dumped.splitlines())
