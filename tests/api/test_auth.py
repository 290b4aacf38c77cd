"""Bearer-token authentication (API_TOKENS): every route but the probes needs a valid token, compared in constant
time; 401 with a challenge otherwise; CORS preflights still work; tokens are never logged; off when unset."""

import logging
import re
import uuid

import httpx
import pytest

from flowline.api import auth
from flowline.core import config
from tests.support import api_rules

TOKEN_A = "tok-A-" + "a" * 32
TOKEN_B = "tok-B-" + "b" * 32
WRONG = "tok-X-" + "x" * 32
UNKNOWN_ID = str(uuid.UUID(int=1))


def _routes(app):
    """Return (method, path) for every route and method of ``app``, with an unknown id for each path parameter."""
    for rule in api_rules(app):
        path = re.sub(r"<(?:[^:<>]+:)?[^<>]+>", UNKNOWN_ID, rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, path, rule.rule


def _is_public(rule, metrics_public=False):
    return rule in auth.PUBLIC_PATHS or (metrics_public and rule == auth.METRICS_PATH)


@pytest.fixture
def secured(make_app):
    """An app requiring TOKEN_A or TOKEN_B (as API_TOKENS would set them), with a /metrics route for the rule."""

    def make(**config_overrides):
        app = make_app(API_TOKENS=[TOKEN_A, TOKEN_B], **config_overrides)
        if auth.METRICS_PATH not in {rule.rule for rule in app.url_map.iter_rules()}:
            # The exemption is by path: a stand-in for the metrics route until the app has its own.
            app.add_url_rule(auth.METRICS_PATH, "test_metrics", lambda: "flowline_up 1\n")
        return app

    return make


def test_auth_is_off_by_default(client):
    assert config.from_env({}).api_tokens == ()
    assert client.get("/workflows").status_code == 200
    assert client.post("/workflows", json={"name": "no token needed"}).status_code == 200


def test_every_route_but_the_probes_requires_a_token(secured):
    app = secured()
    client = app.test_client()
    checked = 0
    for method, path, rule in _routes(app):
        response = client.open(path, method=method, json={} if method in ("POST", "PUT", "PATCH") else None)
        if _is_public(rule):
            assert response.status_code != 401, (method, path)
            continue
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="flowline"'
        assert response.json == {"detail": "Authentication required: send 'Authorization: Bearer <token>'."}
        assert response.headers["X-Request-ID"]
        checked += 1
    assert checked >= 15


def test_a_wrong_token_is_refused_as_invalid(secured):
    client = secured().test_client()
    for header in (
        f"Bearer {WRONG}",
        f"Bearer {TOKEN_A}x",
        f"Bearer {TOKEN_A[:-1]}",
        "Bearer a,b",
        f"Bearer {TOKEN_A},{TOKEN_B}",
        "Bearer \u00e9\u00e9",
    ):
        response = client.get("/workflows", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="flowline", error="invalid_token"'
        assert response.json == {"detail": "The bearer token is not valid."}


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", f"Basic {TOKEN_A}", TOKEN_A, f"Token {TOKEN_A}"])
def test_no_bearer_token_is_a_plain_challenge(secured, header):
    client = secured().test_client()
    response = client.get("/workflows", headers={} if header is None else {"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="flowline"'


def test_every_configured_token_is_accepted_on_every_route(secured):
    app = secured()
    client = app.test_client()
    for n, (method, path, _rule) in enumerate(_routes(app)):
        token = (TOKEN_A, TOKEN_B)[n % 2]
        response = client.open(
            path,
            method=method,
            headers={"Authorization": f"Bearer {token}"},
            json={} if method in ("POST", "PUT", "PATCH") else None,
        )
        assert response.status_code not in (401, 500), (method, path, response.status_code)
    # The scheme is case-insensitive (RFC 7235); the token itself is not.
    assert client.get("/workflows", headers={"Authorization": f"bearer {TOKEN_B}"}).status_code == 200
    assert client.get("/workflows", headers={"Authorization": f"BEARER  {TOKEN_A} "}).status_code == 200
    assert client.get("/workflows", headers={"Authorization": f"Bearer {TOKEN_A.upper()}"}).status_code == 401
    created = client.post("/workflows", json={"name": "authorised"}, headers={"Authorization": f"Bearer {TOKEN_A}"})
    assert created.status_code == 200 and created.json["name"] == "authorised"


def test_an_unknown_path_needs_a_token_before_it_is_a_404(secured):
    client = secured().test_client()
    assert client.get("/nothing-here").status_code == 401
    assert client.get("/livez/").status_code == 401  # only the probes' own routes are public
    assert client.get("/nothing-here", headers={"Authorization": f"Bearer {TOKEN_A}"}).status_code == 404


def test_probes_are_public_and_metrics_only_with_metrics_public(secured):
    client = secured().test_client()
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get(auth.METRICS_PATH).status_code == 401
    assert client.get(auth.METRICS_PATH, headers={"Authorization": f"Bearer {TOKEN_B}"}).status_code == 200

    public_metrics = secured(METRICS_PUBLIC=True).test_client()
    assert public_metrics.get(auth.METRICS_PATH).status_code == 200
    assert public_metrics.get("/workflows").status_code == 401


def test_cors_preflight_needs_no_token_and_a_refusal_carries_cors_headers(secured):
    client = secured(CORS_ORIGINS=["https://app.example"]).test_client()
    preflight = client.options(
        "/workflows",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    refused = client.get("/workflows", headers={"Origin": "https://app.example"})
    assert refused.status_code == 401
    # So the browser lets the front end read the 401 and ask its user to sign in.
    assert refused.headers["Access-Control-Allow-Origin"] == "https://app.example"


def test_each_token_is_compared_with_every_configured_one(monkeypatch):
    """No early exit: a match on the first token costs the same comparisons as a match on the last, or none."""
    digests = tuple(auth.token_digest(t) for t in (TOKEN_A, TOKEN_B, WRONG + "z"))
    calls = []
    compare = auth.hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for token, expected in ((TOKEN_A, True), (WRONG + "z", True), (WRONG, False), ("x", False), ("y" * 5000, False)):
        calls.clear()
        assert auth.token_matches(token, digests) is expected
        # Every comparison is between two 32-byte digests: the time does not depend on the tokens' lengths either.
        assert calls == [(32, 32)] * 3, token


def test_tokens_are_never_logged(secured, caplog):
    caplog.set_level(logging.DEBUG)
    client = secured().test_client()
    client.get("/workflows", headers={"Authorization": f"Bearer {WRONG}"})
    client.get("/workflows", headers={"Authorization": f"Bearer {TOKEN_A}"})
    client.get("/workflows")
    assert "unauthenticated request refused" in caplog.text
    for token in (TOKEN_A, TOKEN_B, WRONG):
        assert token not in caplog.text


@pytest.mark.parametrize(
    "value, message",
    [
        ("s3cret-short", "token 1 is shorter than 16 characters"),
        (f"{TOKEN_A}, s3cret with a space in it", "token 2 contains whitespace"),
        (f"{TOKEN_A},{TOKEN_B}\u00e9", "token 2 contains whitespace, control or non-ASCII"),
    ],
)
def test_unusable_tokens_are_refused_without_showing_them(value, message):
    with pytest.raises(config.ConfigError, match=message) as raised:
        config.from_env({"API_TOKENS": value})
    assert TOKEN_A not in str(raised.value) and TOKEN_B not in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_api_tokens_and_metrics_public_settings():
    settings = config.from_env({"API_TOKENS": f" {TOKEN_A} ,, {TOKEN_B},", "METRICS_PUBLIC": "1"})
    assert settings.api_tokens == (TOKEN_A, TOKEN_B) and settings.metrics_public is True
    assert config.from_env({"METRICS_PUBLIC": "0"}).metrics_public is False
    with pytest.raises(config.ConfigError, match="METRICS_PUBLIC must be 1 or 0"):
        config.from_env({"METRICS_PUBLIC": "maybe"})


def test_under_gunicorn_tokens_guard_the_api_and_stay_out_of_the_logs(make_server, database_url):
    server = make_server(database_url)
    server.env.update({"API_TOKENS": f"{TOKEN_A},{TOKEN_B}", "ACCESS_LOG": "-", "LOG_LEVEL": "DEBUG"})
    server.start()  # /readyz answers without a token
    with httpx.Client(base_url=server.base, timeout=10) as http:
        assert http.get("/livez").status_code == 200
        refused = http.get("/workflows", headers={"Authorization": f"Bearer {WRONG}"})
        assert refused.status_code == 401 and "invalid_token" in refused.headers["WWW-Authenticate"]
        assert http.get("/openapi.json").status_code == 401
        headers = {"Authorization": f"Bearer {TOKEN_B}"}
        created = http.post("/workflows", json={"name": "behind a token"}, headers=headers)
        assert created.status_code == 200
        assert http.get(f"/workflows/{created.json()['id']}", headers=headers).json()["name"] == "behind a token"
    server.stop()
    log = server.log.read_text()
    assert "GET /workflows" in log, "the access log is on, so the test would see a token in it"
    for token in (TOKEN_A, TOKEN_B, WRONG):
        assert token not in log
