"""The one path that stores a batch of submissions, signed or unsigned.

Signed envelopes (submissions.py) and a facade's unsigned hashes (unsigned.py) are
checked in their own ways, then handed here as `Pending` items, and stored the same way
in one transaction that holds the ledger lock, so "is this the first active support of
the hash in this program?" is decided against the state the events are recorded on.

The rows are written with multi-row INSERTs of values adapted once per batch (on
PostgreSQL a large batch by COPY, core/sql.py) rather than with bulk_create: for 1,000
envelopes Django's per-value field preparation, the model instances, and (on PostgreSQL)
psycopg's pure-Python array dumping behind bulk_create's UNNEST cost more than the
database does, and all of it ran while the ledger lock was held (see
docs/benchmarks/submissions.md).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from hashexchange_client import signal_types

from core import ledger
from core.ledger import Actor, NewEvent
from core.problems import Problem
from core.sql import insert_rows, values_in
from members.models import Member, Program

from ..models import Hash, HashBody, Listing, Submission
from .floods import benign_hits, benign_refusal, refusal_event
from .holds import holds_for


@dataclass
class ItemResult:
    """The outcome of one item of a batch."""

    index: int
    status: str = "rejected"  # accepted | held | duplicate | rejected
    hash_id: int | None = None
    submission_id: int | None = None
    error: Problem | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "status": self.status,
            "hash_id": self.hash_id,
            "submission_id": self.submission_id,
            "error": {"code": self.error.code, "detail": self.error.detail} if self.error else None,
        }

    def repeat(self, first: ItemResult) -> None:
        """The same thing twice in one batch: this later item repeats the first's result."""
        self.status = "duplicate" if first.status in ("accepted", "held") else first.status
        self.hash_id, self.submission_id, self.error = first.hash_id, first.submission_id, first.error


HASH_COLUMNS = ("signal_type", "value", "status", "status_reason", "created_at", "status_changed_at")
LISTING_COLUMNS = ("hash_id", "program_id", "status", "created_at", "changed_at")
# The Submission columns a Pending row fills, in this order; hash_id (first) is filled in
# under the lock.
SUBMISSION_COLUMNS = (
    "hash_id",
    "program_id",
    "submitter_id",
    "signing_key_id",
    "status",
    "signed",
    "source",
    "envelope",
    "payload_sha256",
    "nonce",
    "signed_at",
    "labels",
    "case_ref",
    "quality",
    "received_at",
    "held_batch_id",
    "relayed_in",
)
PROGRAM = SUBMISSION_COLUMNS.index("program_id")
HELD_BATCH, RELAYED_IN = SUBMISSION_COLUMNS.index("held_batch_id"), SUBMISSION_COLUMNS.index("relayed_in")


@dataclass
class Pending:
    """A checked item to store: its result, where it goes, and its Submission row.

    `row` follows SUBMISSION_COLUMNS (built before the lock is taken, see `submission_row`);
    `event_data` is added to the data of the item's `hash.added` or `submission.added` event.
    """

    result: ItemResult
    program: Program
    signal_type: str
    value: str
    row: list[Any]
    event_data: Mapping[str, Any] = field(default_factory=dict)


def submission_row(
    *,
    program: Program,
    member: Member,
    now: dt.datetime,
    labels: Sequence[str],
    signing_key_id: int | None = None,
    envelope: dict[str, Any] | str | None = None,
    payload_sha256: str | None = None,
    nonce: str | None = None,
    signed_at: dt.datetime | None = None,
    case_ref: str = "",
    quality: int | None = None,
    source: str = "",
) -> list[Any]:
    """The Submission row of an item (in SUBMISSION_COLUMNS order), without its hash id.

    `envelope`: the DSSE envelope, or its JSON text if encoded already (federation's
    verifying processes encode the envelopes they check).
    """
    if isinstance(envelope, dict):
        envelope = json.dumps(envelope, separators=(",", ":"))
    return [
        None,
        program.pk,
        member.pk,
        signing_key_id,
        Submission.Status.ACTIVE,
        envelope is not None,
        source,
        envelope,
        payload_sha256,
        nonce,
        signed_at,
        list(labels),
        case_ref,
        quality,
        now,
        None,
        None,
    ]


