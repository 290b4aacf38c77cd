"""Failure behaviour against a real PostgreSQL: the database stopped and started under a running gunicorn, the
pool exhausted by requests stuck on a row lock, statement_timeout hit, and request bodies too large, too deep
or too big to validate. Nothing is mocked: slowness comes from row locks the test holds."""

import http.client
import io
import json
import queue
import threading
import time
import uuid

import psycopg
import pytest

from flowline.api.http import MAX_JSON_DEPTH, MAX_JSON_VALUES
from flowline.core.config import settings_of
from flowline.data import db, migrations
from tests.support import make_pdf, wait_for

DOWN_DETAIL = "The database is unavailable or busy; retry shortly."
MISSING = "9b0c4f4e-3c55-4c1e-9f53-0b5a0b0f3a11"
UPPERCASE = {"node_type": "formatter", "config": {}}


def booted_workers(server):
    return server.log.read_text().count("Booting worker with pid")


@pytest.fixture
def row_lock(database_url):
    """Return a function locking a workflow row (FOR UPDATE) from a transaction of the test's own, held until the
    test calls the returned release function (or ends)."""
    conns = []

    def lock(workflow_id):
        conn = psycopg.connect(database_url)
        conns.append(conn)
        assert conn.execute("SELECT id FROM workflows WHERE id = %s FOR UPDATE", (workflow_id,)).fetchone()
        return conn.rollback

    yield lock
    for conn in conns:
        conn.close()


# --- the database stops and comes back under a running gunicorn ------------------------------------------------


def test_database_down_answers_503_fast_and_service_resumes_without_a_restart(private_cluster, make_server):
    url, pg_ctl = private_cluster
    migrations.apply(url)
    server = make_server(url)  # DB_POOL_TIMEOUT_S: the default, 2 s
    server.start()
    status, created, _ = server.request("POST", "/workflows", {"name": "before the outage"})
    assert status == 200
    workflow_id = created["id"]
    workers = booted_workers(server)

    pg_ctl("-m", "fast", "stop")
    stopped = time.monotonic()
    for method, path, body in [
        ("GET", f"/workflows/{workflow_id}", None),
        ("POST", "/workflows", {"name": "during the outage"}),
        ("POST", f"/workflows/{workflow_id}/nodes", {"node_type": "formatter", "config": {}}),
        ("POST", f"/workflows/{workflow_id}/run", {"input_text": "x"}),
        ("POST", f"/workflows/{workflow_id}/runs", {"input_text": "x"}),
        ("GET", f"/workflows/{workflow_id}/runs", None),
        ("GET", "/workflows", None),
    ]:
        started = time.monotonic()
        status, answer, headers = server.request(method, path, body)
        elapsed = time.monotonic() - started
        assert (status, answer, headers["Retry-After"]) == (503, {"detail": DOWN_DETAIL}, "1"), (method, path)
        assert elapsed < 5, f"{method} {path} took {elapsed:.1f} s with a 2 s pool timeout"
    assert server.request("GET", "/livez")[0] == 200
    status, ready, headers = server.request("GET", "/readyz")
    assert (status, ready["checks"], headers["Retry-After"]) == (503, {"database": "unreachable"}, "1")

    # Down for longer than the pool's reconnect window, so the pool gives up its attempts at least once.
    time.sleep(max(0.0, db.RECONNECT_TIMEOUT_S + 1 - (time.monotonic() - stopped)))
    pg_ctl("start")
    back = time.monotonic()
    # Both gunicorn workers (each with its own pool) serve again: several requests in a row all succeed.
    wait_for(
        lambda: all(server.request("GET", f"/workflows/{workflow_id}")[0] == 200 for _ in range(6)),
        timeout=30,
        interval=0.2,
        message="the service to resume",
    )
    recovered_in = time.monotonic() - back
    # The outage outlasted the pool's reconnect window (db.RECONNECT_TIMEOUT_S): with psycopg_pool's default
    # (300 s, waits doubling between attempts) the service came back 15 s after the database here.
    assert recovered_in < 10, f"the service took {recovered_in:.1f} s to resume"
    assert server.request("GET", "/readyz")[0] == 200
    status, node, _ = server.request("POST", f"/workflows/{workflow_id}/nodes", UPPERCASE)
    assert status == 200, node
    status, run, _ = server.request("POST", f"/workflows/{workflow_id}/run", {"input_text": "after"})
    assert (status, run["final_output"]) == (200, "AFTER")
    assert booted_workers(server) == workers, "no gunicorn worker was restarted"
    assert server.process.poll() is None
    assert "Traceback" not in server.log.read_text()


