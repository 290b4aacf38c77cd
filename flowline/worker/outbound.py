"""The outbound HTTP client of webhook deliveries: one POST to a URL a client chose, made safe to send from inside
the network Flowline runs in.

- The host is resolved once (``getaddrinfo``) and only a globally routable address is accepted
  (``ipaddress.ip_address(a).is_global``, an IPv4-mapped IPv6 address unwrapped first), unless
  WEBHOOK_ALLOW_PRIVATE; the connection then goes to exactly that address (``_PinnedBackend``), so a name that
  resolves differently a moment later (DNS rebinding) is never looked up again. The URL keeps its host name, so
  the ``Host`` header, TLS's server name and the certificate check are the name's.
- One wall-clock deadline bounds the whole attempt (connect, TLS, sending, the answer's headers and body):
  every socket operation waits at most what is left of it, so a receiver sending a byte a second is cut off at
  the deadline where httpx's own timeouts, per read, would wait forever.
- No redirect is followed, nothing is taken from the environment (proxies, .netrc: ``trust_env=False``), no
  credential of Flowline's is sent, and at most MAX_ANSWER_BYTES of the answer are read.

It is not the LLM provider's client (flowline/engine/providers.py): that one talks to a URL the operator chose.
"""

from __future__ import annotations

import concurrent.futures
import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

# Read of an answer's body, at most: enough for a short error message, never a 10 MB page.
MAX_ANSWER_BYTES = 4096
# Of what was read, kept in the delivery's history (a non-2xx answer's first characters).
ANSWER_EXCERPT_CHARS = 200
USER_AGENT = "Flowline-Webhooks/1"


class Refused(Exception):
    """The URL may not be sent to (nothing was sent); the message says why."""


@dataclass(frozen=True)
class Answer:
    """What one attempt got: the status code (None when no answer came), its latency, and what went wrong (None
    for an answer, whatever its status) or the start of the answer's body."""

    status_code: int | None
    latency_ms: int
    error: str | None
    excerpt: str = ""


def address_problem(address: str, allow_private: bool) -> str | None:
    """Return why Flowline must not connect to ``address`` (an IP address as text), or None when it may:
    ``"10.0.0.1, a private address, not a public one"``."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # Multicast ranges count as global (IANA), but are no receiver's address.
    if (ip.is_global and not ip.is_multicast) or allow_private:
        return None
    kind = next(
        (
            name
            for name, flag in (
                ("loopback", ip.is_loopback),
                ("link-local", ip.is_link_local),
                ("unspecified", ip.is_unspecified),
                ("multicast", ip.is_multicast),
                ("private", ip.is_private),
                ("reserved", ip.is_reserved),
            )
            if flag
        ),
        "not globally routable",
    )
    return f"{ip}, a {kind} address, not a public one"


def check_url(url: str) -> tuple[str, int]:
    """Return ``(host, port)`` of an http(s) URL without user:password.

    :raise Refused: any other URL.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise Refused(f"the URL is not valid: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("only http and https URLs with a host are delivered to")
    if parts.username is not None or parts.password is not None:
        raise Refused("URLs with a user or password are not delivered to")
    return parts.hostname, port


# getaddrinfo has no timeout of its own (a resolver that does not answer holds it for its retries, 10 s or more):
# lookups run on these threads, and an attempt waits for its lookup only until its deadline.
_LOOKUPS = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


def resolve(host: str, port: int, allow_private: bool, timeout_s: float | None = None) -> str:
    """Return the address to connect to for ``host``: the first one ``getaddrinfo`` gives that is allowed.

    :raise Refused: the name does not resolve (within ``timeout_s``), or to no allowed address (the message names
        the first).
    """
    lookup = _LOOKUPS.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise Refused(f"nothing sent: looking up {host} took longer than {timeout_s:g} s") from None
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"nothing sent: {host} does not resolve: {exc}") from None
    problems = []
    for info in infos:
        address = str(info[4][0])
        problem = address_problem(address, allow_private)
        if problem is None:
            return address
        problems.append(problem)
    raise Refused(f"refused, nothing sent: {host} resolves to {problems[0]} (WEBHOOK_ALLOW_PRIVATE=1 allows it)")


class _Deadline:
    """One attempt's wall-clock deadline."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, timeout: float | None, error: type[Exception] = httpcore.ReadTimeout) -> float:
        """Return the seconds to wait: what is left of the deadline, or ``timeout`` when that is shorter.

        :raise error: the deadline passed.
        """
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise error("the attempt's deadline passed")
        return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits at most what is left of the attempt's deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> _DeadlineStream:
        stream = self._stream.start_tls(ssl_context, server_hostname, self._deadline.left(timeout))
        return _DeadlineStream(stream, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the one address checked beforehand, whatever host httpcore asks for."""

    def __init__(self, address: str, deadline: _Deadline) -> None:
        self._backend = httpcore.SyncBackend()
        self._address = address
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> _DeadlineStream:
        timeout = self._deadline.left(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(self._address, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are not delivered to unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """The TLS context of every attempt (certificates verified against certifi's CAs), made once per process:
    loading the CAs takes about 30 ms, and one context is safe to share between threads."""
    return httpx.create_ssl_context()


class _PinnedTransport(httpx.HTTPTransport):
    """httpx's transport, its connections made by _PinnedBackend."""

    def __init__(self, address: str, deadline: _Deadline) -> None:
        super().__init__(verify=_ssl_context(), retries=0)
        # httpx 0.28 takes no network backend of its own: its transport's pool is replaced by one that has ours
        # (the same arguments HTTPTransport gives it by default).
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=1,
            network_backend=_PinnedBackend(address, deadline),
        )


def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float, allow_private: bool) -> Answer:
    """POST ``body`` (bytes) with ``headers`` to ``url`` within ``timeout_s`` seconds in all; return an Answer.

    :raise Refused: the URL or the address it resolves to is not allowed; nothing was sent.
    """
    started = time.monotonic()
    deadline = _Deadline(timeout_s)
    host, port = check_url(url)
    address = resolve(host, port, allow_private, deadline.left(None, Refused))
    headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json", **headers}

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        with (
            httpx.Client(
                transport=_PinnedTransport(address, deadline),
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(timeout_s),
            ) as client,
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            read = bytearray()
            for chunk in response.iter_raw(MAX_ANSWER_BYTES):
                read += chunk
                if len(read) >= MAX_ANSWER_BYTES:
                    break  # the rest is never read: closing the stream drops the connection
            excerpt = bytes(read[:MAX_ANSWER_BYTES]).decode("utf-8", "replace")[:ANSWER_EXCERPT_CHARS]
            error = None
            if response.is_redirect:
                error = f"redirect to {response.headers.get('location', '?')[:200]} not followed"
            return Answer(response.status_code, elapsed_ms(), error, excerpt)
    except httpx.TimeoutException:
        return Answer(None, elapsed_ms(), f"no complete answer within {timeout_s:g} s (WEBHOOK_TIMEOUT_S)")
    except httpx.HTTPError as exc:
        return Answer(None, elapsed_ms(), f"{type(exc).__name__}: {exc}"[:500])
