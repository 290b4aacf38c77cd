"""The earlier service's browser front end, as a person uses it in a real Chromium: served on its own origin
(http://localhost:3000), it calls Flowline on another port, so every JSON request goes through a CORS preflight
that the browser, not a test, judges. Out of the box it works; with its origin not allowed the browser blocks it."""

import http.server
import threading

import pytest

from tests.support import SUPPORT, launch_chromium

FRONT_END_PAGE = (SUPPORT / "front_end.html").read_bytes()


class _FrontEnd(http.server.BaseHTTPRequestHandler):
    """Serves the stand-in front end (tests/support/front_end.html) at every path."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(FRONT_END_PAGE)))
        self.end_headers()
        self.wfile.write(FRONT_END_PAGE)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(playwright):
    """A Chromium in which http://localhost:3000, the front end's origin, reaches a server of this module's on a
    free port: the page comes over a real loopback connection (so it is in the loopback address space, as the
    real front end is) and nothing needs port 3000, which a developer's own front end may hold."""
    front_end = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FrontEnd)
    threading.Thread(target=front_end.serve_forever, daemon=True).start()
    browser = launch_chromium(playwright, f"--host-resolver-rules=MAP localhost:3000 127.0.0.1:{front_end.server_port}")
    yield browser
    browser.close()
    front_end.shutdown()
    front_end.server_close()


def _open_front_end(page, server):
    page.goto(f"http://localhost:3000/?api={server.base}")
    assert page.evaluate("location.origin") == "http://localhost:3000"


def test_the_earlier_front_end_builds_and_runs_a_workflow_out_of_the_box(page, make_server, database_url):
    server = make_server(database_url)  # CORS_ORIGINS unset: the default
    server.start()
    _open_front_end(page, server)

    page.fill("#name", "Made in the browser")
    page.click("#create")
    page.wait_for_function(
        "document.querySelector('#workflow').textContent !== 'none' || document.querySelector('#error').textContent"
    )
    assert page.text_content("#error") == ""
    assert page.text_content("#workflow") == "Made in the browser"
    assert page.text_content("#etag") == '(version "1")'  # ETag is exposed to the script

    page.fill("#prompt", "Summarise: {text}")
    page.click("#add")
    page.wait_for_function(
        "document.querySelectorAll('#nodes li').length === 3 || document.querySelector('#error').textContent"
    )
    assert page.text_content("#error") == ""
    assert page.locator("#nodes li").all_text_contents() == [
        'extract_text {"prompt":"Summarise: {text}"}',
        'generative_ai {"prompt":"Summarise: {text}"}',
        'formatter {"prompt":"Summarise: {text}"}',
    ]

    page.fill("#input", "invoice 42")
    page.click("#run")
    page.wait_for_function(
        "document.querySelector('#output').textContent || document.querySelector('#error').textContent"
    )
    assert page.text_content("#error") == ""
    # extract_text passes the text through, the echo provider renders the prompt, formatter's default uppercases.
    assert page.text_content("#output") == "SUMMARISE: INVOICE 42"


@pytest.mark.parametrize("cors_origins", ["none", "https://another.example"])
def test_the_browser_blocks_the_front_end_when_its_origin_is_not_allowed(page, make_server, database_url, cors_origins):
    server = make_server(database_url, CORS_ORIGINS=cors_origins)
    server.start()
    _open_front_end(page, server)

    page.fill("#name", "Never made")
    page.click("#create")
    page.wait_for_function("document.querySelector('#error').textContent")
    assert page.text_content("#error") == "Error: Failed to fetch"
    assert page.text_content("#workflow") == "none"
    # The browser refused the preflight's answer, so it never sent the POST: nothing was created.
    assert server.request("GET", "/workflows")[1]["workflows"] == []