def submissions_store(
    *, member: Member, items: Sequence[Pending], now: dt.datetime, relayed_by: str | None = None
) -> None:
    """Store checked items in one transaction under the ledger lock; fill in their results.

    Steps:
    1. Find or create the Hash rows (`hashes_for`).
    2. A hash this member already supports in the program is a `duplicate`; the same
       (program, hash) twice in the batch repeats the first's result; a quarantined or
       retired hash is refused (409).
    3. Hold the items a protection holds for review (holds.py): they are stored as
       `held` with a held listing for a new (program, hash), and `submission.held`
       is all that is recorded; nobody is sent them until an admin releases them.
    4. Insert the submissions; activate or create listings (a withdrawn or held hash
       becomes active again); record `hash.added` for the first active support of a
       hash in a program, `submission.added` otherwise.

    `relayed_by` (a peer's slug; items whose `event_data` holds the entry's `origin`):
    the first listings are recorded as grouped `hashes.relayed` events instead of one
    `hash.added` each (`relayed_events`, docs/federation.md "Grouped relayed events").
    """
    if not items:
        return
    with transaction.atomic():
        _store_locked(member=member, items=items, now=now, relayed_by=relayed_by)


def _store_locked(*, member: Member, items: Sequence[Pending], now: dt.datetime, relayed_by: str | None) -> None:
    ledger.lock()
    # Items near a benign entry are refused before any row is written for them.
    benign = benign_hits([(i.program, i.signal_type, i.value) for i in items])
    hashes, created = hashes_for(((i.signal_type, i.value) for p, i in enumerate(items) if p not in benign), now)
    known = {pk for pk, _status in hashes.values()} - created
    program_ids = {i.program.pk for i in items}
    mine: dict[tuple[int, int], int] = {}
    listings: dict[tuple[int, int], tuple[int | None, str]] = {}
    if known:  # hashes created just now have neither submissions nor listings
        mine = {
            (program_id, hash_id): pk
            for pk, program_id, hash_id in Submission.objects.filter(
                submitter=member,
                status__in=[Submission.Status.ACTIVE, Submission.Status.HELD],
                hash_id__in=known,
                program_id__in=program_ids,
            ).values_list("id", "program_id", "hash_id")
        }
        listings = {
            (program_id, hash_id): (pk, status)
            for pk, program_id, hash_id, status in Listing.objects.filter(
                hash_id__in=known, program_id__in=program_ids
            ).values_list("id", "program_id", "hash_id", "status")
        }
    accepted: list[Pending] = []
    first_in_batch: dict[tuple[int, int], ItemResult] = {}
    repeats: list[tuple[ItemResult, ItemResult]] = []
    refusals: list[NewEvent] = []
    for position, item in enumerate(items):
        if position in benign:
            entry, distance = benign[position]
            item.result.error = benign_refusal(
                program=item.program, signal_type=item.signal_type, entry=entry, distance=distance
            )
            refusals.append(
                refusal_event(
                    program=item.program,
                    signal_type=item.signal_type,
                    entry=entry,
                    distance=distance,
                    submitter=member.slug,
                )
            )
            continue
        hash_id, hash_status = hashes[(item.signal_type, item.value)]
        place = (item.row[PROGRAM], hash_id)
        if place in mine:
            item.result.status, item.result.hash_id, item.result.submission_id = "duplicate", hash_id, mine[place]
            continue
        if place in first_in_batch:
            repeats.append((first_in_batch[place], item.result))
            continue
        if hash_status in (Hash.Status.QUARANTINED, Hash.Status.RETIRED):
            item.result.error = Problem(
                f"hash_{hash_status}",
                f"this hash is {hash_status} by the clearinghouse and takes no new submissions",
                status=409,
            )
            continue
        item.row[0] = hash_id
        first_in_batch[place] = item.result
        accepted.append(item)
    held = holds_for(member=member, places=[(item.program, item.row[3]) for item in accepted], now=now)
    for position, batch in held.items():
        accepted[position].row[4], accepted[position].row[HELD_BATCH] = Submission.Status.HELD, batch.pk
    groups: list[NewEvent] = []
    group_of_item: dict[int, int] = {}  # position in `accepted` of each grouped item -> its group
    first_group_seq = 0
    if relayed_by is not None:
        # Which items the groups list (the first active listings: neither held nor already
        # listed), decided before the rows are written so each row names its group's seq.
        grouped = [
            position
            for position, item in enumerate(accepted)
            if position not in held
            and (listings.get((item.row[PROGRAM], item.row[0])) or (None, ""))[1] != Listing.Status.ACTIVE
        ]
        groups, group_of = relayed_events(
            [(accepted[p].program.slug, accepted[p].row[0], accepted[p].event_data["origin"]) for p in grouped],
            peer=relayed_by,
            submitter=member.slug,
        )
        # Recorded after the items' own events (one per accepted item not grouped).
        first_group_seq = ledger.next_seq() + len(accepted) - len(grouped)
        group_of_item = dict(zip(grouped, group_of, strict=True))
        for position, group in group_of_item.items():
            accepted[position].row[RELAYED_IN] = first_group_seq + group
    submission_ids = _insert_submissions(member, [item.row for item in accepted])
    events: list[NewEvent] = []
    new_listings: list[tuple[Any, ...]] = []
    reactivated: list[int] = []
    reactivated_hashes: set[int] = set()
    held_only: set[int] = set()
    for position, item in enumerate(accepted):
        hash_id, hash_status = hashes[(item.signal_type, item.value)]
        place = (item.row[PROGRAM], hash_id)
        submission_id = submission_ids[place]
        item.result.status, item.result.hash_id, item.result.submission_id = "accepted", hash_id, submission_id
        listing = listings.get(place)
        group = group_of_item.get(position)
        data = (
            {}  # (listed by its group's event, which has what it needs)
            if group is not None
            else {
                "hash_id": hash_id,
                "signal_type": item.signal_type,
                "value": item.value,
                "submission_id": submission_id,
                "submitter": member.slug,
                **item.event_data,
            }
        )
        if position in held:
            item.result.status = "held"
            data["value"] = signal_types.get(item.signal_type).storage_key(item.value)
            data["held_batch_id"] = held[position].pk
            events.append(NewEvent("submission.held", "hash", str(hash_id), program=item.program.slug, data=data))
            if listing is None:
                new_listings.append((hash_id, item.row[PROGRAM], Listing.Status.HELD, now, now))
                listings[place] = (None, Listing.Status.HELD)
            if hash_id in created:
                held_only.add(hash_id)
            continue
        if listing is not None and listing[1] == Listing.Status.ACTIVE:
            events.append(NewEvent("submission.added", "hash", str(hash_id), program=item.program.slug, data=data))
            continue
        if listing is None:
            new_listings.append((hash_id, item.row[PROGRAM], Listing.Status.ACTIVE, now, now))
        else:
            reactivated.append(listing[0])  # type: ignore[arg-type]
        listings[place] = (listing[0] if listing else None, Listing.Status.ACTIVE)
        if hash_status in (Hash.Status.WITHDRAWN, Hash.Status.HELD) or hash_id in created:
            reactivated_hashes.add(hash_id)
        if group is not None:
            groups[group].data["submission_ids"].append(submission_id)  # type: ignore[index]
            continue
        events.append(NewEvent("hash.added", "hash", str(hash_id), program=item.program.slug, data=data))
    if new_listings:
        insert_rows(Listing, LISTING_COLUMNS, new_listings)
    if reactivated:
        Listing.objects.filter(pk__in=reactivated).update(status=Listing.Status.ACTIVE, changed_at=now)
    # A new hash that only held submissions support is held too (nothing distributes it).
    held_only -= reactivated_hashes
    reactivated_hashes -= created
    if reactivated_hashes:
        Hash.objects.filter(pk__in=reactivated_hashes).update(
            status=Hash.Status.ACTIVE, status_changed_at=now, status_reason=""
        )
    if held_only:
        Hash.objects.filter(pk__in=held_only).update(status=Hash.Status.HELD, status_reason="held for review")
    rows = ledger.record_many(events + groups + refusals, actor=Actor.member(member.slug))
    if groups and rows[len(events)].seq != first_group_seq:
        raise ledger.LedgerError("the grouped events were not numbered as their submission rows say")
    for first, repeat in repeats:
        repeat.repeat(first)


