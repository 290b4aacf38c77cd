"""The deployment files (Dockerfile, .dockerignore, docker-compose.yml, .env.example) agree with the code.

They are read as text and YAML: these tests need neither Docker nor a database (no database fixture is used).
"""

import ast
import json
import os
import re
import runpy
import shlex
from pathlib import Path

import pytest
import yaml

from flowline.core import config
from flowline.core.config import Scope, from_env

ROOT = Path(__file__).resolve().parents[2]
# The code shipped in the image: where the settings Flowline reads can live.
CODE_FILES = [ROOT / "app.py", ROOT / "gunicorn.conf.py", *sorted((ROOT / "flowline").rglob("*.py"))]
SETTING = re.compile(r"^[A-Z][A-Z0-9_]*$")
ENV_LINE = re.compile(r"^(?P<commented>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
# A whole compose value that is one interpolation: ${NAME:-default} (unset or empty) or ${NAME-default} (unset).
INTERPOLATION = re.compile(r"^\$\{(?P<name>[A-Z][A-Z0-9_]*)(?P<op>:?-)(?P<default>.*)\}$")
# Flowline's settings (config.from_env), and those only one side reads, from the table's scope: the API (the worker
# sizes its own pool and reads a run's attempts from the run), or the worker. Every other one is passed to both.
FLOWLINE_SETTINGS = {s.name for s in config.FLOWLINE_SETTINGS if s.scope in (Scope.API, Scope.WORKER, Scope.BOTH)}
API_ONLY = {s.name for s in config.FLOWLINE_SETTINGS if s.scope is Scope.API}
WORKER_ONLY = {s.name for s in config.FLOWLINE_SETTINGS if s.scope is Scope.WORKER}
# What a gunicorn worker's environment also holds: gunicorn's master sets it (config.GUNICORN_MARKER).
GUNICORN_WORKER_ENV = {config.GUNICORN_MARKER: "gunicorn/27.0.1"}
# Settings whose default in the image and in docker-compose.yml deliberately differs from the code's: JSON log lines
# for a collector there, readable text on a terminal.
IMAGE_DEFAULTS = {"LOG_FORMAT": "json"}
# A compose duration's parts, e.g. 1m30s.
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)")


# --- readers ---------------------------------------------------------------------------------------------------


