"""Matching: "does this hash match anything I may see?", answered exactly and fresh.

Each process keeps one HammingIndex per perceptual signal type (hashes/index): the
host's shared memory-mapped snapshot plus an in-memory tail of the hashes added since.
Exact types (MD5, SHA-256) need no index: the database's unique (signal type, value)
index answers them.

Freshness. Before answering, a process reads the newest event of the ledger (one
primary-key lookup). Events are numbered in commit order, so every hash recorded up to
that event is committed; the process loads the ones it lacks (`hash.added` carries the
value, `hashes.imported` the ids) into its tail. A hash is therefore matchable by the
next request after its commit, in every process, not a minute later as with a periodic
rebuild. MATCH_REFRESH_SECONDS can space these checks out under heavy load.

Statuses. The index only grows; it never says whether a hash may be shown. Every answer
is filtered at query time by one query on the database: the hash must be active, listed
(actively) in a program the caller is opted in to, and within that program's threshold.
So withdrawals, quarantines and opt-outs count at once, and a hash that comes back needs
no index update. The database rather than a cache: it is the one place that is always
right, the query runs only for requests that found candidates (rare), and it touches only
those candidates' rows.

Snapshots. Celery's beat runs `index_build` (hashes/tasks.py): it merges the tail into a
new snapshot file under MATCH_INDEX_DIR and publishes it; processes switch on their next
check. A process that finds no snapshot and more hashes than MATCH_INDEX_BOOTSTRAP_MAX
builds one itself, under a file lock, so that a host's first worker pays once and the
others map its file. A snapshot records the event (seq and leaf hash) it is current to,
and so does each process: if the ledger no longer has that event (a database restored
from a backup, a test's rollback) the index is dropped and loaded again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import CharField, Value
from django.utils import timezone
from hashexchange_client import signal_types

from core.ledger import Event
from members.models import Member, Program
from members.selectors import submitting_programs_list

from . import index as hx
from .models import Hash, HashBody, Listing, MatchCount
from .video_matching import FRAME_BITS, VideoScore, video_candidates

logger = logging.getLogger(__name__)

HAMMING_TYPES: dict[str, signal_types.SignalType] = {n: t for n, t in signal_types.SIGNAL_TYPES.items() if t.hamming}
# Frame-list types (vPDQ): their frames' PDQ hashes live in an index of their own, each frame
# under the id `hash id << FRAME_BITS | position` among the video's matching frames.
FRAME_TYPES: dict[str, signal_types.SignalType] = {
    n: t for n, t in signal_types.SIGNAL_TYPES.items() if t.layout == "frames"
}
# Every index a process keeps, and the bits of one code in it.
INDEXED: dict[str, int] = {
    **{n: t.bits for n, t in HAMMING_TYPES.items()},
    **{n: t.bits for n, t in FRAME_TYPES.items()},
}
# Types stored by their digest, whose whole value a match answer reads from HashBody.
LONG_TYPES = frozenset(n for n, t in signal_types.SIGNAL_TYPES.items() if t.long_values)
# Event kinds that bring hashes into the clearinghouse; the index follows only these.
ADDING_KINDS = ("hash.added", "hashes.imported", "hashes.relayed")
_ID_CHUNK = 900  # below SQLite's default limit on query parameters


@dataclass(frozen=True)
class Query:
    """One validated query: a signal type and a normalised value."""

    signal_type: str
    value: str


@dataclass
class QueryResult:
    """The matches of one query, nearest first."""

    index: int
    matches: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "matches": self.matches, "truncated": self.truncated}


# The ledger's position -------------------------------------------------------------------------


def _latest_event() -> tuple[int, str]:
    """(seq, leaf hash) of the newest event. Asked before every match request, so written
    by hand: the ORM's compilation of this one-row lookup cost more than the database."""
    with connection.cursor() as cursor:
        cursor.execute(_LATEST_SQL.get(connection.vendor) or _latest_sql())
        row = cursor.fetchone()
    return (int(row[0]), str(row[1])) if row else (0, "")


_LATEST_SQL: dict[str, str] = {}


def _latest_sql() -> str:
    quote = connection.ops.quote_name
    table, seq = quote(Event._meta.db_table), quote("seq")
    sql = f"SELECT {seq}, {quote('leaf_hash')} FROM {table} ORDER BY {seq} DESC LIMIT 1"
    _LATEST_SQL[connection.vendor] = sql
    return sql


def _leaf_at(seq: int) -> str | None:
    """The leaf hash of event `seq` ("" before the first event), None if there is no such event."""
    if seq == 0:
        return ""
    return Event.objects.filter(seq=seq).values_list("leaf_hash", flat=True).first()