# A `hashes.relayed` event lists at most this many hashes, and its distinct origins (each
# with a signed key binding, ~0.8 KB) at most ORIGIN_BYTES of JSON: its leaf stays well
# under the audit log's 64 KiB (core/ledger.py MAX_LEAF_BYTES).
RELAYED_GROUP = 1000
ORIGIN_BYTES = 24_000
RELAYED = "hashes.relayed"


def relayed_events(
    relayed: Sequence[tuple[str, int, Mapping[str, Any]]], *, peer: str, submitter: str
) -> tuple[list[NewEvent], list[int]]:
    """Group a peer's first listings (program, hash id, origin) into `hashes.relayed` events,
    in order, one program each; also the index of each item's event.

    An event names its hashes and submissions (the envelopes are in the submission rows,
    as for `hash.added`; the caller appends the submission ids once the rows exist) and
    each distinct origin once; `origin_of[i]` is the index in `origins` of the i-th hash's
    origin. The feed shows each hash as the `hash.added` entry it would otherwise have had
    (exchange/feed.py).
    """
    made: list[NewEvent] = []
    group_of: list[int] = []
    current: dict[str, Any] | None = None
    index: dict[str, int] = {}
    size = 0
    program = ""
    encodings: dict[int, str] = {}  # by id(): a page's entries of one binding share one origin object
    for slug, hash_id, origin in relayed:
        encoded = encodings.get(id(origin))
        if encoded is None:
            encoded = encodings[id(origin)] = json.dumps(origin, sort_keys=True, separators=(",", ":"))
        full = current is None or slug != program or len(current["hash_ids"]) >= RELAYED_GROUP
        if not full and encoded not in index and size + len(encoded) > ORIGIN_BYTES:
            full = True
        if full:
            current = {
                "peer": peer,
                "submitter": submitter,
                "hash_ids": [],
                "submission_ids": [],
                "origins": [],
                "origin_of": [],
            }
            made.append(NewEvent(RELAYED, "peer", peer, program=slug, data=current))
            index, size, program = {}, 0, slug
        assert current is not None
        if encoded not in index:
            index[encoded] = len(current["origins"])
            current["origins"].append(dict(origin))
            size += len(encoded)
        current["hash_ids"].append(hash_id)
        current["origin_of"].append(index[encoded])
        group_of.append(len(made) - 1)
    for event in made:
        assert event.data is not None
        event.data["count"] = len(event.data["hash_ids"])  # type: ignore[index]
    return made, group_of


