"""Submissions held for review instead of distributed (docs/floods.md).

Two protections of a program put a submitter's new submissions in a held batch:

- submitter trust (`hold_dispute_percent`): of the submitter's submissions of the last
  `hold_window_days`, at least that percentage are of hashes the clearinghouse stopped
  distributing as mistakes (quarantined by a dispute or a match-rate anomaly, or retired),
  once it has `hold_dispute_min` of them;
- bulk-add review (`hold_burst_size`): the submitter would have more than that many
  submissions in the program within `hold_burst_minutes`.

The submitter is the member; for an intake member it is the person's case, which signs
with its own key, so one case's burst or disputed hashes hold that case only. A peer's
relayed submissions are never held: its feed was reviewed where it came from.

A held submission is stored (its item says `held`), with no `hash.added` or
`submission.added`: nothing goes to any member until an admin releases the batch, which
records those events as for a new submission (feed, webhooks, match index), or retires
it. While a batch is open, the submitter's further submissions to the program join it.
Every step is an event: `held_batch.opened`, `submission.held`, `held_batch.decided`,
then `hash.added` / `submission.added` or `submission.retired` (and `hash.retired`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone
from hashexchange_client import signal_types

from core import ledger
from core.ledger import Actor, NewEvent
from members.models import Member, Program

from ..models import Hash, HashBody, HeldBatch, Listing, Submission
from .decisions import decide_open

SYSTEM = Actor.system("floods")


def case_key(member: Member, signing_key_id: int | None) -> int | None:
    """The key that names the submitter within a member: an intake case's own key, else None."""
    return signing_key_id if member.kind == Member.Kind.INTAKE else None


def _own(rows: Any, *, member: Member, program: Program, key_id: int | None) -> Any:
    rows = rows.filter(submitter=member, program=program)
    return rows.filter(signing_key_id=key_id) if key_id is not None else rows


def dispute_evidence(
    *, member: Member, program: Program, key_id: int | None, now: dt.datetime
) -> dict[str, Any] | None:
    """The figures that hold a distrusted submitter's submissions, or None if it is trusted."""
    if not program.hold_dispute_percent:
        return None
    since = now - dt.timedelta(days=program.hold_window_days)
    rows = _own(Submission.objects, member=member, program=program, key_id=key_id)
    counts = (
        rows.filter(received_at__gte=since)
        .exclude(status=Submission.Status.HELD)
        .aggregate(
            total=Count("id"),
            disputed=Count("id", filter=Q(hash__status__in=[Hash.Status.QUARANTINED, Hash.Status.RETIRED])),
        )
    )
    total, disputed = counts["total"], counts["disputed"]
    if total < program.hold_dispute_min or disputed * 100 < program.hold_dispute_percent * total:
        return None
    return {
        "disputed": disputed,
        "submissions": total,
        "percent_limit": program.hold_dispute_percent,
        "window_days": program.hold_window_days,
    }


def burst_evidence(
    *, member: Member, program: Program, key_id: int | None, adding: int, now: dt.datetime
) -> dict[str, Any] | None:
    """The figures that hold a burst (`adding` more submissions now), or None if it is no burst.

    Submissions an admin already released from a held batch do not count again."""
    if not program.hold_burst_size:
        return None
    since = now - dt.timedelta(minutes=program.hold_burst_minutes)
    rows = _own(Submission.objects, member=member, program=program, key_id=key_id)
    recent = rows.filter(received_at__gte=since, held_batch__isnull=True).count()
    if recent + adding <= program.hold_burst_size:
        return None
    return {
        "submissions": recent + adding,
        "size_limit": program.hold_burst_size,
        "window_minutes": program.hold_burst_minutes,
    }


