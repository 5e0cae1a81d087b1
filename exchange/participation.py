"""Opt-in status from participation: members that stop taking part lapse, and come back.

An opted-in member participates in a program while it reads its feed or acknowledges
webhooks at least every `lapse_after_days`, and has no overdue withdrawal
acknowledgements there. A periodic task marks the others `lapsed` (an event with the
reason, visible to admins and auditors) and returns lapsed members to `opted_in` when
they take part again. Only the system sets or clears `lapsed`; a member's own opt-out
or pause is never overridden.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import models
from django.utils import timezone

from core.ledger import Actor
from members import services as member_services
from members.models import Enrollment

from .models import FeedCursor, Obligation, WebhookEndpoint

ACTOR = Actor.system("participation")


@dataclass
class ParticipationChange:
    member: str
    program: str
    state: str
    reason: str


def last_participation(member_ids: set[int]) -> dict[int, dt.datetime]:
    """The latest feed read or acknowledged webhook of each member."""
    latest: dict[int, dt.datetime] = dict(
        FeedCursor.objects.filter(member_id__in=member_ids).values_list("member_id", "last_read_at")
    )
    acknowledged = (
        WebhookEndpoint.objects.filter(member_id__in=member_ids, last_success_at__isnull=False)
        .values("member_id")
        .annotate(last=models.Max("last_success_at"))
    )
    for row in acknowledged:
        current = latest.get(row["member_id"])
        latest[row["member_id"]] = max(current, row["last"]) if current else row["last"]
    return latest


def participation_check(*, now: dt.datetime | None = None) -> list[ParticipationChange]:
    """Lapse the enrollments whose members stopped taking part; restore those that resumed."""
    now = now or timezone.now()
    enrollments = list(
        Enrollment.objects.filter(state__in=Enrollment.PARTICIPATING).select_related("member", "program")
    )
    member_ids = {e.member_id for e in enrollments}
    seen = last_participation(member_ids)
    overdue = set(
        Obligation.objects.filter(member_id__in=member_ids, fulfilled_at__isnull=True, due_at__lt=now).values_list(
            "member_id", "program_id"
        )
    )
    changes = []
    for enrollment in enrollments:
        window = dt.timedelta(days=enrollment.program.lapse_after_days)
        last = seen.get(enrollment.member_id)
        # A fresh enrollment has its whole window to start taking part.
        active_since = max(filter(None, [last, enrollment.changed_at]))
        quiet = now - active_since > window
        owes = (enrollment.member_id, enrollment.program_id) in overdue
        if enrollment.state == Enrollment.State.OPTED_IN and (quiet or owes):
            days = (now - last).days if last else None
            reason = (
                "overdue withdrawal acknowledgements"
                if owes
                else f"no feed read or acknowledged webhook for {days} days"
                if days is not None
                else f"no feed read or acknowledged webhook since enrolling ({window.days}-day window)"
            )
            new_state = Enrollment.State.LAPSED
        elif (
            enrollment.state == Enrollment.State.LAPSED
            and last is not None
            and last > enrollment.changed_at  # took part again after lapsing
            and not owes
        ):
            reason, new_state = "participation resumed", Enrollment.State.OPTED_IN
        else:
            continue
        member_services.enrollment_set(
            member=enrollment.member, program=enrollment.program, state=new_state, reason=reason, actor=ACTOR
        )
        changes.append(ParticipationChange(enrollment.member.slug, enrollment.program.slug, new_state, reason))
    return changes
