"""The webhook outbound client (flowline/worker/outbound.py) against a real loopback receiver: which addresses it
refuses (and that it then sends nothing), redirects it does not follow, its wall-clock bound and its bounded read;
and the Standard Webhooks signatures, checked with the reference verifier."""

import socket
import ssl
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from flowline.core.webhook_signing import new_secret, sign, signature_header
from flowline.worker import outbound
from tests.support.receiver import Behaviour, Receiver


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "address, kind",
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "link-local"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not globally routable"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_non_public_addresses_are_refused_unless_private_ones_are_allowed(address, kind):
    problem = outbound.address_problem(address, allow_private=False)
    assert problem is not None and kind in problem
    assert outbound.address_problem(address, allow_private=True) is None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert outbound.address_problem(address, allow_private=False) is None


def ssrf_urls(port):
    return [
        (f"http://127.0.0.1:{port}/hook", "127.0.0.1, a loopback address"),
        (f"http://localhost:{port}/hook", "a loopback address"),
        (f"http://[::1]:{port}/hook", "::1, a loopback address"),
        (f"http://[::ffff:127.0.0.1]:{port}/hook", "127.0.0.1, a loopback address"),
        ("http://10.0.0.7/hook", "10.0.0.7, a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a link-local address"),
        (f"https://127.0.0.1:{port}/hook", "127.0.0.1, a loopback address"),
    ]


@pytest.mark.serial  # it times the call against a bound
def test_urls_resolving_to_private_addresses_are_refused_and_nothing_is_sent(receiver):
    for url, reason in ssrf_urls(receiver.port):
        started = time.monotonic()
        with pytest.raises(outbound.Refused) as refused:
            outbound.post(url, b"{}", {}, timeout_s=2, allow_private=False)
        assert reason in str(refused.value) and "refused, nothing sent" in str(refused.value), url
        assert "WEBHOOK_ALLOW_PRIVATE=1" in str(refused.value)
        assert time.monotonic() - started < 0.5, "refused before any connection attempt"
    assert receiver.received() == []


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "http://user:pw@example.com/", "http:///nohost", "file:///etc/passwd"]
)
def test_other_urls_are_refused(url):
    with pytest.raises(outbound.Refused):
        outbound.post(url, b"{}", {}, timeout_s=1, allow_private=True)


def test_a_loopback_receiver_is_reached_when_private_addresses_are_allowed(receiver):
    answer = outbound.post(receiver.url(), b'{"a":1}', {"webhook-id": "m1"}, timeout_s=2, allow_private=True)
    assert (answer.status_code, answer.error) == (200, None)
    [got] = receiver.received()
    assert got.body == b'{"a":1}' and got.headers["webhook-id"] == "m1"
    assert got.headers["content-type"] == "application/json"
    assert "authorization" not in got.headers and "cookie" not in got.headers


def test_a_redirect_is_not_followed_even_to_an_allowed_address(receiver):
    other = Receiver().start()
    try:
        receiver.answer("/hook", Behaviour(status=302, location=other.url("/metadata")))
        answer = outbound.post(receiver.url(), b"{}", {}, timeout_s=2, allow_private=True)
        assert answer.status_code == 302 and "not followed" in answer.error
        assert other.received() == []
    finally:
        other.stop()


@pytest.mark.serial  # it times the call against a bound
def test_a_receiver_dripping_its_answer_is_cut_off_at_the_deadline(receiver):
    receiver.answer("/hook", Behaviour(drip=0.2))
    started = time.monotonic()
    answer = outbound.post(receiver.url(), b"{}", {}, timeout_s=1.0, allow_private=True)
    elapsed = time.monotonic() - started
    assert answer.status_code is None and "within 1 s" in answer.error
    assert 0.9 <= elapsed < 2.0, elapsed


@pytest.mark.serial  # it times the call against a bound
def test_a_slow_receiver_is_cut_off_at_the_deadline(receiver):
    receiver.answer("/hook", Behaviour(delay=3))
    answer = outbound.post(receiver.url(), b"{}", {}, timeout_s=0.5, allow_private=True)
    assert answer.status_code is None and 450 <= answer.latency_ms < 1000


