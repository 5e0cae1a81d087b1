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
from django.utils import timezone

from hashes.models import Listing
from members.models import Enrollment, Member, Program

from .ledger import Event, format_time
from .models import DeliveryAttempt, Dispute, FeedCursor, Obligation, Outcome

HOUR = 3600.0
REMOVAL_KINDS = (Outcome.Kind.REMOVED,)


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


def _removal_durations(program_ids: set[int], member_ids: set[int], period: Period) -> dict[tuple[int, int], Any]:
    """Per (member, program): removals in the period and seconds from distribution to removal.

    Distribution is when the hash was first listed in the program.
    """
    listing = Listing._meta.db_table
    outcome = Outcome._meta.db_table
    program_list = ",".join(str(int(p)) for p in program_ids) or "NULL"
    member_list = ",".join(str(int(m)) for m in member_ids) or "NULL"
    kinds = ",".join(f"'{k}'" for k in REMOVAL_KINDS)
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
                "max(s) "
                f"FROM (SELECT o.member_id, o.program_id, greatest(extract(epoch FROM o.occurred_at - l.created_at), 0)"
                f" AS s {join} WHERE {where}) AS o GROUP BY o.member_id, o.program_id",
                [period.start, period.end],
            )
            summary = {}
            for member_id, program_id, count, p50, p90, high in cursor.fetchall():
                summary[(member_id, program_id)] = {
                    "count": count,
                    "p50_hours": round(p50 / HOUR, 3),
                    "p90_hours": round(p90 / HOUR, 3),
                    "max_hours": round(float(high) / HOUR, 3),
                }
            return summary
        cursor.execute(
            "SELECT o.member_id, o.program_id, "
            "max((julianday(o.occurred_at) - julianday(l.created_at)) * 86400.0, 0) "
            f"{join} WHERE {where}",
            [period.start, period.end],
        )
        grouped: dict[tuple[int, int], list[float]] = defaultdict(list)
        for member_id, program_id, seconds in cursor.fetchall():
            grouped[(member_id, program_id)].append(seconds)
    return {key: {"count": len(v), **_percentiles(v)} for key, v in grouped.items()}


def _within_deadline(
    program_ids: set[int], member_ids: set[int], period: Period, deadlines: dict[int, int]
) -> dict[tuple[int, int], int]:
    """Removals made within the program's deadline of distribution, per (member, program)."""
    rows = Outcome.objects.filter(
        program_id__in=program_ids,
        member_id__in=member_ids,
        kind__in=REMOVAL_KINDS,
        occurred_at__gte=period.start,
        occurred_at__lt=period.end,
    ).annotate(
        listed=models.Subquery(
            Listing.objects.filter(hash_id=models.OuterRef("hash_id"), program_id=models.OuterRef("program_id")).values(
                "created_at"
            )[:1]
        )
    )
    counts: dict[tuple[int, int], int] = defaultdict(int)
    # Counted in the database per program deadline: one query per distinct deadline (few).
    for hours in set(deadlines.values()):
        programs = {p for p, h in deadlines.items() if h == hours}
        for row in (
            rows.filter(program_id__in=programs, occurred_at__lte=models.F("listed") + dt.timedelta(hours=hours))
            .values("member_id", "program_id")
            .annotate(n=models.Count("id"))
        ):
            counts[(row["member_id"], row["program_id"])] = row["n"]
    return counts


