"""Webhook delivery: claims, pages, signed POSTs, retries and wake-ups (the rules are in
exchange/services.py's docstring; docs/webhooks.md for receivers).

A worker process keeps the entries and pages it built for the next endpoints that ask for
the same events; what differs per endpoint (feedback, an intake case's pseudonym for its
member) is added per POST.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Case, F, OuterRef, Q, Subquery, Value, When
from django.utils import timezone

from core import ledger, metrics
from core.ledger import Actor, Event
from members.models import Member
from members.selectors import pushed_programs_and_tombstones, receiving_member_q
from members.services import enrollments_mark_sent

from .feed import EntryCache, case_pseudonyms, encode_entry, feed_page, feedback_by_hash
from .models import Delivery, DeliveryAttempt, WebhookEndpoint
from .services import signed_post, webhook_disable

logger = logging.getLogger(__name__)

# Entries a worker process keeps for the next endpoints that ask for the same events
# (a hundred endpoints of a program ask for the same ranges); 20,000 entries of signed
# submissions take some 30 MB.
ENTRY_CACHE_ENTRIES = 20_000
_entry_cache = EntryCache(ENTRY_CACHE_ENTRIES)


@dataclass(frozen=True)
class _Page:
    """A page of a webhook's feed, ready to send: its entries without feedback, their JSON,
    and what the drain needs to know of them."""

    first_seq: int
    last_seq: int
    count: int
    single_kind: str | None  # the kind of a page of one entry (sent as that entry alone)
    entries: tuple[dict[str, Any], ...]  # without feedback
    parts: tuple[bytes, ...]  # each entry's JSON, without feedback
    joined: bytes  # the parts, comma-separated
    added_programs: frozenset[str]

    def joined_for(self, member: Member) -> bytes:
        """The entries' JSON with the feedback members reported up to now (a query, two when
        somebody reported) and, on entries of intake cases, this member's own pseudonym of
        the case: only the entries that have either are encoded again."""
        hashed = [entry for entry in self.entries if "hash" in entry]
        feedback = feedback_by_hash({e["hash"]["id"] for e in hashed}, {e["program"] for e in hashed})
        cases = case_pseudonyms(self.entries, member)
        if not feedback and not cases:
            return self.joined
        parts = []
        for index, (entry, part) in enumerate(zip(self.entries, self.parts, strict=True)):
            found = feedback.get((entry["hash"]["id"], entry["program"])) if "hash" in entry else None
            case = cases.get(index)
            if found is None and case is None:
                parts.append(part)
                continue
            entry = {**entry, "feedback": found} if found is not None else dict(entry)
            if case is not None:
                entry["case"] = case
            parts.append(encode_entry(entry))
        return b",".join(parts)


class _PageCache:
    """Pages built in the last PAGE_CACHE_SECONDS, shared by the threads of a worker process.

    When new events fan out, a hundred endpoints ask for the same pages: the same cursor,
    event kinds, pushed programs and tombstones, and the same last committed seq. These
    are the key, so every endpoint still gets what the receiving rule (read for it before
    every POST) lets it see. Events up to that seq and what they name never change; what
    does, outcomes' feedback, is not kept but asked for on every POST.
    """

    def __init__(self, seconds: float, max_pages: int) -> None:
        self.seconds, self.max_pages = seconds, max_pages
        self._pages: OrderedDict[tuple[Any, ...], tuple[float, _Page | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> tuple[bool, _Page | None]:
        with self._lock:
            found = self._pages.get(key)
            if found is None or time.monotonic() - found[0] > self.seconds:
                return False, None
            return True, found[1]

    def put(self, key: tuple[Any, ...], page: _Page | None) -> None:
        with self._lock:
            self._pages[key] = (time.monotonic(), page)
            self._pages.move_to_end(key)
            while len(self._pages) > self.max_pages:
                self._pages.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()


PAGE_CACHE_SECONDS = 300.0
# A page of 100 signed submissions is ~160 KB here (entries and JSON): 64 pages, ~10 MB.
_page_cache = _PageCache(PAGE_CACHE_SECONDS, max_pages=64)


# Delivery ---------------------------------------------------------------------------------


def _claim(endpoint_id: int, now: dt.datetime) -> dt.datetime | None:
    """Claim a free endpoint; returns the claim (its expiry, which identifies it) or None.

    The expiry is the claim's token: every later write of the drain that extends or gives
    up the claim checks it is still this one, so a worker whose claim lapsed and was taken
    over never extends or releases its successor's.
    """
    until = now + dt.timedelta(seconds=settings.WEBHOOK_CLAIM_SECONDS)
    expired = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    claimed = (
        # A suspended or pending member's endpoints are not claimed: nothing is built or
        # retried for them, and their cursors wait until the member is active again.
        WebhookEndpoint.objects.filter(expired, receiving_member_q(), pk=endpoint_id, is_active=True).update(
            claimed_until=until, wake_requested=False
        )
    )
    return until if claimed else None


def _release(endpoint_id: int, claim: dt.datetime) -> dt.datetime | None:
    """Give up the claim unless a wake-up arrived meanwhile: then extend it and return the
    extended claim (the drain looks again). None when released, or when the claim is no
    longer ours (it lapsed and another worker holds the endpoint now)."""
    if WebhookEndpoint.objects.filter(pk=endpoint_id, wake_requested=False, claimed_until=claim).update(
        claimed_until=None
    ):
        return None
    until = timezone.now() + dt.timedelta(seconds=settings.WEBHOOK_CLAIM_SECONDS)
    if WebhookEndpoint.objects.filter(pk=endpoint_id, claimed_until=claim).update(
        wake_requested=False, claimed_until=until
    ):
        return until
    return None


def _let_go(endpoint_id: int, claim: dt.datetime) -> None:
    """Give up the claim now, if it is still ours."""
    WebhookEndpoint.objects.filter(pk=endpoint_id, claimed_until=claim).update(claimed_until=None, wake_requested=False)


def request_wake(endpoint_id: int) -> None:
    """Tell whoever holds the endpoint's claim to look again before letting go."""
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(wake_requested=True)


