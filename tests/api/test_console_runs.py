"""The console's run pages through Flask's test client, on a real PostgreSQL: the runs list (filters, keyset
pages, the last day's counts, text cut in SQL), a run's page (timeline, steps, events, cancel, re-run), the whole
texts, and the queue page. The browser flows are in tests/e2e/test_console_runs_browser.py."""

import html
import re
import uuid

import pytest
from markupsafe import escape
from psycopg.types.json import Jsonb

from flowline.console import runs as console_runs
from flowline.data import db

SECRET = "s" * 40
XSS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']


@pytest.fixture
def console(make_app):
    """A test client of an app with SECRET_KEY set and CSRF checked, as served."""
    return make_app(SECRET_KEY=SECRET).test_client()


@pytest.fixture
def add_run(sql):
    """Return a function inserting a run of ``workflow_id`` straight into the database (``age_s`` seconds old,
    finished when its status is final), with ``steps`` [(attempt, position, status, fields)]; returns its id."""

    def add(workflow_id, status="Succeeded", age_s=0, steps=(), **fields):
        finished = status in ("Succeeded", "Failed", "Cancelled")
        row = sql.execute(
            """INSERT INTO runs (workflow_id, mode, status, input, attempt, max_attempts, created_at, started_at,
                                 finished_at, final_output, error_message, lease_token, lease_expires_at, worker_id,
                                 available_at)
               VALUES (%(workflow_id)s, 'async', %(status)s, %(input)s, %(attempt)s, 3,
                       now() - make_interval(secs => %(age_s)s), now() - make_interval(secs => %(age_s)s),
                       CASE WHEN %(finished)s THEN now() - make_interval(secs => %(age_s)s) + interval '2 seconds' END,
                       %(final_output)s, %(error_message)s,
                       CASE WHEN %(status)s = 'Running' THEN gen_random_uuid() END,
                       CASE WHEN %(status)s = 'Running' THEN now() + interval '1 hour' END, %(worker_id)s,
                       now() - make_interval(secs => %(age_s)s))
               RETURNING id""",
            {
                "workflow_id": workflow_id,
                "status": status,
                "age_s": age_s,
                "finished": finished,
                "input": Jsonb({"input_text": fields.get("input_text", "in"), "file_id": None}),
                "attempt": fields.get("attempt", 0 if status == "Pending" else 1),
                "final_output": fields.get("final_output"),
                "error_message": fields.get("error_message"),
                "worker_id": fields.get("worker_id"),
            },
        ).fetchone()
        for attempt, position, step_status, step in steps:
            sql.execute(
                """INSERT INTO run_steps (run_id, run_created_at, attempt, position, node_type, config_snapshot, status,
                                          started_at, finished_at, input_text, output_text, error_message, note)
                   VALUES (%(run_id)s, (SELECT created_at FROM runs WHERE id = %(run_id)s), %(attempt)s, %(position)s, 'formatter', %(config)s, %(status)s,
                           now() - interval '10 seconds' + make_interval(secs => %(attempt)s * 3 + %(position)s),
                           CASE WHEN %(finished)s
                                THEN now() - interval '10 seconds' + make_interval(secs => %(attempt)s * 3 + %(position)s + 0.5)
                           END,
                           %(input_text)s, %(output_text)s, %(error_message)s, %(note)s)""",
                {
                    "run_id": row["id"],
                    "attempt": attempt,
                    "position": position,
                    "status": step_status,
                    "config": Jsonb(step.get("config", {"rules": ["uppercase"]})),
                    "input_text": step.get("input_text", "step in"),
                    "output_text": step.get("output_text", "STEP OUT"),
                    "error_message": step.get("error_message"),
                    "note": step.get("note"),
                    "finished": step_status != "Running",
                },
            )
        return str(row["id"])

    return add


def _csrf(client, path):
    page = client.get(path)
    assert page.status_code == 200, page.text
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]


def _run_links(page):
    """The run ids the list links to, in page order."""
    return re.findall(r'href="/console/runs/([0-9a-f-]{36})" class="run-link"', page.text)


# --- the runs list ----------------------------------------------------------------------------------------------


