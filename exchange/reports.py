"""Auditors' reports: per program and per member, for a period.

One builder makes a row per (member, program): whether the member reads its feed and
acknowledges webhooks, what it reported, how fast it removed what it was sent (against
the program's deadline), and whether it acknowledged withdrawals in time. A program
report is the rows of its members, a member report the rows of its programs. The number
of queries is fixed whatever the number of outcomes; durations are summarised by the
database on PostgreSQL and in Python on SQLite.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, models
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from core.ledger import Event, format_time
from hashes.models import Listing, MatchCount
from members.models import Enrollment, Member, Program

from . import hooks
from .models import DeliveryAttempt, Dispute, FeedCursor, Obligation, Outcome, WebhookEndpoint

HOUR = 3600.0
REMOVAL_KINDS = (Outcome.Kind.REMOVED,)
# The covering index of exchange.Outcome that the outcome queries below are written for.
REPORT_INDEX = "outcome_report_covering"


@dataclass(frozen=True)
class Period:
    start: dt.datetime
    end: dt.datetime


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p90 and max in hours (linear interpolation, as PostgreSQL's percentile_cont)."""
    if not values:
        return {"p50_hours": None, "p90_hours": None, "max_hours": None}
    ordered = sorted(values)

    def at(fraction: float) -> float:
        position = fraction * (len(ordered) - 1)
        low, high = math.floor(position), math.ceil(position)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {
        "p50_hours": round(at(0.5) / HOUR, 3),
        "p90_hours": round(at(0.9) / HOUR, 3),
        "max_hours": round(ordered[-1] / HOUR, 3),
    }


def _outcome_counts(
    program_ids: set[int], member_ids: set[int], period: Period
) -> tuple[dict[tuple[int, int], dict[str, int]], dict[tuple[int, int], int]]:
    """Per (member, program): outcomes reported in the period by kind, and the items they concerned.

    SQLite is told to read the covering index: left to itself it picks the
    (program, occurred_at) index, whose range looks selective but spans the whole
    period, and then reads every row from the table (5× slower at a million outcomes).
    """
    table = Outcome._meta.db_table
    hint = f" INDEXED BY {REPORT_INDEX}" if connection.vendor == "sqlite" else ""
    program_list = ",".join(str(int(p)) for p in program_ids) or "NULL"
    member_list = ",".join(str(int(m)) for m in member_ids) or "NULL"
    kinds: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: dict.fromkeys(Outcome.Kind.values, 0))
    items: dict[tuple[int, int], int] = defaultdict(int)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT member_id, program_id, kind, count(*), sum(count) FROM {table}{hint} "
            f"WHERE program_id IN ({program_list}) AND member_id IN ({member_list}) "
            "AND occurred_at >= %s AND occurred_at < %s GROUP BY member_id, program_id, kind",
            [period.start, period.end],
        )
        for member_id, program_id, kind, reports, total in cursor.fetchall():
            kinds[(member_id, program_id)][kind] = reports
            items[(member_id, program_id)] += total or 0
    return kinds, items


def _api_matches(program_ids: set[int], member_ids: set[int], period: Period) -> dict[tuple[int, int], int]:
    """Per (member, program): how many of the member's match queries (POST /api/v1/match) found a
    hash of the program, on the days of the period. Counted per day (hashes.MatchCount), so a
    period that starts or ends inside a day takes that whole day."""
    rows = (
        MatchCount.objects.filter(
            member_id__in=member_ids,
            hash__listings__program_id__in=program_ids,
            day__gte=period.start.date(),
            day__lte=period.end.date(),
        )
        .values_list("member_id", "hash__listings__program_id")
        .annotate(total=models.Sum("count"))
        .order_by()
    )
    return {(member_id, program_id): total or 0 for member_id, program_id, total in rows}