def _message_body(page: _Page, member: Member, now: dt.datetime) -> bytes:
    """The POST's JSON: one entry as is, several as an `events.batch`.

    Joined from the entries' JSON made once per worker (exchange/feed.py `encode_entry`):
    byte for byte what encoding the whole message with `json.dumps` would give.
    """
    timestamp = json.dumps(ledger.format_time(now)).encode()
    joined = page.joined_for(member)
    if page.single_kind is not None:
        kind = json.dumps(page.single_kind, ensure_ascii=False).encode()
        return b'{"type":' + kind + b',"timestamp":' + timestamp + b',"data":' + joined + b"}"
    head = b'{"type":"events.batch","timestamp":%s,"data":{"first_seq":%d,"last_seq":%d,"entries":[' % (
        timestamp,
        page.first_seq,
        page.last_seq,
    )
    return head + joined + b"]}}"


def _added_programs(entries: Iterable[dict[str, Any]]) -> set[str]:
    return {e["program"] for e in entries if e.get("kind") == "hash.added" and e.get("program")}


@dataclass
class _Built:
    """A delivery and what the drain knows of it without reading its body again."""

    delivery: Delivery
    body: bytes
    added_programs: set[str] | None  # None: not known (a stored delivery being resent)


def _next_delivery(endpoint: WebhookEndpoint, now: dt.datetime, latest: int, latest_leaf: str = "") -> _Built | None:
    """The next batch after the endpoint's cursor, stored before it is sent; None if nothing is due.

    `latest` is the last seq, read before the feed is: what the page does not show up
    to it can be skipped for good. When another worker stored the same batch first (its
    claim had lapsed and ours began, or the other way round), that one is used: a
    Delivery is identified by its message id, endpoint and seq range.
    """
    if latest <= endpoint.cursor_seq:
        return None
    pushed, tombstones = pushed_programs_and_tombstones(member=endpoint.member)
    page = _webhook_page(endpoint, pushed, tombstones, latest, latest_leaf)
    if page is None:
        # Nothing up to `latest` is for this endpoint; every seq up to it has committed
        # (the ledger numbers in commit order), so the cursor can skip them for good.
        WebhookEndpoint.objects.filter(pk=endpoint.pk, cursor_seq__lt=latest).update(cursor_seq=latest)
        endpoint.cursor_seq = latest
        return None
    first, last = page.first_seq, page.last_seq
    message_id = f"msg_{endpoint.pk}_{first}_{last}"
    body = _message_body(page, endpoint.member, now)
    try:
        with transaction.atomic():
            delivery = Delivery.objects.create(
                endpoint=endpoint,
                message_id=message_id,
                first_seq=first,
                last_seq=last,
                event_count=page.count,
                body=body.decode(),
                next_attempt_at=now,
            )
    except IntegrityError:
        existing = Delivery.objects.filter(message_id=message_id, endpoint=endpoint).first()
        if existing is None or existing.status != Delivery.Status.PENDING:
            # Sent (or given up on) by the other worker: nothing for this drain to send.
            return None
        return _Built(existing, existing.body.encode(), None)
    return _Built(delivery, body, set(page.added_programs))