def test_the_runs_list_shows_every_workflows_runs_newest_first_and_the_nav_links_to_it(console, workflow, add_run):
    first, second = workflow(name="Invoices"), workflow(name="Letters")
    old = add_run(first, age_s=300)
    new = add_run(second, "Failed", age_s=10, error_message="boom")
    page = console.get("/console/runs")
    assert page.status_code == 200
    assert _run_links(page) == [new, old]
    assert "Invoices" in page.text and "Letters" in page.text and "boom" in page.text
    home = console.get("/console/").text
    assert 'href="/console/runs"' in home and 'href="/console/queue"' in home


def test_the_runs_list_filters_by_status_by_workflow_and_both(console, workflow, add_run):
    first, second = workflow(), workflow()
    done = add_run(first, "Succeeded", age_s=40)
    failed = add_run(first, "Failed", age_s=30)
    other_failed = add_run(second, "Failed", age_s=20)
    pending = add_run(second, "Pending", age_s=10)
    assert _run_links(console.get("/console/runs?status=Failed")) == [other_failed, failed]
    assert _run_links(console.get(f"/console/runs?workflow_id={first}")) == [failed, done]
    assert _run_links(console.get(f"/console/runs?workflow_id={second}&status=Pending")) == [pending]
    assert _run_links(console.get(f"/console/runs?workflow_id={first}&status=Pending")) == []
    assert _run_links(console.get(f"/console/runs?workflow_id={uuid.uuid4()}")) == []


def test_the_filter_forms_any_status_is_no_filter(console, workflow):
    workflow_id = workflow()
    answer = console.get(f"/console/runs?workflow_id={workflow_id}&status=")
    assert answer.status_code == 302 and answer.headers["Location"] == f"/console/runs?workflow_id={workflow_id}"
    assert console.get("/console/runs?status=").headers["Location"] == "/console/runs"


def test_the_runs_list_pages_by_keyset_cursor_links_without_gaps_or_repeats(console, workflow, add_run, sql):
    workflow_id = workflow()
    made = [add_run(workflow_id, age_s=100 - i) for i in range(30)]
    # Ties on created_at: the cursor's id decides among them.
    sql.execute(
        "UPDATE runs SET created_at = (SELECT max(created_at) FROM runs) WHERE id = ANY(%s::uuid[])", (made[-5:],)
    )
    seen, path = [], "/console/runs?status=Succeeded"
    while path:
        page = console.get(path)
        assert page.status_code == 200
        links = _run_links(page)
        assert len(links) <= console_runs.PAGE_SIZE
        seen += links
        older = re.search(r'href="([^"]+)" rel="next"', page.text)
        path = older and html.unescape(older[1])
        assert path is None or "status=Succeeded" in path  # the filter is kept
    assert sorted(seen) == sorted(made) and len(seen) == 30
    expected = sql.execute("SELECT id::text FROM runs ORDER BY created_at DESC, id").fetchall()
    assert seen == [row["id"] for row in expected]
    assert _run_links(console.get("/console/runs?limit=7")) == seen[:7]


def test_the_counts_by_status_are_of_the_runs_created_in_the_last_24_hours(console, workflow, add_run):
    first, second = workflow(), workflow()
    for status in ("Succeeded", "Succeeded", "Failed", "Pending"):
        add_run(first, status, age_s=60)
    add_run(second, "Failed", age_s=60)
    add_run(first, "Failed", age_s=25 * 3600)  # too old to count, still listed
    counts = _counts(console.get("/console/runs"))
    assert counts == {"Pending": 1, "Running": 0, "Succeeded": 2, "Failed": 2, "Cancelled": 0}
    assert "Created in the last 24 hours: 5" in console.get("/console/runs").text
    assert _counts(console.get(f"/console/runs?workflow_id={first}")) == {
        "Pending": 1,
        "Running": 0,
        "Succeeded": 2,
        "Failed": 1,
        "Cancelled": 0,
    }


def _counts(page):
    found = re.findall(r'<span class="status status-\w+">(\w+)</span> <span class="count">([\d,]+)</span>', page.text)
    return {status: int(count.replace(",", "")) for status, count in found}


