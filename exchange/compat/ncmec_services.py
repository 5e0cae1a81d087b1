"""Writes through the NCMEC facade: a vote on an entry becomes an outcome in its program."""

from __future__ import annotations

import datetime as dt
import hashlib

from django.utils import timezone

from core.problems import Problem
from hashes.models import Hash
from members.models import Member, Program

from ..outcomes import outcomes_create
from . import ncmec
from .services import _latest_reports

SOURCE = "ncmec"


def feedback_submit(
    *,
    member: Member,
    program: Program,
    hash_: Hash,
    fingerprint_type: str,
    vote: ncmec.Vote,
    now: dt.datetime | None = None,
) -> str:
    """Record a vote as an outcome of `vote.kind`; "duplicate" when it is already the caller's latest.

    Feedback is a state per platform, hash and program, as NCMEC's votes are: voting the
    same way again records nothing; changing one's vote records a new outcome.
    """
    now = now or timezone.now()
    if ncmec.FINGERPRINTS[hash_.signal_type][2] != fingerprint_type:
        raise Problem(
            "wrong_fingerprint_type",
            f"entry {hash_.pk} has a {ncmec.FINGERPRINTS[hash_.signal_type][2]} fingerprint, not {fingerprint_type}",
            status=404,
        )
    previous = _latest_reports(member, [hash_.pk], [program.pk]).get((hash_.pk, program.pk))
    if previous is not None and previous.kind == vote.kind:
        return "duplicate"
    base = f"{hash_.pk}:{program.pk}:{vote.kind}:{previous.pk if previous else 0}"
    [result] = outcomes_create(
        member=member,
        items=[
            {
                "hash_id": hash_.pk,
                "program": program.slug,
                "kind": vote.kind,
                "occurred_at": now.isoformat(),
                "count": 1,
                "tags": [],
                "client_ref": f"{SOURCE}:{hashlib.sha256(base.encode()).hexdigest()[:40]}",
            }
        ],
        now=now,
    )
    if result.status == "rejected" and result.error is not None:
        raise result.error
    return result.status