def _webhook_page(
    endpoint: WebhookEndpoint, pushed: list[str], tombstones: dict[str, int], latest: int, latest_leaf: str
) -> _Page | None:
    """The next page after the endpoint's cursor, built once for every endpoint that asks
    for the same one within PAGE_CACHE_SECONDS; None when nothing up to `latest` is for it.

    The key holds the leaf hash of the event at `latest`, not only its seq, so that a
    database restored or recreated (tests) is never answered from another's pages.
    """
    key = (
        endpoint.cursor_seq,
        latest,
        latest_leaf,
        settings.WEBHOOK_BATCH_SIZE,
        tuple(sorted(endpoint.event_kinds or ())),
        tuple(sorted(pushed)),
        tuple(sorted(tombstones.items())),
    )
    found, page = _page_cache.get(key) if latest_leaf else (False, None)
    if found:
        return page
    feed = feed_page(
        member=endpoint.member,
        after=endpoint.cursor_seq,
        limit=settings.WEBHOOK_BATCH_SIZE,
        kinds=endpoint.event_kinds or None,
        programs=pushed,
        tombstones=tombstones,
        cache=_entry_cache,
        encode=True,
        pseudonyms=False,
    )
    page = None
    if feed.entries:
        entries = tuple({k: v for k, v in entry.items() if k != "feedback"} for entry in feed.entries)
        encoded = feed.encoded or [encode_entry(entry) for entry in feed.entries]
        parts = tuple(
            encode_entry(bare) if "feedback" in entry else part
            for entry, bare, part in zip(feed.entries, entries, encoded, strict=True)
        )
        page = _Page(
            first_seq=entries[0]["seq"],
            last_seq=entries[-1]["seq"],
            count=len(entries),
            single_kind=entries[0]["kind"] if len(entries) == 1 else None,
            entries=entries,
            parts=parts,
            joined=b",".join(parts),
            added_programs=frozenset(_added_programs(entries)),
        )
    if latest_leaf:
        _page_cache.put(key, page)
    return page


