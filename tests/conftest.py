"""Fixtures: a real PostgreSQL (DATABASE_URL, set by scripts/with_pg.sh under `make test`), a migrated template
database built once per session (once per pytest-xdist worker), and a database equal to it for every test that
needs one (a copy, or one an earlier test used, emptied: tests/support/databases.py). Also how the tests share out
among pytest-xdist's workers (`make test` runs several): see the hooks below and tests/support/serial.py."""

import io
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from flowline.data import migrations
from tests.support import (
    CHROMIUM,
    ROOT,
    Server,
    WorkerProcess,
    cluster_url,
    grouping,
    launch_chromium,
    make_pdf,
    serial,
    throwaway_cluster,
    url_for_database,
)
from tests.support.apps import close_app
from tests.support.contract import ContractClient
from tests.support.databases import Databases, create_database, drop_database

# The folder of this run's serial lock (tests/support/serial.py) and test groups (tests/support/grouping.py): made
# by the xdist controller, named to each worker.
XDIST_FOLDER = "flowline_xdist_folder"
TURNS = pytest.StashKey[serial.Turns]()
# Under pytest-xdist, the slow kinds of tests are handed out first, so the quick ones fill the last minutes.
ORDER = ("e2e", "tools", "worker", "api", "unit")


def _serial(item):
    return item.get_closest_marker("serial") is not None


def _group(item):
    """Return the group ``item`` runs in under pytest-xdist (None: none, it may run anywhere)."""
    if _serial(item):
        return "serial"
    # pytest's fixture info (pinned pytest 9.2.0): a test's fixtures and their scopes.
    if any(defs[-1].scope == "module" for defs in item._fixtureinfo.name2fixturedefs.values()):
        return item.module.__name__
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """In a pytest-xdist worker, order the tests by ORDER (xdist hands them out in that order; every worker sorts
    alike) and write their groups for the controller's scheduler: the serial tests all go to one worker, and a test
    using a module-scoped fixture (a gunicorn, a worker, a cluster, a browser started once for its module) goes to
    the worker of the rest of its module, so the fixture still starts once."""
    if not hasattr(config, "workerinput"):
        return
    items.sort(key=lambda item: ORDER.index(item.path.relative_to(ROOT / "tests").parts[0]))
    groups = {item.nodeid: group for item in items if (group := _group(item))}
    grouping.write_groups(Path(config.workerinput[XDIST_FOLDER]), groups)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Name this run's folder to an xdist worker about to start (the controller makes it once)."""
    config = node.config
    if not hasattr(config, XDIST_FOLDER):
        setattr(config, XDIST_FOLDER, tempfile.mkdtemp(prefix="flowline-xdist-"))
    node.workerinput[XDIST_FOLDER] = getattr(config, XDIST_FOLDER)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Hand the tests out by their groups (tests/support/grouping.py), whatever ``--dist`` says."""
    return grouping.GroupScheduling(config, log, Path(getattr(config, XDIST_FOLDER)))


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        config.stash[TURNS] = serial.Turns(Path(config.workerinput[XDIST_FOLDER]))


def pytest_unconfigure(config):
    if hasattr(config, XDIST_FOLDER):
        shutil.rmtree(getattr(config, XDIST_FOLDER), ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under pytest-xdist, run a ``serial`` test (its fixtures' setup and teardown too) while no other test runs,
    and any other test beside the others; a run of serial tests keeps its turn from the first to the last."""
    turns = item.config.stash.get(TURNS, None)
    if turns is None:
        return (yield)
    turns.take(alone=_serial(item))
    try:
        return (yield)
    finally:
        if not (_serial(item) and nextitem is not None and _serial(nextitem)):
            turns.release()


def _worker_name(config):
    """Return this pytest-xdist worker's id (gw0, gw1...), or "main" when the tests run in one process."""
    return getattr(config, "workerinput", {}).get("workerid", "main")


@pytest.fixture(scope="session")
def server_url():
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.exit("DATABASE_URL is not set: run the suite with `make test` (it starts a throwaway PostgreSQL)", 2)
    return url


@pytest.fixture(scope="session")
def template_db(server_url, request):
    """The name of a fully migrated database (each xdist worker has its own) that the tests' databases copy."""
    name = f"flowline_tpl_{_worker_name(request.config)}_{uuid.uuid4().hex[:12]}"
    create_database(server_url, name)
    migrations.apply(url_for_database(server_url, name))
    yield name
    drop_database(server_url, name)


@pytest.fixture
def make_database(server_url):
    """Return a factory of fresh databases (``template``: a database name, or None for an empty one); dropped after the test."""
    created = []

    def make(template=None):
        name = f"flowline_t_{uuid.uuid4().hex[:12]}"
        create_database(server_url, name, template)
        created.append(name)
        return url_for_database(server_url, name)

    yield make
    drop_database(server_url, *created)


@pytest.fixture(scope="module")
def module_database_url(server_url, template_db):
    """A fresh, fully migrated database shared by one test module (for its one gunicorn and worker)."""
    name = f"flowline_m_{uuid.uuid4().hex[:12]}"
    create_database(server_url, name, template_db)
    yield url_for_database(server_url, name)
    drop_database(server_url, name)