def _removals(
    program_ids: set[int], member_ids: set[int], period: Period, deadlines: dict[int, int]
) -> dict[tuple[int, int], dict[str, Any]]:
    """Per (member, program): removals in the period, seconds from distribution to removal,
    and how many came within the program's deadline.

    Distribution is when the hash was first listed in the program. One join of outcomes
    with listings gives all three: counting the deadline in a second query with a
    subquery per removal took seconds at a million outcomes (docs/benchmarks/reports.md).
    """
    listing = Listing._meta.db_table
    outcome = Outcome._meta.db_table
    program_list = ",".join(str(int(p)) for p in program_ids) or "NULL"
    member_list = ",".join(str(int(m)) for m in member_ids) or "NULL"
    kinds = ",".join(f"'{k}'" for k in REMOVAL_KINDS)
    # The deadline of the outcome's program, in hours, as the caller's Program rows say.
    deadline = (
        "CASE o.program_id " + " ".join(f"WHEN {int(p)} THEN {int(h)}" for p, h in deadlines.items()) + " END"
        if deadlines
        else "NULL"
    )
    where = (
        f"o.program_id IN ({program_list}) AND o.member_id IN ({member_list}) AND o.kind IN ({kinds}) "
        "AND o.occurred_at >= %s AND o.occurred_at < %s"
    )
    join = f"FROM {outcome} o JOIN {listing} l ON l.hash_id = o.hash_id AND l.program_id = o.program_id"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT o.member_id, o.program_id, count(*), "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY s), percentile_cont(0.9) WITHIN GROUP (ORDER BY s), "
                "max(s), count(*) FILTER (WHERE within) "
                "FROM (SELECT o.member_id, o.program_id, greatest(extract(epoch FROM o.occurred_at - l.created_at), 0)"
                f" AS s, o.occurred_at <= l.created_at + make_interval(hours => {deadline}) AS within"
                f" {join} WHERE {where}) AS o GROUP BY o.member_id, o.program_id",
                [period.start, period.end],
            )
            summary = {}
            for member_id, program_id, count, p50, p90, high, within in cursor.fetchall():
                summary[(member_id, program_id)] = {
                    "count": count,
                    "p50_hours": round(p50 / HOUR, 3),
                    "p90_hours": round(p90 / HOUR, 3),
                    "max_hours": round(float(high) / HOUR, 3),
                    "within_deadline": within,
                }
            return summary
        # SQLite keeps times as 'YYYY-MM-DD HH:MM:SS[.ffffff]' text. Durations come from
        # julianday() (floats, fine for percentiles in hours); the deadline is compared in
        # whole microseconds, exactly as comparing the times themselves would.
        micros = (
            "(strftime('%%s', substr({a}, 1, 19)) - strftime('%%s', substr({b}, 1, 19))) * 1000000"
            " + CAST(substr({a} || '.000000', 21, 6) AS INTEGER) - CAST(substr({b} || '.000000', 21, 6) AS INTEGER)"
        ).format(a="o.occurred_at", b="l.created_at")
        cursor.execute(
            "SELECT o.member_id, o.program_id, "
            "max((julianday(o.occurred_at) - julianday(l.created_at)) * 86400.0, 0), "
            f"({micros}) <= ({deadline}) * 3600000000 "
            f"{join} WHERE {where}",
            [period.start, period.end],
        )
        grouped: dict[tuple[int, int], list[float]] = defaultdict(list)
        within: dict[tuple[int, int], int] = defaultdict(int)
        for member_id, program_id, seconds, in_time in cursor.fetchall():
            grouped[(member_id, program_id)].append(seconds)
            within[(member_id, program_id)] += bool(in_time)
    return {key: {"count": len(v), **_percentiles(v), "within_deadline": within[key]} for key, v in grouped.items()}


def _withdrawals(
    program_ids: set[int], member_ids: set[int], period: Period, now: dt.datetime
) -> dict[tuple[int, int], dict[str, Any]]:
    """Per (member, program): obligations created in the period and how they were acknowledged.

    Summed by the database on PostgreSQL: loading every obligation as a model instance
    cost more than all the other Python work of a report (docs/benchmarks/reports.md).
    SQLite gets the rows as tuples and sums them here.
    """
    if connection.vendor == "postgresql":
        table = Obligation._meta.db_table
        program_list = ",".join(str(int(p)) for p in program_ids) or "NULL"
        member_list = ",".join(str(int(m)) for m in member_ids) or "NULL"
        ack = "extract(epoch FROM fulfilled_at - created_at)"
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT member_id, program_id, count(*), count(fulfilled_at), "
                "count(*) FILTER (WHERE fulfilled_at <= due_at), "
                "count(*) FILTER (WHERE fulfilled_at IS NULL AND due_at >= %s), "
                "count(*) FILTER (WHERE fulfilled_at IS NULL AND due_at < %s), "
                f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {ack}), "
                f"percentile_cont(0.9) WITHIN GROUP (ORDER BY {ack}), max({ack}) "
                f"FROM {table} WHERE program_id IN ({program_list}) AND member_id IN ({member_list}) "
                "AND created_at >= %s AND created_at < %s GROUP BY member_id, program_id",
                [now, now, period.start, period.end],
            )
            summary = {}
            for member_id, program_id, owed, acked, on_time, open_, overdue, p50, p90, high in cursor.fetchall():
                summary[(member_id, program_id)] = {
                    "owed": owed,
                    "acknowledged": acked,
                    "on_time": on_time,
                    "open": open_,
                    "overdue": overdue,
                    "ack_p50_hours": round(p50 / HOUR, 3) if p50 is not None else None,
                    "ack_p90_hours": round(p90 / HOUR, 3) if p90 is not None else None,
                    "ack_max_hours": round(float(high) / HOUR, 3) if high is not None else None,
                }
            return summary
    owed: dict[tuple[int, int], list[tuple[dt.datetime, dt.datetime, dt.datetime | None]]] = defaultdict(list)
    for member_id, program_id, created, due, fulfilled in Obligation.objects.filter(
        program_id__in=program_ids, member_id__in=member_ids, created_at__gte=period.start, created_at__lt=period.end
    ).values_list("member_id", "program_id", "created_at", "due_at", "fulfilled_at"):
        owed[(member_id, program_id)].append((created, due, fulfilled))
    return {key: _withdrawal_figures(obligations, now) for key, obligations in owed.items()}