def _attempt(endpoint: WebhookEndpoint, built: _Built, claim: dt.datetime) -> tuple[bool, dt.datetime]:
    """POST a delivery once, log the attempt, and move the cursor or schedule the retry.

    Returns whether it was delivered, and the claim (extended by the same write that moves
    the cursor, when it is still ours).
    """
    delivery = built.delivery
    result = signed_post(endpoint, delivery.message_id, built.body)
    metrics.webhook_delivery("delivered" if result.ok else "gone" if result.status_code == 410 else "failed")
    now = timezone.now()
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery,
            attempted_at=now,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
            response_excerpt=result.excerpt,
        )
        delivery.attempts += 1
        if result.ok:
            delivery.status, delivery.delivered_at = Delivery.Status.DELIVERED, now
            delivery.save(update_fields=["status", "delivered_at", "attempts"])
            # The same write extends the claim for the next delivery of the drain, if the
            # claim is still ours; the cursor moves whoever holds it (the receiver said yes).
            until = now + dt.timedelta(seconds=settings.WEBHOOK_CLAIM_SECONDS)
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
                cursor_seq=models.functions.Greatest(F("cursor_seq"), delivery.last_seq),
                last_success_at=now,
                claimed_until=Case(When(claimed_until=claim, then=Value(until)), default=F("claimed_until")),
            )
            endpoint.cursor_seq = max(endpoint.cursor_seq, delivery.last_seq)
            _mark_sent(endpoint, built)
            return True, until
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(last_failure_at=now)
        if result.status_code == 410:
            delivery.save(update_fields=["attempts"])
            webhook_disable(endpoint_id=endpoint.pk, reason="the receiver answered 410 Gone", actor=Actor.system())
        elif delivery.attempts > len(schedule):
            delivery.status = Delivery.Status.FAILED
            delivery.save(update_fields=["status", "attempts"])
            webhook_disable(
                endpoint_id=endpoint.pk,
                reason=f"{delivery.attempts} failed attempts over the retry schedule; last: "
                f"{result.status_code or result.error}",
                actor=Actor.system(),
            )
        else:
            delivery.next_attempt_at = now + dt.timedelta(
                seconds=retry_delay(schedule[delivery.attempts - 1], result.retry_after)
            )
            delivery.save(update_fields=["attempts", "next_attempt_at"])
    return False, claim


# Retries are spread by up to this share either way, so that endpoints that failed
# together (a receiver's outage) are not all retried in the same second.
RETRY_JITTER = 0.1
# The longest wait a receiver's Retry-After can impose before the next attempt.
RETRY_AFTER_MAX_SECONDS = 86_400


def retry_delay(scheduled: float, retry_after: float | None) -> float:
    """Seconds until the next attempt: the schedule's, with jitter, or longer if the receiver asked."""
    delay = scheduled * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX_SECONDS))
    return delay


def _mark_sent(endpoint: WebhookEndpoint, built: _Built) -> None:
    """The programs whose new hashes this delivery carried were sent up to its last event."""
    delivery, programs = built.delivery, built.added_programs
    if programs is None:
        # A stored delivery resent: what it carried is in its body.
        if '"hash.added"' not in delivery.body:
            return
        message = json.loads(delivery.body)
        entries = message["data"]["entries"] if message["type"] == "events.batch" else [message["data"]]
        programs = _added_programs(entries)
    if programs:
        enrollments_mark_sent(member=endpoint.member, through=dict.fromkeys(programs, delivery.last_seq))


@dataclass
class DrainResult:
    claimed: bool
    sent: int = 0
    more: bool = False


@dataclass
class _DrainState:
    is_active: bool
    pending_id: int | None
    latest: int
    latest_leaf: str
    cursor_seq: int
    claimed_until: dt.datetime | None


def _drain_state(endpoint_id: int) -> _DrainState | None:
    """The endpoint's state, its oldest pending delivery and the last seq, in one query;
    None when the endpoint was deleted meanwhile."""
    pending = Delivery.objects.filter(endpoint=OuterRef("pk"), status=Delivery.Status.PENDING).order_by("pk")
    latest = Event.objects.order_by("-seq")[:1]
    row = (
        WebhookEndpoint.objects.filter(pk=endpoint_id)
        .values_list(
            "is_active",
            Subquery(pending.values("pk")[:1]),
            Subquery(latest.values("seq")),
            Subquery(latest.values("leaf_hash")),
            "cursor_seq",
            "claimed_until",
        )
        .first()
    )
    if row is None:
        return None
    return _DrainState(bool(row[0]), row[1], row[2] or 0, row[3] or "", row[4], row[5])