@pytest.mark.serial  # it takes the median latency of the 503s
def test_while_the_database_is_down_requests_fail_fast_and_the_first_after_it_returns_is_served(
    private_cluster, make_server
):
    url, pg_ctl = private_cluster
    migrations.apply(url)
    server = make_server(url)  # DB_POOL_TIMEOUT_S: the default, 2 s
    server.start()
    workflow_id = server.request("POST", "/workflows", {"name": "under load"})[1]["id"]
    answers, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            sent = time.monotonic()
            status, _, headers = server.request("GET", f"/workflows/{workflow_id}")
            answers.append((sent, time.monotonic() - sent, status, headers.get("Retry-After")))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        pg_ctl("-m", "fast", "stop")
        stopped = time.monotonic()
        # The first requests find the pooled connections dead and wait out the pool timeout; later ones know.
        time.sleep(db.FAIL_FAST_S + 2 + 1.5)
        pg_ctl("start")
        back = time.monotonic()
        wait_for(
            lambda: any(sent >= back and status == 200 for sent, _, status, _ in answers),
            timeout=15,
            interval=0.05,
            message="a 200 after the database came back",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    down = [
        (elapsed, status, retry)
        for sent, elapsed, status, retry in answers
        if stopped + 2.5 <= sent and sent + elapsed <= back
    ]
    assert down, "no request was answered while the database was down: each waited out the pool timeout"
    assert {(status, retry) for _, status, retry in down} == {(503, "1")}
    latencies = sorted(elapsed for elapsed, _, _ in down)
    median = latencies[len(latencies) // 2]
    assert median < 0.5, f"the median 503 of {len(down)} took {median:.2f} s with a 2 s pool timeout"
    assert len(down) >= 20, f"only {len(down)} answers while the database was down"
    first_ok = min(sent + elapsed for sent, elapsed, status, _ in answers if sent >= back and status == 200)
    # A request tries to connect at least once per FAIL_FAST_S, and its connection serves it at once.
    assert first_ok - back < db.FAIL_FAST_S + 0.5, (
        f"the first 200 came {first_ok - back:.1f} s after the database was back"
    )
    assert "Traceback" not in server.log.read_text()


# --- the pool exhausted by slow requests ---------------------------------------------------------------------


def test_excess_requests_get_503_at_once_when_the_pool_and_its_queue_are_full(database_url, make_server, sql, row_lock):
    # One process with 6 threads but one connection, and room for one request to wait for it. The pool timeout
    # and statement timeout are long, so nothing below is answered by a timeout: only by the bounded queue.
    server = make_server(
        database_url,
        WEB_CONCURRENCY=1,
        GUNICORN_THREADS=6,
        DB_POOL_MIN_SIZE=1,
        DB_POOL_MAX_SIZE=1,
        DB_POOL_MAX_WAITING=1,
        DB_POOL_TIMEOUT_S=30,
        STATEMENT_TIMEOUT_MS=60000,
    )
    server.start()
    workflow_id = server.request("POST", "/workflows", {"name": "busy"})[1]["id"]
    release = row_lock(workflow_id)

    answers = queue.Queue()

    def add_node(i):
        answers.put(
            server.request(
                "POST", f"/workflows/{workflow_id}/nodes", {"node_type": "formatter", "config": {"rules": ["strip"]}}
            )
        )

    sent = time.monotonic()
    threads = [threading.Thread(target=add_node, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    try:
        # While the lock is held: one request holds the only connection (blocked on the row), one waits for it,
        # and the other four are refused without waiting.
        refused = [answers.get(timeout=15) for _ in range(4)]
        elapsed = time.monotonic() - sent
        # The one connection is the one waiting for the row.
        wait_for(
            lambda: (
                sql.execute("""SELECT count(*) AS n FROM pg_stat_activity
                                        WHERE datname = current_database() AND application_name = 'flowline'
                                          AND wait_event_type = 'Lock'""").fetchone()["n"]
                == 1
            ),
            timeout=10,
            message="a request blocked on the row lock",
        )
        assert answers.empty(), "the held and the waiting request are not answered while the lock is held"
    finally:
        release()
    for status, answer, headers in refused:
        assert status == 503 and headers["Retry-After"] == "1", answer
        assert answer["detail"].startswith("The service is at capacity: every database connection is busy")
    assert elapsed < 10, f"the refusals took {elapsed:.1f} s; they must not wait for a connection"
    for thread in threads:
        thread.join(timeout=20)
    served = [answers.get(timeout=1) for _ in range(2)]
    assert sorted(status for status, _, _ in served) == [200, 200], served
    assert sorted(answer["position"] for _, answer, _ in served) == [0, 1]
    # Once the burst is over the process serves normally: no pile-up left behind.
    assert server.request("GET", f"/workflows/{workflow_id}")[0] == 200


def test_a_request_waiting_longer_than_the_pool_timeout_gets_503(make_app, workflow, row_lock):
    app = make_app(DB_POOL_MIN_SIZE=1, DB_POOL_MAX_SIZE=1, DB_POOL_TIMEOUT_S=0.5, STATEMENT_TIMEOUT_MS=30000)
    client = app.test_client()
    workflow_id = client.post("/workflows", json={"name": "w"}).json["id"]
    release = row_lock(workflow_id)
    holder = threading.Thread(target=lambda: app.test_client().patch(f"/workflows/{workflow_id}", json={"name": "x"}))
    holder.start()
    try:
        wait_for(
            lambda: (
                app.extensions["flowline.pool"].get_stats().get("pool_available", 0) == 0
                and app.extensions["flowline.pool"].get_stats().get("pool_size") == 1
            ),
            message="the connection taken",
        )
        started = time.monotonic()
        response = client.get(f"/workflows/{workflow_id}")
        elapsed = time.monotonic() - started
    finally:
        release()
        holder.join(timeout=10)
    assert (response.status_code, response.json, response.headers["Retry-After"]) == (503, {"detail": DOWN_DETAIL}, "1")
    assert elapsed < 5


# --- statement_timeout ---------------------------------------------------------------------------------------


def backend_pids(sql):
    return [
        r["pid"]
        for r in sql.execute("""SELECT pid FROM pg_stat_activity WHERE datname = current_database()
                                             AND application_name = 'flowline' ORDER BY pid""").fetchall()
    ]


def test_statement_timeout_answers_503_and_the_connection_returns_to_the_pool_healthy(make_app, sql, row_lock):
    client = make_app(DB_POOL_MIN_SIZE=1, DB_POOL_MAX_SIZE=1, STATEMENT_TIMEOUT_MS=300).test_client()
    workflow_id = client.post("/workflows", json={"name": "locked"}).json["id"]
    (pid,) = backend_pids(sql)
    release = row_lock(workflow_id)
    try:
        for method, path, body in [
            ("patch", f"/workflows/{workflow_id}", {"name": "renamed"}),
            ("post", f"/workflows/{workflow_id}/nodes", UPPERCASE),
            ("delete", f"/workflows/{workflow_id}", None),
        ]:
            started = time.monotonic()
            response = getattr(client, method)(path, json=body)
            assert response.status_code == 503, response.json
            assert response.headers["Retry-After"] == "1"
            assert response.json == {
                "detail": "A database statement took longer than the 300 ms statement timeout "
                "(the database is busy, or the data is locked by another request); "
                "nothing was changed; retry shortly."
            }
            assert time.monotonic() - started < 5
    finally:
        release()
    # Nothing was written, and the one pooled connection (the same server process) serves the next requests.
    row = sql.execute("SELECT name, version FROM workflows WHERE id = %s", (workflow_id,)).fetchone()
    assert (row["name"], row["version"]) == ("locked", 1)
    assert client.patch(f"/workflows/{workflow_id}", json={"name": "renamed"}).status_code == 200
    assert client.post(f"/workflows/{workflow_id}/nodes", json=UPPERCASE).status_code == 200
    assert client.get(f"/workflows/{workflow_id}").json["name"] == "renamed"
    assert backend_pids(sql) == [pid]


@pytest.mark.parametrize("session_free", [False, True], ids=["direct", "through a pooler"])
def test_every_transaction_runs_with_the_timeout_in_utc_and_without_jit(make_app, database_url, session_free):
    # Direct connections get these at start-up; through a pooler in transaction mode (a DATABASE_DIRECT_URL that
    # differs from DATABASE_URL) each transaction sets them with its first statement. JIT compiled a list of 25,000
    # runs for 1.6 s where running it took 0.2 (bench/scale_bench.py).
    config = {"DATABASE_DIRECT_URL": database_url + "&connect_timeout=9"} if session_free else {}
    app = make_app(STATEMENT_TIMEOUT_MS=4321, **config)
    with app.app_context(), db.transaction() as conn:
        assert db.one(conn, "get_workflow_version", workflow_id=uuid.uuid4()) is None
        settings = conn.execute(
            "SELECT current_setting('statement_timeout') AS timeout, current_setting('TimeZone') AS zone, "
            "current_setting('jit') AS jit"
        ).fetchone()
    assert settings == {"timeout": "4321ms", "zone": "UTC", "jit": "off"}


# --- request bodies --------------------------------------------------------------------------------------------


def test_the_default_json_limit_takes_the_longest_input_text_in_any_encoding(app, workflow, client):
    assert settings_of(app).max_json_kb == 12 * 1024
    assert app.config["MAX_CONTENT_LENGTH"] == 12 * 1024 * 1024
    workflow_id = workflow([("formatter", {})])
    limit = settings_of(app).max_input_chars
    # An emoji escaped as a surrogate pair (Python's json.dumps default): 12 bytes for one character.
    body = json.dumps({"input_text": "\U0001f600" * limit})
    assert len(body) > 11 * 1024 * 1024
    response = client.post(f"/workflows/{workflow_id}/runs", data=body, content_type="application/json")
    assert response.status_code == 202, response.json
    over = json.dumps({"input_text": "\U0001f600" * (limit + 1)})
    response = client.post(f"/workflows/{workflow_id}/runs", data=over, content_type="application/json")
    assert response.status_code == 422 and "longer than" in response.json["detail"]
    too_big = '{"input_text": "' + "x" * (12 * 1024 * 1024) + '"}'
    response = client.post(f"/workflows/{workflow_id}/runs", data=too_big, content_type="application/json")
    assert response.status_code == 413
    assert response.json == {
        "detail": "The request body is larger than 12288 KiB, the most this route accepts "
        "(MAX_JSON_KB for JSON bodies)."
    }


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/workflows"),
        ("patch", f"/workflows/{MISSING}"),
        ("post", f"/workflows/{MISSING}/nodes"),
        ("put", f"/workflows/{MISSING}/nodes/order"),
        ("post", f"/workflows/{MISSING}/run"),
        ("post", f"/workflows/{MISSING}/runs"),
    ],
)
def test_json_bodies_over_max_json_kb_are_413(make_app, method, path):
    client = make_app(MAX_JSON_KB=64).test_client()
    body = '{"name": "' + "x" * (64 * 1024) + '"}'
    response = getattr(client, method)(path, data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json == {
        "detail": "The request body is larger than 64 KiB, the most this route accepts (MAX_JSON_KB for JSON bodies)."
    }
    assert "X-Request-ID" in response.headers
    just_under = '{"name": "' + "x" * (64 * 1024 - 20) + '"}'
    assert getattr(client, method)(path, data=just_under, content_type="application/json").status_code != 413


def test_a_chunked_body_without_content_length_is_cut_at_max_json_kb(database_url, make_server):
    server = make_server(database_url, MAX_JSON_KB=64)
    server.start()

    def chunks():
        yield b'{"name": "'
        for _ in range(200):
            yield b"x" * 1024
        yield b'"}'

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/workflows",
            body=chunks(),
            encode_chunked=True,
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        )
        response = conn.getresponse()
        answer = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 413, answer
    assert answer["detail"].startswith("The request body is larger than 64 KiB")


@pytest.mark.serial  # its 300 pages must extract within the 5 s bound
def test_uploads_keep_their_own_limit_above_max_json_kb(make_app):
    client = make_app(MAX_JSON_KB=16).test_client()
    pdf = make_pdf(*[f"page {i}: " + "lorem ipsum dolor sit amet " * 6 for i in range(300)])
    assert len(pdf) > 32 * 1024
    response = client.post(
        "/files", data={"file": (io.BytesIO(pdf), "big.pdf", "application/pdf")}, content_type="multipart/form-data"
    )
    assert response.status_code == 201, response.json


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 500, 10_000, 100_000])
def test_deeply_nested_json_is_422_never_a_500(client, workflow, levels):
    workflow_id = workflow()
    nested = "[" * levels + "]" * levels
    response = client.post("/workflows", data=nested, content_type="application/json")
    assert response.status_code == 422 and isinstance(response.json["detail"], str)
    for path, body in [
        ("/workflows", '{"name": ' + nested + "}"),
        (f"/workflows/{workflow_id}/nodes", '{"node_type": "formatter", "config": {"rules": ' + nested + "}}"),
        (f"/workflows/{workflow_id}/run", '{"input_text": ' + nested + "}"),
    ]:
        response = client.post(path, data=body, content_type="application/json")
        assert response.status_code == 422, (path, levels, response.json)
        assert response.json == {"detail": f"The request body is nested more than {MAX_JSON_DEPTH} levels deep."}


