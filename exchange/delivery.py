"""Webhook delivery: claims, pages, signed POSTs, retries and wake-ups (the rules are in
exchange/services.py's docstring; docs/webhooks.md for receivers).

A task drains a group of endpoints together (`deliver_group`): per round, one state query,
one receiving-rule query, one multi-row insert of the deliveries, the POSTs at the same
time from the worker process's POST threads, and one transaction that records them all.
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Case, F, OuterRef, Q, Subquery, Value, When
from django.utils import timezone

from core import ledger, metrics
from core.ledger import Actor, Event
from members.selectors import pushed_programs_and_tombstones_of, receiving_member_q
from members.services import enrollments_mark_sent_many

from . import webhook_pages
from .models import Delivery, DeliveryAttempt, WebhookEndpoint
from .net import PostResult
from .services import signed_post, webhook_disable

logger = logging.getLogger(__name__)

# Claims -----------------------------------------------------------------------------------
#
# A claim's expiry is its token: every later write of the drain that extends or gives up
# a claim checks it is still this one, so a worker whose claim lapsed and was taken over
# never extends or releases its successor's. A group's endpoints share one token (they
# were claimed, and are extended, by the same statements).
#
# Every write to several endpoint rows locks them in id order first (one SELECT … FOR NO
# KEY UPDATE … ORDER BY id), as `endpoints_to_wake` does: an UPDATE of many rows locks
# them in the order it finds them, and two transactions that find them in different
# orders wait for each other ("deadlock detected"). SQLite takes writers one at a time.


def _locked(rows: models.QuerySet[WebhookEndpoint]) -> list[int]:
    """Lock these endpoint rows in id order (inside the caller's transaction); their ids."""
    return list(rows.select_for_update(of=("self",), no_key=True).order_by("pk").values_list("pk", flat=True))


def _claim_group(endpoint_ids: Sequence[int], now: dt.datetime) -> tuple[dt.datetime, list[int]]:
    """Claim the free endpoints among these; returns the claim (its expiry) and their ids.

    A suspended or pending member's endpoints are not claimed: nothing is built or retried
    for them, and their cursors wait until the member is active again.
    """
    until = now + dt.timedelta(seconds=settings.WEBHOOK_CLAIM_SECONDS)
    expired = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    rows = WebhookEndpoint.objects.filter(expired, receiving_member_q(), pk__in=list(endpoint_ids), is_active=True)
    with transaction.atomic():
        claimed = _locked(rows)
        if claimed:
            WebhookEndpoint.objects.filter(expired, pk__in=claimed).update(claimed_until=until, wake_requested=False)
    return until, claimed


def _by_token(claims: dict[int, dt.datetime]) -> dict[dt.datetime, list[int]]:
    found: dict[dt.datetime, list[int]] = {}
    for endpoint_id, token in claims.items():
        found.setdefault(token, []).append(endpoint_id)
    return found


def _release(claims: dict[int, dt.datetime]) -> dict[int, dt.datetime]:
    """Give up these claims, except on endpoints a wake-up arrived for meanwhile: those
    claims are extended and returned (the drain looks again). Claims no longer ours (they
    lapsed and another worker holds the endpoint now) are left alone."""
    again: dict[int, dt.datetime] = {}
    until = timezone.now() + dt.timedelta(seconds=settings.WEBHOOK_CLAIM_SECONDS)
    for token, ids in _by_token(claims).items():
        with transaction.atomic():
            ours = _locked(WebhookEndpoint.objects.filter(pk__in=ids, claimed_until=token))
            if not ours:
                continue
            WebhookEndpoint.objects.filter(pk__in=ours, wake_requested=False).update(claimed_until=None)
            woken = list(WebhookEndpoint.objects.filter(pk__in=ours, claimed_until=token).values_list("pk", flat=True))
            if woken:
                WebhookEndpoint.objects.filter(pk__in=woken).update(wake_requested=False, claimed_until=until)
        again.update(dict.fromkeys(woken, until))
    return again


def _let_go(claims: dict[int, dt.datetime]) -> None:
    """Give up these claims now, those that are still ours."""
    for token, ids in _by_token(claims).items():
        with transaction.atomic():
            ours = _locked(WebhookEndpoint.objects.filter(pk__in=ids, claimed_until=token))
            if ours:
                WebhookEndpoint.objects.filter(pk__in=ours).update(claimed_until=None, wake_requested=False)


def request_wake(endpoint_id: int) -> None:
    """Tell whoever holds the endpoint's claim to look again before letting go."""
    request_wakes([endpoint_id])


def request_wakes(endpoint_ids: Sequence[int]) -> None:
    """`request_wake` for several endpoints, in one transaction."""
    if not endpoint_ids:
        return
    with transaction.atomic():
        ids = _locked(WebhookEndpoint.objects.filter(pk__in=list(endpoint_ids)))
        if ids:
            WebhookEndpoint.objects.filter(pk__in=ids).update(wake_requested=True)


# Building deliveries ------------------------------------------------------------------------


@dataclass
class _Built:
    """A delivery and what the drain knows of it without reading its body again."""

    delivery: Delivery
    body: bytes
    added_programs: set[str] | None  # None: not known (a stored delivery being resent)


def _next_delivery(endpoint: WebhookEndpoint, now: dt.datetime, latest: int, latest_leaf: str = "") -> _Built | None:
    """The next batch after one endpoint's cursor, stored before it is sent; None if nothing
    is due (`_build` for a group of one)."""
    built, _finished = _build([endpoint], now, latest, latest_leaf)
    return built[0][1] if built else None


def _build(
    endpoints: Sequence[WebhookEndpoint], now: dt.datetime, latest: int, latest_leaf: str
) -> tuple[list[tuple[WebhookEndpoint, _Built]], list[int]]:
    """The next delivery of each endpoint after its cursor, stored before it is sent; and
    the endpoints that have none (up to date, or nothing up to `latest` is for them).

    The receiving rule is read for all of them in one query
    (`members.selectors.pushed_programs_and_tombstones_of`), now, before these POSTs; an
    endpoint whose member is not active now gets nothing and keeps its cursor. Endpoints
    at the same cursor that may see the same programs share one page (built once per
    worker process, `webhook_pages.webhook_page`), one feedback query per page, and one multi-row
    insert of their deliveries. `latest` is the last seq, read before the feed is: what
    a page does not show up to it is skipped for good. When another worker stored the same
    batch first (its claim had lapsed and ours began, or the other way round), that one is
    used: a Delivery is identified by its message id.
    """
    finished = [endpoint.pk for endpoint in endpoints if latest <= endpoint.cursor_seq]
    behind = [endpoint for endpoint in endpoints if latest > endpoint.cursor_seq]
    if not behind:
        return [], finished
    rules = pushed_programs_and_tombstones_of(members=[endpoint.member for endpoint in behind])
    # The page last built for each kind of reader (what it may see), and the cursor it was
    # built from: an endpoint further on reads the same page if nothing it may see lies
    # between the two cursors (the page starts after its own cursor, or is empty). Fresh
    # endpoints, each created at its own seq, so share their first page.
    built_from: dict[tuple[Any, ...], tuple[int, webhook_pages.Page | None]] = {}
    feedback: dict[int, dict[tuple[int, str], dict[str, int]]] = {}
    skipped: list[int] = []
    rows: list[tuple[WebhookEndpoint, webhook_pages.Page, str, bytes]] = []
    for endpoint in sorted(behind, key=lambda endpoint: (endpoint.cursor_seq, endpoint.pk)):
        rule = rules.get(endpoint.member_id)
        if rule is None:
            finished.append(endpoint.pk)  # its member is not active now: nothing, cursor kept
            continue
        pushed, tombstones = rule
        reader = webhook_pages.page_key(endpoint, pushed, tombstones, latest, latest_leaf)[1:]
        prior = built_from.get(reader)
        if prior is not None and (prior[1] is None or prior[1].first_seq > endpoint.cursor_seq):
            page = prior[1]
        else:
            page = webhook_pages.webhook_page(endpoint, pushed, tombstones, latest, latest_leaf)
            built_from[reader] = (endpoint.cursor_seq, page)
        if page is None:
            skipped.append(endpoint.pk)
            finished.append(endpoint.pk)
            continue
        if id(page) not in feedback:
            feedback[id(page)] = page.feedback()
        message_id = f"msg_{endpoint.pk}_{page.first_seq}_{page.last_seq}"
        rows.append(
            (endpoint, page, message_id, webhook_pages.message_body(page, endpoint.member, now, feedback[id(page)]))
        )
    if skipped:
        # Nothing up to `latest` is for these; every seq up to it has committed (the ledger
        # numbers in commit order), so their cursors can skip them for good.
        with transaction.atomic():
            ids = _locked(WebhookEndpoint.objects.filter(pk__in=skipped, cursor_seq__lt=latest))
            if ids:
                WebhookEndpoint.objects.filter(pk__in=ids, cursor_seq__lt=latest).update(cursor_seq=latest)
        for endpoint in behind:
            if endpoint.pk in skipped:
                endpoint.cursor_seq = max(endpoint.cursor_seq, latest)
    built, lost = _store(rows, now)
    return built, finished + lost


_DELIVERY_COLUMNS = (
    "endpoint_id",
    "message_id",
    "first_seq",
    "last_seq",
    "event_count",
    "body",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)


def _store(
    rows: Sequence[tuple[WebhookEndpoint, webhook_pages.Page, str, bytes]], now: dt.datetime
) -> tuple[list[tuple[WebhookEndpoint, _Built]], list[int]]:
    """Insert the deliveries in one statement (written by hand: the ORM's bulk insert cannot
    say which rows met an existing message id); returns them ready to send, and the
    endpoints whose delivery another worker stored and already sent."""
    if not rows:
        return [], []
    quote = connection.ops.quote_name
    at = connection.ops.adapt_datetimefield_value(now)
    values: list[Any] = []
    for endpoint, page, message_id, body in rows:
        values += [endpoint.pk, message_id, page.first_seq, page.last_seq, page.count, body.decode()]
        values += [Delivery.Status.PENDING.value, 0, at, at]
    placeholders = "(" + ", ".join(["%s"] * len(_DELIVERY_COLUMNS)) + ")"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(Delivery._meta.db_table)} ({', '.join(quote(c) for c in _DELIVERY_COLUMNS)}) "
            f"VALUES {', '.join([placeholders] * len(rows))} ON CONFLICT DO NOTHING "
            f"RETURNING {quote('id')}, {quote('message_id')}",
            values,
        )
        inserted = {message_id: pk for pk, message_id in cursor.fetchall()}
    built: list[tuple[WebhookEndpoint, _Built]] = []
    taken = [message_id for _, _, message_id, _ in rows if message_id not in inserted]
    existing = {d.message_id: d for d in Delivery.objects.filter(message_id__in=taken)} if taken else {}
    lost: list[int] = []
    for endpoint, page, message_id, body in rows:
        pk = inserted.get(message_id)
        if pk is not None:
            delivery = Delivery(
                pk=pk,
                endpoint_id=endpoint.pk,
                message_id=message_id,
                first_seq=page.first_seq,
                last_seq=page.last_seq,
                event_count=page.count,
                status=Delivery.Status.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            built.append((endpoint, _Built(delivery, body, set(page.added_programs))))
            continue
        found = existing.get(message_id)
        if found is None or found.endpoint_id != endpoint.pk or found.status != Delivery.Status.PENDING:
            lost.append(endpoint.pk)  # sent (or given up on) by the other worker
        else:
            built.append((endpoint, _Built(found, found.body.encode(), None)))
    return built, lost


# Sending ------------------------------------------------------------------------------------

_pool_lock = threading.Lock()
_pool: dict[int, ThreadPoolExecutor] = {}


def _post_pool() -> ThreadPoolExecutor:
    """The worker process's threads for POSTs (WEBHOOK_POST_THREADS), shared by its groups:
    they only wait on receivers and sign, and touch no database connection."""
    size = settings.WEBHOOK_POST_THREADS
    with _pool_lock:
        pool = _pool.get(size)
        if pool is None:
            pool = _pool[size] = ThreadPoolExecutor(size, thread_name_prefix="webhook-post")
        return pool


def _send(job: tuple[WebhookEndpoint, _Built]) -> PostResult:
    endpoint, built = job
    return signed_post(endpoint, built.delivery.message_id, built.body)


def _post_all(jobs: Sequence[tuple[WebhookEndpoint, _Built]]) -> list[PostResult]:
    """Sign and POST each delivery once, at the same time (one per endpoint)."""
    if len(jobs) == 1 or settings.WEBHOOK_POST_THREADS <= 1:
        return [_send(job) for job in jobs]
    return list(_post_pool().map(_send, jobs))


def _record(
    jobs: Sequence[tuple[WebhookEndpoint, _Built]],
    results: Sequence[PostResult],
    claims: dict[int, dt.datetime],
) -> list[int]:
    """Log every attempt, move the cursors of the delivered ones and schedule the retries,
    in one transaction; returns the endpoints delivered to (the drain goes on with them).

    The cursor write of a delivered endpoint also extends its claim if it is still ours
    (`claims` gets the new expiry); the cursor moves whoever holds it (the receiver said yes).
    """
    now = timezone.now()
    until = now + dt.timedelta(seconds=settings.WEBHOOK_CLAIM_SECONDS)
    for result in results:
        metrics.webhook_delivery("delivered" if result.ok else "gone" if result.status_code == 410 else "failed")
    delivered = [(endpoint, built) for (endpoint, built), result in zip(jobs, results, strict=True) if result.ok]
    with transaction.atomic():
        # Every endpoint this transaction writes (cursors, failures, a disabling), locked
        # first in id order, all at once.
        _locked(WebhookEndpoint.objects.filter(pk__in=[endpoint.pk for endpoint, _ in jobs]))
        DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(
                    delivery_id=built.delivery.pk,
                    attempted_at=now,
                    status_code=result.status_code,
                    error=result.error,
                    duration_ms=result.duration_ms,
                    response_excerpt=result.excerpt,
                )
                for (_, built), result in zip(jobs, results, strict=True)
            ]
        )
        if delivered:
            Delivery.objects.filter(pk__in=[built.delivery.pk for _, built in delivered]).update(
                status=Delivery.Status.DELIVERED, delivered_at=now, attempts=F("attempts") + 1
            )
            moves: dict[tuple[int, dt.datetime], list[int]] = {}
            for endpoint, built in delivered:
                moves.setdefault((built.delivery.last_seq, claims[endpoint.pk]), []).append(endpoint.pk)
            for (last_seq, token), ids in moves.items():
                WebhookEndpoint.objects.filter(pk__in=ids).update(
                    cursor_seq=models.functions.Greatest(F("cursor_seq"), Value(last_seq)),
                    last_success_at=now,
                    claimed_until=Case(When(claimed_until=token, then=Value(until)), default=F("claimed_until")),
                )
            _mark_sent(delivered)
        for (endpoint, built), result in zip(jobs, results, strict=True):
            if not result.ok:
                _failed(endpoint, built.delivery, result, now)
    for endpoint, built in delivered:
        endpoint.cursor_seq = max(endpoint.cursor_seq, built.delivery.last_seq)
        claims[endpoint.pk] = until
    return [endpoint.pk for endpoint, _ in delivered]