def test_a_text_is_cut_only_when_longer_than_the_cut_counting_characters_not_bytes(console, workflow, add_run):
    workflow_id = workflow()
    exact = add_run(workflow_id, age_s=20, final_output="é" * console_runs.LIST_TEXT_CUT)
    longer = add_run(workflow_id, age_s=10, final_output="é" * (console_runs.LIST_TEXT_CUT + 1))
    page = console.get("/console/runs").text
    assert f'href="/console/runs/{exact}/output"' not in page  # 400 bytes, but not longer than the cut
    assert f'href="/console/runs/{longer}/output"' in page and "(of 402 Bytes;" in page
    at_run_cut = add_run(workflow_id, final_output="é" * console_runs.RUN_TEXT_CUT)
    over_run_cut = add_run(workflow_id, final_output="é" * (console_runs.RUN_TEXT_CUT + 1))
    assert "Show all" not in console.get(f"/console/runs/{at_run_cut}").text
    assert "Showing the first 2,000 characters of 4.0 kB." in console.get(f"/console/runs/{over_run_cut}").text


def test_long_outputs_and_errors_are_cut_in_sql_with_a_link_to_all_of_it(console, workflow, add_run):
    workflow_id = workflow()
    long_output = "o" * 999_999 + "Z"
    long_error = "e" * 5000
    ok = add_run(workflow_id, final_output=long_output)
    bad = add_run(workflow_id, "Failed", error_message=long_error)
    page = console.get("/console/runs").text
    assert "o" * console_runs.LIST_TEXT_CUT in page and "o" * (console_runs.LIST_TEXT_CUT + 1) not in page
    assert "(of 1.0 MB;" in page and "(of 5.0 kB;" in page
    assert f'href="/console/runs/{ok}/output"' in page and f'href="/console/runs/{bad}/error"' in page
    run_page = console.get(f"/console/runs/{ok}").text
    assert "o" * console_runs.RUN_TEXT_CUT in run_page and "o" * (console_runs.RUN_TEXT_CUT + 1) not in run_page
    assert "Showing the first 2,000 characters of 1.0 MB." in run_page
    full = console.get(f"/console/runs/{ok}/output")
    assert full.status_code == 200
    assert long_output in full.text and "1,000,000 characters" in full.text
    assert long_error in console.get(f"/console/runs/{bad}/error").text


# --- a run ------------------------------------------------------------------------------------------------------


def test_a_runs_page_shows_its_timeline_one_bar_per_step_grouped_per_attempt(console, workflow, add_run):
    workflow_id = workflow()
    run_id = add_run(
        workflow_id,
        attempt=2,
        final_output="DONE",
        steps=[
            (1, 0, "Succeeded", {}),
            (1, 1, "Failed", {"error_message": "provider down", "output_text": None}),
            (2, 0, "Succeeded", {"note": "echo provider"}),
            (2, 1, "Succeeded", {"config": {"rules": ["trim"]}}),
        ],
    )
    page = console.get(f"/console/runs/{run_id}")
    assert page.status_code == 200
    svg = re.search(r'<svg class="timeline".*?</svg>', page.text, re.S)[0]
    assert svg.count('class="timeline-bar"') == 4
    assert svg.count('class="timeline-step"') == 4
    assert re.findall(r'class="timeline-attempt"[^>]*>([^<]+)<', svg) == ["Attempt 1", "Attempt 2"]
    assert "style=" not in svg and "<style" not in svg
    # Each bar says what it is in words, not colour alone.
    assert "Attempt 1, step 2. formatter: Failed" in svg
    assert svg.count(">Succeeded</text>") == 3 and svg.count(">Failed</text>") == 1
    assert "provider down" in page.text and "echo provider" in page.text and "&#34;trim&#34;" in page.text
    assert "attempt 2 of 3" in page.text.lower() or "2 of 3" in page.text
    # The events the run logged (none here but what the test wrote) and its output.
    assert "DONE" in page.text
    assert 'http-equiv="refresh"' not in page.text  # finished: no reloading


