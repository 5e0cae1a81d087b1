"""Reads of the exchange: what its views and the admin dashboard show.

A member's reads (its feed, obligations, webhook endpoints, a hash's details) are
scoped to that member. The auditors' reads (reports, the event log) span the exchange
and are open only to the reports scope, and the dashboard's to admins.

The large read-only builders keep their own modules and are reached through here: the
feed's page builder in feed.py (shared with webhook delivery) and the report
computations in reports.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Max, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from core.ledger import Event, format_time
from core.problems import Problem
from hashes.models import Hash
from hashes.selectors import hash_for_member
from members.models import Member, Program
from members.selectors import program_by_slug, receiving_program_slugs

from . import reports, snapshots
from .feed import FeedPage, feed_page, feedback_by_hash
from .models import Delivery, Dispute, Obligation, Outcome, WebhookEndpoint

# The pull feed -----------------------------------------------------------------------------


def feed_for(*, member: Member, after: int, limit: int) -> FeedPage:
    """The member's pull feed: up to `limit` entries after the cursor `after` (built in feed.py)."""
    return feed_page(member=member, after=after, limit=limit)


def snapshot_program_for(*, member: Member, slug: str) -> Program:
    """The program whose snapshot the member asks for, if the one rule lets it read the program.

    The same rule as the pull feed (members/selectors.py): the member is active and its
    enrollment in the program is a receiving one. Unknown program: 404; a program the
    member does not receive: 403, whatever its snapshot holds.
    """
    program = program_by_slug(slug)
    if program is None:
        raise Problem("not_found", f"no program {slug!r}", 404)
    if program.slug not in receiving_program_slugs(member=member):
        raise Problem(
            "not_receiving",
            f"you do not receive program {slug!r}: enrol in it as a receiving member first",
            403,
        )
    return program


def snapshot_for(*, member: Member, slug: str) -> tuple[Program, snapshots.Snapshot | None]:
    """The newest snapshot of a program the member receives (None when none is built yet)."""
    program = snapshot_program_for(member=member, slug=slug)
    return program, snapshots.snapshot_latest(program=program)


def snapshot_file_for(*, member: Member, slug: str, name: str) -> snapshots.Snapshot | None:
    """A snapshot's file by the name its manifest gives, for a member that receives the program."""
    program = snapshot_program_for(member=member, slug=slug)
    return snapshots.snapshot_named(program=program, name=name)


# Webhook endpoints -------------------------------------------------------------------------


def webhooks_of(*, member: Member) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(member=member).select_related("member").order_by("pk")


# Obligations -------------------------------------------------------------------------------


def obligations_of(*, member: Member, status: str = "all", program: str | None = None) -> QuerySet[Obligation]:
    """What the member owes, soonest due first.

    `status`: `open` (not yet due), `overdue`, `fulfilled` (on time or late) or `all`;
    `program`: a program's slug, to see that program only.
    """
    rows = Obligation.objects.filter(member=member).select_related("hash", "program")
    if program is not None:
        rows = rows.filter(program__slug=program)
    now = timezone.now()
    if status == "open":
        rows = rows.filter(fulfilled_at__isnull=True, due_at__gte=now)
    elif status == "overdue":
        rows = rows.filter(fulfilled_at__isnull=True, due_at__lt=now)
    elif status == "fulfilled":
        rows = rows.filter(fulfilled_at__isnull=False)
    return rows.order_by("due_at", "pk")


# A hash's details --------------------------------------------------------------------------


def hash_detail_for_member(*, member: Member, hash_id: int) -> Hash | None:
    """A hash as hashes shows it to the member (hash_for_member), else None; plus, in the
    programs where it is shown, what members reported on it (`feedback`) and its disputes."""
    row = hash_for_member(member=member, hash_id=hash_id)
    if row is None:
        return None
    programs = [listing.program.slug for listing in row.visible_listings]
    row.feedback = hash_feedback(hash_id=hash_id, program_slugs=programs)
    row.visible_disputes = hash_disputes(hash_id=hash_id, program_slugs=programs)
    return row


def hash_feedback(*, hash_id: int, program_slugs: Sequence[str]) -> dict[str, dict[str, int]]:
    """What members reported on one hash, per program that shares feedback (zeros where none)."""
    shared = Program.objects.filter(slug__in=program_slugs, share_feedback=True).values_list("slug", flat=True)
    found = feedback_by_hash({hash_id}, set(program_slugs))
    empty = {**dict.fromkeys(Outcome.Kind.values, 0), "members": 0}
    return {slug: found.get((hash_id, slug), dict(empty)) for slug in shared}


def hash_disputes(*, hash_id: int, program_slugs: Sequence[str]) -> list[dict[str, Any]]:
    """The disputes of one hash in these programs, open or decided."""
    return [
        {
            "program": d.program.slug,
            "status": d.status,
            "reporters": d.reporters,
            "opened_at": format_time(d.opened_at),
            "decided_at": format_time(d.decided_at) if d.decided_at else None,
        }
        for d in Dispute.objects.filter(hash_id=hash_id, program__slug__in=program_slugs).select_related("program")
    ]


