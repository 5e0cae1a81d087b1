"""Bulk import of an existing hash list by an operator (10 million hashes in minutes).

Row-by-row ORM saves manage a few thousand hashes a second; this streams the file in
chunks and writes each chunk with set-based SQL: PostgreSQL's COPY into a temporary
table, then INSERT ... SELECT ... ON CONFLICT; SQLite's executemany into a temporary
table, then the same INSERT ... SELECT. Each chunk is one transaction under the ledger
lock, so submissions from members interleave between chunks and the events stay in
commit order.

Imported hashes are not signed by a member. Their listings point to the ImportBatch,
which names the source. Instead of one event per hash, each group of up to
EVENT_GROUP_SIZE newly listed hashes is one `hashes.imported` event that names the
hash ids and commits to their values with a SHA-256 digest, so the audit log covers
every imported value without ten million leaves.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from hashexchange_client import signal_types

from core import ledger
from core.ledger import Actor, NewEvent
from members.models import Program

from .models import Hash, ImportBatch, Listing

CHUNK_SIZE = 100_000
SORT_WINDOW_CHUNKS = 10
EVENT_GROUP_SIZE = 1_000
MAX_REPORTED_ERRORS = 20


@dataclass
class ImportReport:
    batch: ImportBatch
    errors: list[str] = field(default_factory=list)

    @property
    def lines_read(self) -> int:
        return self.batch.lines_read


def parse_lines(
    lines: Iterable[str], *, default_signal_type: str | None, report: ImportReport
) -> Iterator[tuple[str, str]]:
    """Yield (signal type, normalised value) from `value` or `signal_type,value` lines.

    Blank lines and lines starting with # are skipped; invalid lines are counted, and
    the first few are kept with their line numbers for the operator.
    """
    default = signal_types.get(default_signal_type) if default_signal_type else None
    if default is not None and default.long_values:
        raise signal_types.SignalValueError(f"{default.name} hashes cannot be imported from a list; submit them")
    # The usual line is a bare value of the default type. One compiled regex recognises it
    # and it skips the general path below (splitting, normalising, a call per line), which
    # costs several times more; any other line takes the general path, so results and
    # error messages are the same.
    plain = re.compile(f"[0-9A-Fa-f]{{{default.hex_length}}}").fullmatch if default else None
    default_name = default.name if default else ""
    least = signal_types.PDQ_MIN_MINORITY_BITS if default_name == "pdq" else 0
    most = (default.bits if default else 0) - least
    batch = report.batch
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if plain is not None and plain(text):
            value = text.lower()
            if not least or least <= int(value, 16).bit_count() <= most:
                batch.lines_read += 1
                yield default_name, value
                continue
        if not text or text.startswith("#"):
            continue
        batch.lines_read += 1
        if "," in text or "\t" in text:
            name, _, value = text.replace("\t", ",").partition(",")
            kind = signal_types.SIGNAL_TYPES.get(name.strip().lower())
            value = value.split(",", 1)[0]
        else:
            kind, value = default, text
        try:
            if kind is None:
                raise signal_types.SignalValueError(
                    "no signal type: give `signal_type,value` lines or --signal-type"
                    if default is None
                    else f"unknown signal type {name.strip()!r}"
                )
            if kind.long_values:
                # Import lines are split at commas and stored by value; these come signed.
                raise signal_types.SignalValueError(f"{kind.name} hashes cannot be imported from a list; submit them")
            yield kind.name, kind.validate(value)
        except signal_types.SignalValueError as exc:
            batch.lines_invalid += 1
            if len(report.errors) < MAX_REPORTED_ERRORS:
                report.errors.append(f"line {number}: {exc}")


def _chunks(rows: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    """Chunks of up to `size` distinct rows, cut in key order from sorted windows of
    SORT_WINDOW_CHUNKS chunks.

    Imported values are random, so a chunk of consecutive lines has keys all over the
    (signal_type, value) index and touches most of its pages: on a large table every
    chunk then rewrites much of the index (WAL and checkpoints on PostgreSQL, the WAL
    and page cache on SQLite) and the cost per hash grows with the table. A chunk cut
    from a sorted window spans a tenth of the key range and touches a tenth of the
    pages, while each transaction, and so each hold of the ledger lock, stays `size`
    rows. A window of 1,000,000 PDQ values takes about 150 MB; values are kept per
    signal type as strings, which sort two to three times faster than tuples.
    """
    window: dict[str, list[str]] = defaultdict(list)
    held = 0
    for kind, value in rows:
        window[kind].append(value)
        held += 1
        if held >= size * SORT_WINDOW_CHUNKS:
            yield from _sorted_slices(window, size)
            window, held = defaultdict(list), 0
    if held:
        yield from _sorted_slices(window, size)


def _read_ahead(chunks: Iterator[list[tuple[str, str]]]) -> Iterator[list[tuple[str, str]]]:
    """The chunks, the next one read, parsed and sorted in a thread while this one is written.

    Writing a chunk is mostly waiting for the database (its statements and the commit's
    foreign-key checks), when this process holds no GIL; parsing is pure Python. On
    PostgreSQL they ran one after the other, and parsing was 8 % of an import's wall time
    (docs/benchmarks/import.md). The thread touches no database and only the report's
    counters of lines, which are read after the last chunk.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="import-read") as pool:
        pending = pool.submit(next, chunks, None)
        while True:
            chunk = pending.result()
            if chunk is None:
                return
            pending = pool.submit(next, chunks, None)
            yield chunk


