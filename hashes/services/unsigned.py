"""Unsigned submissions: hashes from clients that cannot sign, recorded as such.

Every ordinary submission is a DSSE envelope signed by its submitter, so members and
peers can check who said what. Some clients platforms already run cannot sign (Meta's
`threatexchange` StopNCII client posts bare hash values), and a program may choose to
accept hashes from them anyway — but only from the members it names in
`Program.unsigned_submitters`. Such a submission carries no envelope, key, nonce or
signed time; it says `signed=False` and which facade it came through (`source`), and
its events say so too, so nobody mistakes it for a signed one.

Apart from the signature, it goes through the same steps as a signed one: the one store
path (`store.submissions_store`), with the same Hash rows, Listing rules and events —
`hash.added` for the first active support of a hash in a program, `submission.added`
otherwise — written under the ledger lock in one transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils import timezone
from hashexchange_client import signal_types

from core import metrics
from core.problems import Problem
from members.models import Member, Program
from members.selectors import is_submitting

from ..envelopes import check_labels
from .store import ItemResult, Pending, submission_row, submissions_store
from .submissions import check_signal_type, check_submitter

_SOURCE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class UnsignedItem:
    """One hash a compatibility client asked to submit."""

    signal_type: str
    value: str
    labels: tuple[str, ...] = ()


def unsigned_check_program(*, member: Member, program: Program) -> None:
    """Raise a Problem (403) unless the member may submit unsigned hashes to the program.

    Three conditions, each with its own code so an operator can tell them apart: the
    program names the member in `unsigned_submitters`, the member is opted in, and its
    kind may submit to the program at all.
    """
    if not program.unsigned_submitters.filter(pk=member.pk).exists():
        raise Problem(
            "unsigned_not_allowed",
            f"{program.slug!r} does not accept unsigned submissions from {member.slug!r}; "
            "sign them (POST /api/v1/submissions), or ask the clearinghouse to allow it",
            status=403,
        )
    check_submitter(member=member, program=program, enrolled=is_submitting(member=member, program=program))


def _check_item(item: UnsignedItem, program: Program) -> tuple[str, str, list[str]]:
    """The normalised (signal type, value, labels) of an item, or a Problem."""
    try:
        kind = signal_types.get(item.signal_type)
    except signal_types.SignalValueError as exc:
        raise Problem("unknown_signal_type", str(exc)) from None
    check_signal_type(program=program, signal_type=kind.name)
    try:
        value = kind.validate(item.value)
    except signal_types.SignalValueError as exc:
        raise Problem("invalid_value", str(exc)) from None
    labels = check_labels(list(dict.fromkeys(item.labels)), code="malformed")
    return kind.name, value, labels


def unsigned_submissions_create(
    *, member: Member, program: Program, items: Sequence[UnsignedItem], source: str, now: dt.datetime | None = None
) -> list[ItemResult]:
    """Record unsigned submissions of hashes to one program; one result per item.

    Steps:
    1. Refuse the whole request (Problem, 403) unless the program accepts unsigned
       submissions from the member (`unsigned_check_program`).
    2. Check each item on its own: signal type known and accepted by the program, value
       valid (PDQ not degenerate), labels well formed.
    3. In one transaction under the ledger lock: find or create the hashes, treat a hash
       the member already supports in the program as a duplicate, refuse quarantined or
       retired hashes, store the submissions (`signed=False`, `source`), activate
       listings, and record `hash.added` or `submission.added`.
    """
    if not _SOURCE.fullmatch(source):
        raise ValueError(f"source {source!r} must be a short lowercase name such as 'stopncii'")
    now = now or timezone.now()
    unsigned_check_program(member=member, program=program)
    results = [ItemResult(index=i) for i in range(len(items))]
    checked: list[Pending] = []
    for result, item in zip(results, items, strict=True):
        try:
            signal_type, value, labels = _check_item(item, program)
        except Problem as rejection:
            result.error = rejection
            continue
        row = submission_row(program=program, member=member, now=now, labels=labels, source=source)
        checked.append(
            Pending(
                result=result,
                program=program,
                signal_type=signal_type,
                value=value,
                row=row,
                event_data={"signed": False, "source": source},
            )
        )
    submissions_store(member=member, items=checked, now=now)
    metrics.submission_results((r.status, r.error.code if r.error else "") for r in results)
    return results
