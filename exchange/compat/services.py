"""Writes through the StopNCII facade: feedback becomes outcomes, submitted hashes become unsigned submissions.

Both answer one result per item, so one bad item (an unknown hash, a value that is not
a PDQ hash) never costs the platform the rest: the client posts without retrying and
raises on any 4xx, so a whole-request error would lose every item in it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from core.problems import Problem
from hashes.models import Hash, Listing
from hashes.services import UnsignedItem, unsigned_check_program, unsigned_submissions_create
from members.models import Member, Program

from ..models import Outcome
from ..outcomes import MAX_BATCH, outcomes_create
from . import stopncii

SOURCE = "stopncii"


@dataclass
class ItemResult:
    """The result of one item of a SubmitFeedback or SubmitHashes request."""

    index: int
    hash_value: Any
    status: str = "rejected"  # accepted | duplicate | rejected
    hash_id: int | None = None
    programs: list[str] = field(default_factory=list)
    error: tuple[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "hashValue": self.hash_value if isinstance(self.hash_value, str) else None,
            "status": self.status,
            "hash_id": self.hash_id,
            "programs": self.programs,
            "error": {"code": self.error[0], "detail": self.error[1]} if self.error else None,
        }


def summary(results: Sequence[ItemResult]) -> dict[str, Any]:
    """The JSON answer of a batch: counts and one result per item."""
    counts = {"accepted": 0, "held": 0, "duplicate": 0, "rejected": 0}
    for result in results:
        counts[result.status] += 1
    return {
        "count": len(results),
        "accepted": counts["accepted"],
        "held": counts["held"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
        "results": [r.as_dict() for r in results],
    }


def _items(body: Any, key: str) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise Problem("malformed", f'send a JSON object with "{key}": a list of objects')
    items = body[key]
    if not items:
        raise Problem("malformed", f"{key} is empty; send at least one")
    if len(items) > MAX_BATCH:
        raise Problem("too_many", f"at most {MAX_BATCH} {key} per request; send several requests")
    return items


def _value(item: Any) -> str:
    if not isinstance(item, dict):
        raise Problem("malformed", "each item is a JSON object")
    value = item.get("hashValue")
    if not isinstance(value, str) or not value.strip():
        raise Problem("malformed", "hashValue is required")
    return value.strip().lower()


# Feedback ----------------------------------------------------------------------------------


@dataclass
class _Feedback:
    result: ItemResult
    value: str
    kind: str
    tags: list[str]


def feedback_submit(
    *, member: Member, programs: Sequence[Program], body: Any, now: dt.datetime | None = None
) -> list[ItemResult]:
    """Record `hashFeedbacks` as outcomes, resolving each hash by its value alone.

    Steps:
    1. Parse each item: `hashValue`, `feedbackValue` mapped to an outcome kind (`None`
       and `Unknown` record nothing and say so), tags made into outcome tags.
    2. Find the hash by value among the types the facade serves, and the programs of
       the caller it is listed in: the outcome is reported in each of them.
    3. Feedback is a state per platform and hash ("the latest value wins"): the same
       value as the caller's latest report there is a duplicate, so a repeated post
       records nothing; a different one is a new outcome.
    4. `outcomes_create` checks the rest (the hash was sent to the caller, no personal
       data in tags) and stores them; its per-item results are folded back per item.
    """
    now = now or timezone.now()
    raw_items = _items(body, "hashFeedbacks")
    results = [ItemResult(index=i, hash_value=item.get("hashValue") if isinstance(item, dict) else None)
               for i, item in enumerate(raw_items)]  # fmt: skip
    parsed: list[_Feedback] = []
    for result, item in zip(results, raw_items, strict=True):
        try:
            value = stopncii.parse_hash_value(_value(item))
            kind = stopncii.parse_feedback_value(item.get("feedbackValue"))
            tags = stopncii.outcome_tags(stopncii.parse_tags(item.get("tags")))
        except Problem as exc:
            result.error = (exc.code, exc.detail)
            continue
        parsed.append(_Feedback(result, value, kind, tags))
    if not parsed:
        return results
    program_by_id = {p.pk: p for p in programs}
    hashes = {
        row.value: row
        for row in Hash.objects.filter(
            value__in={p.value for p in parsed}, signal_type__in=list(stopncii.SIGNAL_TYPES)
        ).only("id", "value")
    }
    listed: dict[int, list[Program]] = defaultdict(list)
    for hash_id, program_id in Listing.objects.filter(
        hash_id__in=[h.pk for h in hashes.values()], program_id__in=list(program_by_id)
    ).values_list("hash_id", "program_id"):
        listed[hash_id].append(program_by_id[program_id])
    latest = _latest_reports(member, list(listed), list(program_by_id))
    outcome_items: list[dict[str, Any]] = []
    owners: list[_Feedback] = []
    for item in parsed:
        row = hashes.get(item.value)
        if row is None or not listed.get(row.pk):
            item.result.error = ("unknown_hash", "no hash with this value was sent to you")
            continue
        item.result.hash_id = row.pk
        for program in sorted(listed[row.pk], key=lambda p: p.slug):
            previous = latest.get((row.pk, program.pk))
            if previous is not None and (previous.kind, sorted(previous.tags)) == (item.kind, item.tags):
                item.result.programs.append(program.slug)
                continue
            base = f"{row.pk}:{program.pk}:{item.kind}:{','.join(item.tags)}:{previous.pk if previous else 0}"
            outcome_items.append(
                {
                    "hash_id": row.pk,
                    "program": program.slug,
                    "kind": item.kind,
                    "occurred_at": now.isoformat(),
                    "count": 1,
                    "tags": item.tags,
                    "client_ref": f"{SOURCE}:{hashlib.sha256(base.encode()).hexdigest()[:40]}",
                }
            )
            owners.append(item)
    outcome_results = outcomes_create(member=member, items=outcome_items, now=now) if outcome_items else []
    errors: dict[int, tuple[str, str]] = {}
    accepted: set[int] = set()
    for owner, outcome_item, outcome in zip(owners, outcome_items, outcome_results, strict=True):
        if outcome.status == "rejected" and outcome.error is not None:
            errors.setdefault(owner.result.index, (outcome.error.code, outcome.error.detail))
            continue
        owner.result.programs.append(outcome_item["program"])
        if outcome.status == "accepted":
            accepted.add(owner.result.index)
    for item in parsed:
        result = item.result
        if result.error is not None:
            continue
        if result.index in accepted:
            result.status = "accepted"
        elif result.programs:
            result.status = "duplicate"
        else:
            result.error = errors.get(result.index, ("rejected", "nothing was recorded"))
        result.programs.sort()
    return results


def _latest_reports(member: Member, hash_ids: list[int], program_ids: list[int]) -> dict[tuple[int, int], Outcome]:
    """The caller's latest report per (hash, program), in the order CSPFeedbacks shows them."""
    latest: dict[tuple[int, int], Outcome] = {}
    if not hash_ids:
        return latest
    for row in (
        Outcome.objects.filter(member=member, hash_id__in=hash_ids, program_id__in=program_ids)
        .order_by("occurred_at", "id")
        .only("id", "hash_id", "program_id", "kind", "tags")
    ):
        latest[(row.hash_id, row.program_id)] = row
    return latest


