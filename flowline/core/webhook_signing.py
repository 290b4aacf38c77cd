"""Standard Webhooks signing (https://www.standardwebhooks.com): the secrets and the ``webhook-signature`` header,
with the standard library's hmac, so receivers verify deliveries with the published libraries."""

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """Return a new signing secret: ``whsec_`` + base64 of 32 random bytes (the HMAC key is the decoded bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """Return ``v1,<base64 HMAC-SHA256 of "message_id.timestamp.body">`` under ``secret`` (a whsec_ secret)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(secrets_in_use: Iterable[str], message_id: str, timestamp: str, body: bytes) -> str:
    """Return the ``webhook-signature`` value: one signature per secret (the new one first during a rotation's
    overlap), separated by spaces; a verifier accepts the message when any of them matches its secret."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets_in_use)
