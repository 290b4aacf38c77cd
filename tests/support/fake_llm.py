"""A local OpenAI-compatible Chat Completions server for tests: real HTTP on 127.0.0.1, scripted per test.

    with FakeLLM() as fake:
        fake.reply(429, {"error": {...}}, headers={"Retry-After": "0"})
        fake.reply(200, completion("hello"))
        ... LLM_BASE_URL=fake.url ...
        fake.requests  # what arrived: method, path, headers, body, json, at

Each request to ``POST <anything>/chat/completions`` takes the next scripted answer (status, body, headers,
delay); once the script is used up it answers ``completion("fake completion")``. A ``delay`` keeps the answer
back that many seconds (cut short when the server stops), so clients can time out.

``FakeLLM(rpm=, tpm=)`` enforces its own per-minute limits as a provider does: a request that would make more than
``rpm`` requests, or more than ``tpm`` tokens (its prompt's characters / 4 + its max_tokens, as counted on arrival),
in the last 60 seconds is answered 429 with a Retry-After, and counts for nothing. Its clock is
``time.monotonic()`` plus ``advance(seconds)``'s total, so a test that moves the database's times back by a minute
moves the fake's minute along too; ``Request.at`` is on that clock, and so is ``Request.done_at``, when its answer
was sent. ``FakeLLM(delay=s)`` keeps every unscripted answer back ``s`` seconds, so calls overlap as slow ones do
and ``most_at_once()`` tells how many were in flight together.
"""

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(content, *, model="gpt-4o-mini-2024-07-18", prompt_tokens=12, completion_tokens=5, finish_reason="stop"):
    """Return a Chat Completions answer body carrying ``content``."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@dataclass
class Reply:
    status: int = 200
    # dict/list: sent as JSON; str/bytes: sent as is.
    body: object = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    body: bytes
    at: float
    done_at: float | None = None

    @property
    def json(self):
        return json.loads(self.body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # An idle keep-alive connection is dropped after this long, so its thread ends.
    timeout = 5

    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def do_POST(self):
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body, fake.now())
        fake._record(request)
        if not self.path.endswith("/chat/completions"):
            self._send(Reply(404, {"error": {"message": "no such route", "type": "not_found"}}))
            return
        reply = fake._next(request)
        if reply.delay and fake._stopping.wait(reply.delay):
            return
        self._send(reply)
        request.done_at = fake.now()

    def _send(self, reply):
        body = reply.body
        content_type = "application/json"
        if isinstance(body, (dict, list)) or body is None:
            body = json.dumps(body if body is not None else {}).encode()
        elif isinstance(body, str):
            body = body.encode()
            content_type = "text/plain"
        try:
            self.send_response(reply.status)
            headers = {"Content-Type": content_type, **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timed out) first


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        pass  # a client that hung up mid-answer is expected here


class FakeLLM:
    """The server; ``url`` is the base URL to use as LLM_BASE_URL (``http://127.0.0.1:<port>/v1``)."""

    def __init__(self, *, rpm=None, tpm=None, delay=0.0):
        self.rpm, self.tpm, self.delay = rpm, tpm, delay
        # Seconds added to time.monotonic(): advance() moves the fake's clock on.
        self.offset = 0.0
        # (at, tokens) of each request counted against the limits.
        self.accepted = []
        self._lock = threading.Lock()
        self._script = deque()
        self._stopping = threading.Event()
        self.requests = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm", daemon=True
        )

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def reply(self, status=200, body=None, *, headers=None, delay=0.0, times=1):
        """Queue the answer to the next request (``times`` requests); returns self for chaining."""
        with self._lock:
            for _ in range(times):
                self._script.append(Reply(status, body, dict(headers or {}), delay))
        return self

    def now(self):
        return time.monotonic() + self.offset

    def advance(self, seconds):
        """Move the fake's clock ``seconds`` on (its limits' window with it)."""
        with self._lock:
            self.offset += seconds

    def _next(self, request):
        with self._lock:
            limited = self._limited(request)
            if limited is not None:
                return limited
            if self._script:
                return self._script.popleft()
        if self.rpm is None and self.tpm is None:
            return Reply(200, completion("fake completion"), delay=self.delay)
        # A limited fake reports the prompt's tokens as it counted them.
        try:
            prompt = request.json["messages"][0]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            prompt = ""
        return Reply(
            200,
            completion("fake completion", prompt_tokens=math.ceil(len(prompt) / 4), completion_tokens=5),
            delay=self.delay,
        )

    def _limited(self, request):
        """Return a 429 when ``request`` goes over the fake's own limits, else count it and return None."""
        if self.rpm is None and self.tpm is None:
            return None
        try:
            body = request.json
            tokens = math.ceil(len(body["messages"][0]["content"]) / 4) + body.get("max_tokens", 0)
        except (ValueError, KeyError, IndexError, TypeError):
            tokens = 0
        window = [(at, n) for at, n in self.accepted if at > request.at - 60]
        over_requests = self.rpm is not None and len(window) + 1 > self.rpm
        over_tokens = self.tpm is not None and sum(n for _, n in window) + tokens > self.tpm
        if over_requests or over_tokens:
            wait = max(0.0, window[0][0] + 60 - request.at) if window else 1.0
            return Reply(
                429,
                {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
                {"Retry-After": str(math.ceil(wait))},
            )
        self.accepted.append((request.at, tokens))
        return None

    def _record(self, request):
        with self._lock:
            self.requests.append(request)

    def max_in_window(self, seconds=60.0):
        """Return the most requests that arrived within any ``seconds`` (429s included)."""
        times = sorted(r.at for r in self.requests)
        best, first = 0, 0
        for last, at in enumerate(times):
            while times[first] <= at - seconds:
                first += 1
            best = max(best, last - first + 1)
        return best

    def most_at_once(self, which=lambda request: True):
        """Return the most answered requests for which ``which(request)`` holds that were in flight together."""
        edges = []
        for request in self.requests:
            if request.done_at is not None and which(request):
                edges += [(request.at, 1), (request.done_at, -1)]
        most = current = 0
        for _, change in sorted(edges):  # at a tie an end (-1) sorts before a start: touching calls do not overlap
            current += change
            most = max(most, current)
        return most