@pytest.fixture(scope="session")
def databases(server_url, template_db):
    """This process's test databases (tests/support/databases.py: a used one is emptied for the next test)."""
    kept = Databases(server_url, template_db)
    yield kept
    kept.close()


@pytest.fixture
def database_url(server_url, databases):
    """A fresh, fully migrated database for this test: equal to the template, whether new or emptied."""
    name = databases.take(f"flowline_t_{uuid.uuid4().hex[:12]}")
    yield url_for_database(server_url, name)
    databases.give_back(name)


# An upload's text is extracted in a child process, bounded by PDF_EXTRACT_TIMEOUT_S (5 s by default). On a 2-core
# machine running the suite in several processes, load alone can take an ordinary upload past 5 s: the apps and
# servers of the tests get a wider bound, and the tests of the bound (tests/e2e/test_pdf_bounds.py) set their own.
TEST_EXTRACT_TIMEOUT_S = 30


@pytest.fixture
def make_app(database_url):
    """Return a factory of apps on this test's database, with extra config; their pools are closed afterwards."""
    from app import create_app

    apps = []

    def make(**config):
        app = create_app(
            {"TESTING": True, "DATABASE_URL": database_url, "PDF_EXTRACT_TIMEOUT_S": TEST_EXTRACT_TIMEOUT_S, **config}
        )
        app.test_client_class = ContractClient  # every answer checked against the OpenAPI document
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_app(app)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def sql(database_url):
    """A direct autocommit connection to this test's database, with dict rows, to check what was persisted."""
    with psycopg.connect(database_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        yield conn


@pytest.fixture
def workflow(client):
    """Return a function creating a workflow with the given nodes ([(node_type, config)]) through the API; returns its id."""

    def make(nodes=(), name="test workflow"):
        response = client.post("/workflows", json={"name": name})
        assert response.status_code == 200, response.json
        workflow_id = response.json["id"]
        for node_type, config in nodes:
            added = client.post(f"/workflows/{workflow_id}/nodes", json={"node_type": node_type, "config": config})
            assert added.status_code == 200, added.json
        return workflow_id

    return make


@pytest.fixture
def make_server(tmp_path):
    """Return a factory of gunicorn servers (not started) on a database URL, with extra environment; any still
    running are killed afterwards."""
    servers = []

    def make(database_url, **env):
        env = {"PDF_EXTRACT_TIMEOUT_S": TEST_EXTRACT_TIMEOUT_S, **env}
        server = Server(database_url, tmp_path / f"server{len(servers)}", {k: str(v) for k, v in env.items()})
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
            server.process.wait()


@pytest.fixture
def server(make_server, database_url):
    """A started gunicorn serving this test's database."""
    server = make_server(database_url)
    server.start()
    return server


# --- a real browser ---------------------------------------------------------------------------------------------

# Screenshots of what the browser tests saw, one per test, kept for a person to look at (git ignores them).
SCREENSHOTS = ROOT / "tests" / "screenshots"


@pytest.fixture(scope="session")
def playwright():
    """Playwright, driving Debian's Chromium (never a browser build it would download)."""
    if not Path(CHROMIUM).exists():
        reason = "the browser tests need Chromium: apt-get install chromium (or set CHROMIUM to its path)"
        # Skipped on a developer's machine without it; under CI (.ci/run sets CI=true) a missing browser fails.
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="session")
def browser(playwright):
    browser = launch_chromium(playwright)
    yield browser
    browser.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser page (its own context: no cookies or cache shared); a screenshot of it is saved at the end."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    SCREENSHOTS.mkdir(exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
    context.close()


# --- PostgreSQL clusters a test may stop and start --------------------------------------------------------------


@pytest.fixture
def private_cluster():
    """A throwaway PostgreSQL cluster of this test's own (unix socket only), so the test may stop, start or
    restart it: ``(url, pg_ctl)``."""
    with throwaway_cluster("flowline-restart-") as (home, pg_ctl):
        yield cluster_url(home), pg_ctl


@pytest.fixture
def upload(client):
    """Return a function uploading ``data`` as multipart field ``file`` through the API; returns the response."""

    def send(data, filename="doc.pdf", content_type="application/pdf"):
        return client.post(
            "/files", data={"file": (io.BytesIO(data), filename, content_type)}, content_type="multipart/form-data"
        )

    return send


@pytest.fixture
def failing_workflow(client, workflow, upload):
    """Return a function creating a workflow whose extract_text node names a file deleted after the node was
    added, between ``before`` and ``after`` nodes: its runs fail at that node. Returns (workflow_id, file_id)."""

    def make(before=(), after=()):
        file_id = upload(make_pdf("soon gone")).json["file_id"]
        workflow_id = workflow([*before, ("extract_text", {"file_id": file_id}), *after])
        assert client.delete(f"/files/{file_id}").status_code == 204
        return workflow_id, file_id

    return make


@pytest.fixture
def make_worker(tmp_path, database_url):
    """Return a factory of worker processes (not started) on this test's database (or ``database_url=``), with
    extra environment; any still running are killed afterwards."""
    workers = []

    def make(url=None, **env):
        worker = WorkerProcess(
            url or database_url, tmp_path / f"worker{len(workers)}", {k: str(v) for k, v in env.items()}
        )
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