# Loading hashes ------------------------------------------------------------------------------------


def _hash_rows(ids: Sequence[int]) -> Iterator[tuple[int, str, str]]:
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = ids[start : start + _ID_CHUNK]
        yield from Hash.objects.filter(pk__in=chunk, signal_type__in=INDEXED).values_list("id", "signal_type", "value")


def _add_rows(indexes: dict[str, hx.HammingIndex], rows: Iterator[tuple[int, str, str]], seq: int) -> int:
    """Add (id, signal type, value) rows to the indexes of their types, in blocks."""
    added, pending = 0, defaultdict(list)

    def flush(signal_type: str) -> int:
        block = pending.pop(signal_type, [])
        if not block:
            return 0
        ids = np.fromiter((pk for pk, _ in block), np.int64, count=len(block))
        codes = hx.codes_from_hex([value for _, value in block], INDEXED[signal_type])
        return indexes[signal_type].add(ids, codes)

    for pk, signal_type, value in rows:
        if signal_type in FRAME_TYPES and signal_type in indexes:
            frames = signal_types.vpdq_match_frames(signal_types.parse_vpdq(value))
            pending[signal_type].extend((pk << FRAME_BITS | i, pdq) for i, pdq in enumerate(frames))
            if len(pending[signal_type]) >= 50_000:
                added += flush(signal_type)
        elif signal_type in indexes:
            pending[signal_type].append((pk, value))
            if len(pending[signal_type]) >= 50_000:
                added += flush(signal_type)
    for signal_type in list(pending):
        added += flush(signal_type)
    for idx in indexes.values():
        idx.seq = seq
    return added


def load_events(indexes: dict[str, hx.HammingIndex], *, after: int, upto: int) -> int:
    """Add the hashes recorded by events (after, upto] to the indexes; returns how many were new."""
    direct: list[tuple[int, str, str]] = []
    imported: list[int] = []
    events = Event.objects.filter(seq__gt=after, seq__lte=upto, kind__in=ADDING_KINDS).values_list("kind", "data")
    for kind, data in events.iterator(chunk_size=2000):
        if kind == "hash.added":
            if data.get("signal_type") in indexes:
                direct.append((int(data["hash_id"]), data["signal_type"], data["value"]))
        else:
            imported.extend(int(pk) for pk in data.get("hash_ids", ()))
    added = _add_rows(indexes, iter(direct), upto)
    return added + _add_rows(indexes, _hash_rows(imported), upto)


def _all_rows(signal_type: str) -> Iterator[tuple[int, str, str]]:
    """Every hash of a type that could ever match again (retired ones cannot)."""
    if signal_type in FRAME_TYPES:
        bodies = (
            HashBody.objects.filter(hash__signal_type=signal_type)
            .exclude(hash__status=Hash.Status.RETIRED)
            .order_by("hash_id")
            .annotate(kind=Value(signal_type, output_field=CharField()))
            .values_list("hash_id", "kind", "value")
        )
        return bodies.iterator(chunk_size=2_000)
    rows = (
        Hash.objects.filter(signal_type=signal_type)
        .exclude(status=Hash.Status.RETIRED)
        .order_by("id")
        .values_list("id", "signal_type", "value")
    )
    return rows.iterator(chunk_size=20_000)


# Snapshots -------------------------------------------------------------------------------------------


def _store() -> hx.SnapshotStore:
    return hx.SnapshotStore(Path(settings.MATCH_INDEX_DIR))


