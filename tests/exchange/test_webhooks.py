"""Webhook endpoints and delivery, against real HTTP receivers on 127.0.0.1.

The delivery engine is called directly here; tests/exchange/test_nothing_lost.py drives
the same engine through real Celery workers and a Redis that goes away.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from django.test import override_settings
from django.utils import timezone
from hashexchange_client import webhooks as signing

from core.ledger import Event
from exchange import delivery as webhook_delivery
from exchange import webhook_pages
from exchange.models import Delivery, DeliveryAttempt, WebhookEndpoint
from members import services as member_services
from members.models import Program
from tests.conftest import SETUP, Caller, Receiver
from tests.signing import Signer, random_pdq


def create_endpoint(caller: Caller, url: str, **fields: object) -> dict:
    response = caller.client.post("/api/v1/webhooks", {"url": url, **fields}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def server_key(caller: Caller) -> str:
    return caller.client.get("/api/v1/server-key").json()["public_key"]


def drain(endpoint_id: int) -> webhook_delivery.DrainResult:
    return webhook_delivery.deliver_endpoint(endpoint_id)


def test_a_hash_is_pushed_signed_with_the_secret_and_the_server_key(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    hook = create_endpoint(platform_b, receiver.url, description="prod")
    assert hook["secret"].startswith("whsec_")
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    assert drain(hook["id"]).sent == 1
    [got] = receiver.received
    signing.verify_webhook(got.headers, got.body, secret=hook["secret"])
    signing.verify_webhook(got.headers, got.body, public_key=server_key(platform_b))
    signing.verify_webhook(got.headers, got.body, secret=hook["secret"], public_key=server_key(platform_b))
    message = got.json()
    assert message["type"] == "hash.added"
    assert message["data"]["hash"]["value"] == value
    assert message["data"]["seq"] == Event.objects.get(kind="hash.added").seq
    assert got.headers["content-type"] == "application/json"
    with pytest.raises(signing.WebhookVerificationError):
        signing.verify_webhook(got.headers, got.body + b" ", secret=hook["secret"])
    with pytest.raises(signing.WebhookVerificationError):
        signing.verify_webhook(got.headers, got.body, secret=signing.new_secret())
    assert WebhookEndpoint.objects.get(pk=hook["id"]).cursor_seq == message["data"]["seq"]
    assert drain(hook["id"]).sent == 0  # up to date


def test_an_endpoint_that_is_behind_gets_batches_in_order(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    hook = create_endpoint(platform_b, receiver.url)
    signer_a.submit(*[signer_a.submission() for _ in range(5)])
    with override_settings(WEBHOOK_BATCH_SIZE=2):
        assert drain(hook["id"]).sent == 3
    types = [r.json()["type"] for r in receiver.received]
    assert types == ["events.batch", "events.batch", "hash.added"]
    seqs = [e["seq"] for e in receiver.entries()]
    assert seqs == list(Event.objects.filter(kind="hash.added").values_list("seq", flat=True))
    first = receiver.received[0].json()["data"]
    assert (first["first_seq"], first["last_seq"]) == (seqs[0], seqs[1])
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 3


def test_a_failing_receiver_is_retried_on_schedule_with_the_same_message(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    hook = create_endpoint(platform_b, receiver.url)
    receiver.responses = [500, 503]
    signer_a.submit(signer_a.submission())
    with override_settings(WEBHOOK_RETRY_SCHEDULE=[60, 60]):
        drain(hook["id"])
        delivery = Delivery.objects.get()
        assert (delivery.status, delivery.attempts) == ("pending", 1)
        assert delivery.next_attempt_at > timezone.now() + dt.timedelta(seconds=50)
        assert drain(hook["id"]).sent == 0  # not due yet: nothing is sent early
        for _ in range(2):
            Delivery.objects.update(next_attempt_at=timezone.now())
            drain(hook["id"])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert [a.status_code for a in DeliveryAttempt.objects.order_by("pk")] == [500, 503, 200]
    assert DeliveryAttempt.objects.first().response_excerpt == "answered 500"
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert len({r.body for r in receiver.received}) == 1


def test_410_gone_disables_the_endpoint_and_re_enabling_resumes(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    hook = create_endpoint(platform_b, receiver.url)
    receiver.responses = [410]
    signer_a.submit(signer_a.submission())
    drain(hook["id"])
    endpoint = WebhookEndpoint.objects.get(pk=hook["id"])
    assert not endpoint.is_active and "410" in endpoint.disabled_reason
    assert Event.objects.filter(kind="webhook.disabled", subject_id=str(hook["id"])).exists()
    signer_a.submit(signer_a.submission())  # arrives while disabled
    assert drain(hook["id"]).claimed is False
    response = platform_b.client.patch(f"/api/v1/webhooks/{hook['id']}", {"is_active": True}, format="json")
    assert response.json()["is_active"] is True
    drain(hook["id"])
    assert len(receiver.entries()) == 3  # the refused one again, then the one sent while disabled
    assert [e["seq"] for e in receiver.entries()[1:]] == list(
        Event.objects.filter(kind="hash.added").values_list("seq", flat=True)
    )


def test_a_run_of_failures_disables_the_endpoint(receiver: Receiver, signer_a: Signer, platform_b: Caller) -> None:
    hook = create_endpoint(platform_b, receiver.url)
    receiver.default_status = 500
    signer_a.submit(signer_a.submission())
    with override_settings(WEBHOOK_RETRY_SCHEDULE=[0, 0]):
        for _ in range(3):
            drain(hook["id"])
    assert Delivery.objects.get().status == "failed"
    endpoint = WebhookEndpoint.objects.get(pk=hook["id"])
    assert not endpoint.is_active
    assert "3 failed attempts" in endpoint.disabled_reason
    event = Event.objects.get(kind="webhook.disabled")
    assert (event.actor_type, event.data["member"]) == ("system", "platform-b")


def test_redirects_are_not_followed(receiver: Receiver, signer_a: Signer, platform_b: Caller) -> None:
    hook = create_endpoint(platform_b, receiver.url)
    receiver.responses = [302]
    signer_a.submit(signer_a.submission())
    drain(hook["id"])
    assert len(receiver.received) == 1
    assert DeliveryAttempt.objects.get().status_code == 302
    assert Delivery.objects.get().status == "pending"


def test_rotating_the_secret_signs_with_both_during_the_grace_period(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    hook = create_endpoint(platform_b, receiver.url)
    rotated = platform_b.client.post(
        f"/api/v1/webhooks/{hook['id']}/rotate-secret", {"grace_hours": 2}, format="json"
    ).json()
    assert rotated["secret"] != hook["secret"]
    signer_a.submit(signer_a.submission())
    drain(hook["id"])
    got = receiver.received[0]
    assert got.headers["webhook-signature"].count("v1,") == 2
    signing.verify_webhook(got.headers, got.body, secret=hook["secret"])
    signing.verify_webhook(got.headers, got.body, secret=rotated["secret"])
    platform_b.client.post(f"/api/v1/webhooks/{hook['id']}/rotate-secret", {"grace_hours": 0}, format="json")
    signer_a.submit(signer_a.submission())
    drain(hook["id"])
    assert receiver.received[1].headers["webhook-signature"].count("v1,") == 1


def test_event_kind_filters_and_paused_programs(
    receiver: Receiver, signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    only_withdrawals = create_endpoint(platform_b, receiver.url, events=["hash.withdrawn"])
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    drain(only_withdrawals["id"])
    assert receiver.received == []
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value), format="json")
    drain(only_withdrawals["id"])
    assert [e["kind"] for e in receiver.entries()] == ["hash.withdrawn"]
    member_services.enrollment_set(member=platform_b.member, program=program, state="paused", actor=SETUP)
    signer_a.submit(signer_a.submission(value))
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value), format="json")
    drain(only_withdrawals["id"])
    assert len(receiver.entries()) == 1  # paused: not pushed (the pull feed still has it)
    feed = platform_b.client.get("/api/v1/feed?after=0").json()["entries"]
    assert [e["kind"] for e in feed].count("hash.withdrawn") == 2


def test_the_test_call_reports_what_the_receiver_answered(receiver: Receiver, platform_b: Caller) -> None:
    hook = create_endpoint(platform_b, receiver.url)
    receiver.responses = [418]
    result = platform_b.client.post(f"/api/v1/webhooks/{hook['id']}/test").json()
    # The status is told; the receiver's body is not (the test must not read pages for the caller).
    assert (result["ok"], result["status_code"], result["response_excerpt"]) == (False, 418, "")
    got = receiver.received[0]
    assert got.json()["type"] == "webhook.test"
    signing.verify_webhook(got.headers, got.body, secret=hook["secret"], public_key=server_key(platform_b))


def test_endpoint_management_and_its_events(receiver: Receiver, platform_a: Caller, platform_b: Caller) -> None:
    hook = create_endpoint(platform_b, receiver.url)
    listed = platform_b.client.get("/api/v1/webhooks").json()["results"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0]
    assert platform_a.client.get(f"/api/v1/webhooks/{hook['id']}").status_code == 404
    assert platform_a.client.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 404
    changed = platform_b.client.patch(f"/api/v1/webhooks/{hook['id']}", {"events": ["hash.added"]}, format="json")
    assert changed.json()["events"] == ["hash.added"]
    assert platform_b.client.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204
    assert list(Event.objects.filter(subject_type="webhook").values_list("kind", flat=True)) == [
        "webhook.created",
        "webhook.updated",
        "webhook.deleted",
    ]
    secret_text = hook["secret"]
    assert not any(secret_text in json.dumps(e.data) for e in Event.objects.all())


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"url": "ftp://example.org/hook"}, "url", "https://"),
        ({"url": "not a url"}, "url", "valid URL"),
        ({"url": "https://user:pw@example.org/hook"}, "url", "credentials"),
        ({"url": "http://127.0.0.1:9/hook"}, "url", "non-public address"),
        ({"url": "http://10.1.2.3/hook"}, "url", "non-public address"),
        ({"url": "http://[::1]/hook"}, "url", "non-public address"),
        ({"url": "https://example.org/hook", "events": ["hash.eaten"]}, "events", "hash.eaten"),
    ],
)
@override_settings(WEBHOOKS_ALLOW_PRIVATE=False)
def test_bad_endpoints_are_refused_naming_the_field(platform_b: Caller, body: dict, field: str, message: str) -> None:
    response = platform_b.client.post("/api/v1/webhooks", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert message in response.json()["detail"]
    assert not WebhookEndpoint.objects.exists()


def test_the_server_key_is_public(anonymous, platform_a: Caller) -> None:  # noqa: ANN001
    body = anonymous.get("/api/v1/server-key").json()
    assert body["algorithm"] == "ed25519"
    assert len(base64.b64decode(body["public_key"])) == 32
    assert body == platform_a.client.get("/api/v1/server-key").json()


def test_admins_see_deliveries_with_attempts_and_can_redeliver(
    admin_client, receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:  # noqa: ANN001
    hook = create_endpoint(platform_b, receiver.url)
    signer_a.submit(signer_a.submission())
    drain(hook["id"])
    delivery = Delivery.objects.get()
    page = admin_client.get(f"/admin/exchange/delivery/{delivery.pk}/change/").content.decode()
    assert delivery.message_id in page and "answered 200" in page
    for url in [
        "/admin/exchange/webhookendpoint/",
        "/admin/exchange/delivery/?status__exact=delivered",
        "/admin/exchange/feedcursor/",
        f"/admin/exchange/webhookendpoint/{hook['id']}/change/",
    ]:
        assert admin_client.get(url).status_code == 200, url
    admin_client.post("/admin/exchange/delivery/", {"action": "redeliver", "_selected_action": [delivery.pk]})
    assert Delivery.objects.get().status == "pending"
    drain(hook["id"])
    assert [r.headers["webhook-id"] for r in receiver.received] == [delivery.message_id] * 2
    assert Event.objects.filter(kind="webhook.redelivery_requested", actor_type="admin").exists()
    admin_client.post("/admin/exchange/webhookendpoint/", {"action": "disable", "_selected_action": [hook["id"]]})
    assert not WebhookEndpoint.objects.get(pk=hook["id"]).is_active
    admin_client.post("/admin/exchange/webhookendpoint/", {"action": "enable", "_selected_action": [hook["id"]]})
    assert WebhookEndpoint.objects.get(pk=hook["id"]).is_active


def test_a_batch_body_joined_from_encoded_entries_is_the_json_of_the_whole_message(
    receiver: Receiver, signer_a: Signer, platform_a: Caller, platform_b: Caller
) -> None:
    """Bodies are joined from entries encoded once per worker; the receiver gets exactly the
    JSON of the message, feedback (which changes) included."""
    hook = create_endpoint(platform_b, receiver.url)
    values = [random_pdq() for _ in range(3)]
    signer_a.submit(*[signer_a.submission(value) for value in values])
    webhook_pages.entry_cache.clear()
    with override_settings(WEBHOOK_BATCH_SIZE=2):
        assert drain(hook["id"]).sent == 2
    for got in receiver.received:
        message = got.json()
        assert got.body == json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        signing.verify_webhook(got.headers, got.body, secret=hook["secret"])
    assert [e["hash"]["value"] for e in receiver.entries()] == values
    assert all("feedback" not in e for e in receiver.entries())


def test_feedback_reported_after_a_page_was_built_reaches_the_next_endpoint(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    """Pages are built once per worker for every endpoint that asks for them; the feedback
    members report is not kept with them but read for every POST."""
    first = create_endpoint(platform_b, receiver.url, after=0)
    second = create_endpoint(platform_b, receiver.url, after=0)
    hash_id = signer_a.submit(signer_a.submission()).json()["results"][0]["hash_id"]
    assert drain(first["id"]).sent == 1
    outcome = {
        "hash_id": hash_id,
        "program": "take-it-down",
        "kind": "removed",
        "occurred_at": timezone.now().isoformat(),
        "count": 1,
        "client_ref": "r1",
    }
    response = platform_b.client.post("/api/v1/outcomes", {"outcomes": [outcome]}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["results"][0]["error"] is None, response.json()
    assert drain(second["id"]).sent == 1
    before, after = (
        next(e for e in got.json()["data"]["entries"] if e["kind"] == "hash.added") for got in receiver.received
    )
    assert "feedback" not in before
    assert after["feedback"]["removed"] == 1 and after["feedback"]["members"] == 1
    got = receiver.received[1]
    assert got.body == json.dumps(got.json(), separators=(",", ":"), ensure_ascii=False).encode()
    signing.verify_webhook(got.headers, got.body, secret=second["secret"])
