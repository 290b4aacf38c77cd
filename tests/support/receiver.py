"""A webhook receiver for the tests: a real HTTP server on 127.0.0.1 that records every request and answers as the
test tells it (a status, a delay, a body of some size, headers dripped a byte at a time, a redirect)."""

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes
    at: float = field(default_factory=time.monotonic)


@dataclass
class Behaviour:
    status: int = 200
    delay: float = 0.0
    # Bytes of answer body sent after the headers (Content-Length says so).
    body_bytes: int = 0
    # Seconds between single bytes of the header block (a receiver that never trips a per-read timeout).
    drip: float = 0.0
    location: str | None = None
    # An answer body of these bytes (instead of body_bytes of filler).
    body: bytes = b""


class Receiver:
    """``Receiver(port=0).start()``; ``url(path)``; ``answer(path, Behaviour(...))``; ``received(path)``."""

    def __init__(self, port=0):
        self.port = port
        self.requests = []
        self.behaviours = {}
        # Answers whose whole body was written (False: the client hung up first).
        self.completed = []
        self._lock = threading.Lock()
        self._server = None

    def start(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    behaviour = receiver.behaviours.get(self.path, Behaviour())
                time.sleep(behaviour.delay)
                try:
                    self._answer(behaviour)
                except (BrokenPipeError, ConnectionResetError):
                    with receiver._lock:
                        receiver.completed.append(False)
                    self.close_connection = True

            def _answer(self, behaviour):
                size = len(behaviour.body) or behaviour.body_bytes
                head = f"HTTP/1.1 {behaviour.status} X\r\nContent-Length: {size}\r\n"
                if behaviour.location:
                    head += f"Location: {behaviour.location}\r\n"
                head = (head + "Connection: close\r\n\r\n").encode()
                if behaviour.drip:
                    for i in range(len(head)):
                        self.wfile.write(head[i : i + 1])
                        self.wfile.flush()
                        time.sleep(behaviour.drip)
                else:
                    self.wfile.write(head)
                self.wfile.write(behaviour.body)
                chunk = b"x" * 65536
                left = 0 if behaviour.body else behaviour.body_bytes
                while left > 0:
                    self.wfile.write(chunk[:left])
                    left -= len(chunk)
                self.wfile.flush()
                with receiver._lock:
                    receiver.completed.append(True)
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path, behaviour):
        with self._lock:
            self.behaviours[path] = behaviour

    def received(self, path=None):
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]
