"""Bounded PDF extraction (issue #11): a PDF slow to parse is refused within PDF_EXTRACT_TIMEOUT_S and never
holds the API, a child over PDF_EXTRACT_MEMORY_MB is refused, text past MAX_INPUT_CHARS is refused, and uploads
past PDF_EXTRACT_CONCURRENCY get 503 at once. Nothing refused is stored.

The hostile file (tests/support/hostile_pdf.py) takes pypdf about 2.6 s a page in-process on the 2-core development VM
(8 pages: 21 s), so every bound below is hit long before it could finish.
"""

import io
import json
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import make_pdf, wait_for
from tests.support.hostile_pdf import hostile_pdf

TIMEOUT_S = 1.5
# Room for the child's start-up, the kill and a loaded machine; far below the 20+ s the file would take.
MARGIN_S = 2.5
# "Not pinned": a generous bound for one /livez answer, not a benchmark.
LIVEZ_BOUND_S = 2.0


def post_file(base, data, filename="doc.pdf"):
    """POST ``data`` as multipart field ``file``; return (status, json body, headers, seconds)."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        base + "/files", data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), response.headers, time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers, time.monotonic() - started


def probe_livez_while(server, busy):
    """Probe /livez every 0.1 s while ``busy()`` is true; return each probe's (status, seconds)."""
    probes = []
    while busy():
        started = time.monotonic()
        try:
            status = server.request("GET", "/livez")[0]
        except OSError:
            status = None
        probes.append((status, time.monotonic() - started))
        time.sleep(0.1)
    return probes


def assert_livez_kept_answering(probes):
    assert len(probes) >= 3, probes
    slow = [(status, round(seconds, 2)) for status, seconds in probes if status != 200 or seconds > LIVEZ_BOUND_S]
    assert not slow, f"/livez probes that failed or took over {LIVEZ_BOUND_S} s: {slow}"


def stored_files(sql):
    return sql.execute("SELECT count(*) AS n FROM files").fetchone()["n"]