def test_a_running_steps_bar_reaches_now_and_says_so(console, workflow, add_run):
    run_id = add_run(workflow(), "Running", steps=[(1, 0, "Succeeded", {}), (1, 1, "Running", {"output_text": None})])
    svg = re.search(r'<svg class="timeline".*?</svg>', console.get(f"/console/runs/{run_id}").text, re.S)[0]
    bars = re.findall(r'<rect class="timeline-bar" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg)
    assert len(bars) == 2
    # The axis ends now, and so does the running step's bar.
    assert float(bars[1][0]) + float(bars[1][1]) == pytest.approx(190 + 520, abs=1)
    assert re.search(r"step 2\. formatter: Running, [\d.]+ s so far", svg)


def test_step_texts_are_cut_with_a_show_all_page_of_the_whole_text(console, workflow, add_run, sql):
    workflow_id = workflow()
    long_input = "i" * 50_000
    run_id = add_run(workflow_id, steps=[(1, 0, "Succeeded", {"input_text": long_input, "output_text": "short"})])
    step_id = str(sql.execute("SELECT id FROM run_steps WHERE run_id = %s", (run_id,)).fetchone()["id"])
    page = console.get(f"/console/runs/{run_id}").text
    assert "i" * console_runs.RUN_TEXT_CUT in page and "i" * (console_runs.RUN_TEXT_CUT + 1) not in page
    assert f'href="/console/runs/{run_id}/steps/{step_id}/input"' in page
    assert f"/steps/{step_id}/output" not in page  # short: nothing more to show
    full = console.get(f"/console/runs/{run_id}/steps/{step_id}/input")
    assert full.status_code == 200 and long_input in full.text and "50,000 characters" in full.text
    assert console.get(f"/console/runs/{run_id}/steps/{step_id}/output").text.count("short") >= 1
    other_run = add_run(workflow_id)
    assert console.get(f"/console/runs/{other_run}/steps/{step_id}/input").status_code == 404


def test_an_unfinished_runs_page_refreshes_itself_and_a_finished_one_does_not(console, workflow, add_run):
    workflow_id = workflow()
    for status in ("Pending", "Running"):
        page = console.get(f"/console/runs/{add_run(workflow_id, status)}").text
        # console.js polls what data-poll-key names; without script, the meta refresh reloads.
        assert f'data-poll-key="{status}|0" data-poll-s="{console_runs.REFRESH_S}"' in page, status
        assert f'<noscript><meta http-equiv="refresh" content="{console_runs.REFRESH_S}"></noscript>' in page
        assert 'id="cancel"' in page
    for status in ("Succeeded", "Failed", "Cancelled"):
        page = console.get(f"/console/runs/{add_run(workflow_id, status)}").text
        assert 'http-equiv="refresh"' not in page and "data-poll-key" not in page, status
        assert 'id="cancel"' not in page and 'id="rerun"' in page


def test_an_unfinished_runs_poll_key_changes_with_its_steps_and_events(console, workflow, add_run, sql):
    run_id = add_run(workflow(), "Running", steps=[(1, 0, "Running", {"output_text": None})])
    key = re.search(r'data-poll-key="([^"]+)"', console.get(f"/console/runs/{run_id}").text)[1]
    assert key == "Running|0|Running"
    sql.execute("UPDATE run_steps SET status = 'Succeeded', finished_at = now() WHERE run_id = %s", (run_id,))
    assert 'data-poll-key="Running|0|Succeeded"' in console.get(f"/console/runs/{run_id}").text
    sql.execute(
        "INSERT INTO run_events (run_id, run_created_at, attempt, status) "
        "SELECT id, created_at, 1, 'Running' FROM runs WHERE id = %s",
        (run_id,),
    )
    assert 'data-poll-key="Running|1|Succeeded"' in console.get(f"/console/runs/{run_id}").text


def test_the_runs_events_are_listed_oldest_first(console, workflow):
    workflow_id = workflow([("formatter", {"rules": ["uppercase"]})])
    queued = console.post(f"/workflows/{workflow_id}/runs", json={"input_text": "x"}).json["run_id"]
    console.post(f"/runs/{queued}/cancel")
    page = console.get(f"/console/runs/{queued}").text
    events = re.search(r'<table class="events">.*?</table>', page, re.S)[0]
    assert events.index("queued") < events.index("cancelled by a client before it started")


# --- cancel and re-run ------------------------------------------------------------------------------------------


def test_cancel_through_the_form_cancels_a_pending_run_and_a_second_cancel_is_a_409_page(console, workflow, sql):
    workflow_id = workflow([("formatter", {"rules": ["uppercase"]})])
    run_id = console.post(f"/workflows/{workflow_id}/runs", json={"input_text": "x"}).json["run_id"]
    path = f"/console/runs/{run_id}"
    token = _csrf(console, path)
    refused = console.post(f"{path}/cancel")
    assert refused.status_code == 400 and "Reload the page" in refused.text
    assert sql.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"] == "Pending"
    done = console.post(f"{path}/cancel", data={"csrf_token": token})
    assert done.status_code == 302 and done.headers["Location"] == path
    assert sql.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"] == "Cancelled"
    after = console.get(path).text
    assert "Run cancelled: it will not start." in after and "Cancelled" in after
    again = console.post(f"{path}/cancel", data={"csrf_token": token})
    assert again.status_code == 409
    assert again.mimetype == "text/html" and "Run already Cancelled" in again.text
    gone = console.post(f"/console/runs/{uuid.uuid4()}/cancel", data={"csrf_token": token})
    assert gone.status_code == 404 and gone.mimetype == "text/html"


def test_cancel_of_a_running_run_asks_it_to_stop_at_its_next_node(console, workflow, add_run, sql):
    run_id = add_run(workflow(), "Running")
    path = f"/console/runs/{run_id}"
    done = console.post(f"{path}/cancel", data={"csrf_token": _csrf(console, path)})
    assert done.status_code == 302
    assert sql.execute("SELECT cancel_requested_at FROM runs WHERE id = %s", (run_id,)).fetchone()[
        "cancel_requested_at"
    ]
    assert "Cancellation requested" in console.get(path).text


def test_rerun_through_the_form_goes_to_the_new_run_and_a_double_submit_queues_one(console, workflow, add_run, sql):
    workflow_id = workflow([("formatter", {"rules": ["uppercase"]})])
    run_id = add_run(workflow_id, input_text="again please")
    path = f"/console/runs/{run_id}"
    page = console.get(path).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page)[1]
    assert console.post(f"{path}/rerun", data={"idempotency_key": key}).status_code == 400  # no CSRF token
    assert sql.execute("SELECT count(*) AS n FROM runs").fetchone()["n"] == 1
    first = console.post(f"{path}/rerun", data={"csrf_token": token, "idempotency_key": key})
    second = console.post(f"{path}/rerun", data={"csrf_token": token, "idempotency_key": key})
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"] != path
    new_id = first.headers["Location"].rsplit("/", 1)[1]
    rows = sql.execute("SELECT id::text, status, input FROM runs WHERE id <> %s", (run_id,)).fetchall()
    assert [row["id"] for row in rows] == [new_id]
    assert rows[0]["status"] == "Pending" and rows[0]["input"]["input_text"] == "again please"
    shown = console.get(first.headers["Location"]).text
    assert "Re-run queued." in shown and "this form was already sent: still one run" in shown
    # Another render of the page makes another key: a deliberate second re-run queues a second run.
    other_key = re.search(r'name="idempotency_key" value="([^"]+)"', console.get(path).text)[1]
    assert other_key != key
    bad = console.post(f"{path}/rerun", data={"csrf_token": token, "idempotency_key": "has space"})
    assert bad.status_code == 422 and bad.mimetype == "text/html"


