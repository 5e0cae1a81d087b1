"""Webhooks as Standard Webhooks specifies them, checked with the spec's own Python library.

`v1` (HMAC-SHA256, whsec_ secret) against the `standardwebhooks` package both ways; `v1a`
(Ed25519) by the spec's asymmetric rule with the server key in its `whpk_` form; retries
spread by jitter and a receiver's `Retry-After` honoured; the timeout in the spec's range.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.utils import timezone
from hashexchange_client import webhooks as signing
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from exchange import delivery as webhook_delivery
from exchange import net
from exchange.models import Delivery
from tests.conftest import Caller, Receiver
from tests.signing import Signer, random_pdq


def create_endpoint(caller: Caller, url: str) -> dict:
    response = caller.client.post("/api/v1/webhooks", {"url": url}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_a_delivery_verifies_with_the_reference_library_and_its_signatures_with_ours(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    hook = create_endpoint(platform_b, receiver.url)
    signer_a.submit(signer_a.submission(random_pdq()))
    webhook_delivery.deliver_endpoint(hook["id"])
    [got] = receiver.received
    reference = Webhook(hook["secret"])
    message = reference.verify(got.body, dict(got.headers))
    assert message["type"] == "hash.added"
    with pytest.raises(WebhookVerificationError):
        reference.verify(got.body + b" ", dict(got.headers))
    # The other way: what the reference library signs, our verifier accepts.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    body = json.dumps({"type": "ping"})
    signature = reference.sign("msg_ref_1", now, body)
    headers = {
        "webhook-id": "msg_ref_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    signing.verify_webhook(headers, body.encode(), secret=hook["secret"])


def test_v1a_follows_the_asymmetric_rule_with_the_published_whpk_key(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    key = platform_b.client.get("/api/v1/server-key").json()
    assert key["whpk"].startswith("whpk_")
    raw = base64.b64decode(key["whpk"].removeprefix("whpk_"))
    assert raw == base64.b64decode(key["public_key"]) and len(raw) == 32
    hook = create_endpoint(platform_b, receiver.url)
    signer_a.submit(signer_a.submission(random_pdq()))
    webhook_delivery.deliver_endpoint(hook["id"])
    [got] = receiver.received
    # The spec: sign "{msg_id}.{timestamp}.{payload}" with ed25519; header entry "v1a,<base64>".
    content = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode() + got.body
    entries = [item.split(",", 1) for item in got.headers["webhook-signature"].split()]
    [v1a] = [sig for version, sig in entries if version == "v1a"]
    Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(v1a), content)  # raises if wrong
    signing.verify_webhook(got.headers, got.body, public_key=key["whpk"])
    with pytest.raises(signing.WebhookVerificationError):
        signing.verify_webhook(got.headers, got.body + b"x", public_key=key["whpk"])


def test_retries_are_spread_by_jitter_around_the_schedule() -> None:
    delays = [webhook_delivery.retry_delay(300, None) for _ in range(200)]
    assert all(270 <= d <= 330 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100  # spread, not one instant for every endpoint


@pytest.mark.parametrize("header", ["120", "{http_date}"])
def test_a_receivers_retry_after_is_honoured(
    header: str, receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    hook = create_endpoint(platform_b, receiver.url)
    later = timezone.now() + dt.timedelta(seconds=125)
    receiver.headers = {"Retry-After": header.format(http_date=later.strftime("%a, %d %b %Y %H:%M:%S GMT"))}
    receiver.default_status = 503
    signer_a.submit(signer_a.submission(random_pdq()))
    webhook_delivery.deliver_endpoint(hook["id"])
    delivery = Delivery.objects.get()
    assert delivery.status == "pending"
    # The schedule's first retry is 5 s; the receiver asked for about two minutes.
    assert delivery.next_attempt_at >= timezone.now() + dt.timedelta(seconds=100)


def test_a_retry_after_that_is_not_a_number_or_a_date_is_ignored() -> None:
    assert net.parse_retry_after("soon") is None
    assert net.parse_retry_after("") is None
    assert net.parse_retry_after("30") == 30.0


def test_the_receiver_gets_a_timeout_in_the_specs_range() -> None:
    assert 15 <= settings.WEBHOOK_TIMEOUT_SECONDS <= 30
