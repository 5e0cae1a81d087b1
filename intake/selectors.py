"""Reads for people's own cases: what happened to each hash, as counts only.

Nothing here names a member: a person sees how many platforms were sent a hash and how
many reported a match, a removal, a block at upload, and after a withdrawal a deletion.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection
from typing import Any

from django.conf import settings
from django.db.models import Count, Min, Sum

from core.ledger import Event
from exchange.models import Outcome
from members.models import Enrollment, Member, Program

from .models import Case, CaseHash, Refusal

COUNTED = (
    Outcome.Kind.MATCHED,
    Outcome.Kind.REMOVED,
    Outcome.Kind.BLOCKED_AT_UPLOAD,
    Outcome.Kind.DELETED_AFTER_WITHDRAWAL,
)


def case_status(*, case: Case) -> dict[str, Any]:
    """The case's hashes, each with its status and the counts members reported (4 queries)."""
    links = list(CaseHash.objects.filter(case=case).select_related("hash").order_by("pk"))
    hash_ids = [link.hash_id for link in links]
    program = case.program
    first_sent = dict(
        Event.objects.filter(
            kind="hash.added", subject_type="hash", subject_id__in=[str(h) for h in hash_ids], program=program.slug
        )
        .values_list("subject_id")
        .annotate(first=Min("seq"))
    )
    # Members ever sent the program's hashes up to some point (feed read or webhook
    # acknowledged), the intake itself excepted: a hash was received by those past it.
    reached = list(
        Enrollment.objects.filter(program=program, sent_through__gt=0)
        .exclude(member__kind=Member.Kind.INTAKE)
        .values_list("sent_through", flat=True)
    )
    counts: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTED, 0))
    rows = (
        Outcome.objects.filter(hash_id__in=hash_ids, program=program, kind__in=COUNTED)
        .values_list("hash_id", "kind")
        .annotate(members=Count("member", distinct=True))
    )
    for hash_id, kind, members in rows:
        counts[hash_id][kind] = members
    hashes = []
    for link in links:
        seq = first_sent.get(str(link.hash_id))
        hashes.append(
            {
                "signal_type": link.hash.signal_type,
                "value": link.hash.value,
                "status": link.status,
                "key_index": link.key_index,
                "added_at": link.added_at.isoformat(),
                "received": sum(1 for through in reached if seq is not None and through >= seq),
                "matched": counts[link.hash_id][Outcome.Kind.MATCHED],
                "removed": counts[link.hash_id][Outcome.Kind.REMOVED],
                "blocked_at_upload": counts[link.hash_id][Outcome.Kind.BLOCKED_AT_UPLOAD],
                "deleted_after_withdrawal": counts[link.hash_id][Outcome.Kind.DELETED_AFTER_WITHDRAWAL],
            }
        )
    return {"code": case.code, "program": program.slug, "status": case.status, "hashes": hashes}


def program_members(*, program_slug: str) -> list[str]:
    """Names of the platforms taking part in a program (only shown where the deployment allows)."""
    return list(
        Enrollment.objects.filter(
            program__slug=program_slug, state__in=Enrollment.RECEIVING, member__kind=Member.Kind.PLATFORM
        )
        .filter(member__status__in=Member.RECEIVING_STATUSES)
        .order_by("member__name")
        .values_list("member__name", flat=True)
    )


def program_info(*, slug: str) -> dict[str, Any]:
    """What the page says about a program: open or not, what it takes, who takes part."""
    from .services import CASE_SIGNAL_TYPES

    program = Program.objects.filter(slug=slug).first()
    if program is None:
        return {"slug": slug, "open": False}
    members = program_members(program_slug=slug)
    return {
        "slug": slug,
        "open": program.is_active,
        "name": program.name,
        "signal_types": [t for t in program.signal_types if t in CASE_SIGNAL_TYPES],
        "min_pdq_quality": program.min_pdq_quality,
        "member_count": len(members),
        "member_names": members if slug in settings.INTAKE_NAMED_PROGRAMS else [],
    }


def intake_figures() -> dict[str, int]:
    """Counts for the admin dashboard and reports: cases and their hashes, by status."""
    cases = dict(Case.objects.values_list("status").annotate(n=Count("id")))
    hashes = dict(CaseHash.objects.values_list("status").annotate(n=Count("id")))
    return {
        "cases_active": cases.get(Case.Status.ACTIVE, 0),
        "cases_withdrawn": cases.get(Case.Status.WITHDRAWN, 0),
        "hashes_active": hashes.get(CaseHash.Status.ACTIVE, 0),
        "hashes_withdrawn": hashes.get(CaseHash.Status.WITHDRAWN, 0),
    }


def case_tokens(hash_ids: Collection[int]) -> dict[int, str]:
    """For the exchange's hook: the case behind each hash the intake submitted, as an
    opaque token (the case's row id; never the code). Members see only their own keyed
    pseudonym of it (exchange/hooks.py)."""
    rows = CaseHash.objects.filter(hash_id__in=list(hash_ids), submission__isnull=False).values_list(
        "hash_id", "case_id"
    )
    return {hash_id: str(case_id) for hash_id, case_id in rows}


def period_figures(program: str, start: dt.datetime, end: dt.datetime) -> dict[str, Any] | None:
    """For the exchange's reports and dashboard: the intake's figures for a program and
    period, counts only; None for a program the intake neither routes to nor holds cases of.

    Cases opened and fully withdrawn, hashes sent and taken back, and refusals by reason:
    `refused` of requests for this program (an item under the quality floor, a wrong
    program...), `refused_before_routing` of requests not tied to a program yet (no proof
    of work, an address over its budget, a wrong code or secret) — the latter the same in
    every program's report.
    """
    routed = program in (settings.INTAKE_PROGRAM_MINOR, settings.INTAKE_PROGRAM_ADULT)
    cases = Case.objects.filter(program__slug=program)
    if not routed and not cases.exists():
        return None
    links = CaseHash.objects.filter(case__program__slug=program)
    refusals = Refusal.objects.filter(day__gte=start.date(), day__lte=end.date())

    def by_reason(rows: Any) -> dict[str, int]:
        return dict(rows.values_list("reason").annotate(n=Sum("count")).order_by("reason"))

    return {
        "cases_opened": cases.filter(created_at__gte=start, created_at__lt=end).count(),
        "cases_withdrawn": cases.filter(withdrawn_at__gte=start, withdrawn_at__lt=end).count(),
        "hashes_sent": links.filter(added_at__gte=start, added_at__lt=end).count(),
        "hashes_withdrawn": links.filter(withdrawn_at__gte=start, withdrawn_at__lt=end).count(),
        "refused": by_reason(refusals.filter(program=program)),
        "refused_before_routing": by_reason(refusals.filter(program="")),
    }
