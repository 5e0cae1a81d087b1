"""The ledger: one append-only, ordered log of every state change.

Every service of every app calls `record()` inside the transaction of the change it
records, so the change and its event commit together or not at all. The log is at once
the webhook outbox, the pull feed, the leaves of the Merkle audit log and the input of
every report.

This module imports nothing of the project's own apps: actors and subjects are named by
kind and id, so `members` and `hashes` can depend on it without a cycle.

Sequence numbers are assigned in commit order. A plain auto-increment would not do: on
PostgreSQL two transactions can take ids 7 and 8 and commit 8 first, and a feed reader
at that moment would move past 7 for ever. So `record()` takes a transaction-scoped
lock (an advisory lock on PostgreSQL; SQLite's IMMEDIATE transactions already hold the
write lock) and numbers the event max(seq) + 1. The lock is held until commit, which
serialises writers only for the last instant of their transaction.

The leaf encoding is documented in docs/ledger.md; `leaf_bytes()` is its single source.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from . import metrics, sql

LEAF_VERSION = 1
# The audit log serves each event's leaf data with a 16-bit length (C2SP tlog-tiles entry
# bundles); the largest event recorded today (1,000 imported hash ids) is about 10 KB.
MAX_LEAF_BYTES = 0xFFFF
# Called after a transaction that recorded events commits (the exchange app registers the
# wake-up of webhook delivery here). A failing hook is logged, never raised: the events
# are committed, and periodic sweeps catch up with anything a hook failed to start.
after_commit_hooks: list[Callable[[], None]] = []
# Any number will do; it only has to be the same in every process that records events.
ADVISORY_LOCK_KEY = 0x68786C6564676572  # "hxledger"


class LedgerError(RuntimeError):
    """Raised when the append-only contract of the ledger would be broken."""


@dataclass(frozen=True)
class Actor:
    """Who caused an event: a member, an admin user, an operator command or the system."""

    type: str
    id: str

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        return cls("system", name)

    @classmethod
    def operator(cls, command: str) -> Actor:
        return cls("operator", command)

    @classmethod
    def admin(cls, username: str) -> Actor:
        return cls("admin", username)

    @classmethod
    def member(cls, slug: str) -> Actor:
        return cls("member", slug)


JsonValue = None | bool | int | str | list["JsonValue"] | dict[str, "JsonValue"]


def _json_ok(value: Any) -> bool:
    """True if `value` is made of None, bools, ints, strs, string-keyed mappings and sequences.

    The fast answer for the usual case: no path strings are built unless something is wrong
    (an imported peer entry's origin holds a whole signed key binding, and building a path
    for each of its values cost more than encoding it)."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, Mapping):
        return all(isinstance(key, str) and _json_ok(item) for key, item in value.items())
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        # A list of plain scalars (a grouped event's thousand ids) in one pass in C.
        return set(map(type, value)) <= _SCALARS or all(_json_ok(item) for item in value)
    return False


_SCALARS = {int, str, bool, type(None)}


def _check_json(value: Any, path: str = "data") -> None:
    """Refuse values whose JSON encoding is not deterministic (floats) or not JSON at all."""
    if _json_ok(value):
        return
    _explain_json(value, path)