# --- hostile input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("xss", XSS)
def test_hostile_text_in_outputs_errors_inputs_and_names_shows_as_text(console, workflow, add_run, sql, xss):
    workflow_id = workflow(name=xss)
    run_id = add_run(
        workflow_id,
        "Failed",
        input_text=xss,
        final_output=xss,
        error_message=xss,
        steps=[(1, 0, "Failed", {"input_text": xss, "output_text": xss, "error_message": xss, "note": xss})],
    )
    step_id = str(sql.execute("SELECT id FROM run_steps WHERE run_id = %s", (run_id,)).fetchone()["id"])
    add_run(workflow_id, "Failed", age_s=5, error_message=xss)  # on the queue page's failures too
    for path in (
        "/console/runs",
        f"/console/runs?workflow_id={workflow_id}",
        f"/console/runs/{run_id}",
        f"/console/runs/{run_id}/output",
        f"/console/runs/{run_id}/error",
        f"/console/runs/{run_id}/input",
        f"/console/runs/{run_id}/steps/{step_id}/input",
        f"/console/runs/{run_id}/steps/{step_id}/output",
        f"/console/runs/{run_id}/steps/{step_id}/error",
        "/console/queue",
    ):
        page = console.get(path)
        assert page.status_code == 200, path
        assert xss not in page.text, path
        assert str(escape(xss)) in page.text, path


