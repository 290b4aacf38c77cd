"""Requests gunicorn's HTTP parser refuses before Flowline sees them, sent byte for byte over a raw socket to a
real gunicorn: each is answered in the JSON error shape, with gunicorn's status and an X-Request-ID. One gunicorn
serves the module: nothing here writes, and each request is refused on its own connection."""

import json
import socket

import pytest

from tests.conftest import TEST_EXTRACT_TIMEOUT_S
from tests.support import Server

CRLF = b"\r\n"


@pytest.fixture(scope="module")
def server(module_database_url, tmp_path_factory):
    server = Server(
        module_database_url, tmp_path_factory.mktemp("protocol"), {"PDF_EXTRACT_TIMEOUT_S": str(TEST_EXTRACT_TIMEOUT_S)}
    )
    server.start()
    yield server
    server.stop()


def exchange(server, raw):
    """Send ``raw`` to ``server`` and return (status, headers with lower-case names, body) of its answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(CRLF + CRLF)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def request(request_line=b"GET /livez HTTP/1.1", *headers, body=b""):
    return request_line + CRLF + b"".join(h + CRLF for h in (b"Host: 127.0.0.1", *headers)) + CRLF + body


CASES = {
    "NUL in a header value": (request(b"GET /livez HTTP/1.1", b"X-Note: a\x00b"), 400, "no NUL, CR or LF"),
    "bare LF ending a header line": (
        b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\nX-Note: b\r\n\r\n",
        400,
        "ending in CRLF",
    ),
    "obsolete line folding": (request(b"GET /livez HTTP/1.1", b"X-Note: a", b" continued"), 400, "line folding"),
    "a 10 KB header": (request(b"GET /livez HTTP/1.1", b"X-Note: " + b"a" * 10240), 431, "headers are too large"),
    "101 headers": (
        request(b"GET /livez HTTP/1.1", *(b"X-Note-%d: a" % i for i in range(101))),
        431,
        "headers are too large",
    ),
    "a 5 KB request line": (request(b"GET /workflows?q=" + b"a" * 5120 + b" HTTP/1.1"), 414, "longer than 4094 bytes"),
    "an invalid method": (request(b"G<T /livez HTTP/1.1"), 400, "not a valid HTTP method"),
    "an invalid HTTP version": (request(b"GET /livez HTTP/7.1"), 400, "HTTP version is not supported"),
    "a request line without a version": (request(b"GET /livez"), 400, "request line is malformed"),
    "a header without a colon": (request(b"GET /livez HTTP/1.1", b"no colon here"), 400, "header is malformed"),
    "a header name with a space": (request(b"GET /livez HTTP/1.1", b"X Note: a"), 400, "header name is malformed"),
    "a Content-Length that is no number": (
        request(b"POST /workflows HTTP/1.1", b"Content-Length: ten"),
        400,
        "Content-Length must be",
    ),
    "two Content-Lengths": (
        request(b"POST /workflows HTTP/1.1", b"Content-Length: 2", b"Content-Length: 3"),
        400,
        "Content-Length must be",
    ),
    "Content-Length with Transfer-Encoding": (
        request(b"POST /workflows HTTP/1.1", b"Content-Length: 2", b"Transfer-Encoding: chunked"),
        400,
        "Content-Length must be",
    ),
    "an unknown Transfer-Encoding": (
        request(b"POST /workflows HTTP/1.1", b"Transfer-Encoding: rot13"),
        501,
        "Transfer-Encoding is not supported",
    ),
    "an Expect other than 100-continue": (request(b"POST /workflows HTTP/1.1", b"Expect: 200-ok"), 417, "100-continue"),
}


@pytest.mark.parametrize("raw, status, detail", CASES.values(), ids=CASES.keys())
def test_what_gunicorn_refuses_is_answered_as_json(server, raw, status, detail):
    answer_status, headers, body = exchange(server, raw)
    assert answer_status == status, body
    assert headers["content-type"] == "application/json"
    assert len(headers["x-request-id"]) == 32
    answer = json.loads(body)
    assert list(answer) == ["detail"] and isinstance(answer["detail"], str)
    assert detail in answer["detail"]
    assert "<" not in answer["detail"] and "\x00" not in answer["detail"]


def test_each_refused_request_gets_its_own_request_id(server):
    ids = {exchange(server, CASES["an invalid method"][0])[1]["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_a_malformed_chunked_body_is_a_400_not_a_500(server):
    raw = request(
        b"POST /workflows HTTP/1.1",
        b"Content-Type: application/json",
        b"Transfer-Encoding: chunked",
        body=b"zz\r\n{}\r\n0\r\n\r\n",
    )
    status, headers, body = exchange(server, raw)
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"]
    assert json.loads(body) == {"detail": "The chunked request body is malformed."}


def test_a_well_formed_request_is_still_served(server):
    status, headers, _body = exchange(server, request(b"GET /livez HTTP/1.1", b"Connection: close"))
    assert status == 200 and headers["content-type"] == "application/json"