def deliver_endpoint(endpoint_id: int) -> DrainResult:
    """Send an endpoint what is due, in order, until it is up to date, fails, or time is up.

    Steps:
    1. Claim the endpoint; if another worker holds it, ask that worker to look again.
    2. Loop: read the endpoint's state (one query); stop if the claim is no longer ours
       (it lapsed and another worker took the endpoint over: that one carries on from the
       cursor in the database). Resend the oldest pending delivery if due (stop if it is
       not due yet); otherwise build the next one from the feed after the cursor; stop
       when there is nothing new. A failed attempt stops the loop (order is kept: nothing
       overtakes a retry).
    3. Release the claim, unless a wake-up came in meanwhile: then, still holding the
       claim, loop again (claiming anew would fail on our own unexpired claim and strand
       the endpoint until the claim lapsed).
    `more` is True when the time budget ran out with work left: the claim is released
    and the caller requeues.
    """
    started = time.monotonic()
    claim = _claim(endpoint_id, timezone.now())
    if claim is None:
        request_wake(endpoint_id)
        return DrainResult(claimed=False)
    result = DrainResult(claimed=True)
    try:
        while True:
            endpoint = WebhookEndpoint.objects.select_related("member").get(pk=endpoint_id)
            while True:
                if time.monotonic() - started > settings.WEBHOOK_DRAIN_SECONDS:
                    # Hand the endpoint over: the task requeued by the caller must be able
                    # to claim it (a kept claim would strand it until the claim lapsed).
                    _let_go(endpoint_id, claim)
                    result.more = True
                    return result
                now = timezone.now()
                state = _drain_state(endpoint_id)
                if state is None:
                    return result
                if state.claimed_until != claim:
                    return result  # taken over after our claim lapsed: the new holder goes on
                if not state.is_active:
                    break
                endpoint.cursor_seq = state.cursor_seq
                built = None
                if state.pending_id:
                    delivery = Delivery.objects.filter(pk=state.pending_id).first()
                    if delivery is not None:
                        if delivery.next_attempt_at > now:
                            break
                        built = _Built(delivery, delivery.body.encode(), None)
                built = built or _next_delivery(endpoint, now, state.latest, state.latest_leaf)
                if built is None:
                    break
                progressed, claim = _attempt(endpoint, built, claim)
                result.sent += 1
                if not progressed:
                    break
            extended = _release(endpoint_id, claim)
            if extended is None:
                return result
            claim = extended
    except Exception:
        _let_go(endpoint_id, claim)
        raise


def deliveries_redeliver(*, deliveries: Any, actor: Actor) -> int:
    """Send deliveries again (an admin's decision), with the same webhook-id and body."""
    now = timezone.now()
    count = 0
    for delivery in deliveries.select_related("endpoint"):
        with transaction.atomic():
            Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.PENDING, next_attempt_at=now)
            ledger.record(
                "webhook.redelivery_requested",
                actor=actor,
                subject_type="webhook",
                subject_id=delivery.endpoint_id,
                data={"message_id": delivery.message_id},
            )
        count += 1
    return count


def endpoints_to_wake(*, now: dt.datetime | None = None) -> list[int]:
    """Active endpoints with work (events after their cursor, or a retry that is due)
    that no worker holds. Claimed ones are asked to look again instead."""
    now = now or timezone.now()
    latest = Event.objects.aggregate(last=models.Max("seq"))["last"] or 0
    due_retry = Delivery.objects.filter(
        endpoint=models.OuterRef("pk"), status=Delivery.Status.PENDING, next_attempt_at__lte=now
    )
    with_work = WebhookEndpoint.objects.filter(receiving_member_q(), is_active=True).filter(
        Q(cursor_seq__lt=latest) | Q(models.Exists(due_retry))
    )
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    with transaction.atomic():
        # Locked in id order, then marked: an UPDATE of many rows locks them in the order
        # it finds them, which differs between two transactions whose snapshots saw rows
        # move (every claim and cursor write moves a row), and two such wake-ups (the
        # fan-out's and the sweep's, or two processes') waited for each other: "deadlock
        # detected". Locking in one order everywhere cannot cycle.
        claimed = list(
            with_work.exclude(free)
            .select_for_update(of=("self",), no_key=True)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if claimed:
            WebhookEndpoint.objects.filter(pk__in=claimed).update(wake_requested=True)
    return list(with_work.filter(free).values_list("pk", flat=True))
