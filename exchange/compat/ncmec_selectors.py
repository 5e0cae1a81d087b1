"""Reads of the NCMEC facade: the caller's entries changed in a time range, paged by log position.

A request names a time range (`from`, `to`). Its first page finds the range's events in
the log (those that change a listing in the caller's programs) and fixes the window as
sequence numbers; `next` carries `start` (the first sequence number not yet read),
`size` and `max` (the window's last sequence number), so later pages read on from
there and neither skip nor repeat, whatever is recorded meanwhile. Each page answers
one entry per (program, hash) it met, as the hash is now: active in the program, or
deleted. An imported group (one event) is never split, so a page may exceed `size` by
one group. Work per page is bounded: at most `size` entries and MAX_EVENTS_PER_PAGE events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Max, Min

from core.ledger import Event
from hashes.models import Hash, Listing
from members.models import Member, Program

from ..feed import distribution_seqs
from ..models import Outcome
from . import ncmec
from .selectors import GROUP_KINDS, LISTING_KINDS

EVENT_SLICE = 500
MAX_EVENTS_PER_PAGE = 20_000


@dataclass
class EntriesPage:
    entries: list[ncmec.Entry]
    max_time: dt.datetime | None
    next_query: dict[str, Any] | None
    after: int  # the position before the first event read
    last_seq: int  # every event up to here has been read


def _pairs_of(row: tuple[int, str, str, dict[str, Any]]) -> list[int]:
    _seq, kind, _program, data = row
    if kind in GROUP_KINDS:
        return [h for h in data.get("hash_ids", ()) if isinstance(h, int)]
    hash_id = data.get("hash_id")
    return [hash_id] if isinstance(hash_id, int) else []


def entries_page(
    *,
    member: Member,
    programs: Sequence[Program],
    start_time: dt.datetime,
    end_time: dt.datetime,
    start: int,
    size: int,
    window_max: int,
) -> EntriesPage:
    """One page of entries; `start` 0 begins the range, otherwise it and `window_max` come from `next`."""
    slugs = [p.slug for p in programs]
    in_range = Event.objects.filter(
        program__in=slugs,
        kind__in=LISTING_KINDS,
        created_at__gte=start_time,
        created_at__lt=end_time + dt.timedelta(seconds=1),
    )
    if start == 0:
        bounds = in_range.aggregate(first=Min("seq"), last=Max("seq"))
        if bounds["first"] is None:
            return EntriesPage([], None, None, after=0, last_seq=0)
        start, window_max = bounds["first"], bounds["last"]
    pairs: dict[tuple[str, int], None] = {}
    position, read, finished = start, 0, False
    max_time: dt.datetime | None = None
    query = in_range.filter(seq__lte=window_max).order_by("seq")
    while not finished:
        batch = list(query.filter(seq__gte=position).values_list("seq", "kind", "program", "data", "created_at")[
            :EVENT_SLICE
        ])  # fmt: skip
        for seq, kind, program, data, created_at in batch:
            found = _pairs_of((seq, kind, program, data))
            new = [h for h in found if (program, h) not in pairs]
            if pairs and len(pairs) + len(new) > size:
                finished = True
                break
            for hash_id in new:
                pairs[(program, hash_id)] = None
            max_time = created_at if max_time is None else max(max_time, created_at)
            position = seq + 1
            read += 1
            if read >= MAX_EVENTS_PER_PAGE:
                finished = True
                break
        if len(batch) < EVENT_SLICE and not finished:
            position = window_max + 1
            break
    more = position <= window_max
    next_query = None
    if more:
        next_query = {
            "from": ncmec.format_time(start_time),
            "to": ncmec.format_time(end_time),
            "start": position,
            "size": size,
            "max": window_max,
        }
    entries = build_entries(member=member, programs=programs, pairs=list(pairs))
    return EntriesPage(entries, max_time, next_query, after=start - 1, last_seq=position - 1)


def build_entries(*, member: Member, programs: Sequence[Program], pairs: list[tuple[str, int]]) -> list[ncmec.Entry]:
    """An entry per (program slug, hash id), as it is now; types NCMEC has no name for are left out."""
    if not pairs:
        return []
    by_slug = {p.slug: p for p in programs}
    hash_ids = {h for _, h in pairs}
    hashes = {
        row.pk: row
        for row in Hash.objects.filter(pk__in=hash_ids, signal_type__in=list(ncmec.FINGERPRINTS)).only(
            "id", "signal_type", "value", "status"
        )
    }
    # Only hashes distributed in the program have entries: a held one (docs/floods.md) was
    # sent to nobody, even if an event about it (its submitter's withdrawal) is in the range.
    distributed = distribution_seqs((h, by_slug[slug].pk) for slug, h in pairs if slug in by_slug and h in hashes)
    active = set(
        Listing.objects.filter(
            hash_id__in=list(hashes), program_id__in=[p.pk for p in programs], status=Listing.Status.ACTIVE
        ).values_list("program_id", "hash_id")
    )
    votes: dict[tuple[int, int], tuple[bool, str | None]] = {}
    for hash_id, program_id, kind in (
        Outcome.objects.filter(member=member, hash_id__in=list(hashes), program_id__in=[p.pk for p in programs])
        .order_by("occurred_at", "id")
        .values_list("hash_id", "program_id", "kind")
    ):
        if kind in ncmec.AFFIRMATIVE_KINDS:
            votes[(hash_id, program_id)] = (True, None)
        elif kind in ncmec.REASON_BY_KIND:
            votes[(hash_id, program_id)] = (False, kind)
    entries = []
    for slug, hash_id in pairs:
        row, program = hashes.get(hash_id), by_slug.get(slug)
        if row is None or program is None or (hash_id, program.pk) not in distributed:
            continue
        live = row.status == Hash.Status.ACTIVE and (program.pk, hash_id) in active
        entries.append(
            ncmec.Entry(
                hash_id=hash_id,
                esp_id=program.pk,
                esp_name=program.slug,
                signal_type=row.signal_type,
                value=row.value,
                deleted=not live,
                own_vote=votes.get((hash_id, program.pk)),
            )
        )
    return entries


def entry_for_feedback(*, programs: Sequence[Program], esp_id: int, entry_id: str) -> tuple[Program, Hash] | None:
    """The program and hash a feedback URL names, if the caller receives the program and it lists the hash."""
    program = next((p for p in programs if p.pk == esp_id), None)
    if program is None or not entry_id.isdigit() or len(entry_id) > 18:
        return None
    row = (
        Hash.objects.filter(
            pk=int(entry_id),
            # A held listing was distributed to nobody (docs/floods.md): there is no entry to give feedback on.
            listings__in=Listing.objects.filter(program=program).exclude(status=Listing.Status.HELD),
            signal_type__in=list(ncmec.FINGERPRINTS),
        )
        .only("id", "signal_type", "value", "status")
        .first()
    )
    return (program, row) if row is not None else None