@pytest.mark.parametrize(
    "path, status",
    [
        ("/console/runs?status=Bogus", 422),
        ("/console/runs?status=%3Cscript%3E", 422),
        ("/console/runs?cursor=not-a-cursor", 422),
        ("/console/runs?cursor=WyJ4IiwgInkiXQ", 422),  # ["x", "y"]
        ("/console/runs?workflow_id=not-a-uuid", 422),
        ("/console/runs?limit=0", 422),
        ("/console/runs?limit=1000000", 422),
        ("/console/runs?limit=abc", 422),
        ("/console/runs?unknown=1", 422),
        ("/console/runs?status=Failed&status=Pending", 200),
        ("/console/runs/not-a-uuid", 404),
        ("/console/runs/00000000-0000-4000-8000-000000000000", 404),
        ("/console/runs/00000000-0000-4000-8000-00000000000A", 404),
        ("/console/runs/00000000-0000-4000-8000-000000000000/output", 404),
        ("/console/runs/00000000-0000-4000-8000-000000000000/secrets", 404),
        ("/console/runs/00000000-0000-4000-8000-000000000000/steps/x/input", 404),
        ("/console/runs/00000000-0000-4000-8000-000000000000/steps/00000000-0000-4000-8000-000000000000/input", 404),
    ],
)
def test_hostile_query_parameters_and_paths_are_answered_with_a_4xx_page_never_a_500(console, path, status):
    answer = console.get(path)
    assert answer.status_code == status, answer.text
    assert answer.mimetype == "text/html"
    assert "<script>" not in answer.text


def test_with_api_tokens_the_run_pages_and_forms_need_a_signed_in_session(make_app, workflow, add_run, sql):
    client = make_app(SECRET_KEY=SECRET, API_TOKENS=["console-token-" + "t" * 24]).test_client()
    run_id = add_run(workflow(), "Pending")
    for path in ("/console/runs", f"/console/runs/{run_id}", f"/console/runs/{run_id}/input", "/console/queue"):
        answer = client.get(path)
        assert answer.status_code == 302 and "/console/sign-in" in answer.headers["Location"], path
    # The sign-in page's CSRF token is genuine, but no session signed in: the cancel is not done.
    token = _csrf(client, "/console/sign-in")
    assert client.post(f"/console/runs/{run_id}/cancel", data={"csrf_token": token}).status_code == 302
    assert sql.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"] == "Pending"


# --- the queue --------------------------------------------------------------------------------------------------