def _sorted_slices(window: dict[str, list[str]], size: int) -> Iterator[list[tuple[str, str]]]:
    """The window's distinct (type, value) rows in key order, `size` at a time."""
    for kind in sorted(window):
        values = sorted(set(window[kind]))
        for start in range(0, len(values), size):
            yield [(kind, value) for value in values[start : start + size]]


def import_hashes(
    *,
    lines: Iterable[str],
    program: Program,
    source: str,
    actor: Actor,
    default_signal_type: str | None = None,
    file_name: str = "",
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Stream `lines` into `program`; return the batch with its counts and first errors."""
    if not source.strip():
        raise ValueError("name the source of the list (--source)")
    with transaction.atomic():
        batch = ImportBatch.objects.create(program=program, source=source, file_name=file_name)
        ledger.record(
            "import.started",
            actor=actor,
            subject_type="import",
            subject_id=batch.pk,
            program=program.slug,
            data={"import_id": batch.pk, "source": source, "file": file_name},
        )
    report = ImportReport(batch=batch)
    rows = parse_lines(lines, default_signal_type=default_signal_type, report=report)
    for chunk in _read_ahead(_chunks(rows, chunk_size)):
        batch.hashes_listed += _import_chunk(chunk, batch=batch, program=program, actor=actor)
        if progress:
            progress(len(chunk))
    with transaction.atomic():
        batch.finished_at = timezone.now()
        batch.save(update_fields=["finished_at", "lines_read", "lines_invalid", "hashes_listed"])
        ledger.record(
            "import.finished",
            actor=actor,
            subject_type="import",
            subject_id=batch.pk,
            program=program.slug,
            data={
                "import_id": batch.pk,
                "source": source,
                "lines_read": batch.lines_read,
                "lines_invalid": batch.lines_invalid,
                "hashes_listed": batch.hashes_listed,
            },
        )
    return report


@transaction.atomic
def _import_chunk(chunk: list[tuple[str, str]], *, batch: ImportBatch, program: Program, actor: Actor) -> int:
    """Write one chunk; announce the hashes it newly lists. Returns how many."""
    ledger.lock()
    now = timezone.now()
    with connection.cursor() as cursor:
        distinct = _load_temp_table(cursor, chunk)
        listed = _insert_set_based(cursor, batch=batch, program=program, now=now, distinct=distinct)
    listed.sort()
    events = []
    for start in range(0, len(listed), EVENT_GROUP_SIZE):
        group = listed[start : start + EVENT_GROUP_SIZE]
        digest = hashlib.sha256("".join(f"{i}:{t}:{v}\n" for i, t, v in group).encode()).hexdigest()
        events.append(
            NewEvent(
                "hashes.imported",
                "import",
                str(batch.pk),
                program=program.slug,
                data={
                    "import_id": batch.pk,
                    "source": batch.source,
                    "hash_ids": [i for i, _, _ in group],
                    "count": len(group),
                    "digest": digest,
                },
            )
        )
    ledger.record_many(events, actor=actor)
    return len(listed)


# The chunk's distinct (signal type, value) pairs, and then its hashes with their ids.
TEMP_TABLE = "hashes_import_chunk"
IDS_TABLE = "hashes_import_ids"


def _load_temp_table(cursor: Any, chunk: list[tuple[str, str]]) -> dict[str, int]:
    """Load the chunk (distinct rows in key order, see _chunks) into TEMP_TABLE; return
    how many rows of each signal type it has.

    In key order, so that new hashes enter the (signal_type, value) index in order and
    touch each index page once; distinct, so that no statement needs DISTINCT (which
    sorted 100,000 rows on disk with PostgreSQL's default work_mem).
    """
    rows = chunk
    if connection.vendor == "postgresql":
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {TEMP_TABLE} (signal_type varchar(16), value varchar(64)) "
            "ON COMMIT DELETE ROWS"
        )
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {IDS_TABLE} "
            "(id bigint, signal_type varchar(16), value varchar(64), status varchar(16), new boolean) "
            "ON COMMIT DELETE ROWS"
        )
        # Empty already if the last chunk committed, but not when the import runs inside an
        # outer transaction (tests do that), where the chunks are only savepoints.
        cursor.execute(f"TRUNCATE {TEMP_TABLE}, {IDS_TABLE}")
        # Values are validated hex and type names, so tab-separated text needs no escaping.
        with cursor.copy(f"COPY {TEMP_TABLE} (signal_type, value) FROM STDIN") as copy:
            copy.write("".join(f"{kind}\t{value}\n" for kind, value in rows))
    else:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {TEMP_TABLE} (signal_type text, value text)")
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {IDS_TABLE} "
            "(id integer, signal_type text, value text, status text, new integer)"
        )
        cursor.execute(f"DELETE FROM {TEMP_TABLE}")
        cursor.execute(f"DELETE FROM {IDS_TABLE}")
        cursor.executemany(f"INSERT INTO {TEMP_TABLE} (signal_type, value) VALUES (%s, %s)", rows)
    return dict(Counter(kind for kind, _ in rows))


def _among(subquery: str) -> str:
    """`= ANY(ARRAY(subquery))` on PostgreSQL, `IN (subquery)` elsewhere: a condition that
    probes an index once per value.

    PostgreSQL would plan `IN (subquery)` over a temporary table (which has no
    statistics) as a hash join against a full scan of the hash or listing table, whose
    cost grows with the table, so every chunk of a big import got slower than the last;
    it cannot see the size of an array built at run time and scans the index for it.
    """
    return f"= ANY(ARRAY({subquery}))" if connection.vendor == "postgresql" else f"IN ({subquery})"


def _insert_set_based(
    cursor: Any, *, batch: ImportBatch, program: Program, now: dt.datetime, distinct: dict[str, int]
) -> list[tuple[int, str, str]]:
    """Upsert the chunk's hashes and listings; return (id, type, value) of newly listed ones.

    Steps:
    1. Insert hashes that do not exist yet.
    2. Note the id and status of every hash of the chunk, once (IDS_TABLE), and which
       were created just now: on PostgreSQL those come back from the INSERT itself and
       only the others are looked up.
    3. List the chunk's hashes in the program where they are not listed yet, and
       re-activate withdrawn listings; quarantined and retired hashes are left alone.
       A hash created just now is listed nowhere, so its listing needs no conflict check.
    4. Hashes that were withdrawn everywhere and are listed again become active.
    """
    hash_table, listing_table = Hash._meta.db_table, Listing._meta.db_table
    insert_hashes = (
        f"INSERT INTO {hash_table} (signal_type, value, status, status_reason, created_at, status_changed_at) "
        f"SELECT signal_type, value, %s, '', %s, %s FROM {TEMP_TABLE} WHERE true "
        "ON CONFLICT (signal_type, value) DO NOTHING"
    )
    created = 0
    if connection.vendor == "postgresql":
        cursor.execute(
            f"WITH new AS ({insert_hashes} RETURNING id, signal_type, value, status) "
            f"INSERT INTO {IDS_TABLE} (id, signal_type, value, status, new) "
            "SELECT id, signal_type, value, status, true FROM new",
            [Hash.Status.ACTIVE, now, now],
        )
        created = cursor.rowcount
    else:
        cursor.execute(insert_hashes, [Hash.Status.ACTIVE, now, now])
    if created < sum(distinct.values()):  # some existed before (on SQLite: all are looked up)
        existed = (
            f"SELECT c.value FROM {TEMP_TABLE} c WHERE c.signal_type = %s AND NOT EXISTS "
            f"(SELECT 1 FROM {IDS_TABLE} i WHERE i.signal_type = c.signal_type AND i.value = c.value)"
        )
        for kind in distinct:
            cursor.execute(
                f"INSERT INTO {IDS_TABLE} (id, signal_type, value, status, new) "
                f"SELECT id, signal_type, value, status, false FROM {hash_table} "
                f"WHERE signal_type = %s AND value {_among(existed)}",
                [kind, kind],
            )
    eligible = [Hash.Status.ACTIVE, Hash.Status.WITHDRAWN]
    cursor.execute(
        f"UPDATE {listing_table} SET status = %s, changed_at = %s, import_batch_id = %s "
        f"WHERE program_id = %s AND status = %s "
        f"AND hash_id {_among(f'SELECT id FROM {IDS_TABLE} WHERE NOT new AND status IN (%s, %s)')} RETURNING hash_id",
        [Listing.Status.ACTIVE, now, batch.pk, program.pk, Listing.Status.WITHDRAWN, *eligible],
    )
    listed = {row[0] for row in cursor.fetchall()}
    insert_listings = (
        f"INSERT INTO {listing_table} (hash_id, program_id, status, import_batch_id, created_at, changed_at) "
        f"SELECT id, %s, %s, %s, %s, %s FROM {IDS_TABLE} "
    )
    listing_values = [program.pk, Listing.Status.ACTIVE, batch.pk, now, now]
    if created:
        cursor.execute(insert_listings + "WHERE new RETURNING hash_id", listing_values)
        listed.update(row[0] for row in cursor.fetchall())
    if created < sum(distinct.values()):
        cursor.execute(
            insert_listings + "WHERE NOT new AND status IN (%s, %s) "
            "ON CONFLICT (hash_id, program_id) DO NOTHING RETURNING hash_id",
            [*listing_values, *eligible],
        )
        listed.update(row[0] for row in cursor.fetchall())
    if not listed:
        return []
    cursor.execute(f"SELECT id, signal_type, value, status FROM {IDS_TABLE}")
    rows = cursor.fetchall()
    revived = [pk for pk, _, _, status in rows if status == Hash.Status.WITHDRAWN and pk in listed]
    for start in range(0, len(revived), 500):
        Hash.objects.filter(pk__in=revived[start : start + 500], status=Hash.Status.WITHDRAWN).update(
            status=Hash.Status.ACTIVE, status_changed_at=now, status_reason=""
        )
    return [(pk, kind, value) for pk, kind, value, _ in rows if pk in listed]
