"""Flood and false-positive protection that acts before members pay for a mistake.

- The benign list: values a program's admins (or a dispute decided as not violating) say are
  not violating. `benign_hits` finds the items of a submission batch that fall within the
  program's threshold of one; the store path refuses them and records `submission.refused`.
- Match-rate anomalies: a hash matched far more than the program's usual is quarantined
  (`anomaly_quarantine`, called by exchange/floods.py, which counts) until an admin decides
  (`anomaly_decide`).

Every decision is an event in the ledger, recorded in the transaction that makes it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone
from hashexchange_client import signal_types

from core import ledger
from core.ledger import Actor, NewEvent, record
from core.problems import Problem
from members.models import Program

from .. import index as hx
from ..models import BenignHash, Hash, Listing, MatchAnomaly
from .decisions import decide_open
from .withdrawals import hash_restore, hash_set_status

# The benign list ----------------------------------------------------------------------------------


def _benign_data(row: BenignHash) -> dict[str, Any]:
    return {
        "benign_id": row.pk,
        "signal_type": row.signal_type,
        "value": row.value,
        "source": row.source,
        "reason": row.reason,
    }


@transaction.atomic
def benign_add(
    *,
    program: Program,
    signal_type: str,
    value: str,
    reason: str,
    actor: Actor,
    source: str = BenignHash.Source.ADMIN,
) -> BenignHash:
    """Put a value on a program's benign list; submissions near it are refused from now on.

    A long value (vPDQ, TMK+PDQF) is listed by its digest and refuses only itself.
    """
    try:
        kind = signal_types.get(signal_type)
        normalised = kind.validate(value)
    except signal_types.SignalValueError as exc:
        raise Problem.field("value", str(exc)) from None
    if not reason.strip():
        raise Problem.field("reason", "give a reason; it is recorded in the log")
    return _benign_create(
        program=program,
        signal_type=kind.name,
        key=kind.storage_key(normalised),
        reason=reason,
        actor=actor,
        source=source,
    )


@transaction.atomic
def benign_add_hash(*, hash_: Hash, program: Program, reason: str, actor: Actor, source: str) -> BenignHash:
    """Put a stored hash on a program's benign list (a dispute decided as not violating)."""
    return _benign_create(
        program=program, signal_type=hash_.signal_type, key=hash_.value, reason=reason, actor=actor, source=source
    )


def _benign_create(
    *, program: Program, signal_type: str, key: str, reason: str, actor: Actor, source: str
) -> BenignHash:
    existing = BenignHash.objects.filter(
        program=program, signal_type=signal_type, value=key, status=BenignHash.Status.ACTIVE
    ).first()
    if existing is not None:
        return existing
    row = BenignHash.objects.create(
        program=program, signal_type=signal_type, value=key, source=source, reason=reason[:500], added_by=actor.id
    )
    record(
        "benign.added",
        actor=actor,
        subject_type="benign",
        subject_id=str(row.pk),
        program=program.slug,
        data=_benign_data(row),
    )
    return row


@transaction.atomic
def benign_remove(*, benign: BenignHash, reason: str, actor: Actor) -> BenignHash:
    """Take a value off the benign list (a mistake, or it turned out violating after all)."""
    if not reason.strip():
        raise Problem.field("reason", "give a reason; it is recorded in the log")
    row = BenignHash.objects.select_for_update().get(pk=benign.pk)
    if row.status != BenignHash.Status.ACTIVE:
        raise Problem.field("status", "this entry was already removed")
    row.status, row.removed_at, row.removed_by, row.removal_reason = (
        BenignHash.Status.REMOVED,
        timezone.now(),
        actor.id,
        reason[:500],
    )
    row.save(update_fields=["status", "removed_at", "removed_by", "removal_reason"])
    record(
        "benign.removed",
        actor=actor,
        subject_type="benign",
        subject_id=str(row.pk),
        program=row.program.slug,
        data={**_benign_data(row), "reason": row.removal_reason},
    )
    return row


def benign_hits(items: Sequence[tuple[Program, str, str]]) -> dict[int, tuple[BenignHash, int]]:
    """{position: (benign entry, distance)} for the items (program, signal type, normalised
    value) within their program's threshold of an active benign entry, nearest entry first.

    Perceptual types are compared with every entry of the program (the list is short: it
    holds mistakes); other types by their stored key.
    """
    wanted: dict[tuple[int, str], list[int]] = defaultdict(list)
    for position, (program, signal_type, _value) in enumerate(items):
        if program.refuse_benign:
            wanted[(program.pk, signal_type)].append(position)
    if not wanted:
        return {}
    rows = BenignHash.objects.filter(
        status=BenignHash.Status.ACTIVE,
        program_id__in={p for p, _ in wanted},
        signal_type__in={t for _, t in wanted},
    ).select_related("program")
    entries: dict[tuple[int, str], list[BenignHash]] = defaultdict(list)
    for row in rows:
        entries[(row.program_id, row.signal_type)].append(row)
    hits: dict[int, tuple[BenignHash, int]] = {}
    for (program_id, signal_type), positions in wanted.items():
        listed = entries.get((program_id, signal_type))
        if not listed:
            continue
        kind = signal_types.get(signal_type)
        if kind.hamming:
            threshold = items[positions[0]][0].threshold(signal_type)
            listed_codes = hx.codes_from_hex([row.value for row in listed], kind.bits)
            query_codes = hx.codes_from_hex([items[p][2] for p in positions], kind.bits)
            for position, code in zip(positions, query_codes, strict=True):
                distances = np.bitwise_count(listed_codes ^ code).sum(axis=1)
                nearest = int(distances.argmin())
                if distances[nearest] <= threshold:
                    hits[position] = (listed[nearest], int(distances[nearest]))
        else:
            by_key = {row.value: row for row in listed}
            for position in positions:
                row = by_key.get(kind.storage_key(items[position][2]))
                if row is not None:
                    hits[position] = (row, 0)
    return hits