def _withdrawal_figures(
    obligations: Sequence[tuple[dt.datetime, dt.datetime, dt.datetime | None]], now: dt.datetime
) -> dict[str, Any]:
    """Counts and acknowledgement times of (created, due, fulfilled) obligations."""
    acked = [(created, due, fulfilled) for created, due, fulfilled in obligations if fulfilled is not None]
    return {
        "owed": len(obligations),
        "acknowledged": len(acked),
        "on_time": sum(fulfilled <= due for _created, due, fulfilled in acked),
        "open": sum(fulfilled is None and due >= now for _created, due, fulfilled in obligations),
        "overdue": sum(fulfilled is None and due < now for _created, due, fulfilled in obligations),
        **{
            f"ack_{k}": v
            for k, v in _percentiles(
                [(fulfilled - created).total_seconds() for created, _due, fulfilled in acked]
            ).items()
        },
    }


# The program's events a member is sent; how long the oldest one it has not been sent has waited is its lag.
DISTRIBUTED_KINDS = (
    "hash.added",
    "hash.withdrawn",
    "hash.quarantined",
    "hash.restored",
    "hashes.imported",
    "hashes.relayed",
)


def _with_position(enrollments: models.QuerySet[Enrollment]) -> models.QuerySet[Enrollment]:
    """Annotate each enrollment with the member's position in the log (its feed cursor or
    its furthest webhook cursor) and the time of the program's oldest event past it.

    Correlated subqueries on the (program, seq) index: one query however many members.
    """
    webhook = (
        WebhookEndpoint.objects.filter(member_id=models.OuterRef("member_id"))
        .values("member_id")
        .annotate(furthest=models.Max("cursor_seq"))
        .values("furthest")
    )
    position = Greatest(
        Coalesce(models.F("member__feed_cursor__last_seq"), models.Value(0)),
        Coalesce(models.Subquery(webhook), models.Value(0)),
    )
    unread = Event.objects.filter(
        program=models.OuterRef("program__slug"), kind__in=DISTRIBUTED_KINDS, seq__gt=models.OuterRef("position")
    ).order_by("seq")
    return enrollments.annotate(position=position).annotate(
        unread_since=models.Subquery(unread.values("created_at")[:1])
    )


def feed_lags(*, now: dt.datetime) -> list[tuple[str, str, float]]:
    """(member, program, seconds) for every receiving enrollment of an active member: how long
    the oldest event of the program it has not been sent (by feed or webhook) has waited; 0
    when up to date. One query, for /metrics."""
    enrollments = Enrollment.objects.filter(
        state__in=Enrollment.RECEIVING, member__status__in=Member.RECEIVING_STATUSES
    ).select_related("member", "program")
    return [
        (e.member.slug, e.program.slug, round((now - e.unread_since).total_seconds(), 1) if e.unread_since else 0.0)
        for e in _with_position(enrollments).order_by()
    ]