def _explain_json(value: Any, path: str) -> None:
    """Raise LedgerError naming the first value _json_ok refused, by its path."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise LedgerError(f"{path}: keys must be strings, got {key!r}")
            _explain_json(item, f"{path}.{key}")
        return
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        for index, item in enumerate(value):
            _explain_json(item, f"{path}[{index}]")
        return
    raise LedgerError(f"{path}: {type(value).__name__} is not allowed in event data (use str or int)")


def format_time(value: dt.datetime) -> str:
    """UTC, microseconds, trailing Z: the one spelling of a time in a leaf."""
    if value.tzinfo is None:
        raise LedgerError("event times must be timezone-aware")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any, *, check: bool = True) -> bytes:
    """Sorted keys, no white space, UTF-8, no floats: equal values give equal bytes.

    `check=False` skips refusing floats and non-JSON values, for values read back from the
    log (checked when they were recorded)."""
    if check:
        _check_json(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def leaf_bytes(
    *,
    seq: int,
    kind: str,
    program: str,
    subject_type: str,
    subject_id: str,
    actor_type: str,
    actor_id: str,
    data: Mapping[str, Any],
    created_at: dt.datetime,
    check: bool = True,
) -> bytes:
    """The leaf data of an event: the canonical JSON of all its fields (docs/ledger.md)."""
    return canonical_json(
        {
            "v": LEAF_VERSION,
            "seq": seq,
            "kind": kind,
            "program": program,
            "subject": {"type": subject_type, "id": subject_id},
            "actor": {"type": actor_type, "id": actor_id},
            "data": dict(data),
            "at": format_time(created_at),
        },
        check=check,
    )


def leaf_hash(leaf: bytes) -> str:
    """RFC 6962 leaf hash: SHA-256(0x00 || leaf data), hex."""
    return hashlib.sha256(b"\x00" + leaf).hexdigest()


class EventQuerySet(models.QuerySet["Event"]):
    def update(self, **kwargs: Any) -> int:
        raise LedgerError("events are append-only: they cannot be updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise LedgerError("events are append-only: they cannot be deleted")

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        raise LedgerError("events are append-only: they cannot be updated")


class Event(models.Model):
    """One state change, in the order it committed. Never updated, never deleted."""

    seq = models.BigIntegerField(primary_key=True, help_text="Position in the log; gap-free, in commit order.")
    kind = models.CharField(max_length=64, db_index=True, help_text="Dotted kind, e.g. hash.added.")
    program = models.CharField(max_length=64, blank=True, default="", db_index=True)
    subject_type = models.CharField(max_length=32)
    subject_id = models.CharField(max_length=128)
    actor_type = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=128)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    leaf_hash = models.CharField(max_length=64, help_text="SHA-256(0x00 || leaf data), see docs/ledger.md.")

    objects = EventQuerySet.as_manager()

    class Meta:
        # The model is defined here, at the bottom, so that every app can record events
        # without importing the exchange app; its table, migrations, admin URL and
        # permissions stay those of the exchange app, where they always were.
        app_label = "exchange"
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["subject_type", "subject_id"], name="exchange_ev_subject_2d468e_idx"),
            models.Index(fields=["program", "seq"], name="exchange_ev_program_53a352_idx"),
            # Reports and the dashboard count a program's events of a kind over a period.
            models.Index(fields=["program", "kind", "created_at"], name="event_program_kind_time"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind} {self.subject_type}:{self.subject_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise LedgerError("events are append-only: they cannot be updated")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise LedgerError("events are append-only: they cannot be deleted")

    def leaf_data(self, *, check: bool = True) -> bytes:
        """The event's leaf data: the canonical JSON of all its fields (docs/ledger.md)."""
        return leaf_bytes(
            check=check,
            seq=self.seq,
            kind=self.kind,
            program=self.program,
            subject_type=self.subject_type,
            subject_id=self.subject_id,
            actor_type=self.actor_type,
            actor_id=self.actor_id,
            data=self.data,
            created_at=self.created_at,
        )

    def compute_leaf_hash(self) -> str:
        return leaf_hash(self.leaf_data())


class EventLeafQuerySet(models.QuerySet["EventLeaf"]):
    def update(self, **kwargs: Any) -> int:
        raise LedgerError("stored leaves are append-only: they cannot be updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise LedgerError("stored leaves are append-only: they cannot be deleted")


class EventLeaf(models.Model):
    """An event's leaf data exactly as it was hashed when the event was recorded.

    The audit log serves these bytes to auditors instead of encoding every event again
    (core/tlog.py `read_leaves`, docs/auditlog.md "Stored leaves"). Written by
    `record_many()` in the event's transaction, or by `manage.py auditlog_backfill_leaves`
    for events recorded before this table existed; never changed (the ORM and a database
    trigger refuse it). A side table rather than a column: the events table keeps its
    columns and its triggers, and the backfill only inserts.
    """

    seq = models.BigIntegerField(primary_key=True, help_text="The event's seq.")
    data = models.BinaryField(
        help_text="The event's leaf data (docs/ledger.md); SHA-256(0x00 || data) is its leaf hash."
    )

    objects = EventLeafQuerySet.as_manager()

    class Meta:
        app_label = "exchange"
        verbose_name = "stored leaf"

    def __str__(self) -> str:
        return f"leaf of event #{self.seq}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise LedgerError("stored leaves are append-only: they cannot be updated")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise LedgerError("stored leaves are append-only: they cannot be deleted")


def _sorted_keys(value: Any) -> Any:
    """The same JSON value with every object's keys in sorted order, as in the leaf. Stored
    so, an event's data reads back in the order of its leaf, which lets SQLite compare the
    two as text when the audit log serves the stored leaf (core/tlog.py `read_leaves`)."""
    if isinstance(value, Mapping):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        if set(map(type, value)) <= _SCALARS:  # nothing inside to sort
            return list(value)
        return [_sorted_keys(item) for item in value]
    return value


@dataclass(frozen=True)
class NewEvent:
    """An event to record; `record_many` numbers a batch of these under one lock."""

    kind: str
    subject_type: str
    subject_id: str
    program: str = ""
    data: Mapping[str, Any] | None = None


def lock() -> None:
    """Take the ledger's write lock for the rest of the current transaction.

    `record()` takes it itself. A service that must decide something from the current
    state and record the result race-free (is this the first support of a hash?) takes
    it first, so its read and its event see the same state. Taking it twice is harmless.
    """
    if not connection.in_atomic_block:
        raise LedgerError("the ledger lock is held until commit, so it needs a transaction")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])


def next_seq() -> int:
    """The seq the next event recorded in this transaction will get: takes the lock, so it
    holds until commit (a service that must write it into rows before recording, as the
    store does for a peer's grouped events, checks it against what record_many returns)."""
    return _lock_and_next_seq()


