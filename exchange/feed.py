"""The member's feed: the events it may see, in sequence order, as self-contained entries.

The same entries go to the pull feed (`GET /api/v1/feed`) and to webhooks, so a member
that missed webhooks can always catch up from the feed. An entry carries everything a
member needs to act and to verify: the hash, its program, and the signed envelope
(submission or withdrawal) byte for byte; key events carry the public keys.

A page costs a constant number of queries whatever its size: the events, then the
envelopes, hashes and imports they name, each in one query.

Bootstrap reads pages of 5,000 entries, so the per-entry work matters more than the
query count: events are read as tuples, not model instances; long id lists go to the
database as one JSON parameter (Django spends ~13 µs per placeholder otherwise, more
than the query itself); an event time is formatted once per distinct time.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.db import models
from django.db.models import Count, Q
from hashexchange_client import signal_types

from core.ledger import Event, format_time
from core.sql import values_in
from hashes.models import Hash, HashBody, ImportBatch, Listing, Submission, Withdrawal
from members.models import Member, Program
from members.selectors import receiving_program_slugs, tombstone_programs

from . import crypto, hooks, provenance
from .models import Outcome

HASH_KINDS = ("hash.added", "hash.withdrawn", "hash.quarantined", "hash.restored")
KEY_KINDS = ("key.registered", "key.revoked")
FEED_KINDS = HASH_KINDS + KEY_KINDS
# Recorded per group of imported hashes; shown as one hash.added entry per hash.
IMPORTED = "hashes.imported"
# Recorded per group of hashes a peer brought (hashes/services/store.py relayed_events);
# shown as the signed hash.added entry each would have had.
RELAYED = "hashes.relayed"
GROUP_KINDS = (IMPORTED, RELAYED)
# Signal types whose values the hash table keys by their digest (hashes.models.HashBody).
LONG_TYPES = frozenset(name for name, kind in signal_types.SIGNAL_TYPES.items() if kind.long_values)
MAX_LIMIT = 5000
EVENT_SLICE = 1000


class EventRow(NamedTuple):
    """The columns of an event that an entry needs: a tuple is built ~10x faster than an Event."""

    seq: int
    kind: str
    program: str
    created_at: dt.datetime
    data: dict[str, Any]
    leaf_hash: str


EVENT_COLUMNS = ("seq", "kind", "program", "created_at", "data", "leaf_hash")


class EntryCache:
    """Built entries by event, shared by the threads of a process; least recently used out first.

    Webhook delivery builds the same entries for every endpoint of a program, so a
    worker keeps them. Only what never changes is kept: an event and the rows it names
    (envelopes, hash values, import sources) are immutable, while feedback is added on
    every build. Keyed by the event's leaf hash, not its seq alone, so a database that
    was restored or recreated (tests) cannot be answered from another's entries.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        # The same entries as JSON (compact, UTF-8), made the first time a POST needs them:
        # a hundred endpoints then join bytes instead of encoding the same entries each.
        self._encoded: dict[str, list[bytes]] = {}
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> list[dict[str, Any]] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: str, entries: list[dict[str, Any]]) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = entries
            self._size += len(entries)
            while self._size > self.max_entries and self._items:
                key, dropped = self._items.popitem(last=False)
                self._encoded.pop(key, None)
                self._size -= len(dropped)

    def encoded(self, key: str, entries: list[dict[str, Any]]) -> list[bytes]:
        """The JSON of an event's entries (as built, without feedback), encoded once per process."""
        found = self._encoded.get(key)
        if found is None:
            found = [encode_entry(entry) for entry in entries]
            with self._lock:
                if key in self._items:
                    self._encoded[key] = found
        return found

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._encoded.clear()
            self._size = 0


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """An entry as the webhook body carries it: compact JSON, UTF-8, keys in the entry's order.

    `json.dumps` of a list is its items' encodings joined by commas, so a body joined from
    these parts is byte for byte the body `json.dumps` makes of the whole message.
    """
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class FeedPage:
    entries: list[dict[str, Any]]
    next: int
    has_more: bool
    # The programs whose hashes the page covered up to `next` (what the member was sent).
    programs: Sequence[str] = ()
    # The entries as JSON, one bytes per entry (feed_page(encode=True) with a cache).
    encoded: list[bytes] | None = None


