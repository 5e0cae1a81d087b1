"""Standard Webhooks signatures: the server signs with them, receivers verify with them.

Each POST carries three headers: `webhook-id` (the message id, the receiver's
idempotency key), `webhook-timestamp` (Unix seconds) and `webhook-signature`, a
space-separated list of `version,base64-signature`:

- `v1`: HMAC-SHA256 with the endpoint's secret (`whsec_` + base64 key). During a secret
  rotation the server sends one `v1` per valid secret.
- `v1a`: Ed25519 with the clearinghouse's own key (`GET /api/v1/server-key`, also in
  the spec's `whpk_` form), so a receiver can verify with a public key and no shared secret.

Both sign the bytes `{webhook-id}.{webhook-timestamp}.{body}`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .keys import public_key_bytes

SECRET_PREFIX = "whsec_"
# The Standard Webhooks spelling of an Ed25519 public key: `whpk_` + base64 of its 32 bytes.
PUBLIC_KEY_PREFIX = "whpk_"
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookVerificationError(ValueError):
    """The message is not authentic, or too old or too new; the message says which."""


def new_secret() -> str:
    """A fresh endpoint secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _secret_key(secret: str) -> bytes:
    encoded = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the webhook secret is not whsec_ followed by base64") from None


def public_key_to_whpk(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> str:
    """The public key as Standard Webhooks presents it: `whpk_` + base64."""
    return PUBLIC_KEY_PREFIX + base64.b64encode(public_key_bytes(key)).decode()


def signed_content(message_id: str, timestamp: int | str, body: bytes) -> bytes:
    return f"{message_id}.{timestamp}.".encode() + body


def sign(
    *,
    message_id: str,
    timestamp: int,
    body: bytes,
    secrets_: Iterable[str] = (),
    private_key: Ed25519PrivateKey | None = None,
) -> dict[str, str]:
    """The three headers for one message, with a `v1` per secret and a `v1a` if a key is given."""
    content = signed_content(message_id, timestamp, body)
    parts = [
        "v1," + base64.b64encode(hmac.new(_secret_key(s), content, hashlib.sha256).digest()).decode() for s in secrets_
    ]
    if private_key is not None:
        parts.append("v1a," + base64.b64encode(private_key.sign(content)).decode())
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": " ".join(parts)}


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"missing header {name}")


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: str | None = None,
    public_key: Ed25519PublicKey | bytes | str | None = None,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Check a received webhook; return quietly if it is authentic, else raise.

    Give the endpoint's `secret` (checks `v1`), the server's `public_key` (checks `v1a`;
    raw bytes, base64 text, `whpk_` text or a key object), or both (both must then verify). The
    timestamp must be within `tolerance_seconds` of now, which stops replays of old
    messages; deduplicate on `webhook-id` to drop retries of messages already handled.
    """
    if secret is None and public_key is None:
        raise ValueError("give the endpoint's secret, the server's public key, or both")
    message_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature").split()
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        raise WebhookVerificationError(f"webhook-timestamp is more than {tolerance_seconds} s from now")
    content = signed_content(message_id, timestamp, body)
    by_version: dict[str, list[bytes]] = {}
    for item in signatures:
        version, _, encoded = item.partition(",")
        try:
            by_version.setdefault(version, []).append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    if secret is not None:
        expected = hmac.new(_secret_key(secret), content, hashlib.sha256).digest()
        if not any(hmac.compare_digest(expected, candidate) for candidate in by_version.get("v1", [])):
            raise WebhookVerificationError("no v1 signature matches the secret")
    if public_key is not None:
        if isinstance(public_key, str):
            encoded = public_key.removeprefix(PUBLIC_KEY_PREFIX)
            try:
                public_key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise WebhookVerificationError("the public key is not base64 (or whpk_ and base64)") from None
        key = (
            public_key
            if isinstance(public_key, Ed25519PublicKey)
            else (Ed25519PublicKey.from_public_bytes(public_key_bytes(public_key)))
        )
        for candidate in by_version.get("v1a", []):
            try:
                key.verify(candidate, content)
                break
            except InvalidSignature:
                continue
        else:
            raise WebhookVerificationError("no v1a signature matches the server's public key")