def rows_for(*, programs: Sequence[Program], members: Iterable[Member] | None, period: Period) -> list[dict[str, Any]]:
    """One row per enrolled (member, program) pair; `members=None` means every member of the programs."""
    program_ids = {p.pk for p in programs}
    enrollments = Enrollment.objects.filter(program_id__in=program_ids).select_related("member", "program")
    if members is not None:
        enrollments = enrollments.filter(member__in=list(members))
    enrollments = list(_with_position(enrollments).order_by("program__slug", "member__slug"))
    member_ids = {e.member_id for e in enrollments}
    cursors = {c.member_id: c for c in FeedCursor.objects.filter(member_id__in=member_ids)}
    webhook = {
        row["delivery__endpoint__member_id"]: row
        for row in DeliveryAttempt.objects.filter(
            delivery__endpoint__member_id__in=member_ids, attempted_at__gte=period.start, attempted_at__lt=period.end
        )
        .values("delivery__endpoint__member_id")
        .annotate(
            attempts=models.Count("id"),
            succeeded=models.Count("id", filter=models.Q(status_code__gte=200, status_code__lt=300)),
        )
    }
    kinds, items = _outcome_counts(program_ids, member_ids, period)
    api_matches = _api_matches(program_ids, member_ids, period)
    removals = _removals(program_ids, member_ids, period, {p.pk: p.removal_deadline_hours for p in programs})
    now = timezone.now()
    withdrawals = _withdrawals(program_ids, member_ids, period, now)
    rows = []
    for enrollment in enrollments:
        key = (enrollment.member_id, enrollment.program_id)
        cursor = cursors.get(enrollment.member_id)
        hooks = webhook.get(enrollment.member_id, {"attempts": 0, "succeeded": 0})
        removal = removals.get(key, {"count": 0, **_percentiles([]), "within_deadline": 0})
        rows.append(
            {
                "member": enrollment.member.slug,
                "program": enrollment.program.slug,
                "enrollment": enrollment.state,
                "enrollment_reason": enrollment.reason,
                "feed": {
                    "last_read_at": format_time(cursor.last_read_at) if cursor else None,
                    "position": enrollment.position,
                    "unread_since": format_time(enrollment.unread_since) if enrollment.unread_since else None,
                    "lag_seconds": round((now - enrollment.unread_since).total_seconds())
                    if enrollment.unread_since
                    else 0,
                },
                "webhooks": {
                    "attempts": hooks["attempts"],
                    "succeeded": hooks["succeeded"],
                    "success_rate": round(hooks["succeeded"] / hooks["attempts"], 4) if hooks["attempts"] else None,
                },
                "outcomes": {**kinds[key], "items": items[key]},
                # Found through POST /api/v1/match, whether or not the member reported an outcome for them.
                "match_api": {"matches": api_matches.get(key, 0)},
                "removals": {
                    "count": removal["count"],
                    "p50_hours": removal["p50_hours"],
                    "p90_hours": removal["p90_hours"],
                    "max_hours": removal["max_hours"],
                    "within_deadline": removal["within_deadline"],
                    "share_within_deadline": round(removal["within_deadline"] / removal["count"], 4)
                    if removal["count"]
                    else None,
                },
                "withdrawals": withdrawals.get(key) or _withdrawal_figures([], now),
            }
        )
    return rows


def program_report(*, program: Program, period: Period) -> dict[str, Any]:
    hash_events = dict(
        Event.objects.filter(
            program=program.slug,
            created_at__gte=period.start,
            created_at__lt=period.end,
            kind__in=["hash.added", "hash.withdrawn", "hash.quarantined", "hash.restored"],
        )
        .values_list("kind")
        .annotate(n=models.Count("*"))
    )
    # Unordered: a sum needs no order, and ordering by seq made SQLite walk the whole
    # program's log on the (program, seq) index instead of finding the few imports by kind.
    # Groups: an operator's imports, and the hashes peers brought (counted as distributed,
    # like the hash.added each would otherwise have been); only their counts are read.
    grouped = {"hashes.imported": 0, "hashes.relayed": 0}
    for kind, count in (
        Event.objects.filter(
            program=program.slug, kind__in=list(grouped), created_at__gte=period.start, created_at__lt=period.end
        )
        .order_by()
        .values_list("kind", "data__count")
    ):
        grouped[kind] += int(count or 0)
    imported = grouped["hashes.imported"]
    disputes = Dispute.objects.filter(program=program)
    return {
        "program": program.slug,
        "from": format_time(period.start),
        "to": format_time(period.end),
        "removal_deadline_hours": program.removal_deadline_hours,
        "hashes": {
            "distributed": hash_events.get("hash.added", 0) + imported + grouped["hashes.relayed"],
            "imported": imported,
            "withdrawn": hash_events.get("hash.withdrawn", 0),
            "quarantined": hash_events.get("hash.quarantined", 0),
            "restored": hash_events.get("hash.restored", 0),
        },
        "disputes": {
            "opened": disputes.filter(opened_at__gte=period.start, opened_at__lt=period.end).count(),
            **{
                status: disputes.filter(status=status, decided_at__gte=period.start, decided_at__lt=period.end).count()
                for status in (Dispute.Status.RESTORED, Dispute.Status.RETIRED)
            },
            "open_now": disputes.filter(status=Dispute.Status.OPEN).count(),
        },
        "members": rows_for(programs=[program], members=None, period=period),
        # What apps above exchange count for the program (the intake's cases): hooks.py.
        **hooks.program_figures(program.slug, period.start, period.end),
    }


def member_report(*, member: Member, period: Period) -> dict[str, Any]:
    programs = list(Program.objects.filter(enrollments__member=member).order_by("slug"))
    return {
        "member": member.slug,
        "kind": member.kind,
        "status": member.status,
        "from": format_time(period.start),
        "to": format_time(period.end),
        "programs": rows_for(programs=programs, members=[member], period=period),
    }


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A report row as flat CSV columns: feed.lag → feed_lag."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}_"))
        else:
            flat[name] = value
    return flat