def _failed(endpoint: WebhookEndpoint, delivery: Delivery, result: PostResult, now: dt.datetime) -> None:
    """A failed attempt: the retry scheduled, or the endpoint disabled (410 Gone, or the
    schedule exhausted). Inside `_record`'s transaction."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    attempts = delivery.attempts + 1
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(last_failure_at=now)
    if result.status_code == 410:
        Delivery.objects.filter(pk=delivery.pk).update(attempts=attempts)
        webhook_disable(endpoint_id=endpoint.pk, reason="the receiver answered 410 Gone", actor=Actor.system())
    elif attempts > len(schedule):
        Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.FAILED, attempts=attempts)
        webhook_disable(
            endpoint_id=endpoint.pk,
            reason=f"{attempts} failed attempts over the retry schedule; last: {result.status_code or result.error}",
            actor=Actor.system(),
        )
    else:
        delay = retry_delay(schedule[attempts - 1], result.retry_after)
        Delivery.objects.filter(pk=delivery.pk).update(
            attempts=attempts, next_attempt_at=now + dt.timedelta(seconds=delay)
        )


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


def _mark_sent(delivered: Sequence[tuple[WebhookEndpoint, _Built]]) -> None:
    """The programs whose new hashes these deliveries carried were sent up to their last
    event: one UPDATE per program and seq for all the members of the group."""
    through: dict[int, dict[str, int]] = {}
    for endpoint, built in delivered:
        programs = built.added_programs
        if programs is None:
            # A stored delivery resent: what it carried is in its body.
            if b'"hash.added"' not in built.body:
                continue
            message = json.loads(built.body)
            entries = message["data"]["entries"] if message["type"] == "events.batch" else [message["data"]]
            programs = webhook_pages.added_programs(entries)
        marks = through.setdefault(endpoint.member_id, {})
        for program in programs:
            marks[program] = max(marks.get(program, 0), built.delivery.last_seq)
    enrollments_mark_sent_many(through_by_member=through)


# Draining -----------------------------------------------------------------------------------


@dataclass
class DrainResult:
    claimed: bool
    sent: int = 0
    more: bool = False
    # When `more`: the endpoints handed over with work left, for the caller to requeue.
    remaining: list[int] = field(default_factory=list)


def _group_state(endpoint_ids: Sequence[int]) -> tuple[dict[int, WebhookEndpoint], int, str]:
    """The endpoints with their members and oldest pending delivery (`pending_id`), and the
    last seq and its leaf hash: two queries for the whole group."""
    pending = Delivery.objects.filter(endpoint=OuterRef("pk"), status=Delivery.Status.PENDING).order_by("pk")
    endpoints = {
        endpoint.pk: endpoint
        for endpoint in WebhookEndpoint.objects.filter(pk__in=list(endpoint_ids))
        .select_related("member")
        .annotate(pending_id=Subquery(pending.values("pk")[:1]))
        .order_by()
    }
    latest = Event.objects.order_by("-seq").values_list("seq", "leaf_hash").first() or (0, "")
    return endpoints, latest[0], latest[1] or ""


def _round(active: Sequence[int], claims: dict[int, dt.datetime], result: DrainResult) -> tuple[list[int], list[int]]:
    """One POST to each endpoint of the group that has something due; returns the endpoints
    to go on with (delivered to) and those to let go (up to date, retry not due, failed,
    disabled, or no longer ours)."""
    now = timezone.now()
    endpoints, latest, latest_leaf = _group_state(active)
    finished = [endpoint_id for endpoint_id in active if endpoint_id not in endpoints]  # deleted meanwhile
    jobs: list[tuple[WebhookEndpoint, _Built]] = []
    fresh: list[WebhookEndpoint] = []
    resend: list[WebhookEndpoint] = []
    for endpoint in endpoints.values():
        if endpoint.claimed_until != claims[endpoint.pk]:
            # Taken over after our claim lapsed: the new holder goes on from the cursor.
            claims.pop(endpoint.pk)
        elif not endpoint.is_active or not endpoint.member.is_active:
            finished.append(endpoint.pk)
        elif endpoint.pending_id:  # type: ignore[attr-defined]
            resend.append(endpoint)
        else:
            fresh.append(endpoint)
    if resend:
        # A failed or redelivered delivery: nothing overtakes it, it goes again as stored.
        stored = Delivery.objects.in_bulk([endpoint.pending_id for endpoint in resend])  # type: ignore[attr-defined]
        for endpoint in resend:
            delivery = stored.get(endpoint.pending_id)  # type: ignore[attr-defined]
            if delivery is None:
                fresh.append(endpoint)
            elif delivery.next_attempt_at > now:
                finished.append(endpoint.pk)
            else:
                jobs.append((endpoint, _Built(delivery, delivery.body.encode(), None)))
    built, done = _build(fresh, now, latest, latest_leaf)
    jobs += built
    finished += done
    if not jobs:
        return [], finished
    results = _post_all(jobs)
    result.sent += len(jobs)
    going = _record(jobs, results, claims)
    delivered = set(going)
    finished += [endpoint.pk for endpoint, _ in jobs if endpoint.pk not in delivered]
    return going, finished


def deliver_group(endpoint_ids: Sequence[int]) -> DrainResult:
    """Send a group of endpoints what is due, each in order, until they are up to date,
    fail, or time is up: one round at a time, one POST per endpoint per round.

    Steps:
    1. Claim the free endpoints of the group; ask whoever holds the others to look again.
    2. Rounds (`_round`): read the group's state (two queries); an endpoint whose claim is
       no longer ours leaves the group (it lapsed and another worker took the endpoint
       over: that one carries on from the cursor in the database). Each endpoint's oldest
       pending delivery is resent if due (if not, the endpoint leaves the group); the
       others get the next page after their cursor, the receiving rule read for the whole
       group now (one query); the deliveries are stored (one insert), POSTed at the same
       time from the worker's POST threads, and recorded (attempts, deliveries, cursors,
       sent marks: one transaction). A failed attempt takes its endpoint out of the group
       (order is kept: nothing overtakes a retry); the others go on.
    3. An endpoint that leaves the group is released, unless a wake-up came in meanwhile:
       then, still holding the claim, it joins the next round (claiming anew would fail on
       our own unexpired claim and strand it until the claim lapsed).
    `more` is True when the time budget ran out with work left: the claims are released
    and the caller requeues `remaining`.
    """
    started = time.monotonic()
    ids = sorted(set(endpoint_ids))
    claim, claimed = _claim_group(ids, timezone.now())
    if len(claimed) < len(ids):
        request_wakes(sorted(set(ids) - set(claimed)))
    if not claimed:
        return DrainResult(claimed=False)
    result = DrainResult(claimed=True)
    claims = dict.fromkeys(claimed, claim)
    active = list(claimed)
    try:
        while active:
            if time.monotonic() - started > settings.WEBHOOK_DRAIN_SECONDS:
                # Hand the endpoints over: the task requeued by the caller must be able
                # to claim them (a kept claim would strand them until it lapsed).
                _let_go({endpoint_id: claims[endpoint_id] for endpoint_id in active if endpoint_id in claims})
                result.more, result.remaining = True, sorted(active)
                return result
            going, finished = _round(active, claims, result)
            leaving = {endpoint_id: claims.pop(endpoint_id) for endpoint_id in finished if endpoint_id in claims}
            again = _release(leaving)
            claims.update(again)
            active = sorted({*going, *again})
        return result
    except Exception:
        _let_go(claims)
        raise


def deliver_endpoint(endpoint_id: int) -> DrainResult:
    """Send one endpoint what is due (`deliver_group` for a group of one)."""
    return deliver_group([endpoint_id])


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
    # By cursor: `exchange.tasks` groups endpoints in this order, so that a group's
    # endpoints share their pages.
    return list(with_work.filter(free).order_by("cursor_seq", "pk").values_list("pk", flat=True))
