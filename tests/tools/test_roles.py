"""Least privilege: deploy/roles.sql makes an owner role (migrations run as it) and an app role (the service runs as
it); migration 0006 grants the app role read/write access to Flowline's tables, and nothing more.

Roles are cluster-wide, and the test cluster is shared by the whole session: each test makes its own pair with
unique names (the script's psql variables), and drops its databases and then its roles afterwards.
"""

import io
import signal
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.errors import InsufficientPrivilege

from flowline.data import migrations, pgbin
from tests.support import make_pdf, url_for_database, wait_for

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "roles.sql"


def _psql():
    found = pgbin.program("psql")
    if not found:
        pytest.skip("psql is not installed (it comes with PostgreSQL's client package)")
    return found


def url_as(url, role):
    """Return ``url`` connecting as ``role`` (the test cluster trusts local connections: no password)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))


def run_script(url, *variables):
    """Run deploy/roles.sql with psql, as a DBA would, on database ``url``; return psql's result."""
    args = [
        _psql(),
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        *(a for v in variables for a in ("-v", v)),
        "-d",
        url,
        "-f",
        str(SCRIPT),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


class Roles:
    """An owner and an app role with unique names, and the databases made for them."""

    def __init__(self, server_url):
        suffix = uuid.uuid4().hex[:10]
        self.server_url = server_url
        self.owner, self.app = f"fl_owner_{suffix}", f"fl_app_{suffix}"
        self.databases = []

    def database(self, template=None, script=True):
        """Create a database (empty, or a copy of ``template``), run the roles script on it; return its URL."""
        name = f"flowline_r_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.databases.append(name)
        url = url_for_database(self.server_url, name)
        if not script:
            return url
        result = run_script(url, f"owner_role={self.owner}", f"app_role={self.app}")
        assert result.returncode == 0, result.stderr
        return url

    def drop(self):
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            for name in self.databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{self.app}", "{self.owner}"')


@pytest.fixture
def roles(server_url):
    roles = Roles(server_url)
    yield roles
    roles.drop()


@pytest.fixture
def owned(roles):
    """A fresh database set up by the script and migrated by the owner role: (superuser URL, owner URL, app URL)."""
    url = roles.database()
    owner_url, app_url = url_as(url, roles.owner), url_as(url, roles.app)
    assert migrations.apply(owner_url) == migrations.migration_ids()
    return url, owner_url, app_url


@pytest.fixture
def app_client(owned):
    """A Flowline app connected as the app role, and its test client."""
    from app import create_app

    app = create_app({"TESTING": True, "DATABASE_URL": owned[2]})
    yield app.test_client()
    app.extensions["flowline.pool"].close()
    app.extensions["flowline.provider"].close()


def _as(url):
    return psycopg.connect(url, autocommit=True)


def test_the_schema_belongs_to_the_owner_and_the_roles_have_no_special_powers(roles, owned):
    url, _, _ = owned
    with _as(url) as conn:
        owners = {
            row[0] for row in conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        }
        assert owners == {roles.owner}
        assert conn.execute(
            "SELECT proowner::regrole::text FROM pg_proc WHERE proname = 'save_run_steps'"
        ).fetchone() == (roles.owner,)
        powers = conn.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
            "FROM pg_roles WHERE rolname IN (%s, %s) ORDER BY rolname",
            (roles.app, roles.owner),
        ).fetchall()
        assert powers == [
            (roles.app, False, False, False, False, False, True),
            (roles.owner, False, False, False, False, False, True),
        ]
        assert conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (roles.app, roles.owner)).fetchone() == (False,)