def extraction_children(server):
    """Return the pids of `python -m flowline.api.pdf` processes under this gunicorn."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = int(next(line for line in status.read_text().splitlines() if line.startswith("PPid:")).split()[1])
            cmdline = (status.parent / "cmdline").read_bytes()
        except (OSError, StopIteration):
            continue
        if b"flowline.api.pdf" in cmdline and ppid != server.process.pid and _parent_of(ppid) == server.process.pid:
            found.append(int(status.parent.name))
    return found


def _parent_of(pid):
    try:
        return int(
            next(
                line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("PPid:")
            ).split()[1]
        )
    except (OSError, StopIteration):
        return None


@pytest.mark.serial  # it times the refusal against its bound
@pytest.mark.parametrize("pages", [8, 15])
def test_a_hostile_pdf_is_refused_within_the_time_bound_while_livez_answers(make_server, database_url, sql, pages):
    server = make_server(database_url, PDF_EXTRACT_TIMEOUT_S=TIMEOUT_S)
    server.start()
    with ThreadPoolExecutor(1) as pool:
        upload = pool.submit(post_file, server.base, hostile_pdf(pages))
        probes = probe_livez_while(server, lambda: not upload.done())
        status, body, _, seconds = upload.result()
    assert status == 422, body
    assert body == {"detail": f"The PDF is too complex to extract within {TIMEOUT_S:g} s; nothing was stored."}
    assert TIMEOUT_S <= seconds < TIMEOUT_S + MARGIN_S
    assert stored_files(sql) == 0
    assert_livez_kept_answering(probes)
    assert wait_for(lambda: not extraction_children(server), timeout=5, message="the killed child to be reaped")
    assert "Traceback" not in server.log.read_text()


@pytest.mark.serial  # it times the answers against bounds
def test_eight_concurrent_hostile_uploads_are_refused_or_turned_away_and_livez_keeps_answering(
    make_server, database_url, sql
):
    # The defaults: two workers of two threads, one extraction each, so one thread per worker stays free.
    server = make_server(database_url, PDF_EXTRACT_TIMEOUT_S=TIMEOUT_S)
    server.start()
    data = hostile_pdf(8)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        uploads = [pool.submit(post_file, server.base, data) for _ in range(8)]
        probes = probe_livez_while(server, lambda: not all(u.done() for u in uploads))
        results = [u.result() for u in uploads]
    elapsed = time.monotonic() - started

    statuses = sorted(status for status, *_ in results)
    refused = [r for r in results if r[0] == 422]
    turned_away = [r for r in results if r[0] == 503]
    assert len(refused) + len(turned_away) == 8, statuses
    # One slot per worker: at least the worker that took the first upload ran an extraction to its bound.
    assert len(refused) >= 1 and turned_away, statuses
    for _, body, _, seconds in refused:
        assert body == {"detail": f"The PDF is too complex to extract within {TIMEOUT_S:g} s; nothing was stored."}
        assert seconds < TIMEOUT_S + MARGIN_S
    for _, body, headers, seconds in turned_away:
        assert set(body) == {"detail"} and "retry shortly" in body["detail"]
        assert headers["Retry-After"] == "2"
        assert seconds < MARGIN_S
    assert elapsed < TIMEOUT_S + MARGIN_S
    assert stored_files(sql) == 0
    assert_livez_kept_answering(probes)
    assert "Traceback" not in server.log.read_text()


@pytest.mark.serial  # it times the answers against bounds
def test_uploads_past_the_concurrency_bound_get_503_with_retry_after_at_once(make_server, database_url, sql):
    server = make_server(database_url, WEB_CONCURRENCY=1, PDF_EXTRACT_TIMEOUT_S=3)  # one slot: the default
    server.start()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post_file, server.base, hostile_pdf(8))
        wait_for(lambda: extraction_children(server), timeout=5, message="the first extraction to start")
        status, body, headers, seconds = post_file(server.base, make_pdf("an ordinary invoice"))
        assert status == 503 and seconds < 1.0
        assert body == {"detail": "The server is extracting as many PDFs as it allows at once; retry shortly."}
        assert headers["Retry-After"] == "3"
        assert headers["Content-Type"] == "application/json"
        assert slow.result()[0] == 422
    assert stored_files(sql) == 0
    # The slot is free again: an ordinary PDF goes through.
    assert post_file(server.base, make_pdf("an ordinary invoice"))[0] == 201
    assert stored_files(sql) == 1


def test_text_longer_than_max_input_chars_is_refused_and_nothing_is_stored(make_app, sql):
    pdf = make_pdf("x" * 40, "y" * 40)  # 81 characters: two pages of 40 joined by a newline

    def upload(limit):
        client = make_app(MAX_INPUT_CHARS=limit).test_client()
        return client.post("/files", data={"file": (io.BytesIO(pdf), "long.pdf")}, content_type="multipart/form-data")

    response = upload(80)
    assert response.status_code == 422
    assert response.json == {
        "detail": "The PDF's text is longer than 80 characters (MAX_INPUT_CHARS), more than a "
        "run accepts; nothing was stored."
    }
    assert stored_files(sql) == 0
    assert upload(81).status_code == 201


@pytest.mark.serial  # its child must reach the memory bound before the time bound
def test_a_child_over_the_memory_bound_is_refused_with_422_naming_memory(make_app, sql):
    client = make_app(PDF_EXTRACT_MEMORY_MB=64, PDF_EXTRACT_TIMEOUT_S=20).test_client()
    started = time.monotonic()
    response = client.post(
        "/files", data={"file": (io.BytesIO(hostile_pdf(1)), "big.pdf")}, content_type="multipart/form-data"
    )
    assert response.status_code == 422
    assert response.json == {"detail": "The PDF is too complex to extract within 64 MB of memory; nothing was stored."}
    assert time.monotonic() - started < 20, "refused for its memory, not its time"
    assert stored_files(sql) == 0


def test_the_child_is_given_none_of_the_servers_secrets(make_app, monkeypatch):
    """The child sees only PATH, PYTHONPATH and the locale: a PDF that made pypdf misbehave could not read the
    database URL or the API tokens from its environment."""
    monkeypatch.setenv("FLOWLINE_SECRET_FOR_TEST", "s3cret")
    from flowline.api import pdf

    seen = {}
    real_popen = pdf.subprocess.Popen

    def spy(*args, **kwargs):
        seen.update(kwargs["env"])
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(pdf.subprocess, "Popen", spy)
    client = make_app().test_client()
    response = client.post(
        "/files", data={"file": (io.BytesIO(make_pdf("hello")), "a.pdf")}, content_type="multipart/form-data"
    )
    assert response.status_code == 201
    assert seen and set(seen) <= {"PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR"}


def test_a_child_that_fails_unexpectedly_answers_a_generic_500_and_stores_nothing(make_app, sql, monkeypatch, tmp_path):
    from flowline.api import pdf

    monkeypatch.setattr(pdf, "_PACKAGE_PARENT", tmp_path)  # `python -m flowline.api.pdf` finds no package there
    client = make_app(PROPAGATE_EXCEPTIONS=False).test_client()
    response = client.post(
        "/files", data={"file": (io.BytesIO(make_pdf("hello")), "a.pdf")}, content_type="multipart/form-data"
    )
    assert response.status_code == 500
    assert response.json == {"detail": "Internal server error; the request id identifies it in the logs."}
    assert stored_files(sql) == 0