def holds_for(
    *, member: Member, places: Sequence[tuple[Program, int | None]], now: dt.datetime
) -> dict[int, HeldBatch]:
    """{position: the open batch it joins} for the items (program, signing key id) to be held.

    Called by the store path under the ledger lock, with the items it is about to store
    (after duplicates and refusals). Opens a batch, with its `held_batch.opened` event,
    where a protection acts and none is open yet.
    """
    if member.kind == Member.Kind.PEER or not places:
        return {}
    groups: dict[tuple[int, int | None], list[int]] = defaultdict(list)
    programs: dict[int, Program] = {}
    for position, (program, signing_key_id) in enumerate(places):
        programs[program.pk] = program
        groups[(program.pk, case_key(member, signing_key_id))].append(position)
    # One query: the submitter's open batches (a batch opened while a setting was on stays
    # open, and keeps taking the submitter's submissions, until an admin decides it).
    open_batches: dict[tuple[int, int | None], HeldBatch] = {}
    for batch in HeldBatch.objects.filter(submitter=member, program_id__in=programs, status=HeldBatch.Status.OPEN):
        open_batches.setdefault((batch.program_id, batch.signing_key_id), batch)
    watched = {pk for pk, p in programs.items() if p.hold_dispute_percent or p.hold_burst_size} | {
        program_id for program_id, _ in open_batches
    }
    if not watched:
        return {}
    held: dict[int, HeldBatch] = {}
    for (program_id, key_id), positions in groups.items():
        if program_id not in watched:
            continue
        program = programs[program_id]
        batch = open_batches.get((program_id, key_id))
        if batch is None:
            batch = _open(member=member, program=program, key_id=key_id, adding=len(positions), now=now)
        if batch is not None:
            held.update(dict.fromkeys(positions, batch))
    return held


def _open(*, member: Member, program: Program, key_id: int | None, adding: int, now: dt.datetime) -> HeldBatch | None:
    reason, evidence = HeldBatch.Reason.TRUST, dispute_evidence(member=member, program=program, key_id=key_id, now=now)
    if evidence is None:
        reason = HeldBatch.Reason.BURST
        evidence = burst_evidence(member=member, program=program, key_id=key_id, adding=adding, now=now)
    if evidence is None:
        return None
    batch = HeldBatch.objects.create(
        program=program, submitter=member, signing_key_id=key_id, reason=reason, evidence=evidence, opened_at=now
    )
    ledger.record(
        "held_batch.opened",
        actor=SYSTEM,
        subject_type="held_batch",
        subject_id=str(batch.pk),
        program=program.slug,
        data={
            "held_batch_id": batch.pk,
            "submitter": member.slug,
            "signing_key_id": key_id,
            "reason": reason,
            **evidence,
        },
    )
    return batch


# Decisions --------------------------------------------------------------------------------------


@transaction.atomic
def held_batch_decide(*, batch: HeldBatch, decision: str, reason: str, actor: Actor) -> HeldBatch:
    """An admin releases a held batch (its submissions are distributed as new) or retires it
    (they never are; a hash nothing else supports is retired for good)."""
    batch = decide_open(
        model=HeldBatch,
        pk=batch.pk,
        decision=decision,
        choices=(HeldBatch.Status.RELEASED, HeldBatch.Status.RETIRED),
        reason=reason,
        actor=actor,
        related=("program", "submitter"),
    )
    rows = list(
        Submission.objects.select_for_update()
        .filter(held_batch=batch, status=Submission.Status.HELD)
        .select_related("hash", "program", "submitter")
        .order_by("pk")
    )
    ledger.record(
        "held_batch.decided",
        actor=actor,
        subject_type="held_batch",
        subject_id=str(batch.pk),
        program=batch.program.slug,
        data={
            "held_batch_id": batch.pk,
            "submitter": batch.submitter.slug,
            "decision": decision,
            "reason": reason,
            "submissions": len(rows),
        },
    )
    if decision == HeldBatch.Status.RELEASED:
        _release(batch, rows, actor=actor)
    else:
        submissions_retire_held(rows, reason=reason, actor=actor, why={"held_batch_id": batch.pk})
    return batch