def test_the_app_role_serves_every_route_and_a_worker_runs_as_it(app_client, owned, make_worker):
    client = app_client
    assert client.get("/readyz").status_code == 200, "the app role must read _yoyo_migration"
    file_id = client.post(
        "/files", data={"file": (io.BytesIO(make_pdf("least privilege")), "a.pdf")}, content_type="multipart/form-data"
    ).json["file_id"]
    workflow_id = client.post("/workflows", json={"name": "as the app role"}).json["id"]
    for node_type, config in (("extract_text", {}), ("formatter", {"rules": ["uppercase"]})):
        assert (
            client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": node_type, "config": config}).status_code
            == 200
        )
    ran = client.post(f"/workflows/{workflow_id}/run", json={"file_id": file_id})
    assert ran.status_code == 200 and ran.json["final_output"] == "LEAST PRIVILEGE"
    assert len(client.get(f"/runs/{ran.json['run_id']}").json["steps"]) == 2
    queued = client.post(
        f"/workflows/{workflow_id}/runs", json={"input_text": "queued"}, headers={"Idempotency-Key": "k1"}
    )
    assert queued.status_code == 202
    again = client.post(
        f"/workflows/{workflow_id}/runs", json={"input_text": "queued"}, headers={"Idempotency-Key": "k1"}
    )
    assert again.json["run_id"] == queued.json["run_id"]
    cancelled = client.post(f"/workflows/{workflow_id}/runs", json={"input_text": "never"}).json["run_id"]
    assert client.post(f"/runs/{cancelled}/cancel").status_code == 200
    listed = client.get(f"/workflows/{workflow_id}/runs?limit=10")
    assert listed.status_code == 200 and len(listed.json["runs"]) == 3
    assert client.get(f"/runs/{cancelled}/events").status_code == 200
    assert client.get("/workflows?limit=5").json["workflows"][0]["id"] == workflow_id
    workflow = client.get(f"/workflows/{workflow_id}")
    node_ids = [n["id"] for n in workflow.json["nodes"]]
    assert client.put(f"/workflows/{workflow_id}/nodes/order", json={"node_ids": node_ids[::-1]}).status_code == 200
    assert (
        client.patch(f"/workflows/{workflow_id}/nodes/{node_ids[1]}", json={"config": {"rules": ["strip"]}}).status_code
        == 200
    )
    assert (
        client.patch(
            f"/workflows/{workflow_id}", json={"name": "renamed"}, headers={"If-Match": workflow.headers["ETag"]}
        ).status_code
        == 412
    )  # the reorder bumped it

    # A worker connected as the app role claims, runs and finishes the queued run (its heartbeat table included).
    worker = make_worker(url=owned[2], RUN_LEASE_SECONDS=3).start()
    run = wait_for(
        lambda: (r := client.get(f"/runs/{queued.json['run_id']}").json["run"])["status"] == "Succeeded" and r,
        message="the queued run to succeed",
    )
    assert run["final_output"] == "queued"  # the formatter was changed to strip above
    with _as(owned[0]) as conn:
        assert conn.execute("SELECT count(*) FROM workers").fetchone()[0] == 1
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0

    assert client.delete(f"/workflows/{workflow_id}/nodes/{node_ids[0]}").status_code == 204
    assert client.delete(f"/files/{file_id}").status_code == 204
    assert client.delete(f"/workflows/{workflow_id}").status_code == 204


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE workflows",
        "CREATE TABLE intruder (id int)",
        "TRUNCATE runs",
        "TRUNCATE run_events",
        "ALTER TABLE runs ADD COLUMN intruder text",
        "CREATE INDEX intruder_idx ON runs (status)",
        "DROP FUNCTION save_run_steps(uuid, integer, jsonb)",
        "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE VIEW intruder AS SELECT 1",
        "CREATE SCHEMA intruder",
        "COMMENT ON TABLE workflows IS 'mine now'",
        "ALTER TABLE workflows DISABLE TRIGGER ALL",
        "DELETE FROM _yoyo_migration",
        "INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 1)",
        "SELECT * FROM _yoyo_log",
        "SELECT attach_history_partition('run_steps', now() + interval '9 years', now() + interval '10 years')",
    ],
)
def test_the_app_role_cannot_change_the_schema_or_yoyos_bookkeeping(owned, statement):
    with _as(owned[2]) as conn:
        with pytest.raises(InsufficientPrivilege):
            conn.execute(statement)
        # Reading what it needs still works, and nothing was dropped or added.
        assert conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone()[0] == len(migrations.migration_ids())
    with _as(owned[0]) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"workflows", "runs", "run_steps", "run_events", "nodes", "files"} <= tables and "intruder" not in tables