@pytest.mark.serial  # it times the call against a bound
def test_a_10_mb_answer_is_not_read(receiver):
    receiver.answer("/hook", Behaviour(body_bytes=10 * 1024 * 1024))
    answer = outbound.post(receiver.url(), b"{}", {}, timeout_s=5, allow_private=True)
    assert answer.status_code == 200 and len(answer.excerpt) <= outbound.ANSWER_EXCERPT_CHARS
    assert answer.latency_ms < 1000
    time.sleep(0.3)
    assert receiver.completed == [False], "the client hung up long before the 10 MB were sent"


def test_signatures_verify_with_the_reference_verifier_and_tampering_fails():
    secret, old = new_secret(), new_secret()
    assert secret.startswith("whsec_") and len(secret) == 6 + 44 and secret != old
    body = b'{"type":"run.succeeded","data":{"run":{"id":"x"}}}'
    now = str(int(time.time()))
    headers = {
        "webhook-id": "d1",
        "webhook-timestamp": now,
        "webhook-signature": signature_header([secret, old], "d1", now, body),
    }
    assert headers["webhook-signature"].count("v1,") == 2
    assert Webhook(secret).verify(body, headers)["type"] == "run.succeeded"
    assert Webhook(old).verify(body, headers)["type"] == "run.succeeded"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"succeeded", b"failed"), headers)
    stale = str(int((datetime.now(UTC) - timedelta(minutes=6)).timestamp()))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(
            body, {**headers, "webhook-timestamp": stale, "webhook-signature": sign(secret, "d1", stale, body)}
        )


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(receiver, monkeypatch):
    # A name that resolves nowhere: reaching the receiver proves the client connected to the address checked
    # once (no second lookup a rebinding DNS server could answer differently), with the name in the Host header.
    lookups = []

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        lookups.append(host)
        if host == "hooks.example.invalid":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    answer = outbound.post(
        f"http://hooks.example.invalid:{receiver.port}/hook", b"{}", {}, timeout_s=2, allow_private=True
    )
    assert answer.status_code == 200
    assert lookups.count("hooks.example.invalid") == 1 and set(lookups) <= {"hooks.example.invalid", "127.0.0.1"}
    assert receiver.received()[0].headers["host"] == f"hooks.example.invalid:{receiver.port}"


@pytest.mark.serial  # it times the call against a bound
def test_a_lookup_that_hangs_is_cut_at_the_deadline_and_nothing_is_sent(monkeypatch):
    def getaddrinfo(host, port, *args, **kwargs):
        time.sleep(3)
        raise AssertionError("never reached in time")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    started = time.monotonic()
    with pytest.raises(outbound.Refused, match=r"looking up slow\.example took longer than"):
        outbound.post("http://slow.example/hook", b"{}", {}, timeout_s=0.5, allow_private=False)
    assert time.monotonic() - started < 1.0


@pytest.fixture
def tls_receiver(tmp_path, monkeypatch):
    """An HTTPS receiver on 127.0.0.1 with a certificate for hooks.example.test (made with openssl), the client's
    TLS context trusting it, and hooks.example.test and other.example.test resolving to 127.0.0.1; yields
    (port, the server names the receiver was asked for)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=hooks.example.test",
         "-addext", "subjectAltName=DNS:hooks.example.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server_names = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    receiver = Receiver().start()
    receiver._server.socket = context.wrap_socket(receiver._server.socket, server_side=True)
    client_context = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(outbound, "_ssl_context", lambda: client_context)
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host.endswith(".example.test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield receiver, server_names
    receiver.stop()


def test_tls_goes_to_the_checked_address_with_the_names_sni_and_certificate_check(tls_receiver):
    receiver, server_names = tls_receiver
    answer = outbound.post(
        f"https://hooks.example.test:{receiver.port}/hook", b"{}", {}, timeout_s=5, allow_private=True
    )
    assert (answer.status_code, answer.error) == (200, None)
    assert server_names == ["hooks.example.test"]
    assert receiver.received()[0].headers["host"] == f"hooks.example.test:{receiver.port}"
    # The same address under a name the certificate does not hold: the handshake fails, nothing is sent.
    refused = outbound.post(
        f"https://other.example.test:{receiver.port}/hook", b"{}", {}, timeout_s=5, allow_private=True
    )
    assert refused.status_code is None and "CERTIFICATE_VERIFY_FAILED" in refused.error
    assert len(receiver.received()) == 1