def rows_for(*, programs: Sequence[Program], members: Iterable[Member] | None, period: Period) -> list[dict[str, Any]]:
    """One row per enrolled (member, program) pair; `members=None` means every member of the programs."""
    program_ids = {p.pk for p in programs}
    enrollments = Enrollment.objects.filter(program_id__in=program_ids).select_related("member", "program")
    if members is not None:
        enrollments = enrollments.filter(member__in=list(members))
    enrollments = list(enrollments.order_by("program__slug", "member__slug"))
    member_ids = {e.member_id for e in enrollments}
    latest = Event.objects.aggregate(last=models.Max("seq"))["last"] or 0
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
    kinds: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: dict.fromkeys(Outcome.Kind.values, 0))
    items: dict[tuple[int, int], int] = defaultdict(int)
    for row in (
        Outcome.objects.filter(
            program_id__in=program_ids,
            member_id__in=member_ids,
            occurred_at__gte=period.start,
            occurred_at__lt=period.end,
        )
        .values("member_id", "program_id", "kind")
        .annotate(reports=models.Count("id"), total=models.Sum("count"))
    ):
        kinds[(row["member_id"], row["program_id"])][row["kind"]] = row["reports"]
        items[(row["member_id"], row["program_id"])] += row["total"] or 0
    removals = _removal_durations(program_ids, member_ids, period)
    on_time = _within_deadline(program_ids, member_ids, period, {p.pk: p.removal_deadline_hours for p in programs})
    now = timezone.now()
    owed: dict[tuple[int, int], list[Obligation]] = defaultdict(list)
    for obligation in Obligation.objects.filter(
        program_id__in=program_ids, member_id__in=member_ids, created_at__gte=period.start, created_at__lt=period.end
    ):
        owed[(obligation.member_id, obligation.program_id)].append(obligation)
    rows = []
    for enrollment in enrollments:
        key = (enrollment.member_id, enrollment.program_id)
        cursor = cursors.get(enrollment.member_id)
        hooks = webhook.get(enrollment.member_id, {"attempts": 0, "succeeded": 0})
        removal = removals.get(key, {"count": 0, **_percentiles([])})
        obligations = owed.get(key, [])
        acked = [o for o in obligations if o.fulfilled_at is not None]
        rows.append(
            {
                "member": enrollment.member.slug,
                "program": enrollment.program.slug,
                "enrollment": enrollment.state,
                "enrollment_reason": enrollment.reason,
                "feed": {
                    "last_read_at": format_time(cursor.last_read_at) if cursor else None,
                    "last_seq": cursor.last_seq if cursor else None,
                    "lag": latest - cursor.last_seq if cursor else None,
                },
                "webhooks": {
                    "attempts": hooks["attempts"],
                    "succeeded": hooks["succeeded"],
                    "success_rate": round(hooks["succeeded"] / hooks["attempts"], 4) if hooks["attempts"] else None,
                },
                "outcomes": {**kinds[key], "items": items[key]},
                "removals": {
                    "count": removal["count"],
                    "p50_hours": removal["p50_hours"],
                    "p90_hours": removal["p90_hours"],
                    "max_hours": removal["max_hours"],
                    "within_deadline": on_time.get(key, 0),
                    "share_within_deadline": round(on_time.get(key, 0) / removal["count"], 4)
                    if removal["count"]
                    else None,
                },
                "withdrawals": {
                    "owed": len(obligations),
                    "acknowledged": len(acked),
                    "on_time": sum(o.fulfilled_at <= o.due_at for o in acked),
                    "open": sum(o.fulfilled_at is None and o.due_at >= now for o in obligations),
                    "overdue": sum(o.fulfilled_at is None and o.due_at < now for o in obligations),
                    **{
                        f"ack_{k}": v
                        for k, v in _percentiles(
                            [(o.fulfilled_at - o.created_at).total_seconds() for o in acked]
                        ).items()
                    },
                },
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
        .annotate(n=models.Count("seq"))
    )
    imported = sum(
        data.get("count", 0)
        for data in Event.objects.filter(
            program=program.slug, kind="hashes.imported", created_at__gte=period.start, created_at__lt=period.end
        ).values_list("data", flat=True)
    )
    disputes = Dispute.objects.filter(program=program)
    return {
        "program": program.slug,
        "from": format_time(period.start),
        "to": format_time(period.end),
        "removal_deadline_hours": program.removal_deadline_hours,
        "hashes": {
            "distributed": hash_events.get("hash.added", 0) + imported,
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