def _release(batch: HeldBatch, rows: list[Submission], *, actor: Actor) -> None:
    """Distribute released submissions as new ones: `hash.added` for the first active support
    of a hash in the program, `submission.added` otherwise (as the store path records them)."""
    now = timezone.now()
    blocked = [s for s in rows if s.hash.status in (Hash.Status.QUARANTINED, Hash.Status.RETIRED)]
    if blocked:  # stopped meanwhile by a dispute, an anomaly or an admin: it cannot be distributed
        submissions_retire_held(
            blocked, reason="its hash is no longer distributed", actor=actor, why={"held_batch_id": batch.pk}
        )
    rows = [s for s in rows if s not in blocked]
    if not rows:
        return
    Submission.objects.filter(pk__in=[s.pk for s in rows]).update(status=Submission.Status.ACTIVE)
    long_ids = [s.hash_id for s in rows if signal_types.get(s.hash.signal_type).long_values]
    bodies = dict(HashBody.objects.filter(pk__in=long_ids).values_list("pk", "value")) if long_ids else {}
    listings = {
        (listing.hash_id, listing.program_id): listing
        for listing in Listing.objects.select_for_update().filter(
            hash_id__in={s.hash_id for s in rows}, program=batch.program
        )
    }
    events: list[NewEvent] = []
    for s in rows:
        data = {
            "hash_id": s.hash_id,
            "signal_type": s.hash.signal_type,
            "value": bodies.get(s.hash_id, s.hash.value),
            "submission_id": s.pk,
            "submitter": s.submitter.slug,
            "held_batch_id": batch.pk,
        }
        listing = listings.get((s.hash_id, s.program_id))
        if listing is not None and listing.status == Listing.Status.ACTIVE:
            events.append(NewEvent("submission.added", "hash", str(s.hash_id), program=s.program.slug, data=data))
            continue
        if listing is None:
            listing = Listing.objects.create(hash_id=s.hash_id, program=s.program, created_at=now, changed_at=now)
            listings[(s.hash_id, s.program_id)] = listing
        else:
            listing.status, listing.changed_at = Listing.Status.ACTIVE, now
            listing.save(update_fields=["status", "changed_at"])
        if s.hash.status != Hash.Status.ACTIVE:
            Hash.objects.filter(pk=s.hash_id).update(status=Hash.Status.ACTIVE, status_changed_at=now, status_reason="")
            s.hash.status = Hash.Status.ACTIVE
        events.append(NewEvent("hash.added", "hash", str(s.hash_id), program=s.program.slug, data=data))
    ledger.record_many(events, actor=actor)


def submissions_retire_held(rows: Sequence[Submission], *, reason: str, actor: Actor, why: dict[str, Any]) -> None:
    """Retire held submissions: they are never distributed (`submission.retired`). A held
    listing nothing else supports goes away; a hash nothing supports any more anywhere is
    retired for good (`hash.retired`), so the same value cannot be submitted again."""
    if not rows:
        return
    now = timezone.now()
    Submission.objects.filter(pk__in=[s.pk for s in rows]).update(status=Submission.Status.RETIRED, withdrawn_at=now)
    events = [
        NewEvent(
            "submission.retired",
            "hash",
            str(s.hash_id),
            program=s.program.slug,
            data={**s.hash.event_data(), "submission_id": s.pk, "submitter": s.submitter.slug, **why, "reason": reason},
        )
        for s in rows
    ]
    hashes = {s.hash_id: s.hash for s in rows}
    supported = set(
        Submission.objects.filter(
            hash_id__in=hashes, status__in=[Submission.Status.ACTIVE, Submission.Status.HELD]
        ).values_list("hash_id", "program_id")
    )
    for s in {(s.hash_id, s.program_id): s for s in rows}.values():
        if (s.hash_id, s.program_id) not in supported:
            Listing.objects.filter(hash_id=s.hash_id, program_id=s.program_id, status=Listing.Status.HELD).delete()
    distributed = set(
        Listing.objects.filter(hash_id__in=hashes, status=Listing.Status.ACTIVE).values_list("hash_id", flat=True)
    )
    for hash_id, row in hashes.items():
        if hash_id in distributed or any(h == hash_id for h, _ in supported) or row.status == Hash.Status.RETIRED:
            continue
        Hash.objects.filter(pk=hash_id).update(status=Hash.Status.RETIRED, status_changed_at=now, status_reason=reason)
        row.status = Hash.Status.RETIRED
        events.append(NewEvent("hash.retired", "hash", str(hash_id), data={**row.event_data(), "reason": reason}))
    ledger.record_many(events, actor=actor)