# Submitted hashes --------------------------------------------------------------------------


def submit_program(*, member: Member, programs: Sequence[Program], named: bool) -> Program:
    """The program SubmitHashes writes to.

    With a program in the URL, that one. Otherwise the one program (of those the caller
    receives) that accepts unsigned submissions from it; none is a 403, several are a
    409 that names the per-program URLs, since guessing would publish a hash to a list
    the platform did not mean.
    """
    if named:
        return programs[0]
    candidates = [p for p in programs if p.unsigned_submitters.filter(pk=member.pk).exists()]
    if not candidates:
        raise Problem(
            "unsigned_not_allowed",
            "no program you receive accepts unsigned submissions from you; sign them (POST /api/v1/submissions)",
            status=403,
        )
    if len(candidates) > 1:
        urls = ", ".join(f"/compat/stopncii/programs/{p.slug}/v1" for p in candidates)
        raise Problem(
            "program_ambiguous",
            f"several programs accept your unsigned submissions; use one program's base URL: {urls}",
            status=409,
        )
    return candidates[0]


def hashes_submit(*, member: Member, program: Program, body: Any, now: dt.datetime | None = None) -> list[ItemResult]:
    """Record `hashRecords` as unsigned submissions to `program` (hashes/services/unsigned.py does the checks).

    The records' `CSPFeedbacks` tags become the submissions' labels; their
    `feedbackValue` is not recorded (an outcome is a report on a hash one was sent).
    """
    raw_items = _items(body, "hashRecords")
    try:
        unsigned_check_program(member=member, program=program)
    except Problem as exc:
        raise Problem(exc.code, exc.detail, exc.status) from None
    results = [ItemResult(index=i, hash_value=item.get("hashValue") if isinstance(item, dict) else None)
               for i, item in enumerate(raw_items)]  # fmt: skip
    items: list[UnsignedItem] = []
    owners: list[ItemResult] = []
    for result, item in zip(results, raw_items, strict=True):
        try:
            value = _value(item)
            signal_type = stopncii.parse_signal_type(item.get("signalType"))
            tags: list[str] = []
            feedbacks = item.get("CSPFeedbacks") or []
            if not isinstance(feedbacks, list):
                raise Problem("malformed", "CSPFeedbacks must be a list")
            for feedback in feedbacks:
                if not isinstance(feedback, dict):
                    raise Problem("malformed", "each CSPFeedback is a JSON object")
                tags += stopncii.parse_tags(feedback.get("tags"))
        except Problem as exc:
            result.error = (exc.code, exc.detail)
            continue
        items.append(UnsignedItem(signal_type, value, tuple(stopncii.submission_labels(tags))))
        owners.append(result)
    if not items:
        return results
    try:
        stored = unsigned_submissions_create(member=member, program=program, items=items, source=SOURCE, now=now)
    except Problem as exc:
        raise Problem(exc.code, exc.detail, exc.status) from None
    for result, outcome in zip(owners, stored, strict=True):
        result.status, result.hash_id = outcome.status, outcome.hash_id
        if outcome.status == "rejected" and outcome.error is not None:
            result.error = (outcome.error.code, outcome.error.detail)
        else:
            result.programs = [program.slug]
    return results