def test_the_app_role_makes_history_partitions_and_only_the_owner_drops_them(roles, owned):
    """make_history_partition is the app role's one way to a new table (SECURITY DEFINER: the owner's table);
    prune-runs drops partitions only when it runs as the owner (DETACH … CONCURRENTLY needs ownership)."""
    from flowline.tools import prune

    url, owner_url, app_url = owned
    with _as(app_url) as conn:
        made = conn.execute("SELECT make_history_partition(now() - interval '1 year', 'week')").fetchone()[0]
    assert made.startswith("run_events_p")
    with _as(url) as conn:
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = %s", (made,)).fetchone() == (
            roles.owner,
        )
        cutoff = conn.execute("SELECT now() - interval '30 days'").fetchone()[0]
    with psycopg.connect(app_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        assert prune.drop_partitions(conn, cutoff, ("Succeeded",)) is None
    with psycopg.connect(owner_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        assert sorted(prune.drop_partitions(conn, cutoff, ("Succeeded",))) == sorted(
            [made, made.replace("run_events", "run_steps")]
        )


def test_tables_a_later_migration_creates_are_granted_too(owned):
    _, owner_url, app_url = owned
    with _as(owner_url) as conn:  # what a future migration, run as the owner, would do
        conn.execute("CREATE TABLE future_table (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)")
        conn.execute("CREATE FUNCTION future_fn() RETURNS int LANGUAGE sql AS 'SELECT 42'")
    with _as(app_url) as conn:
        assert conn.execute("INSERT INTO future_table (note) VALUES ('x') RETURNING id").fetchone() == (1,)
        conn.execute("UPDATE future_table SET note = 'y'")
        assert conn.execute("SELECT note FROM future_table").fetchone() == ("y",)
        conn.execute("DELETE FROM future_table")
        assert conn.execute("SELECT future_fn()").fetchone() == (42,)
        with pytest.raises(InsufficientPrivilege):
            conn.execute("TRUNCATE future_table")
        with pytest.raises(InsufficientPrivilege):
            conn.execute("DROP TABLE future_table")


def test_migration_0006_alone_grants_to_an_existing_app_role(roles):
    """Without the script (roles made by hand, migrations run as a superuser): 0006 grants the role named by the
    flowline.app_role setting, here passed in the migration URL, and later tables follow its default privileges."""
    url = roles.database(script=False)
    with _as(url) as conn:
        conn.execute(f'CREATE ROLE "{roles.app}" LOGIN')
    app_url = url_as(url, roles.app)
    migrations.apply(f"{url}&options=-c%20flowline.app_role%3D{roles.app}")
    with _as(app_url) as conn:
        conn.execute("INSERT INTO workflows (name) VALUES ('granted by 0006')")
        assert conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone()[0] == len(migrations.migration_ids())
        with pytest.raises(InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM _yoyo_log")
    with _as(url) as conn:
        conn.execute("CREATE TABLE later_table (id int)")
    with _as(app_url) as conn:
        conn.execute("INSERT INTO later_table VALUES (1)")
        with pytest.raises(InsufficientPrivilege):
            conn.execute("TRUNCATE later_table")


def test_rolling_back_0006_revokes_without_losing_data_and_reapplying_restores(owned, app_client):
    url, owner_url, app_url = owned
    workflow_id = app_client.post("/workflows", json={"name": "kept"}).json["id"]
    migration = next(m for m in migrations.migration_ids() if m.startswith("0006."))
    migrations.rollback(owner_url, migration)
    with _as(app_url) as conn, pytest.raises(InsufficientPrivilege):
        conn.execute("SELECT name FROM workflows")
    # Requests say an operator must act (503), never a 500 with the driver's message. (The list: reading one
    # workflow names columns of migrations after 0006, which rolled back with it.)
    for path in ("/workflows", "/readyz"):
        refused = app_client.get(path)
        assert refused.status_code == 503 and "lacks a privilege" in refused.json["detail"], path
        assert "permission denied" not in refused.get_data(as_text=True)
    with _as(url) as conn:
        assert conn.execute("SELECT name FROM workflows WHERE id = %s", (workflow_id,)).fetchone() == ("kept",)
        assert conn.execute("SELECT count(*) FROM pg_default_acl").fetchone() == (0,)
    migrations.apply(owner_url)
    assert app_client.get(f"/workflows/{workflow_id}").json["name"] == "kept"
    assert app_client.get("/readyz").status_code == 200


def test_a_database_migrated_before_the_roles_existed_is_adopted(roles, template_db):
    """Migrated by another role (here the superuser, as the test template is): the script hands the schema to the
    owner and grants the app role; the owner can then migrate it further."""
    url = roles.database(template=template_db)
    owner_url, app_url = url_as(url, roles.owner), url_as(url, roles.app)
    with _as(url) as conn:
        owners = {
            row[0] for row in conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        }
        assert owners == {roles.owner}
    with _as(app_url) as conn:
        workflow_id = conn.execute("INSERT INTO workflows (name) VALUES ('adopted') RETURNING id").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone()[0] == len(migrations.migration_ids())
        with pytest.raises(InsufficientPrivilege):
            conn.execute("TRUNCATE workflows")
        with pytest.raises(InsufficientPrivilege):
            conn.execute("DELETE FROM _yoyo_migration")
    last = migrations.migration_ids()[-1]
    assert migrations.rollback(owner_url, last) == [last]
    assert migrations.apply(owner_url) == [last]
    with _as(app_url) as conn:
        assert conn.execute("SELECT name FROM workflows WHERE id = %s", (workflow_id,)).fetchone() == ("adopted",)


def test_the_script_runs_again_safely_and_refuses_mistakes(roles, owned):
    url = owned[0]
    again = run_script(url, f"owner_role={roles.owner}", f"app_role={roles.app}")
    assert again.returncode == 0, again.stderr
    assert "created role" not in again.stderr
    with _as(owned[2]) as conn:  # still serving after the second run
        conn.execute("INSERT INTO workflows (name) VALUES ('still here')")
        with pytest.raises(InsufficientPrivilege):
            conn.execute("DELETE FROM _yoyo_migration")
    same = run_script(url, f"owner_role={roles.owner}", f"app_role={roles.owner}")
    assert same.returncode != 0 and "must differ" in same.stderr
    as_owner = run_script(url_as(url, roles.owner), f"owner_role={roles.owner}", f"app_role={roles.app}")
    assert as_owner.returncode != 0