def test_nesting_up_to_the_limit_is_judged_by_the_schema(client):
    body = {"name": "x", "deep": json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))}
    response = client.post("/workflows", json=body)
    assert response.status_code == 422 and response.json["errors"] == {"deep": ["Unknown field."]}


@pytest.mark.serial  # it times the refusal against a bound
def test_huge_configs_are_422_quickly_with_a_small_answer(client, workflow):
    workflow_id = workflow([("formatter", {})])
    (node_id,) = [n["id"] for n in client.get(f"/workflows/{workflow_id}").json["nodes"]]
    huge = [
        {"rules": ["uppercase"] * 800_000},  # 800,000 list items: each would be an error entry
        {"rules": [0] * 1_000_000},
        {f"key{i}": i for i in range(500_000)},  # half a million unknown keys
    ]
    for config in huge:
        for method, path in [
            ("post", f"/workflows/{workflow_id}/nodes"),
            ("patch", f"/workflows/{workflow_id}/nodes/{node_id}"),
        ]:
            started = time.monotonic()
            response = getattr(client, method)(path, json={"node_type": "formatter", "config": config})
            elapsed = time.monotonic() - started
            assert response.status_code == 422, response.json
            assert response.json == {"detail": f"The request body holds more than {MAX_JSON_VALUES} JSON values."}
            assert elapsed < 5, f"{elapsed:.1f} s to refuse a huge config"
    # Below the value bound the schema decides, naming the field.
    response = client.post(
        f"/workflows/{workflow_id}/nodes", json={"node_type": "formatter", "config": {"rules": ["uppercase"] * 51}}
    )
    assert response.status_code == 422 and "rules" in response.json["errors"]["config"]
    response = client.post(
        f"/workflows/{workflow_id}/nodes",
        json={"node_type": "generative_ai", "config": {"prompt": "p" * 1_000_000, "model": "m"}},
    )
    assert response.status_code == 422 and "prompt" in response.json["errors"]["config"]
    assert len(client.get(f"/workflows/{workflow_id}").json["nodes"]) == 1


