"""A local OpenAI-compatible Chat Completions server for tests: real HTTP on 127.0.0.1, scripted per test.

    with FakeLLM() as fake:
        fake.reply(429, {"error": {...}}, headers={"Retry-After": "0"})
        fake.reply(200, completion("hello"))
        ... LLM_BASE_URL=fake.url ...
        fake.requests  # what arrived: method, path, headers, body, json, at

Each request to ``POST <anything>/chat/completions`` takes the next scripted answer (status, body, headers,
delay); once the script is used up it answers ``completion("fake completion")``. A ``delay`` keeps the answer
back that many seconds (cut short when the server stops), so clients can time out.
"""

import json
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
        fake._record(
            Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
        )
        if not self.path.endswith("/chat/completions"):
            self._send(Reply(404, {"error": {"message": "no such route", "type": "not_found"}}))
            return
        reply = fake._next()
        if reply.delay and fake._stopping.wait(reply.delay):
            return
        self._send(reply)

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

    def __init__(self):
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

    def _next(self):
        with self._lock:
            return self._script.popleft() if self._script else Reply(200, completion("fake completion"))

    def _record(self, request):
        with self._lock:
            self.requests.append(request)
