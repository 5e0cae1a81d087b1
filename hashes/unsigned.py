"""Unsigned submissions: hashes from clients that cannot sign, recorded as such.

Every ordinary submission is a DSSE envelope signed by its submitter, so members and
peers can check who said what. Some clients platforms already run cannot sign (Meta's
`threatexchange` StopNCII client posts bare hash values), and a program may choose to
accept hashes from them anyway — but only from the members it names in
`Program.unsigned_submitters`. Such a submission carries no envelope, key, nonce or
signed time; it says `signed=False` and which facade it came through (`source`), and
its events say so too, so nobody mistakes it for a signed one.

Apart from the signature, it goes through the same steps as a signed one: the same
Hash rows (`services._hashes_for`), the same Listing rules and the same events —
`hash.added` for the first active support of a hash in a program, `submission.added`
otherwise — written under the ledger lock in one transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from exchange import ledger
from exchange.ledger import Actor, NewEvent
from members.models import Enrollment, Member, Program

from . import services, signal_types
from .envelopes import MAX_LABELS, Rejection
from .models import Hash, Listing, Submission
from .services import ItemResult

# The same rule as for labels in signed payloads (hashes/envelopes.py).
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/-]{0,63}")
_SOURCE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class UnsignedItem:
    """One hash a compatibility client asked to submit."""

    signal_type: str
    value: str
    labels: tuple[str, ...] = ()


def unsigned_check_program(*, member: Member, program: Program) -> None:
    """Raise a Rejection (403) unless the member may submit unsigned hashes to the program.

    Three conditions, each with its own code so an operator can tell them apart: the
    program names the member in `unsigned_submitters`, the member is opted in, and its
    kind may submit to the program at all.
    """
    if not program.unsigned_submitters.filter(pk=member.pk).exists():
        raise Rejection(
            "unsigned_not_allowed",
            f"{program.slug!r} does not accept unsigned submissions from {member.slug!r}; "
            "sign them (POST /api/v1/submissions), or ask the clearinghouse to allow it",
            status=403,
        )
    if not Enrollment.objects.filter(member=member, program=program, state=Enrollment.State.OPTED_IN).exists():
        raise Rejection(
            "not_enrolled",
            f"you are not opted in to {program.slug!r}; opt in with POST /api/v1/enrollments",
            status=403,
        )
    if member.kind not in program.submitter_kinds:
        raise Rejection("not_allowed", f"{member.kind} members may not submit to {program.slug!r}", status=403)


def _check_item(item: UnsignedItem, program: Program) -> tuple[str, str, list[str]]:
    """The normalised (signal type, value, labels) of an item, or a Rejection."""
    try:
        kind = signal_types.get(item.signal_type)
    except signal_types.SignalValueError as exc:
        raise Rejection("unknown_signal_type", str(exc)) from None
    if kind.name not in program.signal_types:
        raise Rejection(
            "signal_type_not_allowed",
            f"{program.slug!r} accepts {', '.join(program.signal_types)}, not {kind.name}",
        )
    try:
        value = kind.validate(item.value)
    except signal_types.SignalValueError as exc:
        raise Rejection("invalid_value", str(exc)) from None
    labels = list(dict.fromkeys(item.labels))
    if len(labels) > MAX_LABELS:
        raise Rejection("malformed", f"at most {MAX_LABELS} labels")
    for label in labels:
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            raise Rejection(
                "malformed", f"label {label!r} must be 1-64 characters of A-Z, a-z, 0-9, ':', '.', '_', '/', '-'"
            )
    return kind.name, value, labels


def unsigned_submissions_create(
    *, member: Member, program: Program, items: Sequence[UnsignedItem], source: str, now: dt.datetime | None = None
) -> list[ItemResult]:
    """Record unsigned submissions of hashes to one program; one result per item.

    Steps:
    1. Refuse the whole request (Rejection, 403) unless the program accepts unsigned
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
    checked: list[tuple[ItemResult, str, str, list[str]]] = []
    for result, item in zip(results, items, strict=True):
        try:
            signal_type, value, labels = _check_item(item, program)
        except Rejection as rejection:
            result.error = rejection
            continue
        checked.append((result, signal_type, value, labels))
    if checked:
        with transaction.atomic():
            _store(member=member, program=program, items=checked, source=source, now=now)
    return results


def _hash_rows(pairs: set[tuple[str, str]], now: dt.datetime) -> dict[tuple[str, str], tuple[int, str]]:
    """(id, status) per (signal type, value), created where missing, via the signed path's helper.

    `services._hashes_for` answers either Hash rows or (id, status) pairs plus the ids it
    created, depending on the version of hashes/services.py; both are accepted here.
    """
    found: Any = services._hashes_for(pairs, now)
    if isinstance(found, tuple):
        return dict(found[0])
    return {pair: (row.pk, row.status) for pair, row in found.items()}