def benign_refusal(*, program: Program, signal_type: str, entry: BenignHash, distance: int) -> Problem:
    """The clear reason a submission near a benign entry is refused."""
    where = "equals" if distance == 0 else f"is within {distance} bits of"
    return Problem(
        "benign_hash",
        f"this {signal_type} value {where} entry {entry.pk} of program {program.slug!r}'s benign list "
        f"(not violating: {entry.reason}); it is not distributed. If you believe it is violating, "
        "ask the clearinghouse's admins to review the entry.",
        status=422,
    )


def refusal_event(*, program: Program, signal_type: str, entry: BenignHash, distance: int, submitter: str) -> NewEvent:
    """`submission.refused`: the evidence that the benign list acted (no value: it was not taken)."""
    return NewEvent(
        "submission.refused",
        "benign",
        str(entry.pk),
        program=program.slug,
        data={
            "reason": "benign",
            "benign_id": entry.pk,
            "signal_type": signal_type,
            "distance": distance,
            "submitter": submitter,
        },
    )


# Match-rate anomalies -------------------------------------------------------------------------------


@transaction.atomic
def anomaly_quarantine(
    *, hash_id: int, program: Program, day: Any, matches: int, baseline: float, limit: float
) -> MatchAnomaly | None:
    """Quarantine an active hash for its match rate; members are told by a tombstone
    (`hash.quarantined`) in every program that lists it. None if it is not active."""
    ledger.lock()
    row = Hash.objects.select_for_update().get(pk=hash_id)
    if row.status != Hash.Status.ACTIVE:
        return None
    anomaly = MatchAnomaly.objects.create(
        hash=row, program=program, day=day, matches=matches, baseline=baseline, limit=limit
    )
    now = timezone.now()
    row.status, row.status_changed_at = Hash.Status.QUARANTINED, now
    row.status_reason = (
        f"matched {matches} times on {day} in {program.slug}, over the limit of {limit:g} "
        f"({program.anomaly_multiple} x the median {baseline:g}); quarantined until an admin reviews it"
    )[:500]
    row.save(update_fields=["status", "status_changed_at", "status_reason"])
    # Event data holds no floats (their JSON is not canonical): the rates are written as text.
    evidence = {"anomaly_id": anomaly.pk, "day": day.isoformat(), "matches": matches, "baseline": f"{baseline:g}"}
    ledger.record_many(
        [
            NewEvent(
                "hash.quarantined",
                "hash",
                str(row.pk),
                program=listing.program.slug,
                data={**row.event_data(), **evidence, "limit": f"{limit:g}", "reason": row.status_reason},
            )
            for listing in row.listings.select_related("program").filter(status=Listing.Status.ACTIVE)
        ],
        actor=Actor.system("floods"),
    )
    return anomaly


@transaction.atomic
def anomaly_decide(*, anomaly: MatchAnomaly, decision: str, reason: str, actor: Actor) -> MatchAnomaly:
    """An admin ends a quarantine for match rate: `restored` (members are told the hash is back,
    by `hash.restored`) or `retired` (withdrawn for good)."""
    anomaly = decide_open(
        model=MatchAnomaly,
        pk=anomaly.pk,
        decision=decision,
        choices=(MatchAnomaly.Status.RESTORED, MatchAnomaly.Status.RETIRED),
        reason=reason,
        actor=actor,
        related=("hash", "program"),
    )
    row = anomaly.hash
    record(
        "match_anomaly.decided",
        actor=actor,
        subject_type="hash",
        subject_id=str(row.pk),
        program=anomaly.program.slug,
        data={"anomaly_id": anomaly.pk, "hash_id": row.pk, "decision": decision, "reason": reason},
    )
    if decision == MatchAnomaly.Status.RETIRED:
        hash_set_status(hash_=row, status=Hash.Status.RETIRED, reason=reason, actor=actor)
        return anomaly
    if row.status == Hash.Status.QUARANTINED:
        hash_restore(hash_=row, reason=reason, actor=actor, why={"anomaly_id": anomaly.pk})
    return anomaly