def dockerfile_instructions():
    """Return the Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def last(keyword):
    found = [args for kw, args in dockerfile_instructions() if kw == keyword]
    assert found, f"the Dockerfile has no {keyword}"
    return found[-1]


def copy_sources():
    """Return the build-context paths the Dockerfile COPYs (stages' --from copies excluded)."""
    sources = []
    for keyword, args in dockerfile_instructions():
        if keyword not in ("COPY", "ADD"):
            continue
        assert keyword == "COPY", "use COPY, not ADD, for files of the build context"
        words = json.loads(args) if args.startswith("[") else shlex.split(args)
        flags = [w for w in words if w.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        paths = [w for w in words if not w.startswith("--")]
        assert len(paths) >= 2, f"COPY {args} names no destination"
        sources += paths[:-1]
    return sources


def dockerfile_env():
    env = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            for word in shlex.split(args):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def service(name):
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no {name!r} service"
    return services[name]


def command(svc):
    """Return a service's command as a list of words, in either of compose's two forms."""
    cmd = svc["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else cmd


def duration_s(text):
    """Return a compose duration (``75s``, ``1m30s``) in seconds."""
    parts = DURATION_PART.findall(str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"{text!r} is not a compose duration"
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[u] for n, u in parts)


def depends_on(svc):
    """Return {service: condition} for a service's depends_on, in either of compose's two forms."""
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def environment(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def env_example():
    """Return .env.example's settings as dicts (name, value, commented, comment: the line above), in file order."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    entries = []
    for i, line in enumerate(lines):
        match = ENV_LINE.match(line.strip())
        if match:
            above = lines[i - 1].strip() if i else ""
            entries.append(
                {
                    "name": match["name"],
                    "value": match["value"],
                    "commented": bool(match["commented"]),
                    "comment": "" if ENV_LINE.match(above) else above,
                }
            )
    return entries


def setting_reads(path):
    """Return the names of the settings ``path`` reads as attributes of a Settings object (``settings.bind``)."""
    attributes = {s.attribute: s.name for s in config.FLOWLINE_SETTINGS}
    return {
        attributes[node.attr]
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute) and node.attr in attributes
    }


def read_by_code():
    """Return the settings the shipped code reads: from the environment, or from the Settings object (outside
    config.py, which declares them all)."""
    declaring = {ROOT / "flowline" / "core" / "config.py", ROOT / "flowline" / "core" / "config_docs.py"}
    return set().union(
        *(env_reads(path) | (set() if path in declaring else setting_reads(path)) for path in CODE_FILES)
    )


def env_reads(path):
    """Return the setting names ``path`` reads from the environment, found in its syntax tree.

    A read is an upper-case string passed to ``<environ|env>.get/getenv/setdefault/pop``, to ``os.getenv``, to a
    call that also receives ``env`` or ``os.environ`` (``_int(env, "NAME", ...)``), or a subscript of ``environ``.
    """

    def names_environ(node):
        return (isinstance(node, ast.Name) and node.id in ("env", "environ")) or (
            isinstance(node, ast.Attribute) and node.attr == "environ"
        )

    def names(nodes):
        return {
            n.value
            for n in nodes
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and SETTING.match(n.value)
        }

    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr in ("get", "getenv", "setdefault", "pop")
                and (names_environ(func.value) or func.attr == "getenv")
            ):
                found |= names(node.args[:1])
            elif any(names_environ(arg) for arg in node.args):
                found |= names(node.args)
        elif isinstance(node, ast.Subscript) and names_environ(node.value):
            found |= names([node.slice])
    return found


class RecordingEnv(dict):
    """An environment that remembers which names were looked up."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)

    def setdefault(self, key, default=None):
        self.read.add(key)
        return super().setdefault(key, default)

    def pop(self, key, *default):
        self.read.add(key)
        return super().pop(key, *default)


def effective_settings(env, monkeypatch):
    """Return what a gunicorn-served Flowline ends up with for ``env``: (gunicorn settings, Flask settings, names read).

    gunicorn.conf.py runs first, then config.from_env, as in a worker (whose environment gunicorn's master marks).
    """
    recording = RecordingEnv({**env, **GUNICORN_WORKER_ENV})
    with monkeypatch.context() as patch:
        patch.setattr(os, "environ", recording)
        namespace = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
        flask_settings = from_env(recording)
    gunicorn_settings = {
        k: v for k, v in namespace.items() if not k.startswith("_") and not callable(v) and type(v).__name__ != "module"
    }
    return gunicorn_settings, flask_settings, recording.read


def assert_is_default(name, value, monkeypatch):
    """``name=value`` must behave exactly like leaving ``name`` unset."""
    assert effective_settings({name: value}, monkeypatch)[:2] == effective_settings({}, monkeypatch)[:2], (
        f"{name}={value} is documented as the default but changes the settings: the code's default differs"
    )


# --- Dockerfile --------------------------------------------------------------------------------------------------


def test_dockerfile_builds_on_slim_python_311():
    assert dockerfile_instructions()[0][0] == "FROM"
    assert last("FROM").split()[0] == "python:3.11-slim"


def test_dockerfile_final_user_is_not_root():
    user = last("USER").split(":")[0]
    assert user not in ("root", "0", ""), f"the image runs as {user!r}"


def test_dockerfile_serves_create_app_with_gunicorn_conf():
    cmd = last("CMD")
    assert cmd.startswith("["), "CMD in exec form, so gunicorn is PID 1 and receives SIGTERM"
    cmd = json.loads(cmd)
    assert cmd[0] == "gunicorn"
    assert cmd[cmd.index("-c") + 1] == "gunicorn.conf.py"
    assert cmd[-1] == "app:create_app()"
    assert not [args for kw, args in dockerfile_instructions() if kw == "ENTRYPOINT"], (
        "an ENTRYPOINT would wrap the CMD"
    )


def test_dockerfile_copies_only_paths_that_exist_and_everything_the_app_reads():
    sources = copy_sources()
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert not missing, f"the Dockerfile COPYs paths that are not in the repository: {missing}"
    copied = {s.rstrip("/") for s in sources}
    # app.py imports flowline; flowline loads sql/*.sql at import and migrations/ for /readyz and the migrate service.
    needed = {"requirements.txt", "app.py", "gunicorn.conf.py", "flowline", "sql", "migrations"}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"


def test_dockerignore_keeps_secrets_and_local_state_out_but_not_what_is_copied():
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".git", ".data", "tests"} <= ignored
    assert not {s.rstrip("/") for s in copy_sources()} & ignored, "a COPYed path is excluded from the build context"


def test_dockerfile_installs_runtime_requirements_only_without_pip_cache():
    runs = " ".join(args for kw, args in dockerfile_instructions() if kw == "RUN")
    assert re.search(r"pip install [^&;]*--no-cache-dir[^&;]*-r requirements\.txt", runs)
    assert not [args for kw, args in dockerfile_instructions() if "requirements-dev" in args], (
        "no test tools in the image"
    )


def test_dockerfile_listens_where_it_exposes_and_checks_livez():
    env = dockerfile_env()
    assert env.get("PYTHONUNBUFFERED") == "1", "unbuffered, so logs reach `docker logs` as they are written"
    port = env["BIND"].rpartition(":")[2]
    assert env["BIND"].startswith("0.0.0.0:"), "inside a container, gunicorn must listen beyond loopback"
    assert last("EXPOSE").split("/")[0] == port
    healthcheck = last("HEALTHCHECK")
    assert "urllib" in healthcheck and "/livez" in healthcheck and "curl" not in healthcheck


# --- docker-compose.yml ------------------------------------------------------------------------------------------


def test_postgres_has_a_healthcheck_and_a_named_volume():
    postgres = service("postgres")
    assert postgres["image"].startswith("postgres:")
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    named = set(compose().get("volumes") or {})
    mounts = [v if isinstance(v, str) else v.get("source", "") for v in postgres.get("volumes", [])]
    sources = {m.split(":")[0] for m in mounts}
    assert sources & named, "PostgreSQL's data must live in a named volume, or `docker compose down` loses it"
    assert any(m.split(":")[1].startswith("/var/lib/postgresql/data") for m in mounts if ":" in m)


def test_migrate_applies_migrations_once_postgres_is_healthy():
    migrate = service("migrate")
    assert command(migrate) == ["python", "-m", "flowline.data.migrations", "apply"]
    assert depends_on(migrate).get("postgres") == "service_healthy"
    assert migrate.get("restart", "no") == "no", "a one-shot must not be restarted after it exits"
    assert "build" in migrate


def test_api_starts_after_migrate_completes_and_publishes_8000():
    api = service("api")
    assert depends_on(api).get("migrate") == "service_completed_successfully"
    assert "build" in api
    assert any(str(p).split(":")[-1] == "8000" and str(p).split(":")[-2] == "8000" for p in api["ports"])


def test_worker_executes_queued_runs_once_migrate_completes():
    worker = service("worker")
    assert command(worker) == ["flask", "--app", "app", "worker"]
    assert depends_on(worker).get("migrate") == "service_completed_successfully"
    assert depends_on(worker).get("postgres") == "service_healthy"
    assert "build" in worker and not worker.get("ports"), "the api's image; it serves no HTTP"
    assert worker.get("restart") in ("always", "unless-stopped", "on-failure")


def test_worker_is_given_time_to_drain_before_it_is_killed():
    drain = INTERPOLATION.match(environment(service("worker"))["WORKER_DRAIN_TIMEOUT_S"])["default"]
    grace = duration_s(service("worker").get("stop_grace_period", "10s"))
    assert grace > float(drain), f"stop_grace_period ({grace:g} s) must exceed WORKER_DRAIN_TIMEOUT_S ({drain} s)"


@pytest.mark.parametrize("name", ["migrate", "worker"])
def test_services_serving_no_http_disable_the_images_livez_healthcheck(name):
    assert (service(name).get("healthcheck") or {}).get("disable") is True, f"{name} would be marked unhealthy"


def test_the_pools_go_through_pgbouncer_and_listen_and_migrations_reach_postgres_itself():
    api, worker, migrate = (environment(service(name)) for name in ("api", "worker", "migrate"))
    pooled, direct = api["DATABASE_URL"], api["DATABASE_DIRECT_URL"]
    assert pooled == worker["DATABASE_URL"] and "@pgbouncer:" in pooled
    assert direct == worker["DATABASE_DIRECT_URL"] == migrate["DATABASE_URL"] and "@postgres:" in direct
    assert pooled.replace("@pgbouncer:", "@postgres:") == direct, "one database, two ways"
    bouncer = service("pgbouncer")
    assert environment(bouncer)["DATABASE_URL"] == direct and environment(bouncer)["POOL_MODE"] == "transaction"
    assert depends_on(bouncer).get("postgres") == "service_healthy"
    assert depends_on(service("api")).get("pgbouncer") == depends_on(service("worker")).get("pgbouncer")
    assert len(re.findall(r"^x-[\w-]+: &", (ROOT / "docker-compose.yml").read_text(), re.M)) == 2, "an anchor each"


def test_pgadmin_only_under_the_dev_profile_and_nothing_else_has_a_profile():
    services = compose()["services"]
    assert services["pgadmin"]["image"].startswith("dpage/pgadmin4")
    assert services["pgadmin"]["profiles"] == ["dev"]
    with_profiles = sorted(name for name, svc in services.items() if svc.get("profiles") and name != "pgadmin")
    assert not with_profiles, f"`docker compose up` would skip {with_profiles}"


@pytest.mark.parametrize("service_name", ["api", "worker"])
def test_environment_defaults_are_the_code_defaults(service_name, monkeypatch):
    checked = []
    for name, value in environment(service(service_name)).items():
        match = INTERPOLATION.match(value)
        if not match or "${" in match["default"]:
            continue
        assert match["name"] == name, f"{name} is set from ${{{match['name']}}}"
        if name in IMAGE_DEFAULTS:
            assert match["default"] == IMAGE_DEFAULTS[name] == dockerfile_env().get(name), name
            continue
        assert_is_default(name, match["default"], monkeypatch)
        checked.append(name)
    assert "LOG_LEVEL" in checked


def test_compose_turns_authentication_on_and_makes_the_operator_choose_the_tokens():
    """Off by default in the code (local use), on in compose: ${API_TOKENS:?message} stops `docker compose up`
    with that message until API_TOKENS is set; there is no default token to leave in place."""
    match = re.match(r"^\$\{API_TOKENS:\?(?P<message>.+)\}$", environment(service("api"))["API_TOKENS"])
    assert match, "the api's API_TOKENS must be ${API_TOKENS:?<message>}: required, with no default"
    assert "API_TOKENS" in match["message"]
    assert "API_TOKENS" not in environment(service("worker")), "the worker serves no HTTP"
    assert from_env({}).api_tokens == (), "the code's default stays off, for `make run` and the tests"


@pytest.mark.parametrize("name, not_read", [("api", WORKER_ONLY), ("worker", API_ONLY)])
def test_api_and_worker_are_passed_every_setting_they_read(name, not_read):
    settings = FLOWLINE_SETTINGS
    passed = set(environment(service(name)))
    missing, unread = sorted(settings - not_read - passed), sorted(passed & not_read)
    assert not missing, f"docker-compose.yml does not pass {name} {missing}"
    assert not unread, f"docker-compose.yml passes {name} settings it never reads: {unread}"


# --- .env.example ------------------------------------------------------------------------------------------------


def test_every_setting_in_env_example_is_read_by_the_code():
    interpolated_by_compose = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))
    read = read_by_code() | interpolated_by_compose
    unread = [e["name"] for e in env_example() if e["name"] not in read]
    assert not unread, f".env.example documents settings nothing reads: {unread}"


def test_every_setting_config_and_gunicorn_read_is_in_env_example(monkeypatch):
    documented = {e["name"] for e in env_example()}
    _, _, read_at_runtime = effective_settings({}, monkeypatch)
    read = read_at_runtime | env_reads(ROOT / "flowline" / "core" / "config.py") | env_reads(ROOT / "gunicorn.conf.py")
    assert "DATABASE_URL" in read and "BIND" in read  # the readers work
    undocumented = sorted(read - documented - set(GUNICORN_WORKER_ENV))
    assert not undocumented, f"settings the code reads that .env.example does not document: {undocumented}"


def test_env_example_names_each_setting_once_with_a_comment():
    entries = env_example()
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), "a setting is listed twice"
    uncommented = [e["name"] for e in entries if not e["comment"].startswith("#") or len(e["comment"]) < 5]
    assert not uncommented, f"settings without a comment line above them: {uncommented}"


def test_env_example_shows_defaults_commented_out(monkeypatch):
    read = read_by_code()
    compose_text = (ROOT / "docker-compose.yml").read_text()
    for entry in env_example():
        name, value = entry["name"], entry["value"]
        assert entry["commented"], f"{name} is set in .env.example: copying it to .env would override the default"
        if name == "DATABASE_URL":  # no default: an example to adapt
            assert value.startswith(("postgresql://", "postgres://"))
        elif name in read:
            assert_is_default(name, value, monkeypatch)
        else:
            defaults = set(re.findall(r"\$\{" + name + r":?-([^}]*)\}", compose_text))
            assert defaults == {value}, (
                f"{name}: .env.example says {value!r}, docker-compose.yml defaults to {defaults}"
            )


def test_gunicorn_conf_writes_no_setting_into_the_environment(monkeypatch):
    """Each process reads the environment as given; gunicorn.conf.py fills in nothing for the app to read."""
    env = {"GUNICORN_THREADS": "6", "SYNC_RUN_TIMEOUT_S": "40"}
    with monkeypatch.context() as patch:
        patch.setattr(os, "environ", dict(env))
        namespace = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
        assert os.environ == env
    assert (namespace["threads"], namespace["timeout"]) == (6, 50)