@contextmanager
def _build_lock(store: hx.SnapshotStore) -> Iterator[None]:
    """One builder per host at a time (Celery, or a web worker bootstrapping)."""
    store.directory.mkdir(parents=True, exist_ok=True)
    with open(store.directory / ".build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_valid(path: Path | None) -> hx.Snapshot | None:
    """The snapshot at `path` if it was made from this database's ledger, else None."""
    if path is None:
        return None
    try:
        snapshot = hx.open_snapshot(path)
    except (OSError, hx.SnapshotError) as exc:
        logger.warning("ignoring index snapshot %s: %s", path, exc)
        return None
    if _leaf_at(snapshot.seq) != snapshot.meta.get("leaf"):
        logger.warning("ignoring index snapshot %s: made from another database (event %s differs)", path, snapshot.seq)
        return None
    return snapshot


@dataclass
class BuildResult:
    signal_type: str
    path: Path | None
    count: int
    seq: int
    reason: str


def index_build(*, signal_type: str, full: bool = False, min_tail: int | None = None) -> BuildResult:
    """Write and publish a new snapshot of one signal type, if there is something to add.

    Steps (under the host's build lock):
    1. Note the newest event (seq, leaf): the new snapshot will be current to it.
    2. Incremental (the default): open the published snapshot and load the hashes of the
       events since; stop if fewer than `min_tail` are new and the snapshot is younger
       than MATCH_INDEX_MAX_AGE_SECONDS. Full (or no valid snapshot): read every
       non-retired hash of the type from the database, which also drops retired ones.
    3. Write the merged set (the kernel builds the chunk tables in the file), publish it,
       and delete older files (processes still mapping them keep them until they switch).
    """
    bits = INDEXED[signal_type]
    store = _store()
    min_tail = settings.MATCH_INDEX_COMPACT_MIN if min_tail is None else min_tail
    with _build_lock(store):
        seq, leaf = _latest_event()
        current = None if full else _open_valid(store.current_path(signal_type))
        if current is not None:
            merged = hx.HammingIndex(bits, current)
            load_events({signal_type: merged}, after=current.seq, upto=seq)
            age = time.time() - current.created_at
            if merged.tail_size < max(min_tail, 1) and (
                merged.tail_size == 0 or age < settings.MATCH_INDEX_MAX_AGE_SECONDS
            ):
                return BuildResult(signal_type, None, len(current), current.seq, "up to date")
            tail_ids, tail_codes = merged.tail()
            ids = np.concatenate([current.ids, tail_ids])
            codes = np.concatenate([current.codes, tail_codes])
            reason = f"merged {len(tail_ids)} new"
        else:
            fresh = hx.HammingIndex(bits)
            _add_rows({signal_type: fresh}, _all_rows(signal_type), seq)
            ids, codes = fresh.tail()
            reason = "full rebuild"
        path = hx.write_snapshot(
            store.new_path(signal_type, seq),
            signal_type=signal_type,
            ids=ids,
            codes=codes,
            seq=seq,
            meta={"leaf": leaf},
        )
        store.publish(path)
        store.prune(signal_type, keep=2)
    logger.info("index snapshot %s: %d %s hashes to event %d (%s)", path.name, len(ids), signal_type, seq, reason)
    return BuildResult(signal_type, path, len(ids), seq, reason)


# The per-process registry -----------------------------------------------------------------------------


class Registry:
    """This process's indexes, kept current with the ledger (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._indexes: dict[str, hx.HammingIndex] | None = None
        self._directory: str = ""
        self._seq = 0
        self._leaf = ""
        self._checked = 0.0
        self._latest = 0

    def reset(self) -> None:
        with self._lock:
            self._indexes = None

    def indexes(self) -> dict[str, hx.HammingIndex]:
        self.refresh()
        assert self._indexes is not None
        return self._indexes

    def refresh(self, *, force: bool = False) -> None:
        """Make the indexes current with the ledger (at most every MATCH_REFRESH_SECONDS)."""
        now = time.monotonic()
        if not force and self._indexes is not None and now - self._checked < settings.MATCH_REFRESH_SECONDS:
            return
        with self._lock:
            latest, leaf = _latest_event()
            self._latest = latest
            directory = str(settings.MATCH_INDEX_DIR)
            stale = (
                self._indexes is None
                or directory != self._directory
                or latest < self._seq
                or (latest == self._seq and leaf != self._leaf)
                or (latest > self._seq and _leaf_at(self._seq) != self._leaf)
            )
            if stale:
                self._load(latest, leaf, directory)
            else:
                assert self._indexes is not None
                self._pick_up_snapshots()
                if latest > self._seq:
                    load_events(self._indexes, after=min(i.seq for i in self._indexes.values()), upto=latest)
                    self._seq, self._leaf = latest, leaf
            self._checked = time.monotonic()

    def _load(self, latest: int, leaf: str, directory: str) -> None:
        """(Re)load every index from the published snapshots, the events since, or the database."""
        if self._indexes is not None:
            logger.info("reloading the matching index (ledger or index directory changed)")
        store = _store()
        indexes: dict[str, hx.HammingIndex] = {}
        for name, bits in INDEXED.items():
            snapshot = _open_valid(store.current_path(name))
            if snapshot is None:
                count = Hash.objects.filter(signal_type=name).count()
                if count > settings.MATCH_INDEX_BOOTSTRAP_MAX:
                    index_build(signal_type=name, full=True)
                    snapshot = _open_valid(store.current_path(name))
            idx = hx.HammingIndex(bits, snapshot)
            if snapshot is None:
                _add_rows({name: idx}, _all_rows(name), latest)
            indexes[name] = idx
        lowest = min(i.seq for i in indexes.values())
        if lowest < latest:
            load_events(indexes, after=lowest, upto=latest)
        self._indexes, self._directory, self._seq, self._leaf = indexes, directory, latest, leaf

    def _pick_up_snapshots(self) -> None:
        assert self._indexes is not None
        store = _store()
        for name, idx in self._indexes.items():
            path = store.current_path(name)
            if path is None or (idx.snapshot is not None and idx.snapshot.path == path):
                continue
            snapshot = _open_valid(path)
            if snapshot is not None and (idx.snapshot is None or snapshot.seq >= idx.snapshot.seq):
                idx.use_snapshot(snapshot)

    def status(self) -> dict[str, Any]:
        """For /readyz: whether loaded, sizes, and how far behind the ledger each index is."""
        loaded = self._indexes is not None
        report: dict[str, Any] = {"loaded": loaded, "native_kernel": hx.NATIVE}
        if not loaded:
            return report
        assert self._indexes is not None
        latest = self._latest
        for name, idx in self._indexes.items():
            snapshot = idx.snapshot
            report[name] = {
                "size": len(idx),
                "snapshot_size": idx.snapshot_size,
                "tail_size": idx.tail_size,
                "seq": idx.seq,
                "lag_events": max(0, latest - idx.seq),
                "snapshot_seq": snapshot.seq if snapshot else None,
                "snapshot_age_seconds": round(time.time() - snapshot.created_at, 1) if snapshot else None,
                "snapshot_shared": bool(hx.mapping_stats(snapshot.path).get("shared")) if snapshot else None,
            }
        return report


registry = Registry()


# The service ------------------------------------------------------------------------------------------------


def match(*, member: Member, queries: Sequence[Query]) -> list[QueryResult]:
    """The hashes each query matches among what `member` may see; counts the matches.

    Steps:
    1. The programs the member is opted in to, with their thresholds (1 query).
       (Steps 1-4 use hand-written SQL: for a single query the ORM's compilation cost
       more CPU than the database and the index together; docs/benchmarks/match-api.md.)
    2. Candidates: perceptual types from the indexes (refreshed first), within the
       largest threshold of those programs for the type; exact types from the database.
    3. Filter the candidates in one query: hash active, listing active, program one of
       the member's; keep a program only if the distance is within its own threshold.
    4. Count a match per hash, member and day (no query value is stored).
    """
    programs = {p.pk: p for p in submitting_programs_list(member=member)}
    results = [QueryResult(index=i) for i in range(len(queries))]
    if not programs or not queries:
        return results
    radius = {
        name: max((p.threshold(name) for p in programs.values() if name in (p.signal_types or ())), default=-1)
        for name in signal_types.SIGNAL_TYPE_NAMES
    }
    candidates: list[tuple[int, int, int]] = []  # (query, hash id, distance)
    by_type: dict[str, list[int]] = defaultdict(list)
    for i, query in enumerate(queries):
        if radius[query.signal_type] >= 0:
            by_type[query.signal_type].append(i)
    hamming = [name for name in by_type if name in HAMMING_TYPES]
    if hamming:
        indexes = registry.indexes()
        for name in hamming:
            positions = by_type[name]
            codes = hx.codes_from_hex([queries[i].value for i in positions], HAMMING_TYPES[name].bits)
            found = indexes[name].search(codes, radius[name])
            candidates += [
                (positions[q], hash_id, d)
                for q, hash_id, d in zip(
                    found.query.tolist(), found.ids.tolist(), found.distances.tolist(), strict=True
                )
            ]
    videos: dict[tuple[int, int], dict[int, VideoScore]] = {}
    frame_types = [name for name in by_type if name in FRAME_TYPES]
    if frame_types:
        indexes = registry.indexes()
        for name in frame_types:
            thresholds = sorted(
                {p.threshold(name) for p in programs.values() if name in (p.signal_types or ())}, reverse=True
            )
            found_videos = video_candidates(indexes[name], queries, by_type[name], thresholds)
            videos.update(found_videos)
            candidates += [
                (qi, pk, max(scores.values(), key=lambda v: v.threshold).distance)
                for (qi, pk), scores in found_videos.items()
            ]
    for name in by_type.keys() - HAMMING_TYPES.keys() - FRAME_TYPES.keys():
        positions = by_type[name]
        wanted = defaultdict(list)
        key = signal_types.get(name).storage_key
        for i in positions:
            wanted[key(queries[i].value)].append(i)
        values = list(wanted)
        for start in range(0, len(values), _ID_CHUNK):
            rows = Hash.objects.filter(signal_type=name, value__in=values[start : start + _ID_CHUNK])
            for pk, value in rows.values_list("id", "value"):
                candidates += [(i, pk, 0) for i in wanted[value]]
    if not candidates:
        return results
    visible = _visible(sorted({pk for _, pk, _ in candidates}), programs)
    counted: dict[int, int] = defaultdict(int)
    for qi, pk, distance in sorted(candidates, key=lambda c: (c[0], c[2], c[1])):
        if pk not in visible:
            continue
        signal_type, value, program_ids = visible[pk]
        extra: dict[str, Any] = {}
        if signal_type in FRAME_TYPES:
            scores = videos[(qi, pk)]
            slugs = sorted(programs[p].slug for p in program_ids if programs[p].threshold(signal_type) in scores)
            if slugs:
                best = max(
                    (
                        scores[programs[p].threshold(signal_type)]
                        for p in program_ids
                        if programs[p].threshold(signal_type) in scores
                    ),
                    key=lambda v: v.threshold,
                )
                distance = best.distance
                extra = best.as_dict()
        else:
            slugs = sorted(programs[p].slug for p in program_ids if distance <= programs[p].threshold(signal_type))
        if not slugs:
            continue
        result = results[qi]
        if len(result.matches) >= settings.MATCH_RESULTS_MAX:
            result.truncated = True
            continue
        result.matches.append(
            {
                "hash_id": pk,
                "signal_type": signal_type,
                "value": value,
                "distance": distance,
                "programs": slugs,
                **extra,
            }
        )
        counted[pk] += 1
    if counted:
        _count_matches(member=member, counts=counted)
    return results


def _visible(ids: list[int], programs: dict[int, Program]) -> dict[int, tuple[str, str, list[int]]]:
    """{hash id: (signal type, value, [program ids])} for the active hashes actively listed in
    the member's programs."""
    visible: dict[int, tuple[str, str, list[int]]] = {}
    quote = connection.ops.quote_name
    program_ids = list(programs)
    with connection.cursor() as cursor:
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            cursor.execute(
                f"SELECT l.{quote('hash_id')}, h.{quote('signal_type')}, h.{quote('value')}, l.{quote('program_id')} "
                f"FROM {quote(Listing._meta.db_table)} l JOIN {quote(Hash._meta.db_table)} h "
                f"ON h.{quote('id')} = l.{quote('hash_id')} "
                f"WHERE l.{quote('hash_id')} IN ({', '.join(['%s'] * len(chunk))}) AND l.{quote('status')} = %s "
                f"AND l.{quote('program_id')} IN ({', '.join(['%s'] * len(program_ids))}) AND h.{quote('status')} = %s",
                [*chunk, Listing.Status.ACTIVE.value, *program_ids, Hash.Status.ACTIVE.value],
            )
            for pk, signal_type, value, program_id in cursor.fetchall():
                visible.setdefault(pk, (signal_type, value, []))[2].append(program_id)
    long_ids = [pk for pk, (signal_type, _, _) in visible.items() if signal_type in LONG_TYPES]
    for start in range(0, len(long_ids), _ID_CHUNK):
        bodies = HashBody.objects.filter(pk__in=long_ids[start : start + _ID_CHUNK]).values_list("hash_id", "value")
        for pk, value in bodies:
            signal_type, _, listed_in = visible[pk]
            visible[pk] = (signal_type, value, listed_in)
    return visible


def _count_matches(*, member: Member, counts: dict[int, int]) -> None:
    """Add to today's match counts in one upsert (SQLite and PostgreSQL both have ON CONFLICT)."""
    day = timezone.now().date()
    table = connection.ops.quote_name(MatchCount._meta.db_table)
    rows = [(pk, member.pk, day, n) for pk, n in counts.items()]
    # One statement is atomic by itself: no BEGIN and COMMIT round trips for the usual case.
    atomic = transaction.atomic() if len(rows) > 200 else contextlib.nullcontext()
    with atomic, connection.cursor() as cursor:
        for start in range(0, len(rows), 200):
            chunk = rows[start : start + 200]
            values = ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} (hash_id, member_id, day, count) VALUES {values} "
                f"ON CONFLICT (hash_id, member_id, day) DO UPDATE SET count = {table}.count + excluded.count",
                [_adapt(v) for row in chunk for v in row],
            )


def _adapt(value: Any) -> Any:
    if isinstance(value, dt.date):
        return connection.ops.adapt_datefield_value(value)
    return value
