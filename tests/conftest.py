"""Fixtures: a real PostgreSQL (DATABASE_URL, set by scripts/with_pg.sh under `make test`), a migrated template
database built once per session, and a fresh database cloned from it for every test that needs one."""

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from flowline import migrations

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def url_for_database(url, dbname):
    """Return the URL ``url`` pointing at database ``dbname`` on the same server (a URL, as DATABASE_URL is)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def server_url():
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.exit("DATABASE_URL is not set: run the suite with `make test` (it starts a throwaway PostgreSQL)", 2)
    return url


def _admin(server_url):
    return psycopg.connect(server_url, autocommit=True)


@pytest.fixture(scope="session")
def template_db(server_url):
    name = f"flowline_tpl_{uuid.uuid4().hex[:12]}"
    with _admin(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrations.apply(url_for_database(server_url, name))
    yield name
    with _admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_database(server_url):
    """Return a factory of fresh databases (``template``: a database name, or None for an empty one); dropped after the test."""
    created = []

    def make(template=None):
        name = f"flowline_t_{uuid.uuid4().hex[:12]}"
        with _admin(server_url) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        created.append(name)
        return url_for_database(server_url, name)

    yield make
    with _admin(server_url) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(make_database, template_db):
    """A fresh, fully migrated database for this test."""
    return make_database(template_db)


@pytest.fixture
def make_app(database_url):
    """Return a factory of apps on this test's database, with extra config; their pools are closed afterwards."""
    from app import create_app

    apps = []

    def make(**config):
        app = create_app({"TESTING": True, "DATABASE_URL": database_url, **config})
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["flowline.pool"].close()
        app.extensions["flowline.provider"].close()


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


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One gunicorn serving Flowline exactly as `make run` does (`gunicorn -c gunicorn.conf.py 'app:create_app()'`)."""

    def __init__(self, database_url, tmp_path, env=None):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DATABASE_URL": database_url, "WEB_CONCURRENCY": "2", "ACCESS_LOG": "", **(env or {})}
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.log = tmp_path / "gunicorn.log"
        self.process = None

    def start(self, ready=("/readyz", 200)):
        """Start gunicorn and wait until ``ready`` (path, status) answers."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{self.port}",
                                             "app:create_app()"], cwd=ROOT, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"gunicorn exited early:\n{self.log.read_text()}"
            try:
                if self.request("GET", ready[0])[0] == ready[1]:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gunicorn did not become ready:\n{self.log.read_text()}")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0, self.log.read_text()

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read()), response.headers
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read()), error.headers


@pytest.fixture
def make_server(tmp_path):
    """Return a factory of gunicorn servers (not started) on a database URL, with extra environment; any still
    running are killed afterwards."""
    servers = []

    def make(database_url, **env):
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

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Screenshots of what the browser tests saw, one per test, kept for a person to look at (git ignores them).
SCREENSHOTS = ROOT / "tests" / "screenshots"


@pytest.fixture(scope="session")
def playwright():
    """Playwright, driving Debian's Chromium (never a browser build it would download)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("the browser tests need Chromium: apt-get install chromium (or set CHROMIUM to its path)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as running:
        yield running


def launch_chromium(playwright, *args):
    """Return a headless Chromium started with ``args`` besides the ones every test needs."""
    # --no-sandbox: CI runs the suite as root; the others keep Chromium off the network it cannot reach.
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", *args])


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

PGBIN = os.environ.get("PGBIN") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


@contextmanager
def throwaway_cluster(prefix="flowline-cluster-", options="", configure=None):
    """Run a PostgreSQL cluster of the caller's own in a temporary folder (trust auth on its unix socket there,
    port 5432 unless ``options`` says otherwise); yield ``(home, pg_ctl)``.

    ``configure(data_dir)`` runs after initdb and before the first start (to add certificates, edit pg_hba.conf);
    the files it writes are handed to the server's user. ``pg_ctl(*args)`` runs pg_ctl on the cluster (``"stop"``,
    ``"-m", "fast", "restart"``...), passing the server ``options`` again on a start or restart.
    """
    if PGBIN is None or not Path(PGBIN, "pg_ctl").exists():
        pytest.fail("PostgreSQL server binaries are needed (Debian: apt-get install postgresql)")
    home = Path(tempfile.mkdtemp(prefix=prefix))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(home, "postgres")
    data = home / "data"
    options = f"-k {home} -c listen_addresses='' -p 5432 -c fsync=off {options}"

    def pg_ctl(*args):
        if args and args[-1] in ("start", "restart"):
            args = ("-o", options, *args)
        done = subprocess.run([*as_postgres, f"{PGBIN}/pg_ctl", "-D", data, "-l", home / "server.log", "-w", *args],
                              capture_output=True, text=True)
        if done.returncode:
            log = (home / "server.log").read_text() if (home / "server.log").exists() else ""
            raise AssertionError(f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}\n{log[-3000:]}")

    try:
        subprocess.run([*as_postgres, f"{PGBIN}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync",
                        "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
        if configure is not None:
            configure(data)
            if as_postgres:
                subprocess.run(["chown", "-R", "postgres:", data], check=True)
        pg_ctl("start")
        yield home, pg_ctl
    finally:
        subprocess.run([*as_postgres, f"{PGBIN}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def private_cluster():
    """A throwaway PostgreSQL cluster of this test's own (unix socket only), so the test may stop, start or
    restart it: ``(url, pg_ctl)``."""
    with throwaway_cluster("flowline-restart-") as (home, pg_ctl):
        yield f"postgresql://postgres@/postgres?host={home}&port=5432", pg_ctl


def make_pdf(*pages):
    """Return the bytes of a PDF with one line of ``pages[i]`` on page i, in a CID font that draws Japanese and
    accented Latin alike (reportlab's built-in HeiseiKakuGo-W5: no font file needed)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("HeiseiKakuGo-W5"))
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    for text in pages:
        pdf.setFont("HeiseiKakuGo-W5", 12)
        pdf.drawString(72, 720, text)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


@pytest.fixture
def upload(client):
    """Return a function uploading ``data`` as multipart field ``file`` through the API; returns the response."""

    def send(data, filename="doc.pdf", content_type="application/pdf"):
        return client.post("/files", data={"file": (io.BytesIO(data), filename, content_type)},
                           content_type="multipart/form-data")

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


class WorkerProcess:
    """One `python -m flowline.worker` process on a database, logging to a file the test can read."""

    def __init__(self, database_url, tmp_path, env):
        self.env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "INFO", **env}
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.log = tmp_path / "worker.log"
        self.process = None

    @property
    def pid(self):
        return self.process.pid

    def start(self, concurrency=1):
        """Start the worker and wait until it listens for work."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "flowline.worker", "--concurrency", str(concurrency)],
                                            cwd=ROOT, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while f"worker {socket.gethostname()}:{self.pid}: " not in self.log.read_text():
            assert self.process.poll() is None, f"the worker exited early:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"the worker did not start:\n{self.log.read_text()}"
            time.sleep(0.05)
        return self

    def signal(self, signum):
        self.process.send_signal(signum)

    def wait(self, timeout=30):
        return self.process.wait(timeout=timeout)


@pytest.fixture
def make_worker(tmp_path, database_url):
    """Return a factory of worker processes (not started) on this test's database (or ``database_url=``), with
    extra environment; any still running are killed afterwards."""
    workers = []

    def make(url=None, **env):
        worker = WorkerProcess(url or database_url, tmp_path / f"worker{len(workers)}", {k: str(v) for k, v in env.items()})
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


def wait_for(predicate, timeout=30, interval=0.05, message="condition"):
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)
