"""Receivers verify webhooks with the client package: secret (v1), server key (v1a), or both."""

from __future__ import annotations

import base64

import pytest
from hashexchange_client import keys
from hashexchange_client.webhooks import WebhookVerificationError, new_secret, sign, verify_webhook
from hypothesis import given
from hypothesis import strategies as st

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
SERVER = keys.private_key_from_seed(bytes(range(1, 33)))
BODY = b'{"type":"hash.added","timestamp":"2026-11-21T06:00:00.000000Z","data":{"seq":7}}'
NOW = 1_790_000_000


def headers(body: bytes = BODY, *, timestamp: int = NOW, secrets_: tuple[str, ...] = (SECRET,)) -> dict[str, str]:
    return sign(message_id="msg_1_7_7", timestamp=timestamp, body=body, secrets_=secrets_, private_key=SERVER)


def test_both_signature_kinds_verify() -> None:
    got = headers()
    verify_webhook(got, BODY, secret=SECRET, now=NOW)
    verify_webhook(got, BODY, public_key=keys.public_key_to_b64(SERVER), now=NOW)
    verify_webhook(got, BODY, public_key=SERVER.public_key(), now=NOW)
    verify_webhook(
        {k.upper(): v for k, v in got.items()}, BODY, secret=SECRET, public_key=keys.public_key_bytes(SERVER), now=NOW
    )


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_any_altered_body_byte_fails(index: int, bit: int) -> None:
    index %= len(BODY)
    altered = BODY[:index] + bytes([BODY[index] ^ (1 << bit)]) + BODY[index + 1 :]
    for kwargs in ({"secret": SECRET}, {"public_key": SERVER.public_key()}):
        with pytest.raises(WebhookVerificationError):
            verify_webhook(headers(), altered, now=NOW, **kwargs)


@pytest.mark.parametrize("skew", [-301, 301])
def test_old_or_future_timestamps_fail(skew: int) -> None:
    with pytest.raises(WebhookVerificationError, match="300 s"):
        verify_webhook(headers(), BODY, secret=SECRET, now=NOW + skew)
    verify_webhook(headers(), BODY, secret=SECRET, now=NOW + skew, tolerance_seconds=400)


def test_a_changed_message_id_or_timestamp_fails() -> None:
    got = headers()
    with pytest.raises(WebhookVerificationError):
        verify_webhook({**got, "webhook-id": "msg_other"}, BODY, secret=SECRET, now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify_webhook({**got, "webhook-timestamp": str(NOW + 1)}, BODY, public_key=SERVER.public_key(), now=NOW)


def test_during_a_rotation_either_secret_verifies() -> None:
    new = new_secret()
    got = headers(secrets_=(new, SECRET))
    verify_webhook(got, BODY, secret=new, now=NOW)
    verify_webhook(got, BODY, secret=SECRET, now=NOW)
    with pytest.raises(WebhookVerificationError, match="v1"):
        verify_webhook(got, BODY, secret=new_secret(), now=NOW)


def test_missing_pieces_are_named() -> None:
    with pytest.raises(WebhookVerificationError, match="webhook-signature"):
        verify_webhook({"webhook-id": "x", "webhook-timestamp": str(NOW)}, BODY, secret=SECRET, now=NOW)
    with pytest.raises(ValueError, match="secret"):
        verify_webhook(headers(), BODY)
    with pytest.raises(WebhookVerificationError, match="v1a"):
        verify_webhook(
            sign(message_id="m", timestamp=NOW, body=BODY, secrets_=(SECRET,)),
            BODY,
            public_key=SERVER.public_key(),
            now=NOW,
        )
