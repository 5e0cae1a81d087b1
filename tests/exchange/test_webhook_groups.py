"""Webhook delivery to a group of endpoints drained together (exchange/delivery.py
`deliver_group`), against real HTTP receivers on 127.0.0.1: what each endpoint gets is
what it alone would get.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings
from django.utils import timezone
from hashexchange_client import webhooks as signing

from core.ledger import Event
from exchange import delivery as webhook_delivery
from exchange.feed import feed_page
from exchange.models import Delivery, DeliveryAttempt, WebhookEndpoint
from members import services as member_services
from members.models import Member, Program
from tests.conftest import SETUP, Caller, Receiver, local_server, make_caller, make_member
from tests.exchange.test_webhook_races import GatedReceiver, Worker
from tests.signing import Signer


def create_endpoint(caller: Caller, url: str, **fields: object) -> dict:
    response = caller.client.post("/api/v1/webhooks", {"url": url, **fields}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.fixture
def second_receiver(settings: Any) -> Iterator[Receiver]:
    yield from local_server(settings, Receiver())


def hash_seqs(program: str | None = None) -> list[int]:
    events = Event.objects.filter(kind="hash.added").order_by("seq")
    if program is not None:
        events = events.filter(program=program)
    return list(events.values_list("seq", flat=True))


def test_an_endpoint_in_a_group_gets_only_the_programs_its_member_receives(
    receiver: Receiver,
    second_receiver: Receiver,
    signer_a: Signer,
    platform_b: Caller,
    program: Program,
    other_program: Program,
) -> None:
    """Two members' endpoints at the same cursor, drained together: the one whose member is
    not in the second program gets a page without that program's hash; the other gets both."""
    member_services.enrollment_set(member=signer_a.caller.member, program=other_program, state="opted_in", actor=SETUP)
    platform_c = make_caller(make_member("platform-c", Member.Kind.PLATFORM, program, other_program))
    only_one = create_endpoint(platform_b, receiver.url)
    both = create_endpoint(platform_c, second_receiver.url)
    signer_a.submit(signer_a.submission(), signer_a.submission(program="ncii"), signer_a.submission())
    result = webhook_delivery.deliver_group([only_one["id"], both["id"]])
    assert result.claimed and result.sent == 2
    assert {e["program"] for e in receiver.entries()} == {"take-it-down"}
    assert [e["seq"] for e in receiver.entries()] == hash_seqs("take-it-down")
    assert [e["seq"] for e in second_receiver.entries()] == hash_seqs()
    for got, secret in [(receiver.received[0], only_one["secret"]), (second_receiver.received[0], both["secret"])]:
        signing.verify_webhook(got.headers, got.body, secret=secret)
    # Both are up to date: the one that skipped the other program's hash too.
    latest = Event.objects.order_by("-seq").values_list("seq", flat=True)[0]
    assert set(WebhookEndpoint.objects.values_list("cursor_seq", flat=True)) <= {latest}
    assert webhook_delivery.deliver_group([only_one["id"], both["id"]]).sent == 0