def test_the_queue_page_shows_counts_workers_and_what_they_run_failures_and_a_minute_chart(
    console, workflow, add_run, sql
):
    workflow_id = workflow(name="Nightly")
    add_run(workflow_id, "Pending", age_s=120)
    add_run(workflow_id, "Pending", age_s=30)
    held = add_run(workflow_id, "Running", worker_id="host-a:41:0")
    add_run(workflow_id, "Running", worker_id="api:host-a:41")  # a sync run in the API: no worker's
    failed = add_run(workflow_id, "Failed", age_s=600, error_message="x" * 1000)
    add_run(workflow_id, "Failed", age_s=7200, error_message="too old to show")
    add_run(workflow_id, "Succeeded", age_s=90)
    sql.execute(
        """INSERT INTO workers (id, hostname, pid, concurrency, runs_in_progress, heartbeat_at)
           VALUES ('host-a:41', 'host-a', 41, 4, 1, now()), ('host-b:7', 'host-b', 7, 2, 0, now() - interval '1 hour'),
                  ('host-c:9', 'host-c', 9, 1, 0, now())"""
    )
    sql.execute("UPDATE workers SET stopped_at = now() WHERE id = 'host-c:9'")
    page = console.get("/console/queue")
    assert page.status_code == 200
    text = page.text
    assert re.search(r'id="pending">2\b', text) and re.search(r'id="running">2\b', text)
    assert re.search(r'id="oldest">2\.0 min<', text)
    workers = re.search(r'<table class="workers">.*?</table>', text, re.S)[0]
    assert "host-a:41" in workers and "host-b:7" in workers and "host-c:9" not in workers
    row_a = re.search(r"<tr>\s*<td[^>]*>host-a:41</td>.*?</tr>", workers, re.S)[0]
    assert ">Alive<" in row_a and f'href="/console/runs/{held}"' in row_a and "1 busy of 4" in row_a
    row_b = re.search(r"<tr>\s*<td[^>]*>host-b:7</td>.*?</tr>", workers, re.S)[0]
    assert ">Silent<" in row_b and "nothing" in row_b
    failures = re.search(r'<table class="failures">.*?</table>', text, re.S)[0]
    assert f'href="/console/runs/{failed}"' in failures and "too old to show" not in failures
    assert "x" * console_runs.LIST_TEXT_CUT in failures and "x" * (console_runs.LIST_TEXT_CUT + 1) not in failures
    chart = re.search(r'<svg class="minute-chart".*?</svg>', text, re.S)[0]
    assert chart.count('class="minute-bar"') == console_runs.QUEUE_MINUTES
    assert "1 finished (0 succeeded, 1 failed, 0 cancelled)" in chart
    assert "1 finished (1 succeeded, 0 failed, 0 cancelled)" in chart
    assert "2 runs finished in the last hour, 1 of them failed" in text
    # The chart's numbers, for whoever cannot hover a bar: the minutes with finished runs, newest first.
    numbers = re.search(r'<details class="chart-numbers">.*?</details>', text, re.S)[0]
    minutes_ago = sql.execute(
        "SELECT extract(epoch FROM date_trunc('minute', now()) - date_trunc('minute', finished_at))::int / 60 AS ago "
        "FROM runs WHERE finished_at > now() - interval '1 hour' ORDER BY finished_at DESC"
    ).fetchall()
    assert re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td>", numbers) == [
        (f"{row['ago']} min ago", "1") for row in minutes_ago
    ]


def test_the_queue_page_with_nothing_queued_and_no_worker(console):
    page = console.get("/console/queue")
    assert page.status_code == 200
    assert "No worker heard from" in page.text and "No run failed in the last hour" in page.text
    assert "none waiting" in page.text


# --- a fixed number of queries per page ---------------------------------------------------------------------------


@pytest.fixture
def count_queries(monkeypatch):
    """Count the named queries run (through db.one/many/execute) while the returned list is being appended."""
    names = []
    real = db._execute

    def counting(conn, query_name, cardinality, params):
        names.append(query_name)
        return real(conn, query_name, cardinality, params)

    monkeypatch.setattr(db, "_execute", counting)
    return names