# Auditors ----------------------------------------------------------------------------------


@dataclass
class EventPage:
    events: list[dict[str, Any]]
    next: int
    has_more: bool


def event_log_page(*, after: int, limit: int) -> EventPage:
    """Up to `limit` events of the whole log after `after`, in order, each with its leaf hash."""
    events = list(Event.objects.filter(seq__gt=after).order_by("seq")[: limit + 1])
    page = events[:limit]
    return EventPage(
        events=[
            {
                "seq": e.seq,
                "leaf_index": e.seq - 1,
                "kind": e.kind,
                "program": e.program,
                "subject": {"type": e.subject_type, "id": e.subject_id},
                "actor": {"type": e.actor_type, "id": e.actor_id},
                "data": e.data,
                "at": format_time(e.created_at),
                "leaf_hash": e.leaf_hash,
            }
            for e in page
        ],
        next=page[-1].seq if page else after,
        has_more=len(events) > limit,
    )


def program_report(*, program: Program, period: reports.Period) -> dict[str, Any]:
    """A program's figures for a period, and each member's row (computed in reports.py)."""
    return reports.program_report(program=program, period=period)


def member_report(*, member: Member, period: reports.Period) -> dict[str, Any]:
    """A member's row in each of its programs for a period (computed in reports.py)."""
    return reports.member_report(member=member, period=period)


# The admin dashboard -----------------------------------------------------------------------


def program_daily_series(*, program: Program, start: dt.datetime, end: dt.datetime) -> dict[str, dict[dt.date, int]]:
    """Per day: hashes distributed, withdrawn, removals and matches reported (four queries)."""
    series: dict[str, dict[dt.date, int]] = {"distributed": {}, "withdrawn": {}, "removed": {}, "matched": {}}
    events = Event.objects.filter(program=program.slug, created_at__gte=start, created_at__lt=end)
    for day, kind, n in (
        events.filter(kind__in=["hash.added", "hash.withdrawn"])
        .annotate(day=TruncDate("created_at"))
        .values_list("day", "kind")
        .annotate(n=Count("seq"))
    ):
        key = "distributed" if kind == "hash.added" else "withdrawn"
        series[key][day] = series[key].get(day, 0) + n
    for day, data in (
        events.filter(kind__in=["hashes.imported", "hashes.relayed"])
        .annotate(day=TruncDate("created_at"))
        .values_list("day", "data__count")
    ):
        series["distributed"][day] = series["distributed"].get(day, 0) + int(data or 0)
    for day, kind, n in (
        Outcome.objects.filter(
            program=program,
            occurred_at__gte=start,
            occurred_at__lt=end,
            kind__in=[Outcome.Kind.REMOVED, Outcome.Kind.MATCHED],
        )
        .annotate(day=TruncDate("occurred_at"))
        .values_list("day", "kind")
        .annotate(n=Count("id"))
    ):
        series[kind][day] = n
    return series


# /metrics (config/metrics.py) ---------------------------------------------------------------


@dataclass(frozen=True)
class OperationsFigures:
    """What the database says about the health of the exchange right now, for Prometheus.

    Labels are member and program slugs and endpoint ids: never a hash value, key or case.
    """

    latest_seq: int
    feed_lag_seconds: list[tuple[str, str, float]]  # member, program, seconds
    webhook_lag_events: list[tuple[int, str, int]]  # endpoint id, member, events after its cursor
    webhook_failing_seconds: list[tuple[int, str, float]]  # endpoint id, member, seconds since its last success
    webhooks_disabled: int
    obligations_overdue: list[tuple[str, str, int]]  # member, program, count
    deliveries_pending: int


def operations_figures(*, now: dt.datetime) -> OperationsFigures:
    """A handful of aggregate queries, whatever the size of the log."""
    latest = Event.objects.aggregate(last=Max("seq"))["last"] or 0
    endpoints = list(
        WebhookEndpoint.objects.filter(is_active=True, member__status__in=Member.RECEIVING_STATUSES).values_list(
            "pk", "member__slug", "cursor_seq", "last_success_at", "last_failure_at", "created_at"
        )
    )
    failing = [
        (pk, slug, round((now - (success or created)).total_seconds(), 1))
        for pk, slug, _cursor, success, failure, created in endpoints
        if failure is not None and (success is None or failure > success)
    ]
    overdue = (
        Obligation.objects.filter(fulfilled_at__isnull=True, due_at__lt=now)
        .values_list("member__slug", "program__slug")
        .annotate(n=Count("id"))
        .order_by()
    )
    return OperationsFigures(
        latest_seq=latest,
        feed_lag_seconds=reports.feed_lags(now=now),
        webhook_lag_events=[(pk, slug, max(0, latest - cursor)) for pk, slug, cursor, *_ in endpoints],
        webhook_failing_seconds=failing,
        webhooks_disabled=WebhookEndpoint.objects.filter(is_active=False).count(),
        obligations_overdue=[(member, program, n) for member, program, n in overdue],
        deliveries_pending=Delivery.objects.filter(status=Delivery.Status.PENDING).count(),
    )
