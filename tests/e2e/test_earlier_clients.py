"""The earlier service's browser front end on localhost:3000 passes CORS (docs/CONTRACT.md route 3), against a real
gunicorn (its clients' node configs and `Prefer: handling=strict`: tests/api/test_earlier_clients.py)."""

import http.client
import uuid

import pytest

FRONT_END = "http://localhost:3000"
TOKEN = "t0ken-for-the-earlier-clients-tests"


def _raw(server, method, path, headers=(), body=None):
    """Send one request; return (status, headers as a case-insensitive message, body bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def _preflight(server, path, origin, method="POST", request_headers="content-type, prefer, if-match"):
    return _raw(
        server,
        "OPTIONS",
        path,
        {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": request_headers},
    )


CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
    "Access-Control-Allow-Credentials",
)


def _no_cors(headers):
    return not any(headers.get(name) for name in CORS_HEADERS)


@pytest.mark.parametrize("origin", [FRONT_END, "http://127.0.0.1:3000"])
def test_the_earlier_front_end_passes_cors_out_of_the_box(make_server, database_url, origin):
    server = make_server(database_url)  # CORS_ORIGINS unset
    server.start()
    status, headers, _ = _preflight(
        server,
        "/workflows",
        origin,
        request_headers="content-type, authorization, if-match, idempotency-key, prefer, x-request-id",
    )
    assert status == 200 and headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"content-type", "authorization", "if-match", "idempotency-key", "prefer", "x-request-id"}
    assert headers.get("Access-Control-Allow-Credentials") is None

    status, headers, body = _raw(
        server,
        "POST",
        "/workflows",
        {"Origin": origin, "Content-Type": "application/json"},
        b'{"name": "from the browser"}',
    )
    assert status == 200 and headers["Access-Control-Allow-Origin"] == origin
    exposed = {h.strip() for h in headers["Access-Control-Expose-Headers"].split(",")}
    assert {"ETag", "Location", "X-Request-ID", "Preference-Applied"} <= exposed
    assert headers.get("Access-Control-Allow-Credentials") is None and b"from the browser" in body

    # The node the front end adds, through a preflighted PATCH-less POST with Prefer allowed.
    workflow_id = server.request("POST", "/workflows", {"name": "w"})[1]["id"]
    status, headers, _ = _raw(
        server,
        "POST",
        f"/workflows/{workflow_id}/nodes",
        {"Origin": origin, "Content-Type": "application/json"},
        b'{"node_type": "formatter", "config": {"prompt": "hi"}}',
    )
    assert status == 200 and headers["Access-Control-Allow-Origin"] == origin


def test_an_origin_not_allowed_gets_no_cors_headers(make_server, database_url):
    server = make_server(database_url)
    server.start()
    status, headers, _ = _preflight(server, "/workflows", "https://evil.example")
    assert _no_cors(headers)
    status, headers, _ = _raw(server, "GET", "/workflows", {"Origin": "https://evil.example"})
    assert status == 200 and _no_cors(headers)
    # A same-origin or non-browser request (no Origin) is no CORS request either.
    assert _no_cors(_raw(server, "GET", "/workflows")[1])


def test_cors_origins_none_turns_cors_off_and_a_list_replaces_the_default(make_server, database_url):
    off = make_server(database_url, CORS_ORIGINS="none")
    off.start()
    assert _no_cors(_preflight(off, "/workflows", FRONT_END)[1])
    assert _no_cors(_raw(off, "GET", "/workflows", {"Origin": FRONT_END})[1])

    custom = make_server(database_url, CORS_ORIGINS="https://app.example")
    custom.start()
    assert (
        _preflight(custom, "/workflows", "https://app.example")[1]["Access-Control-Allow-Origin"]
        == "https://app.example"
    )
    assert _no_cors(_preflight(custom, "/workflows", FRONT_END)[1])


def test_with_api_tokens_preflights_pass_and_nothing_else_maps_the_api_anonymously(make_server, database_url):
    server = make_server(database_url, API_TOKENS=TOKEN)
    server.start()
    unknown = f"/workflows/{uuid.uuid4()}/no-such-route"
    # A real preflight from an allowed origin passes without a token, and answers alike for any path.
    answers = [
        _preflight(server, path, FRONT_END, request_headers="authorization, content-type")
        for path in ("/workflows", unknown)
    ]
    for status, headers, body in answers:
        assert status == 200 and headers["Access-Control-Allow-Origin"] == FRONT_END and body == b""
        assert headers.get("Allow") is None
    # The actual request then needs the token; its 401 carries CORS headers so the script can read it.
    status, headers, _ = _raw(server, "GET", "/workflows", {"Origin": FRONT_END})
    assert status == 401 and headers["Access-Control-Allow-Origin"] == FRONT_END
    assert _raw(server, "GET", "/workflows", {"Origin": FRONT_END, "Authorization": f"Bearer {TOKEN}"})[0] == 200

    # Any other OPTIONS needs the token like a GET: a real path and an unknown one answer alike.
    for headers in (
        {},
        {"Origin": FRONT_END},
        {"Access-Control-Request-Method": "POST"},
        {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    ):
        statuses = {path: _raw(server, "OPTIONS", path, headers) for path in ("/workflows", unknown)}
        assert {s for s, _, _ in statuses.values()} == {401}, headers
        assert all(h.get("Allow") is None for _, h, _ in statuses.values())
        assert statuses["/workflows"][2] == statuses[unknown][2]
    with_token = _raw(server, "OPTIONS", "/workflows", {"Authorization": f"Bearer {TOKEN}"})
    assert with_token[0] == 200 and "POST" in with_token[1]["Allow"]


def test_cors_never_covers_the_console(make_server, database_url):
    server = make_server(database_url)
    server.start()
    for path in ("/console/", "/console", "/console/workflows"):
        assert _no_cors(_preflight(server, path, FRONT_END)[1]), path
        assert _no_cors(_raw(server, "GET", path, {"Origin": FRONT_END})[1]), path