def test_each_page_runs_a_fixed_number_of_queries_whatever_the_number_of_rows(
    console, workflow, add_run, sql, count_queries
):
    workflow_id = workflow()
    few = add_run(workflow_id, steps=[(1, 0, "Succeeded", {})])
    sql.execute("INSERT INTO workers (id, hostname, pid, concurrency) VALUES ('w:1', 'w', 1, 1)")
    pages = ("/console/runs", f"/console/runs?workflow_id={workflow_id}", f"/console/runs/{few}", "/console/queue")
    before = {}
    for path in pages:
        count_queries.clear()
        assert console.get(path).status_code == 200
        before[path] = list(count_queries)
    many = add_run(workflow_id, steps=[(a, p, "Succeeded", {}) for a in (1, 2, 3) for p in range(8)])
    for i in range(40):
        add_run(workflow_id, "Failed", age_s=i, error_message="e", worker_id=f"w:1:{i}")
        sql.execute("INSERT INTO workers (id, hostname, pid, concurrency) VALUES (%s, 'w', %s, 1)", (f"w{i}:1", i))
    for path in pages:
        count_queries.clear()
        assert console.get(path.replace(few, many)).status_code == 200
        assert count_queries == before[path], path
    assert len(before["/console/runs"]) == 2 and len(before[f"/console/runs/{few}"]) == 2
    assert len(before["/console/queue"]) == 4


# --- plans at 20,000 runs -----------------------------------------------------------------------------------------


def _plan_nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.fixture
def history(sql):
    """20,000 runs created over 90 days in 39 workflows (1 in 20 Failed, finished when created), analyzed;
    returns a workflow id."""
    workflow_ids = [
        str(row["id"])
        for row in sql.execute(
            "INSERT INTO workflows (name) SELECT 'bulk ' || g FROM generate_series(1, 39) AS g RETURNING id"
        )
    ]
    sql.execute(
        "INSERT INTO runs (workflow_id, mode, status, input, attempt, max_attempts, created_at, finished_at, "
        "                  final_output, error_message) "
        "SELECT (%(workflows)s::uuid[])[1 + g %% 39], 'async', CASE WHEN g %% 20 = 0 THEN 'Failed' ELSE 'Succeeded' END, "
        "       '{}', 1, 3, now() - make_interval(secs => g * 388.8), now() - make_interval(secs => g * 388.8), "
        "       repeat('o', 300), CASE WHEN g %% 20 = 0 THEN repeat('e', 300) END "
        "FROM generate_series(1, 20000) AS g",
        {"workflows": workflow_ids},
    )
    sql.execute("ANALYZE runs")
    return workflow_ids[1]


@pytest.mark.parametrize(
    "query_name, index, params",
    [
        ("list_runs_cut_page", "runs_created_idx", {}),
        ("list_runs_by_status_cut_page", "runs_status_created_idx", {"status": "Failed"}),
        ("list_workflow_runs_cut_page", "runs_workflow_created_idx", {"workflow_id": True}),
        (
            "list_workflow_runs_by_status_cut_page",
            "runs_workflow_status_created_idx",
            {"workflow_id": True, "status": "Failed"},
        ),
        ("count_runs_by_status_since", "runs_created_idx", {"since_s": 86400}),
        ("count_workflow_runs_by_status_since", "runs_workflow_created_idx", {"workflow_id": True, "since_s": 86400}),
        ("list_recent_failures", "runs_finished_idx", {"since_s": 3600, "text_cut": 200, "row_limit": 20}),
        ("count_runs_finished_per_minute", "runs_finished_idx", {"minutes": 60}),
    ],
)
def test_the_console_queries_read_runs_from_their_index_never_a_seq_scan(sql, history, query_name, index, params):
    """At 20,000 runs over 90 days, each console query on runs reads from the index named in its description: no
    Seq Scan on runs (the list pages, from the start, read about a page of rows)."""
    from flowline.data.sql import QUERIES

    params = {key: history if value is True else value for key, value in params.items()}
    if query_name.endswith("_cut_page"):
        params |= {"after_created_at": None, "after_id": None, "row_limit": 26, "text_cut": 200}
    plan = sql.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + QUERIES[query_name].text, params).fetchone()["QUERY PLAN"][0]
    on_runs = [node for node in _plan_nodes(plan["Plan"]) if node.get("Relation Name") == "runs"]
    assert on_runs and all(node["Node Type"] != "Seq Scan" for node in on_runs), on_runs
    # A bitmap scan names its index on its Bitmap Index Scan child.
    assert index in {node.get("Index Name") for node in _plan_nodes(plan["Plan"])}, plan
    if query_name.endswith("_cut_page"):
        assert sum(node["Actual Rows"] for node in on_runs) <= 26 + 5