def _lock_and_next_seq() -> int:
    lock()
    last = Event.objects.aggregate(last=models.Max("seq"))["last"]
    return (last or 0) + 1


def record_many(events: Sequence[NewEvent], *, actor: Actor) -> list[Event]:
    """Append events in order, inside the caller's transaction. Returns the saved rows."""
    if not connection.in_atomic_block:
        raise LedgerError("record() must run inside the transaction of the change it records")
    if not events:
        return []
    next_seq = _lock_and_next_seq()
    # Read under the lock, so that event times never go backwards as sequence numbers rise
    # (on one host's clock): consumers that page by time, like the StopNCII facade, rely on it.
    now = timezone.now()
    rows, leaves = [], []
    for offset, new in enumerate(events):
        data = dict(new.data or {})
        _check_json(data)
        data = _sorted_keys(data)
        row = Event(
            seq=next_seq + offset,
            kind=new.kind,
            program=new.program or "",
            subject_type=new.subject_type,
            subject_id=str(new.subject_id),
            actor_type=actor.type,
            actor_id=actor.id,
            data=data,
            created_at=now,
        )
        leaf = row.leaf_data(check=False)  # checked just above
        if len(leaf) > MAX_LEAF_BYTES:
            raise LedgerError(
                f"{new.kind}: the event's leaf data is {len(leaf)} bytes; the audit log takes at most "
                f"{MAX_LEAF_BYTES} (record large facts as several events, or a digest of them)"
            )
        row.leaf_hash = leaf_hash(leaf)
        rows.append(row)
        leaves.append((row.seq, leaf))
    # One statement of field values rather than `bulk_create`: on PostgreSQL the ORM's
    # client-side binding quoted every value in Python (with the leaves below, a quarter of
    # the worker's CPU for a batch of signed submissions). The database now does that work
    # instead: the worker's CPU fell ~5 %, PostgreSQL's rose about as much
    # (docs/benchmarks/submissions.md); what it frees is the one Python process that a
    # peer's bootstrap or an import runs in.
    sql.insert_rows(
        Event,
        _EVENT_COLUMNS,
        [
            (r.seq, r.kind, r.program, r.subject_type, r.subject_id, r.actor_type, r.actor_id, r.data, r.created_at,
             r.leaf_hash)
            for r in rows
        ],
    )  # fmt: skip
    for row in rows:
        row._state.adding = False  # saved, as bulk_create would mark them
    _store_leaves(leaves)
    # The audit log's tree grows in the same transaction, under the same lock (core/tlog.py).
    from core import tlog

    tlog.extend(rows)
    kinds = [row.kind for row in rows]
    transaction.on_commit(lambda: metrics.events_recorded(kinds), robust=True)  # /metrics, once committed
    pending = {id(entry[1]) for entry in connection.run_on_commit}
    for hook in after_commit_hooks:
        if id(hook) not in pending:  # once per transaction, however many record() calls
            transaction.on_commit(hook, robust=True)
    return rows


_EVENT_COLUMNS = (
    "seq", "kind", "program", "subject_type", "subject_id", "actor_type", "actor_id", "data", "created_at", "leaf_hash",
)  # fmt: skip


def _store_leaves(leaves: Sequence[tuple[int, bytes]]) -> None:
    """Insert the events' leaf data, one statement (plain SQL: this runs for every event).

    On PostgreSQL as one JSON parameter of hex strings that the server decodes: psycopg's
    client-side binding escaped each leaf's bytes in Python.
    """
    table = EventLeaf._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} (seq, data) SELECT (r.value ->> 0)::bigint, decode(r.value ->> 1, 'hex') "
                "FROM jsonb_array_elements(%s::jsonb) AS r(value)",
                [json.dumps([[seq, leaf.hex()] for seq, leaf in leaves])],
            )
            return
        for start in range(0, len(leaves), 500):  # within every backend's limit of parameters
            batch = leaves[start : start + 500]
            cursor.execute(
                f"INSERT INTO {table} (seq, data) VALUES {', '.join(['(%s, %s)'] * len(batch))}",
                [value for seq, leaf in batch for value in (seq, leaf)],
            )


def record(
    kind: str,
    *,
    actor: Actor,
    subject_type: str,
    subject_id: str | int,
    program: str = "",
    data: Mapping[str, Any] | None = None,
) -> Event:
    """Append one event inside the caller's transaction (see the module docstring)."""
    return record_many(
        [NewEvent(kind=kind, subject_type=subject_type, subject_id=str(subject_id), program=program, data=data)],
        actor=actor,
    )[0]


@transaction.atomic
def verify_chain(after: int = 0, limit: int | None = None) -> list[int]:
    """Recompute leaf hashes; return the seqs whose stored hash no longer matches."""
    qs = Event.objects.filter(seq__gt=after).order_by("seq")
    if limit:
        qs = qs[:limit]
    return [event.seq for event in qs.iterator() if event.compute_leaf_hash() != event.leaf_hash]