def test_a_member_suspended_gets_nothing_while_its_group_is_delivered(
    receiver: Receiver, second_receiver: Receiver, signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    """The receiving rule is read for every endpoint of the group before every round: a
    suspended member's endpoint is neither claimed nor sent anything, and keeps its cursor."""
    platform_c = make_caller(make_member("platform-c", Member.Kind.PLATFORM, program))
    active = create_endpoint(platform_b, receiver.url)
    suspended = create_endpoint(platform_c, second_receiver.url)
    Member.objects.filter(pk=platform_c.member.pk).update(status=Member.Status.SUSPENDED)
    signer_a.submit(signer_a.submission())
    assert webhook_delivery.deliver_group([active["id"], suspended["id"]]).sent == 1
    assert len(receiver.received) == 1 and second_receiver.received == []
    assert WebhookEndpoint.objects.get(pk=suspended["id"]).cursor_seq == suspended["cursor_seq"]


def test_one_endpoint_failing_does_not_hold_back_or_duplicate_the_others(
    receiver: Receiver, second_receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    good = create_endpoint(platform_b, receiver.url)
    bad = create_endpoint(platform_b, second_receiver.url)
    second_receiver.responses = [500]
    signer_a.submit(*[signer_a.submission() for _ in range(3)])
    seqs = hash_seqs()
    with override_settings(WEBHOOK_BATCH_SIZE=1, WEBHOOK_RETRY_SCHEDULE=[60]):
        result = webhook_delivery.deliver_group([good["id"], bad["id"]])
        # The good endpoint got all three, once each, in order; the bad one its first, refused.
        assert result.sent == 4
        assert [e["seq"] for e in receiver.entries()] == seqs
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 3
        assert len(second_receiver.received) == 1
        failed = Delivery.objects.get(endpoint_id=bad["id"])
        assert (failed.status, failed.attempts) == ("pending", 1)
        assert failed.next_attempt_at > timezone.now() + dt.timedelta(seconds=50)
        assert WebhookEndpoint.objects.get(pk=bad["id"]).cursor_seq == bad["cursor_seq"]
        # Not due yet: nothing overtakes it, and the good one has nothing new.
        assert webhook_delivery.deliver_group([good["id"], bad["id"]]).sent == 0
        Delivery.objects.filter(pk=failed.pk).update(next_attempt_at=timezone.now())
        assert webhook_delivery.deliver_group([good["id"], bad["id"]]).sent == 3
    assert len(receiver.received) == 3  # nothing sent twice to the good one
    bad_ids = [r.headers["webhook-id"] for r in second_receiver.received]
    assert bad_ids[0] == bad_ids[1] == failed.message_id  # the same message retried, then the rest
    assert [e["seq"] for e in second_receiver.entries()] == [seqs[0], *seqs]
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}
    assert DeliveryAttempt.objects.count() == 7
    assert set(WebhookEndpoint.objects.values_list("cursor_seq", flat=True)) == {seqs[-1]}


def test_each_endpoint_of_a_group_gets_its_batches_in_order_from_its_own_cursor(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    """Endpoints at different cursors drain in the same group: each gets every seq after its
    own cursor once, in order."""
    signer_a.submit(*[signer_a.submission() for _ in range(5)])
    seqs = hash_seqs()
    starts = [0, seqs[1], seqs[3]]
    hooks = [
        create_endpoint(platform_b, receiver.url.replace("/hook", f"/hook{i}"), after=after)
        for i, after in enumerate(starts)
    ]
    with override_settings(WEBHOOK_BATCH_SIZE=2):
        result = webhook_delivery.deliver_group([hook["id"] for hook in hooks])
    assert result.claimed and not result.more
    for i, after in enumerate(starts):
        mine = [r for r in receiver.received if r.path == f"/hook{i}"]
        entries = []
        for got in mine:
            signing.verify_webhook(got.headers, got.body, secret=hooks[i]["secret"])
            message = got.json()
            entries += message["data"]["entries"] if message["type"] == "events.batch" else [message["data"]]
        # Everything its feed holds after its cursor (the submitter's key event too).
        expected = [e["seq"] for e in feed_page(member=platform_b.member, after=after, limit=1000).entries]
        assert [e["seq"] for e in entries] == expected and set(seqs[seqs.index(after) + 1 if after else 0 :]) <= set(
            expected
        )
    latest = Event.objects.order_by("-seq").values_list("seq", flat=True)[0]  # past the endpoints' own events
    assert set(WebhookEndpoint.objects.values_list("cursor_seq", flat=True)) == {latest}


@pytest.mark.django_db(transaction=True)
def test_a_lapsed_claim_in_a_group_is_neither_extended_nor_released_by_its_old_holder(
    gated: GatedReceiver, receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    """Worker A drains two endpoints; one receiver holds A's first POST past the claim, and
    worker B takes that endpoint over and sends it everything; then a third holds it. A's
    answer arrives: A neither fails, nor extends or releases the third's claim, nor sends
    that endpoint anything more; the other endpoint of the group is delivered in full."""
    slow = create_endpoint(platform_b, gated.url)
    fast = create_endpoint(platform_b, receiver.url)
    signer_a.submit(*[signer_a.submission() for _ in range(3)])
    seqs = hash_seqs()
    with override_settings(WEBHOOK_BATCH_SIZE=1):
        a = Worker(lambda: webhook_delivery.deliver_group([slow["id"], fast["id"]]))
        a.start()
        assert gated.first_arrived.wait(30), "worker A never posted"
        WebhookEndpoint.objects.filter(pk=slow["id"]).update(claimed_until=timezone.now() - dt.timedelta(seconds=1))
        b = webhook_delivery.deliver_endpoint(slow["id"])
        assert b.claimed and b.sent == 3
        third = (timezone.now() + dt.timedelta(minutes=5)).replace(microsecond=123456)
        WebhookEndpoint.objects.filter(pk=slow["id"]).update(claimed_until=third)
        gated.gate.set()
        a.join(30)
    connections.close_all()
    assert not a.is_alive()
    assert a.error is None, f"worker A failed: {a.error!r}"
    endpoint = WebhookEndpoint.objects.get(pk=slow["id"])
    assert endpoint.claimed_until == third
    assert endpoint.cursor_seq == seqs[-1]
    assert len(gated.bodies) == 4  # A's first, then B's three: A sent nothing more
    assert [e["seq"] for e in receiver.entries()] == seqs
    assert WebhookEndpoint.objects.get(pk=fast["id"]).claimed_until is None
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}
    assert Delivery.objects.filter(endpoint_id=slow["id"]).count() == 3


def test_a_fan_out_queues_groups_of_endpoints_by_cursor(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    """The wake-up lists the free endpoints with work by cursor, so that a group's endpoints
    share their pages."""
    signer_a.submit(*[signer_a.submission() for _ in range(2)])
    seqs = hash_seqs()
    late = create_endpoint(platform_b, receiver.url, after=seqs[0])
    early = create_endpoint(platform_b, receiver.url, after=0)
    assert webhook_delivery.endpoints_to_wake() == [early["id"], late["id"]]


def test_delivery_bodies_are_stored_compressed_with_lz4_on_postgresql(db: None) -> None:
    """Every POST's body is stored before it is sent; PostgreSQL's default compression
    (pglz) cost more CPU per POST than the rest of the database's work (exchange migration
    0011). A server built without LZ4 keeps pglz."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's column compression")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attcompression FROM pg_attribute WHERE attrelid = 'exchange_delivery'::regclass "
            "AND attname = 'body'"
        )
        (method,) = cursor.fetchone()
    assert method == "l"  # lz4