def _store(
    *,
    member: Member,
    program: Program,
    items: list[tuple[ItemResult, str, str, list[str]]],
    source: str,
    now: dt.datetime,
) -> None:
    ledger.lock()
    hashes = _hash_rows({(signal_type, value) for _, signal_type, value, _ in items}, now)
    hash_ids = {pk for pk, _ in hashes.values()}
    mine = dict(
        Submission.objects.filter(
            submitter=member, program=program, status=Submission.Status.ACTIVE, hash_id__in=hash_ids
        ).values_list("hash_id", "id")
    )
    listings = {
        hash_id: (pk, status)
        for pk, hash_id, status in Listing.objects.filter(program=program, hash_id__in=hash_ids).values_list(
            "id", "hash_id", "status"
        )
    }
    accepted: list[tuple[ItemResult, int, str, str, str]] = []
    new_rows: list[Submission] = []
    first_in_batch: dict[int, ItemResult] = {}
    repeats: list[tuple[ItemResult, ItemResult]] = []
    for result, signal_type, value, labels in items:
        hash_id, hash_status = hashes[(signal_type, value)]
        if hash_id in mine:
            result.status, result.hash_id, result.submission_id = "duplicate", hash_id, mine[hash_id]
            continue
        if hash_id in first_in_batch:
            repeats.append((first_in_batch[hash_id], result))
            continue
        if hash_status in (Hash.Status.QUARANTINED, Hash.Status.RETIRED):
            result.error = Rejection(
                f"hash_{hash_status}",
                f"this hash is {hash_status} by the clearinghouse and takes no new submissions",
                status=409,
            )
            continue
        first_in_batch[hash_id] = result
        new_rows.append(
            Submission(
                hash_id=hash_id,
                program=program,
                submitter=member,
                signing_key=None,
                status=Submission.Status.ACTIVE,
                signed=False,
                envelope=None,
                payload_sha256=None,
                nonce=None,
                signed_at=None,
                source=source,
                labels=labels,
                case_ref="",
                quality=None,
                received_at=now,
            )
        )
        accepted.append((result, hash_id, hash_status, signal_type, value))
    Submission.objects.bulk_create(new_rows)
    ids = _submission_ids(member, program, new_rows)
    events: list[NewEvent] = []
    new_listings: list[Listing] = []
    reactivated: list[int] = []
    reactivated_hashes: set[int] = set()
    for result, hash_id, hash_status, signal_type, value in accepted:
        result.status, result.hash_id, result.submission_id = "accepted", hash_id, ids[hash_id]
        data = {
            "hash_id": hash_id,
            "signal_type": signal_type,
            "value": value,
            "submission_id": ids[hash_id],
            "submitter": member.slug,
            "signed": False,
            "source": source,
        }
        listing = listings.get(hash_id)
        if listing is not None and listing[1] == Listing.Status.ACTIVE:
            events.append(NewEvent("submission.added", "hash", str(hash_id), program=program.slug, data=data))
            continue
        if listing is None:
            new_listings.append(Listing(hash_id=hash_id, program=program, created_at=now, changed_at=now))
        else:
            reactivated.append(listing[0])
        if hash_status == Hash.Status.WITHDRAWN:
            reactivated_hashes.add(hash_id)
        events.append(NewEvent("hash.added", "hash", str(hash_id), program=program.slug, data=data))
    Listing.objects.bulk_create(new_listings)
    if reactivated:
        Listing.objects.filter(pk__in=reactivated).update(status=Listing.Status.ACTIVE, changed_at=now)
    if reactivated_hashes:
        Hash.objects.filter(pk__in=reactivated_hashes).update(
            status=Hash.Status.ACTIVE, status_changed_at=now, status_reason=""
        )
    ledger.record_many(events, actor=Actor.member(member.slug))
    for first, repeat in repeats:
        # The same hash twice in one request: the later one repeats the first's result.
        repeat.status = "duplicate" if first.status == "accepted" else first.status
        repeat.hash_id, repeat.submission_id, repeat.error = first.hash_id, first.submission_id, first.error


def _submission_ids(member: Member, program: Program, rows: Iterable[Submission]) -> dict[int, int]:
    """The new submissions' ids by hash id (read back on a backend that does not return them)."""
    rows = list(rows)
    if all(row.pk is not None for row in rows):
        return {row.hash_id: row.pk for row in rows}
    return dict(
        Submission.objects.filter(
            submitter=member,
            program=program,
            status=Submission.Status.ACTIVE,
            hash_id__in=[row.hash_id for row in rows],
        ).values_list("hash_id", "id")
    )