def _insert_submissions(member: Member, rows: list[list[Any]]) -> dict[tuple[int, int], int]:
    """Insert Submission rows; their ids by (program id, hash id), unique among a batch's new rows."""
    if not rows:
        return {}
    inserted = insert_rows(
        Submission, SUBMISSION_COLUMNS, rows, returning=("id", "program_id", "hash_id"), json_text=("envelope",)
    )
    if inserted is None:  # a backend that does not return rows: read the ids back
        inserted = list(
            Submission.objects.filter(
                submitter=member,
                status__in=[Submission.Status.ACTIVE, Submission.Status.HELD],
                hash_id__in={row[0] for row in rows},
                program_id__in={row[1] for row in rows},
            ).values_list("id", "program_id", "hash_id")
        )
    return {(program_id, hash_id): pk for pk, program_id, hash_id in inserted}


def hashes_for(
    pairs: Iterable[tuple[str, str]], now: dt.datetime
) -> tuple[dict[tuple[str, str], tuple[int, str]], set[int]]:
    """(id, status) of the Hash rows for (signal type, value) pairs, creating the missing ones.

    Also returns the ids created here. Called under the ledger lock, so no concurrent
    writer can create the same row, and a hash created here has no submission or
    listing yet.
    """
    wanted = list(dict.fromkeys(pairs))  # batch order, so new ids follow the order of the items
    # A long value (vPDQ, TMK+PDQF) is keyed by its digest; `keys` maps back to the value.
    keys: dict[tuple[str, str], str] = {}
    for signal_type, value in wanted:
        keys[(signal_type, signal_types.get(signal_type).storage_key(value))] = value
    by_type: dict[str, list[str]] = defaultdict(list)
    for signal_type, key in keys:
        by_type[signal_type].append(key)
    found: dict[tuple[str, str], tuple[int, str]] = {}
    if connection.features.can_return_rows_from_bulk_insert:
        # Insert them all first, skipping the ones that exist: most are new (a new peer's
        # bootstrap, a batch of fresh submissions), and the insert's own uniqueness check
        # is then the only lookup; only the rest are read.
        rows = [(signal_type, key, Hash.Status.ACTIVE, "", now, now) for signal_type, key in keys]
        inserted = insert_rows(Hash, HASH_COLUMNS, rows, returning=("id", "signal_type", "value"), skip_conflicts=True)
        assert inserted is not None
        new = {(signal_type, key) for _pk, signal_type, key in inserted}
        _read_hashes({t: [k for k in values if (t, k) not in new] for t, values in by_type.items()}, keys, found)
    else:  # read what exists, insert the rest, read those back
        _read_hashes(by_type, keys, found)
        missing = [(t, key) for t, key in keys if (t, keys[(t, key)]) not in found]
        insert_rows(Hash, HASH_COLUMNS, [(t, key, Hash.Status.ACTIVE, "", now, now) for t, key in missing])
        inserted = [
            (Hash.objects.values_list("id", flat=True).get(signal_type=t, value=key), t, key) for t, key in missing
        ]
    created = set()
    bodies: list[HashBody] = []
    for pk, signal_type, key in inserted:
        value = keys[(signal_type, key)]
        found[(signal_type, value)] = (pk, Hash.Status.ACTIVE)
        created.add(pk)
        if value != key:
            frames = signal_types.parse_vpdq(value) if signal_types.get(signal_type).layout == "frames" else []
            bodies.append(
                HashBody(
                    hash_id=pk,
                    value=value,
                    frames=len(frames),
                    match_frames=len(signal_types.vpdq_match_frames(frames)),
                )
            )
    if bodies:
        HashBody.objects.bulk_create(bodies)
    return found, created


def _read_hashes(
    by_type: Mapping[str, Sequence[str]],
    keys: Mapping[tuple[str, str], str],
    found: dict[tuple[str, str], tuple[int, str]],
) -> None:
    """Add the existing Hash rows of these stored keys to `found` as (id, status), by value."""
    for signal_type, values in by_type.items():
        for start in range(0, len(values), 500):
            rows = Hash.objects.filter(
                signal_type=signal_type, value__in=values_in(values[start : start + 500])
            ).values_list("id", "value", "status")
            for pk, key, status in rows:
                found[(signal_type, keys[(signal_type, key)])] = (pk, status)