# Told to whoever was sent the hash, whatever its enrollment now (members/selectors.py).
TOMBSTONE_KINDS = ("hash.withdrawn", "hash.quarantined")


def distribution_seqs(pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """For (hash id, program id) pairs: the sequence number at which the hash was first
    distributed in the program — its first `hash.added`, the end of the import that
    listed it, or the `hashes.relayed` event that listed it. Pairs never distributed are absent."""
    pairs = set(pairs)
    if not pairs:
        return {}
    slugs = dict(Program.objects.filter(pk__in={p for _, p in pairs}).values_list("pk", "slug"))
    by_slug = {slug: pk for pk, slug in slugs.items()}
    found: dict[tuple[int, int], int] = {}
    rows = (
        Event.objects.filter(
            kind="hash.added",
            subject_type="hash",
            subject_id__in={str(h) for h, _ in pairs},
            program__in=list(slugs.values()),
        )
        .values("subject_id", "program")
        .annotate(first=models.Min("seq"))
    )
    for row in rows:
        key = (int(row["subject_id"]), by_slug[row["program"]])
        if key in pairs:
            found[key] = row["first"]
    imported = Listing.objects.filter(
        hash_id__in={h for h, _ in pairs}, program_id__in=set(slugs), import_batch__isnull=False
    ).values_list("hash_id", "program_id", "import_batch_id")
    batches = {b for _, _, b in imported}
    finished = dict(
        Event.objects.filter(
            kind="import.finished", subject_type="import", subject_id__in={str(b) for b in batches}
        ).values_list("subject_id", "seq")
    )
    for hash_id, program_id, batch in imported:
        seq = finished.get(str(batch))
        key = (hash_id, program_id)
        if key in pairs and seq is not None:
            found[key] = min(found.get(key, seq), seq)
    relayed = (
        Submission.objects.filter(
            hash_id__in={h for h, _ in pairs}, program_id__in=set(slugs), relayed_in__isnull=False
        )
        .values("hash_id", "program_id")
        .annotate(first=models.Min("relayed_in"))
    )
    for row in relayed:
        key = (row["hash_id"], row["program_id"])
        if key in pairs:
            found[key] = min(found.get(key, row["first"]), row["first"])
    return found


def visible_events(*, programs: Sequence[str], after: int, kinds: Iterable[str] | None = None) -> Any:
    """Events after `after` that a member receiving `programs` may see, in order."""
    wanted = set(kinds or FEED_KINDS)
    hash_kinds = [k for k in HASH_KINDS if k in wanted] + (list(GROUP_KINDS) if "hash.added" in wanted else [])
    key_kinds = [k for k in KEY_KINDS if k in wanted]
    condition = Q(program__in=list(programs), kind__in=hash_kinds) | Q(kind__in=key_kinds)
    return Event.objects.filter(condition, seq__gt=after).order_by("seq")


def _events_after(
    *,
    programs: Sequence[str],
    after: int,
    count: int,
    kinds: Iterable[str] | None,
    tombstones: Iterable[str] = (),
) -> list[EventRow]:
    """The first `count` events after `after` that a member receiving `programs` may see, in order.

    The same events as visible_events(), read with one ordered index scan per program
    (the (program, seq) index) and one for key events, merged here. A single query with
    `program IN (...) OR kind IN (...)` made SQLite collect every visible event after
    the cursor and sort them to keep `count`, so each page of a long backlog cost as much
    as all the rest of it.
    """
    wanted = set(kinds or FEED_KINDS)
    hash_kinds = [k for k in HASH_KINDS if k in wanted] + (list(GROUP_KINDS) if "hash.added" in wanted else [])
    key_kinds = [k for k in KEY_KINDS if k in wanted]
    events = Event.objects.filter(seq__gt=after).order_by("seq").values_list(*EVENT_COLUMNS)
    scans = [events.filter(program=program, kind__in=hash_kinds) for program in dict.fromkeys(programs)]
    scans = scans if hash_kinds else []
    # Programs the member left, but was sent hashes of: their tombstones only.
    tombstone_kinds = [k for k in TOMBSTONE_KINDS if k in wanted]
    if tombstone_kinds:
        scans += [events.filter(program=program, kind__in=tombstone_kinds) for program in tombstones]
    if key_kinds:
        scans.append(events.filter(kind__in=key_kinds))
    merged = heapq.merge(*(list(scan[:count]) for scan in scans), key=lambda row: row[0])
    return [EventRow._make(row) for row in itertools.islice(merged, count)]


def feed_page(
    *,
    member: Member,
    after: int,
    limit: int,
    kinds: Iterable[str] | None = None,
    programs: Sequence[str] | None = None,
    tombstones: Mapping[str, int] | None = None,
    cache: EntryCache | None = None,
    encode: bool = False,
    pseudonyms: bool = True,
) -> FeedPage:
    """Up to `limit` entries after `after`; a page ends on an event boundary.

    `programs` are those the member receives (by default, for the pull feed); `tombstones`
    maps programs it no longer receives to how far it was sent their hashes: their
    withdrawals and quarantines are included for the hashes it was sent (by default, as
    the pull feed's rule says; webhooks pass theirs). An imported group (up to 1,000
    hashes in one event) is never split across pages, so a page can exceed `limit` by
    the size of one group; the cursor stays a sequence number. Entries of intake cases
    carry this member's pseudonym of the case (`case`) unless `pseudonyms` is False (a
    webhook page shared by endpoints of several members adds it per POST).
    """
    programs = receiving_program_slugs(member=member) if programs is None else programs
    if tombstones is None:
        tombstones = tombstone_programs(member=member)
    tombstones = {slug: through for slug, through in tombstones.items() if slug not in programs}
    chosen: list[EventRow] = []
    count, cursor, has_more, examined = 0, after, False, after
    # Fetched in slices, so a page of imported groups (1,000 hashes each) reads a few
    # events, not `limit` of them; at most limit / EVENT_SLICE + 1 rounds of queries
    # (one per program and one for key events).
    while not has_more:
        batch = _events_after(
            programs=programs,
            after=cursor,
            count=min(limit + 1, EVENT_SLICE),
            kinds=kinds,
            tombstones=tombstones,
        )
        unsent = _tombstones_not_sent(batch, tombstones) if tombstones else set()
        for event in batch:
            if event.seq in unsent:
                examined = event.seq
                continue
            size = len(event.data.get("hash_ids", ())) if event.kind in GROUP_KINDS else 1
            if count + size > limit and (chosen or count >= limit):
                has_more = True
                break
            chosen.append(event)
            count += size
            examined = event.seq
        if len(batch) < min(limit + 1, EVENT_SLICE):
            break
        cursor = batch[-1].seq
    encoded: list[bytes] | None = [] if encode and cache is not None else None
    entries = build_entries(chosen, cache=cache, encoded=encoded)
    if pseudonyms:
        for index, name in case_pseudonyms(entries, member).items():
            entries[index]["case"] = name
            if encoded is not None:
                encoded[index] = encode_entry(entries[index])
    # Past a tombstone that was not for this member, when nothing after it was chosen.
    next_seq = max(chosen[-1].seq if chosen else after, examined if not has_more else after)
    return FeedPage(entries=entries, next=next_seq, has_more=has_more, programs=list(programs), encoded=encoded)


def case_pseudonyms(entries: Sequence[Mapping[str, Any]], member: Member) -> dict[int, str]:
    """{index: case} for the entries of a submitter that keeps cases (the intake): this
    member's own pseudonym of the case (exchange/hooks.py), never the case itself. No query
    unless the page holds such an entry; envelopes carry no case reference of theirs."""
    sources = hooks.case_sources()
    if not sources:
        return {}
    wanted: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        origin = entry.get("origin")
        if "hash" in entry and origin and origin.get("member") in sources and len(origin.get("path", ())) == 1:
            wanted.setdefault(origin["member"], []).append(index)
    found: dict[int, str] = {}
    for submitter, indexes in wanted.items():
        tokens = hooks.case_tokens(submitter, {entries[i]["hash"]["id"] for i in indexes})
        names: dict[str, str] = {}
        for i in indexes:
            token = tokens.get(entries[i]["hash"]["id"])
            if token is not None:
                if token not in names:
                    names[token] = hooks.case_pseudonym(member=member, token=token)
                found[i] = names[token]
    return found


def _tombstones_not_sent(batch: Sequence[EventRow], tombstones: Mapping[str, int]) -> set[int]:
    """The seqs of tombstones in programs the member left for hashes it was never sent."""
    candidates = [e for e in batch if e.program in tombstones and e.kind in TOMBSTONE_KINDS]
    if not candidates:
        return set()
    ids = dict(Program.objects.filter(slug__in={e.program for e in candidates}).values_list("slug", "pk"))
    distributed = distribution_seqs((e.data["hash_id"], ids[e.program]) for e in candidates if e.program in ids)
    unsent = set()
    for event in candidates:
        seq = distributed.get((event.data["hash_id"], ids.get(event.program)))
        if seq is None or seq > tombstones[event.program]:
            unsent.add(event.seq)
    return unsent


def build_entries(
    events: Sequence[EventRow | Event], *, cache: EntryCache | None = None, encoded: list[bytes] | None = None
) -> list[dict[str, Any]]:
    """Turn events into feed entries, fetching what they name in one query per table.

    With a cache, events built before are not fetched again; their entries are copied,
    since feedback (which changes) is added to each entry here, last. With a cache and an
    `encoded` list, the entries' JSON is appended to it, one bytes per entry: the cached
    encoding for an entry without feedback, a fresh one for an entry with.
    """
    built: dict[int, list[dict[str, Any]]] = {}
    missing: list[EventRow | Event] = []
    for event in events:
        found = cache.get(event.leaf_hash) if cache is not None else None
        if found is None:
            missing.append(event)
        else:
            built[event.seq] = found
    fresh = _entries_by_event(missing)
    if cache is not None:
        for event in missing:
            cache.put(event.leaf_hash, fresh[event.seq])
        entries = [dict(entry) for event in events for entry in built.get(event.seq) or fresh[event.seq]]
    else:
        entries = [entry for event in events for entry in fresh[event.seq]]
    _add_feedback(entries)
    if encoded is not None and cache is not None:
        position = 0
        for event in events:
            parts = cache.encoded(event.leaf_hash, built.get(event.seq) or fresh[event.seq])
            for part in parts:
                entry = entries[position]
                encoded.append(encode_entry(entry) if "feedback" in entry else part)
                position += 1
    return entries


def _entries_by_event(events: Sequence[EventRow | Event]) -> dict[int, list[dict[str, Any]]]:
    """Each event's entries, without feedback."""
    if not events:  # all cached: even queries Django answers without the database cost compiling
        return {}
    submission_ids = {e.data["submission_id"] for e in events if e.kind == "hash.added" and "submission_id" in e.data}
    submission_ids.update(i for e in events if e.kind == RELAYED for i in e.data["submission_ids"])
    withdrawal_ids = {e.data["withdrawal_id"] for e in events if e.data.get("withdrawal_id")}
    imported_ids = {i for e in events if e.kind in GROUP_KINDS for i in e.data["hash_ids"]}
    import_ids = {e.data["import_id"] for e in events if e.kind == IMPORTED}
    signed_columns = ("pk", "envelope", *ORIGIN_COLUMNS)
    envelopes = {
        row[0]: row[1:]
        for row in Submission.objects.filter(pk__in=values_in(submission_ids)).values_list(*signed_columns)
    }
    withdrawals = {
        row[0]: row[1:]
        for row in Withdrawal.objects.filter(pk__in=values_in(withdrawal_ids)).values_list(*signed_columns)
    }
    here = _this_server()
    imported_rows = Hash.objects.filter(pk__in=values_in(imported_ids)).values_list("pk", "signal_type", "value")
    imported = {pk: (signal_type, value) for pk, signal_type, value in imported_rows}
    sources = dict(ImportBatch.objects.filter(pk__in=import_ids).values_list("pk", "source"))
    by_event: dict[int, list[dict[str, Any]]] = {}
    times: dict[dt.datetime, str] = {}  # events of one transaction share their time
    for event in events:
        at = times.get(event.created_at)
        if at is None:
            at = times[event.created_at] = format_time(event.created_at)
        # leaf_index: the event's position in the audit log's tree (docs/auditlog.md).
        base = {"seq": event.seq, "leaf_index": event.seq - 1, "kind": event.kind, "program": event.program, "at": at}
        data = event.data
        if event.kind == IMPORTED:
            source = sources.get(data["import_id"])
            group = by_event[event.seq] = []
            for hash_id in data["hash_ids"]:
                signal_type, value = imported[hash_id]
                group.append(
                    {
                        **base,
                        "kind": "hash.added",
                        "hash": {"id": hash_id, "signal_type": signal_type, "value": value},
                        "envelopes": [],
                        "signed": False,
                        "imported_from": source,
                    }
                )
        elif event.kind == RELAYED:
            origins = [provenance.relayed_origin(origin, server=here[0]) for origin in data["origins"]]
            group = by_event[event.seq] = []
            for hash_id, submission_id, which in zip(
                data["hash_ids"], data["submission_ids"], data["origin_of"], strict=True
            ):
                signal_type, value = imported[hash_id]
                signed = envelopes.get(submission_id)
                envelope = signed[0] if signed else None
                group.append(
                    {
                        **base,
                        "kind": "hash.added",
                        "hash": {"id": hash_id, "signal_type": signal_type, "value": value},
                        "envelopes": [envelope] if envelope else [],
                        "signed": envelope is not None,
                        "imported_from": None,
                        # One dict per origin, shared by its entries (copied with the entry by a cache user).
                        "origin": origins[which],
                    }
                )
        elif event.kind in KEY_KINDS:
            entry = {**base, "program": None, "key": {k: v for k, v in data.items() if k not in ("reason", "origin")}}
            if event.kind == "key.revoked":
                entry["origin"] = _revocation_origin(data, here)
            by_event[event.seq] = [entry]
        else:
            entry = {
                **base,
                "hash": {"id": data["hash_id"], "signal_type": data["signal_type"], "value": data["value"]},
            }
            if event.kind == "hash.added":
                signed = envelopes.get(data.get("submission_id"))
                envelope = signed[0] if signed else None
                entry["envelopes"] = [envelope] if envelope else []
                entry["signed"] = envelope is not None
                entry["imported_from"] = None
            else:
                signed = withdrawals.get(data.get("withdrawal_id"))
                envelope = signed[0] if signed else None
                entry["envelopes"] = [envelope] if envelope else []
                entry["reason"] = data.get("reason", "")
            entry["origin"] = _origin(data, signed, here)
            by_event[event.seq] = [entry]
    _add_long_values(by_event)
    return by_event


def _add_long_values(by_event: Mapping[int, list[dict[str, Any]]]) -> None:
    """Show long values (vPDQ, TMK+PDQF) whole: an event may name them by their digest only."""
    short = [
        entry["hash"]
        for entries in by_event.values()
        for entry in entries
        if "hash" in entry and entry["hash"]["signal_type"] in LONG_TYPES and len(entry["hash"]["value"]) == 64
    ]
    if not short:
        return
    bodies = dict(HashBody.objects.filter(pk__in=values_in({h["id"] for h in short})).values_list("pk", "value"))
    for item in short:
        item["value"] = bodies.get(item["id"], item["value"])


# Who signed an envelope, for its origin: (submitter, program, key id, key, valid from).
ORIGIN_COLUMNS = (
    "submitter__slug",
    "program__slug",
    "signing_key__key_id",
    "signing_key__public_key",
    "signing_key__valid_from",
)


def _this_server() -> tuple[str, str]:
    return crypto.server_key_id(), crypto.server_public_key_b64()


def _origin(data: Mapping[str, Any], signed: tuple[Any, ...] | None, here: tuple[str, str]) -> dict[str, Any] | None:
    """Where a signed hash or withdrawal came from (exchange/provenance.py); None when unsigned.

    Imported from a peer: the origin it came with, this server added to its path. Signed
    by a member here: this server's attested binding of the member's key.
    """
    if data.get("origin"):
        return provenance.relayed_origin(data["origin"], server=here[0])
    if not signed or signed[0] is None or signed[3] is None:
        return None
    _envelope, member, program, key_id, public_key, valid_from = signed
    return provenance.local_origin(
        server=here[0],
        server_public_key=here[1],
        member=member,
        program=program,
        key_id=key_id,
        public_key=bytes(public_key),
        valid_from=valid_from,
    )


def _revocation_origin(data: Mapping[str, Any], here: tuple[str, str]) -> dict[str, Any] | None:
    """Who says a key is revoked (exchange/provenance.py): for a key imported from a peer, the
    origin server's statement it came with, this server added to its path; for one of our
    members' keys, our own signed statement."""
    if data.get("origin"):
        return provenance.relayed_origin(data["origin"], server=here[0])
    if not data.get("member") or not data.get("key_id") or not data.get("revoked_at"):
        return None
    if Member.objects.filter(slug=data["member"], kind=Member.Kind.PEER).exists():
        return None  # a key a peer brought, revoked here by an admin: not ours to attest
    return provenance.local_revocation_origin(
        server=here[0],
        server_public_key=here[1],
        member=str(data["member"]),
        key_id=str(data["key_id"]),
        revoked_at=str(data["revoked_at"]),
    )


def _add_feedback(entries: list[dict[str, Any]]) -> None:
    """Set `feedback` on the hash entries that members reported outcomes on (shared programs only)."""
    hashed = [entry for entry in entries if "hash" in entry]
    feedback = feedback_by_hash({e["hash"]["id"] for e in hashed}, {e["program"] for e in hashed})
    if feedback:
        for entry in hashed:
            found = feedback.get((entry["hash"]["id"], entry["program"]))
            if found is not None:
                entry["feedback"] = found


def feedback_by_hash(hash_ids: set[int], programs: set[str]) -> dict[tuple[int, str], dict[str, int]]:
    """What members reported on these hashes, per program that shares feedback: counts only.

    At most two queries whatever the number of hashes, and one when nobody reported on
    any of them (the usual case, which a webhook delivery meets on every POST); hashes
    nobody reported on are absent.
    """
    if not hash_ids or not programs:
        return {}
    rows = Outcome.objects.filter(
        hash_id__in=values_in(hash_ids), program__slug__in=list(programs), program__share_feedback=True
    )
    found: dict[tuple[int, str], dict[str, int]] = {}
    for hash_id, slug, kind, reports in rows.values_list("hash_id", "program__slug", "kind").annotate(n=Count("id")):
        found.setdefault((hash_id, slug), {**dict.fromkeys(Outcome.Kind.values, 0), "members": 0})[kind] = reports
    if not found:
        return found
    for hash_id, slug, members in rows.values_list("hash_id", "program__slug").annotate(
        n=Count("member", distinct=True)
    ):
        found[(hash_id, slug)]["members"] = members
    return found
