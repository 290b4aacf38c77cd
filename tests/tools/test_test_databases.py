"""The tests' own databases (tests/support/databases.py): a database a test used goes to the next test emptied only
when nothing but its rows changed; any other is dropped, so no test sees what an earlier one left."""

import uuid

import psycopg
import pytest

from tests.support import url_for_database
from tests.support.databases import Databases


@pytest.fixture
def kept(server_url, template_db):
    databases = Databases(server_url, template_db)
    yield databases
    databases.close()


def _exists(server_url, name):
    with psycopg.connect(server_url, autocommit=True) as admin:
        return admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0] == 1


def test_rows_are_emptied_and_the_database_goes_to_the_next_test(kept, server_url):
    name = kept.take(f"flowline_h_{uuid.uuid4().hex[:12]}")
    url = url_for_database(server_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO workflows (name) VALUES ('left behind')")
        conn.execute("INSERT INTO llm_models (model, requests_per_minute) VALUES ('m', 60)")
    with psycopg.connect(url, autocommit=True) as lingering:  # a session a test left open is ended first
        kept.give_back(name)
        assert _ended(lingering)
    assert kept.take("never made") == name
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM workflows").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM llm_models").fetchone()[0] == 0
    assert not _exists(server_url, "never made")


def _ended(conn):
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


@pytest.mark.parametrize(
    "change",
    [
        "CREATE TABLE intruder (id integer)",
        "ALTER TABLE workflows ADD COLUMN extra text",
        "ALTER TABLE workflows ALTER COLUMN name SET DEFAULT 'x'",
        "ALTER TABLE workflows ADD CONSTRAINT short_name CHECK (char_length(name) < 100)",
        "GRANT SELECT ON workflows TO PUBLIC",
        "CREATE FUNCTION intruder() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
        "ALTER TABLE runs DISABLE TRIGGER runs_delete_history",
        "INSERT INTO workflows (name) SELECT 'w' || g FROM generate_series(1, 200) AS g; ANALYZE workflows",
        "DELETE FROM _yoyo_migration WHERE migration_id = (SELECT max(migration_id) FROM _yoyo_migration)",
    ],
)
def test_any_other_change_drops_the_database(kept, server_url, change):
    name = kept.take(f"flowline_h_{uuid.uuid4().hex[:12]}")
    with psycopg.connect(url_for_database(server_url, name), autocommit=True) as conn:
        conn.execute(change)
    kept.give_back(name)
    assert kept.spare == [] and not _exists(server_url, name)