def test_a_reorder_of_the_most_nodes_a_body_may_name_is_not_refused_for_its_size(client, workflow):
    workflow_id = workflow()
    ids = [MISSING] * 10_000
    response = client.put(f"/workflows/{workflow_id}/nodes/order", json={"node_ids": ids})
    assert response.status_code == 422
    assert "JSON values" not in response.json["detail"]


@pytest.mark.parametrize(
    "body", ['{"name": ', "[1, 2", '{"name": "x"} trailing', '{"name": 1' + "0" * 5000 + "}", b'{"name": "\xff"}']
)
def test_unparsable_json_is_400(client, body):
    response = client.post("/workflows", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json["detail"].startswith("The request body is not valid JSON")


def test_data_the_database_cannot_take_is_422_not_a_503(make_app):
    """PostgreSQL's program limits (54xxx, here its stack depth parsing a deep JSON document) come from the
    request's data: retrying cannot help, so no 503. The body limits above keep Flowline's own routes from
    reaching it; a route of the test's own sends such a statement."""
    from flowline.data import db as flowline_db

    app = make_app()

    @app.post("/test-only/deep-json")
    def deep_json():
        with flowline_db.connection() as conn:
            conn.execute("SELECT (repeat('[', 100000) || repeat(']', 100000))::jsonb")
        return {}

    client = app.test_client()
    response = client.post("/test-only/deep-json")
    assert response.status_code == 422
    assert response.json == {
        "detail": "The request's data is too large or too deeply nested for the database to store."
    }
    assert client.get("/readyz").status_code == 200, "the connection went back to the pool usable"
