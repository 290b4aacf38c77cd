"""The console through Flask's test client, on a real PostgreSQL: what it needs (SECRET_KEY), who may use it
(sessions, CSRF), what every page sends (CSP), and its forms answering what the JSON API would. The browser flows
are in tests/e2e/test_console_browser.py."""

import io
import re
import time

import pytest

from flowline.console import guard
from flowline.core import config
from tests.support import make_pdf

SECRET = "s" * 40
TOKEN = "console-token-" + "t" * 24
XSS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']


@pytest.fixture
def console(make_app):
    """A test client of an app with SECRET_KEY set and CSRF checked, as served."""
    return make_app(SECRET_KEY=SECRET).test_client()


def _csrf(client, path="/console/"):
    """Return the CSRF token of the form on ``path`` (as the page the browser got carries it)."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]


def _post(client, path, data, page="/console/"):
    return client.post(path, data={"csrf_token": _csrf(client, page), **data})


def test_without_secret_key_the_console_is_503_naming_the_setting_and_the_api_serves(make_app):
    client = make_app(SECRET_KEY=None).test_client()
    answer = client.get("/console/")
    assert answer.status_code == 503
    assert "SECRET_KEY" in answer.text
    assert client.get("/workflows").status_code == 200


def test_every_console_page_sends_a_strict_content_security_policy(console):
    for path in ("/console/", "/console/static/console.css", "/console/runs/00000000-0000-4000-8000-000000000000"):
        answer = console.get(path)
        assert answer.headers["Content-Security-Policy"] == (
            "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
        ), path
    page = console.get("/console/").text
    assert "<script>" not in page and " style=" not in page and "<style" not in page


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(console):
    refused = console.post("/console/workflows", data={"name": "forged"})
    assert refused.status_code == 400
    assert "Reload the page" in refused.text
    forged = console.post("/console/workflows", data={"name": "forged", "csrf_token": "not-a-token"})
    assert forged.status_code == 400
    assert console.get("/workflows").json["workflows"] == []


def test_a_workflow_is_created_renamed_and_deleted_after_a_confirmation(console):
    made = _post(console, "/console/workflows", {"name": "Invoices"})
    assert made.status_code == 302
    page_path = made.headers["Location"]
    workflow_id = page_path.rsplit("/", 1)[1]
    page = console.get(page_path).text
    assert "Invoices" in page
    assert f'href="/console/runs?workflow_id={workflow_id}">Runs of this workflow' in page
    assert (
        _post(
            console, f"/console/workflows/{workflow_id}/rename", {"name": "Bills", "version": "1"}, page_path
        ).status_code
        == 302
    )
    assert console.get(f"/workflows/{workflow_id}").json["name"] == "Bills"
    confirm = console.get(f"/console/workflows/{workflow_id}/delete")
    assert "cannot be undone" in confirm.text
    assert console.get(f"/workflows/{workflow_id}").status_code == 200  # asking deletes nothing
    version = console.get(f"/workflows/{workflow_id}").json["version"]
    deleted = _post(console, f"/console/workflows/{workflow_id}/delete", {"version": str(version)}, page_path)
    assert deleted.status_code == 302
    assert console.get(f"/workflows/{workflow_id}").status_code == 404


def test_a_blank_name_is_shown_beside_its_field_and_nothing_is_created(console):
    answer = _post(console, "/console/workflows", {"name": "   "})
    assert answer.status_code == 422
    assert 'id="new-name-errors"' in answer.text
    assert console.get("/workflows").json["workflows"] == []


def test_node_form_errors_are_the_apis_shown_beside_their_fields(console, workflow):
    workflow_id = workflow()
    path = f"/console/workflows/{workflow_id}/nodes/new?type=generative_ai"
    answer = _post(
        console,
        f"/console/workflows/{workflow_id}/nodes",
        {"node_type": "generative_ai", "version": "1", "prompt": "Hi {text}", "temperature": "7", "max_tokens": "x"},
        path,
    )
    assert answer.status_code == 422
    api = console.post(
        f"/workflows/{workflow_id}/nodes",
        json={"node_type": "generative_ai", "config": {"prompt": "Hi {text}", "temperature": 7}},
    ).json["errors"]["config"]["temperature"][0]
    assert re.search(r'id="f-temperature-errors"><li>' + re.escape(api), answer.text)
    assert 'id="f-max_tokens-errors"' in answer.text
    assert 'value="Hi {text}"' not in answer.text  # a textarea keeps its text as content
    assert "Hi {text}</textarea>" in answer.text
    assert console.get(f"/workflows/{workflow_id}").json["nodes"] == []


def test_each_node_type_is_added_through_its_form_with_empty_fields_taking_the_defaults(console, workflow, upload):
    file_id = upload(make_pdf("page one")).json["file_id"]
    workflow_id = workflow()
    base = f"/console/workflows/{workflow_id}"
    forms = [
        ("formatter", {"rules": ["strip", "", "lowercase"]}),
        ("generative_ai", {"prompt": "Say {text}", "model": "", "temperature": "0.5", "max_tokens": "", "top_p": ""}),
        ("extract_text", {"file_id": file_id}),
    ]
    for version, (node_type, fields) in enumerate(forms, 1):
        answer = _post(
            console,
            f"{base}/nodes",
            {"node_type": node_type, "version": str(version), **fields},
            f"{base}/nodes/new?type={node_type}",
        )
        assert answer.status_code == 302, answer.text
    stored = [(n["node_type"], n["config"]) for n in console.get(f"/workflows/{workflow_id}").json["nodes"]]
    assert stored == [
        ("formatter", {"rules": ["strip", "lowercase"]}),
        ("generative_ai", {"prompt": "Say {text}", "temperature": 0.5}),
        ("extract_text", {"file_id": file_id}),
    ]


def test_editing_keeps_the_keys_an_earlier_client_stored(console, workflow):
    workflow_id = workflow([("formatter", {"prompt": "kept", "rules": ["uppercase"]})])
    node = console.get(f"/workflows/{workflow_id}").json["nodes"][0]
    edit = f"/console/workflows/{workflow_id}/nodes/{node['id']}/edit"
    assert "not used by formatter nodes: prompt" in console.get(edit).text
    assert _post(console, edit, {"version": str(node["version"]), "rules": ["lowercase"]}, edit).status_code == 302
    assert console.get(f"/workflows/{workflow_id}").json["nodes"][0]["config"] == {
        "prompt": "kept",
        "rules": ["lowercase"],
    }


def test_a_stale_edit_says_so_offers_a_reload_and_overwrites_nothing(console, workflow):
    workflow_id = workflow([("formatter", {"rules": ["uppercase"]})])
    node = console.get(f"/workflows/{workflow_id}").json["nodes"][0]
    edit = f"/console/workflows/{workflow_id}/nodes/{node['id']}/edit"
    token = _csrf(console, edit)  # the edit page is open in one tab...
    console.patch(
        f"/workflows/{workflow_id}/nodes/{node['id']}", json={"config": {"rules": ["strip"]}}
    )  # ...another saves
    stale = console.post(edit, data={"csrf_token": token, "version": str(node["version"]), "rules": ["lowercase"]})
    assert stale.status_code == 409
    assert "changed in another tab" in stale.text
    assert f'href="{edit}"' in stale.text  # the reload link
    assert console.get(f"/workflows/{workflow_id}").json["nodes"][0]["config"] == {"rules": ["strip"]}


def test_moving_a_node_reorders_and_a_stale_move_is_refused(console, workflow):
    workflow_id = workflow([("formatter", {"rules": ["uppercase"]}), ("formatter", {"rules": ["strip"]})])
    body = console.get(f"/workflows/{workflow_id}").json
    second = body["nodes"][1]["id"]
    page = f"/console/workflows/{workflow_id}"
    moved = _post(console, f"{page}/nodes/{second}/move", {"direction": "up", "version": str(body["version"])}, page)
    assert moved.status_code == 302
    assert next(n["id"] for n in console.get(f"/workflows/{workflow_id}").json["nodes"]) == second
    stale = _post(console, f"{page}/nodes/{second}/move", {"direction": "down", "version": str(body["version"])}, page)
    assert stale.status_code == 409
    assert next(n["id"] for n in console.get(f"/workflows/{workflow_id}").json["nodes"]) == second


def test_run_now_shows_the_output_and_a_failure_shows_its_error(console, workflow):
    workflow_id = workflow([("formatter", {"rules": ["uppercase"]})])
    page = f"/console/workflows/{workflow_id}"
    ran = _post(console, f"{page}/try", {"input_text": "hello", "action": "now"}, page)
    assert ran.status_code == 200
    assert re.search(r'id="try-output">HELLO</pre>', ran.text)


def test_run_now_of_a_failing_workflow_shows_its_error(console, workflow, upload):
    file_id = upload(make_pdf("gone soon")).json["file_id"]
    workflow_id = workflow([("extract_text", {"file_id": file_id})])
    assert console.delete(f"/files/{file_id}").status_code == 204
    page = f"/console/workflows/{workflow_id}"
    failed = _post(console, f"{page}/try", {"action": "now"}, page)
    assert failed.status_code == 422
    assert "Failed" in failed.text
    assert "deleted" in failed.text


def test_queue_goes_to_the_new_runs_page_and_a_double_submit_queues_one_run(console, workflow, sql):
    workflow_id = workflow([("formatter", {"rules": ["uppercase"]})])
    page = f"/console/workflows/{workflow_id}"
    html = console.get(page).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)[1]
    key = re.search(r'name="idempotency_key" value="([^"]+)"', html)[1]
    form = {"csrf_token": token, "idempotency_key": key, "input_text": "twice", "action": "queue"}
    first, second = console.post(f"{page}/try", data=form), console.post(f"{page}/try", data=form)
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"]
    assert "/console/runs/" in first.headers["Location"]
    assert sql.execute("SELECT count(*) AS n FROM runs").fetchone()["n"] == 1
    assert "Pending" in console.get(first.headers["Location"]).text


def test_limits_are_set_and_cleared_on_the_workflow_page_and_a_bad_one_is_shown_beside_its_field(console, workflow):
    workflow_id = workflow()
    page = f"/console/workflows/{workflow_id}"
    limits = {"max_concurrent_runs": "3", "max_concurrent_runs_per_key": "1", "max_tokens_per_run": "5000"}
    saved = _post(console, f"{page}/limits", {**limits, "version": "1"}, page)
    assert saved.status_code == 302
    shown = console.get(f"/workflows/{workflow_id}").json
    assert [shown[name] for name in limits] == [3, 1, 5000]
    assert 'id="limit-max_tokens_per_run" name="max_tokens_per_run" inputmode="numeric" value="5000"' in (
        console.get(page).text
    )

    refused = _post(
        console,
        f"{page}/limits",
        {**limits, "max_concurrent_runs": "0", "max_tokens_per_run": "lots", "version": "2"},
        page,
    )
    assert refused.status_code == 422
    assert re.search(r'id="limit-max_concurrent_runs-errors"><li>Must be greater than or equal to 1', refused.text)
    assert re.search(r'id="limit-max_tokens_per_run-errors"><li>Not a valid integer', refused.text)
    assert 'value="lots"' in refused.text  # what was typed stays to be corrected
    assert console.get(f"/workflows/{workflow_id}").json["max_concurrent_runs"] == 3  # nothing half-stored

    stale = _post(console, f"{page}/limits", {**limits, "version": "1"}, page)
    assert stale.status_code == 409
    cleared = _post(console, f"{page}/limits", {"version": "2"}, page)
    assert cleared.status_code == 302
    shown = console.get(f"/workflows/{workflow_id}").json
    assert [shown[name] for name in limits] == [None, None, None]


def test_queue_takes_a_concurrency_key_and_a_priority_and_refuses_a_bad_one_queuing_nothing(console, workflow, sql):
    workflow_id = workflow([("formatter", {"rules": ["uppercase"]})])
    page = f"/console/workflows/{workflow_id}"
    form = {"input_text": "x", "action": "queue", "concurrency_key": "tenant-7", "priority": "40"}
    queued = _post(console, f"{page}/try", form, page)
    assert queued.status_code == 302
    run_page = console.get(queued.headers["Location"]).text
    assert '<dd id="run-priority">40</dd>' in run_page
    assert '<dd id="run-key">tenant-7</dd>' in run_page
    refused = _post(console, f"{page}/try", {**form, "priority": "101", "concurrency_key": "k" * 201}, page)
    assert refused.status_code == 422
    assert re.search(
        r'id="priority-errors"><li>Must be greater than or equal to -100 and less than or equal to 100', refused.text
    )
    assert re.search(r'id="concurrency_key-errors"><li>Length must be between 1 and 200', refused.text)
    assert sql.execute("SELECT count(*) AS n FROM runs").fetchone()["n"] == 1


@pytest.mark.parametrize("hostile", XSS)
def test_hostile_names_prompts_and_outputs_are_shown_as_text(console, workflow, hostile):
    workflow_id = workflow([("generative_ai", {"prompt": hostile + " {text}"})], name=hostile)
    page = f"/console/workflows/{workflow_id}"
    for html in (
        console.get("/console/").text,
        console.get(page).text,
        _post(console, f"{page}/try", {"input_text": hostile, "action": "now"}, page).text,
    ):
        assert hostile not in html
        assert "&lt;" in html


def test_with_api_tokens_the_console_signs_in_once_and_out(make_app):
    client = make_app(SECRET_KEY=SECRET, API_TOKENS=[TOKEN]).test_client()
    to_sign_in = client.get("/console/")
    assert to_sign_in.status_code == 302 and "/console/sign-in" in to_sign_in.headers["Location"]
    token = _csrf(client, "/console/sign-in")
    wrong = client.post("/console/sign-in", data={"csrf_token": token, "token": "wrong-" + "w" * 30})
    assert wrong.status_code == 401 and "not one of this server" in wrong.text
    signed = client.post("/console/sign-in", data={"csrf_token": token, "token": TOKEN, "next": "/console/"})
    assert signed.status_code == 302
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here
    assert TOKEN not in cookie
    assert client.get("/console/").status_code == 200
    # The session cookie never authorizes the JSON API: it stays bearer-only.
    assert client.get("/workflows").status_code == 401
    assert client.post("/workflows", json={"name": "x"}).status_code == 401
    out = client.post("/console/sign-out", data={"csrf_token": _csrf(client)})
    assert out.status_code == 302
    assert client.get("/console/").status_code == 302


def test_sign_in_sets_a_secure_cookie_over_https_and_never_redirects_off_the_console(make_app):
    client = make_app(SECRET_KEY=SECRET, API_TOKENS=[TOKEN]).test_client()
    token = _csrf(client, "/console/sign-in")
    signed = client.post(
        "https://localhost/console/sign-in",
        headers={"Referer": "https://localhost/console/sign-in"},  # Flask-WTF checks it over HTTPS
        data={"csrf_token": token, "token": TOKEN, "next": "https://evil.example/console/"},
    )
    assert "Secure" in signed.headers["Set-Cookie"]
    assert signed.headers["Location"] == "/console/"


def test_a_session_older_than_12_hours_or_of_a_removed_token_is_signed_out(make_app, monkeypatch):
    app = make_app(SECRET_KEY=SECRET, API_TOKENS=[TOKEN])
    client = app.test_client()
    token = _csrf(client, "/console/sign-in")
    client.post("/console/sign-in", data={"csrf_token": token, "token": TOKEN})
    assert client.get("/console/").status_code == 200
    real = time.time
    monkeypatch.setattr(guard.time, "time", lambda: real() + guard.SESSION_MAX_AGE_S + 1)
    assert client.get("/console/").status_code == 302
    monkeypatch.setattr(guard.time, "time", real)
    client.post("/console/sign-in", data={"csrf_token": _csrf(client, "/console/sign-in"), "token": TOKEN})
    app.extensions[config.EXTENSION] = config.override(
        config.settings_of(app), {"API_TOKENS": ["another-token-" + "a" * 24]}
    )
    assert client.get("/console/").status_code == 302


def test_the_workflow_list_pages_newest_first_by_keyset(console, sql):
    sql.execute(
        "INSERT INTO workflows (name, created_at) "
        "SELECT 'wf ' || n, now() - n * interval '1 minute' FROM generate_series(1, 30) AS n"
    )
    first = console.get("/console/").text
    names = re.findall(r'">(wf \d+)</a>', first)
    assert names == [f"wf {n}" for n in range(1, 26)]
    older = re.search(r'href="([^"]+)" rel="next"', first)[1].replace("&amp;", "&")
    second = console.get(older).text
    assert re.findall(r'">(wf \d+)</a>', second) == [f"wf {n}" for n in range(26, 31)]
    assert 'rel="next"' not in second
    assert console.get("/console/?cursor=not-a-cursor").status_code == 422


def test_try_it_takes_an_upload_as_large_as_post_files_does_and_refuses_a_larger_one_unread(make_app, workflow):
    client = make_app(SECRET_KEY=SECRET, MAX_UPLOAD_MB=13).test_client()
    workflow_id = workflow()
    page = f"/console/workflows/{workflow_id}"
    token = _csrf(client, page)

    def send(size):
        data = {"csrf_token": token, "action": "now", "file": (io.BytesIO(b"not a pdf " * (size // 10)), "big.pdf")}
        return client.post(f"{page}/try", data=data, content_type="multipart/form-data")

    # Larger than the 12 MiB JSON bound, within MAX_UPLOAD_MB: read, and judged as a PDF (it is none).
    judged = send(13_200_000)
    assert judged.status_code == 415 and "Only PDF files" in judged.text
    refused = send(14 * 1024 * 1024)
    assert refused.status_code == 413 and "larger than 13 MB" in refused.text
