"""Writes of the exchange: feed cursors, webhook endpoints (delivery itself: exchange/delivery.py),
program snapshots.

Delivery is at-least-once and keeps its state in the database:

- each endpoint has a cursor (`cursor_seq`): the last event its receiver acknowledged;
- a worker *claims* an endpoint (an atomic UPDATE with an expiry, so a killed worker's
  claim lapses), then drains it: it resends the endpoint's pending Delivery if one is
  due, else builds the next one from the member's feed after the cursor (up to
  WEBHOOK_BATCH_SIZE entries in one POST), and on a 2xx moves the cursor. A task drains
  a group of up to WEBHOOK_GROUP_SIZE endpoints together, one POST per endpoint per
  round, with one query per step and one commit per round for the whole group
  (exchange/delivery.py `deliver_group`); each endpoint keeps its own order and cursor;
- a failed POST is retried on WEBHOOK_RETRY_SCHEDULE (kept in the row, not in a Celery
  countdown); when the schedule is exhausted, or the receiver answers 410 Gone, the
  endpoint is disabled with an event; re-enabling it resumes from its cursor;
- wake-ups travel through Redis after commit; a periodic sweep finds endpoints whose
  wake-up was lost and retries that are due, so a Redis outage delays and loses nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import models, transaction
from django.db.models import F
from django.utils import timezone
from hashexchange_client import webhooks as signing

from core import ledger
from core.ledger import Actor, Event
from core.problems import Problem
from members.models import Member, Program
from members.services import enrollments_mark_sent

from . import crypto, net, snapshots
from .feed import FEED_KINDS
from .models import Delivery, FeedCursor, WebhookEndpoint

logger = logging.getLogger(__name__)
# Feed cursors -----------------------------------------------------------------------------


def feed_cursor_record(*, member: Member, after: int, last_seq: int, programs: Iterable[str] = ()) -> None:
    """Remember where and when the member last read its feed (participation tracking), and
    that it was sent the hashes of `programs` up to `last_seq` (withdrawal obligations)."""
    now = timezone.now()
    if programs and last_seq > after:
        enrollments_mark_sent(member=member, through=dict.fromkeys(programs, last_seq))
    updated = FeedCursor.objects.filter(member=member).update(
        last_after=after,
        last_seq=models.functions.Greatest(F("last_seq"), last_seq),
        last_read_at=now,
        reads=F("reads") + 1,
    )
    if not updated:
        FeedCursor.objects.get_or_create(
            member=member, defaults={"last_after": after, "last_seq": last_seq, "last_read_at": now, "reads": 1}
        )


# Endpoints ---------------------------------------------------------------------------------


def _clean_kinds(kinds: Any) -> list[str]:
    if kinds is None:
        return []
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise Problem.field("events", "give a list of event kinds")
    unknown = sorted(set(kinds) - set(FEED_KINDS))
    if unknown:
        raise Problem.field(
            "events", f"unknown event kind(s) {', '.join(unknown)}; choose from {', '.join(FEED_KINDS)}"
        )
    return list(dict.fromkeys(kinds))


def _clean_url(url: str) -> str:
    try:
        net.check_url(url)
    except net.UnsafeUrl as exc:
        raise Problem.field("url", str(exc)) from None
    return url


def _endpoint_data(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "webhook_id": endpoint.pk,
        "member": endpoint.member.slug,
        "url": endpoint.url,
        "events": list(endpoint.event_kinds),
        "is_active": endpoint.is_active,
    }


@transaction.atomic
def webhook_create(
    *,
    member: Member,
    url: str,
    event_kinds: list[str] | None = None,
    description: str = "",
    after: int | None = None,
    actor: Actor,
) -> tuple[WebhookEndpoint, str]:
    """Create an endpoint that receives the events after `after` (a feed cursor; by default the
    newest event, so from now on; 0 for everything). Returns it and its secret (shown once)."""
    kinds = _clean_kinds(event_kinds)
    url = _clean_url(url)
    secret = signing.new_secret()
    latest = Event.objects.aggregate(last=models.Max("seq"))["last"] or 0
    if after is not None and not 0 <= after <= latest:
        raise Problem.field("after", f"give a sequence number from 0 to {latest} (the newest event)")
    endpoint = WebhookEndpoint.objects.create(
        member=member,
        url=url,
        event_kinds=kinds,
        description=description,
        secret_encrypted=crypto.encrypt(secret),
        cursor_seq=latest if after is None else after,
    )
    ledger.record(
        "webhook.created", actor=actor, subject_type="webhook", subject_id=endpoint.pk, data=_endpoint_data(endpoint)
    )
    return endpoint, secret


@transaction.atomic
def webhook_update(
    *,
    endpoint: WebhookEndpoint,
    actor: Actor,
    url: str | None = None,
    event_kinds: list[str] | None = None,
    description: str | None = None,
    is_active: bool | None = None,
) -> WebhookEndpoint:
    """Change an endpoint. Re-enabling a disabled one resumes from its cursor: nothing is skipped."""
    endpoint = WebhookEndpoint.objects.select_for_update().select_related("member").get(pk=endpoint.pk)
    if url is not None:
        endpoint.url = _clean_url(url)
    if event_kinds is not None:
        endpoint.event_kinds = _clean_kinds(event_kinds)
    if description is not None:
        endpoint.description = description
    if is_active is True and not endpoint.is_active:
        endpoint.is_active, endpoint.disabled_reason, endpoint.disabled_at = True, "", None
        # Deliveries given up on are retried from the start of the schedule.
        endpoint.deliveries.filter(status=Delivery.Status.FAILED).update(
            status=Delivery.Status.PENDING, attempts=0, next_attempt_at=timezone.now()
        )
    elif is_active is False and endpoint.is_active:
        endpoint.is_active, endpoint.disabled_reason, endpoint.disabled_at = (
            False,
            "disabled by its member",
            timezone.now(),
        )
    endpoint.save()
    ledger.record(
        "webhook.updated", actor=actor, subject_type="webhook", subject_id=endpoint.pk, data=_endpoint_data(endpoint)
    )
    return endpoint


@transaction.atomic
def webhook_delete(*, endpoint: WebhookEndpoint, actor: Actor) -> None:
    data = _endpoint_data(endpoint)
    ledger.record("webhook.deleted", actor=actor, subject_type="webhook", subject_id=endpoint.pk, data=data)
    endpoint.delete()


@transaction.atomic
def webhook_rotate_secret(*, endpoint: WebhookEndpoint, grace_hours: int, actor: Actor) -> tuple[WebhookEndpoint, str]:
    """A new secret; the old one keeps signing (a second v1 signature) for `grace_hours`."""
    if not 0 <= grace_hours <= 24 * 30:
        raise Problem.field("grace_hours", "give 0 to 720 hours")
    endpoint = WebhookEndpoint.objects.select_for_update().select_related("member").get(pk=endpoint.pk)
    secret = signing.new_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted if grace_hours else ""
    endpoint.previous_secret_expires_at = timezone.now() + dt.timedelta(hours=grace_hours) if grace_hours else None
    endpoint.secret_encrypted = crypto.encrypt(secret)
    endpoint.save(update_fields=["secret_encrypted", "previous_secret_encrypted", "previous_secret_expires_at"])
    ledger.record(
        "webhook.secret_rotated",
        actor=actor,
        subject_type="webhook",
        subject_id=endpoint.pk,
        data={"webhook_id": endpoint.pk, "member": endpoint.member.slug, "grace_hours": grace_hours},
    )
    return endpoint, secret


@transaction.atomic
def webhook_disable(*, endpoint_id: int, reason: str, actor: Actor) -> None:
    endpoint = WebhookEndpoint.objects.select_for_update().select_related("member").get(pk=endpoint_id)
    if not endpoint.is_active:
        return
    endpoint.is_active, endpoint.disabled_reason, endpoint.disabled_at = False, reason[:500], timezone.now()
    endpoint.save(update_fields=["is_active", "disabled_reason", "disabled_at"])
    ledger.record(
        "webhook.disabled",
        actor=actor,
        subject_type="webhook",
        subject_id=endpoint.pk,
        data={**_endpoint_data(endpoint), "reason": reason[:500]},
    )


@functools.lru_cache(maxsize=4096)
def _decrypted(token: str, encryption_key: str) -> str:
    """A secret decrypted once per worker, not once per POST (Fernet costs ~0.5 ms).

    Keyed by the encryption key too, so a changed SECRETS_ENCRYPTION_KEY is never
    answered from the cache.
    """
    return crypto.decrypt(token)


def endpoint_secrets(endpoint: WebhookEndpoint, *, now: dt.datetime) -> list[str]:
    key = settings.SECRETS_ENCRYPTION_KEY
    secrets = [_decrypted(endpoint.secret_encrypted, key)]
    if (
        endpoint.previous_secret_encrypted
        and endpoint.previous_secret_expires_at
        and (endpoint.previous_secret_expires_at > now)
    ):
        secrets.append(_decrypted(endpoint.previous_secret_encrypted, key))
    return secrets


def signed_post(endpoint: WebhookEndpoint, message_id: str, body: bytes) -> net.PostResult:
    """Sign (v1 with each valid secret, v1a with the server key) and POST once."""
    headers = signing.sign(
        message_id=message_id,
        timestamp=int(time.time()),
        body=body,
        secrets_=endpoint_secrets(endpoint, now=timezone.now()),
        private_key=crypto.server_private_key(),
    )
    return net.post(endpoint.url, body, headers)


def webhook_send_test(*, endpoint: WebhookEndpoint) -> net.PostResult:
    """Send a `webhook.test` message now, outside the event stream, and say how the receiver answered.

    Only the status code, the time and a network error are told, never the receiver's
    body: a test on demand must not turn the clearinghouse into a proxy that reads pages
    for whoever can register a URL.
    """
    now = timezone.now()
    message_id = f"msg_test_{endpoint.pk}_{int(now.timestamp() * 1000)}"
    body = json.dumps(
        {
            "type": "webhook.test",
            "timestamp": ledger.format_time(now),
            "data": {"webhook_id": endpoint.pk, "member": endpoint.member.slug},
        },
        separators=(",", ":"),
    ).encode()
    return dataclasses.replace(signed_post(endpoint, message_id, body), excerpt="")


# Program snapshots (exchange/snapshots.py) -------------------------------------------------


def snapshot_build(*, program_id: int) -> snapshots.Snapshot:
    """Build a new snapshot of a program now (what the task and `manage.py snapshot_build` run)."""
    return snapshots.snapshot_build(program=Program.objects.get(pk=program_id))


def snapshots_due() -> list[int]:
    return snapshots.snapshots_due()


def snapshot_request_build(*, program: Program) -> None:
    """Ask a worker to build the program's snapshot (a reader found none, or a stale one).

    Best effort: if Redis is down the beat's refresh builds it later.
    """
    try:
        current_app.send_task("exchange.tasks.snapshot_build", args=[program.pk], retry=False, ignore_result=True)
    except Exception as exc:  # noqa: BLE001 - the periodic refresh builds it later
        logger.warning("could not queue a snapshot build (%s); the periodic refresh will", type(exc).__name__)
