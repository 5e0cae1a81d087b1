"""The audit log's Merkle tree, stored as tiles beside the event log it is made of.

The tree is RFC 6962's over the events: leaf i is the event with seq i + 1, and its leaf
hash is the event's `leaf_hash` (docs/ledger.md). Its tiles are those of C2SP
tlog-tiles (docs/auditlog.md):

- tile level 0 holds leaf hashes, which the event log already stores; each full one is
  also kept whole as one `LeafTile` row (8 KB), so that a proof reads one row, not 256;
- tile level t >= 1 holds, for every full tile of level t - 1, the hash of its 256
  entries (the root of 256**t leaves). Those are the `TreeHash` rows: one per 256 events,
  one more per 65,536, and so on.

`extend()` runs inside `record_many()`, under the ledger's lock and in the transaction
of the events it covers, so the stored tree always has exactly the committed events: a
reader that sees event n sees every tree hash the first n events imply. Appending is
O(1) amortised and O(log n) at worst: nothing happens until a tile fills; a full level-0
tile costs one read of at most 255 earlier leaf hashes and 255 SHA-256s, and only then
may the tile above fill. The right edge of the tree (partial tiles) is never stored;
roots and proofs hash it from the entries when asked, at most 255 hashes per level.

Tree hashes are append-only like events: the ORM refuses to change them and the database
refuses UPDATE (and on PostgreSQL DELETE) by trigger. They are derived data, so `check()`
recomputes them from the events' leaf hashes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

from django.db import DatabaseError, connection, models, transaction
from hashexchange_client import merkle
from hashexchange_client.merkle import HASH_SIZE, TILE_WIDTH, Tile, TileSource

from core import ledger
from core.ledger import Event, EventLeaf, LedgerError


class AppendOnlyQuerySet(models.QuerySet[Any]):
    def update(self, **kwargs: Any) -> int:
        raise LedgerError(f"{self.model._meta.verbose_name_plural} are append-only: they cannot be updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise LedgerError(f"{self.model._meta.verbose_name_plural} are append-only: they cannot be deleted")


class AppendOnly(models.Model):
    """Rows that are written once, in the transaction of the events they derive from."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise LedgerError(f"{self._meta.verbose_name_plural} are append-only: they cannot be updated")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise LedgerError(f"{self._meta.verbose_name_plural} are append-only: they cannot be deleted")


class TreeHash(AppendOnly):
    """Entry `position` of tile level `level` (1 and up) of the audit log's tree: the Merkle
    tree hash of the 256**level leaves from position * 256**level. Written by `extend()` in
    the transaction of the event that completes them; never changed."""

    level = models.PositiveSmallIntegerField(help_text="Tile level, 1 and up (level 0 is the events' leaf hashes).")
    position = models.BigIntegerField(help_text="Position within the level (the entry's index).")
    hash = models.BinaryField(max_length=32)

    class Meta:
        # Beside the Event model it is computed from, and for the same reason (docs/decisions.md).
        app_label = "exchange"
        constraints = [models.UniqueConstraint(fields=["level", "position"], name="treehash_unique_level_position")]
        verbose_name = "tree hash"
        verbose_name_plural = "tree hashes"

    def __str__(self) -> str:
        return f"tile level {self.level} entry {self.position}"


class LeafTile(AppendOnly):
    """Full tile `position` of tile level 0: the leaf hashes of the 256 events from seq
    position * 256 + 1, concatenated (8 KB), stored by `extend()` when its last event is
    recorded. The events hold the same hashes; a proof reads one row here instead of 256
    scattered event rows (docs/benchmarks/auditlog.md). A tile not stored (events recorded
    before this table; `auditlog_check --repair` stores them) is read from the events."""

    position = models.BigIntegerField(primary_key=True, help_text="The tile's index (tile 0/position).")
    hashes = models.BinaryField(max_length=TILE_WIDTH * HASH_SIZE)

    class Meta:
        app_label = "exchange"
        verbose_name = "leaf tile"

    def __str__(self) -> str:
        return f"leaf tile {self.position}"


# Appending ---------------------------------------------------------------------------------


def extend(rows: Sequence[Event]) -> int:
    """Store the tree hashes that the new events `rows` (consecutive, just inserted) complete.

    Called by `record_many()` under the ledger lock; returns how many it stored.
    """
    if not rows:
        return 0
    old_size, new_size = rows[0].seq - 1, rows[-1].seq
    completed = list(merkle.completed_tiles(old_size, new_size))
    if not completed:
        return 0
    fresh: dict[tuple[int, int], bytes] = {(0, row.seq - 1): bytes.fromhex(row.leaf_hash) for row in rows}
    created, leaf_tiles = [], []
    for tile_level, tile_index in completed:
        entries = _tile_entries(tile_level, tile_index, fresh)
        value = merkle.perfect_root(entries)
        fresh[(tile_level + 1, tile_index)] = value
        created.append(TreeHash(level=tile_level + 1, position=tile_index, hash=value))
        if tile_level == 0:
            leaf_tiles.append(LeafTile(position=tile_index, hashes=b"".join(entries)))
    TreeHash.objects.bulk_create(created)
    LeafTile.objects.bulk_create(leaf_tiles)
    return len(created)


def _tile_entries(tile_level: int, tile_index: int, fresh: dict[tuple[int, int], bytes]) -> list[bytes]:
    """The 256 entries of a full tile: those computed in this call, the rest read once."""
    first = tile_index * TILE_WIDTH
    stored_until = first
    while stored_until < first + TILE_WIDTH and (tile_level, stored_until) not in fresh:
        stored_until += 1
    entries = _read_entries(tile_level, first, stored_until) if stored_until > first else []
    entries += [fresh[(tile_level, position)] for position in range(stored_until, first + TILE_WIDTH)]
    return entries


def _read_entries(tile_level: int, start: int, end: int) -> list[bytes]:
    """Entries [start, end) of a tile level, from the database; LedgerError if any is missing.

    Plain SQL: this runs inside every transaction that fills a tile, and the ORM spent
    three times as long as the query building 255 rows.
    """
    with connection.cursor() as cursor:
        if tile_level == 0:
            cursor.execute(
                f"SELECT leaf_hash FROM {Event._meta.db_table} WHERE seq > %s AND seq <= %s ORDER BY seq", [start, end]
            )
            values = _leaf_hashes_from_hex([row[0] for row in cursor.fetchall()])
        else:
            cursor.execute(
                f"SELECT hash FROM {TreeHash._meta.db_table} WHERE level = %s AND position >= %s AND position < %s "
                "ORDER BY position",
                [tile_level, start, end],
            )
            values = [bytes(row[0]) for row in cursor.fetchall()]
    _check_count(values, tile_level, start, end)
    return values


def _leaf_hashes_from_hex(hexes: list[str]) -> list[bytes]:
    joined = bytes.fromhex("".join(hexes))  # one call: a proof reads 256 of them
    if len(joined) == HASH_SIZE * len(hexes):
        return [joined[i : i + HASH_SIZE] for i in range(0, len(joined), HASH_SIZE)]
    return [bytes.fromhex(value) for value in hexes]  # a leaf hash that is not 32 bytes: for the checks to see


def _check_count(values: list[bytes], tile_level: int, start: int, end: int) -> None:
    if len(values) != end - start:
        raise LedgerError(
            f"the audit log's tree is missing entries {start}..{end - 1} of tile level {tile_level}: "
            "run `manage.py auditlog_check --repair`"
        )


# Reading -----------------------------------------------------------------------------------


def tree_size() -> int:
    """The number of leaves: the number of committed events (seq is gap-free from 1)."""
    return Event.objects.aggregate(last=models.Max("seq"))["last"] or 0


def read_tile(tile: Tile) -> bytes:
    """A tile's bytes as tlog-tiles serves them: `width` concatenated 32-byte hashes.

    The caller checks that the tree is large enough to hold the tile (tile_width).
    """
    if tile.level == 0 and tile.width == TILE_WIDTH:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT hashes FROM {LeafTile._meta.db_table} WHERE position = %s", [tile.index])
            row = cursor.fetchone()
        if row is not None and len(row[0]) == TILE_WIDTH * HASH_SIZE:
            return bytes(row[0])
    return read_tile_from_events(tile)


def read_tile_from_events(tile: Tile) -> bytes:
    """`read_tile`, but a tile of leaf hashes from the events themselves, not their stored
    tile: what a proof is computed again from when the quick path's does not verify."""
    start = tile.index * TILE_WIDTH
    return b"".join(_read_entries(tile.level, start, start + tile.width))


def read_entry_bundle(tile: Tile) -> bytes:
    """An entry bundle: each event's leaf data, prefixed by its length as a big-endian uint16."""
    start = tile.index * TILE_WIDTH
    return b"".join(iter_entries(start, start + tile.width))


LEAF_FIELDS = ("seq", "kind", "program", "subject_type", "subject_id", "actor_type", "actor_id", "data", "created_at")

# Whether an event's stored leaf (EventLeaf) is still the encoding of its row, computed by
# the database: PostgreSQL compares the two as JSON values (jsonb equality), SQLite as
# text (the leaf's canonical JSON against a JSON object built from the row's columns in
# the leaf's key order; rows store their data with sorted keys, core/ledger.py). Neither
# is the documented encoding itself, so a "no" (or NULL: no stored leaf, or a row the
# database cannot read as JSON) only sends the row to `_checked_in_python`, which is.
_MATCHES = {
    "postgresql": """convert_from(l.data, 'UTF8')::jsonb = jsonb_build_object(
        'actor', jsonb_build_object('id', e.actor_id, 'type', e.actor_type),
        'at', to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', e.data, 'kind', e.kind, 'program', e.program, 'seq', e.seq,
        'subject', jsonb_build_object('id', e.subject_id, 'type', e.subject_type), 'v', 1)""",
    "sqlite": """CAST(l.data AS TEXT) = json_object(
        'actor', json_object('id', e.actor_id, 'type', e.actor_type),
        'at', replace(e.created_at, ' ', 'T') || CASE WHEN length(e.created_at) = 19 THEN '.000000Z' ELSE 'Z' END,
        'data', json(e.data), 'kind', e.kind, 'program', e.program, 'seq', e.seq,
        'subject', json_object('id', e.subject_id, 'type', e.subject_type), 'v', 1)""",
}
ENTRIES_CHUNK = 2048


def iter_entries(start: int, end: int, *, complete: bool = True, chunk: int = ENTRIES_CHUNK) -> Iterator[bytes]:
    """Leaves [start, end) as entry-bundle entries (uint16 length, leaf data), a block of up
    to `chunk` entries at a time. An event missing from the log is LedgerError, or with
    `complete=False` left out (the auditor who counts the entries then sees it is missing).

    Each entry is the event's stored leaf (EventLeaf), the bytes that were hashed when it
    was recorded, as long as the database finds it is still the encoding of the event's
    row: serving a bundle is then one query and no JSON work in Python
    (docs/benchmarks/auditlog.md). Otherwise `_served_leaf` decides, in Python, from the
    documented encoding of the row: a row changed since it was recorded is served as it is
    now, a stored leaf damaged since is served as it is; neither hashes to the tree the
    checkpoints signed, so an auditor sees every disagreement (docs/auditlog.md).
    """
    matches = _MATCHES.get(connection.vendor)
    for first in range(start, end, chunk):
        last = min(end, first + chunk)
        rows = _rows_checked_by_database(first, last, matches) if matches else None
        if rows is None:
            seqs = Event.objects.filter(seq__gt=first, seq__lte=last).order_by("seq").values_list("seq", flat=True)
            rows = [(seq, None, False) for seq in seqs]
        if complete and len(rows) != last - first:
            raise LedgerError(f"events {first + 1}..{last} are not all in the log")
        parts = []
        for leaf in _served_leaves(rows):
            parts.append(len(leaf).to_bytes(2, "big"))
            parts.append(leaf)
        yield b"".join(parts)


def _served_leaves(rows: list[tuple[int, Any, bool]]) -> list[bytes]:
    """The entry of each of `rows` (seq, stored leaf, whether the database found it is the
    row's): the stored leaf, or for those it could not vouch for, `_checked_in_python`'s."""
    unsure = [seq for seq, _data, ok in rows if not ok]
    recomputed = _checked_in_python(unsure) if unsure else {}
    return [bytes(data) if ok else recomputed[seq] for seq, data, ok in rows]


def read_leaf(index: int) -> bytes:
    """The leaf data of leaf `index`, as `iter_entries` serves it; LedgerError if it is missing."""
    entry = b"".join(iter_entries(index, index + 1))
    return entry[2:]


def _rows_checked_by_database(first: int, last: int, matches: str) -> list[tuple[int, Any, bool]] | None:
    """(seq, stored leaf, whether it is the row's) for events first+1..last; None if the
    database could not compare (a stored leaf or a row it cannot read as JSON)."""
    sql = (
        f"SELECT e.seq, l.data, {matches} FROM {Event._meta.db_table} e "
        f"LEFT JOIN {EventLeaf._meta.db_table} l ON l.seq = e.seq WHERE e.seq > %s AND e.seq <= %s ORDER BY e.seq"
    )
    rows = _fetch_or_none(sql, [first, last])
    return None if rows is None else [(seq, data, bool(ok)) for seq, data, ok in rows]


def _fetch_or_none(sql: str, params: list[Any]) -> list[tuple[Any, ...]] | None:
    """The rows of a read that compares stored leaves in the database; None if it failed."""
    # On PostgreSQL a failed statement spoils the transaction around it: a savepoint keeps
    # the caller's. (SQLite's transactions here are IMMEDIATE: a read takes none.)
    guard = transaction.atomic() if connection.vendor == "postgresql" and connection.in_atomic_block else nullcontext()
    try:
        with guard, connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    except DatabaseError:
        return None


def _checked_in_python(seqs: Sequence[int]) -> dict[int, bytes]:
    """The entry to serve for each of `seqs`, decided from the documented encoding of the row."""
    rows = Event.objects.filter(seq__in=seqs).values_list(*LEAF_FIELDS, "leaf_hash")
    stored = {seq: bytes(data) for seq, data in EventLeaf.objects.filter(seq__in=seqs).values_list("seq", "data")}
    served = {}
    for *fields, hashed in rows:
        row = dict(zip(LEAF_FIELDS, fields, strict=True))
        served[row["seq"]] = _served_leaf(row, stored.get(row["seq"]), hashed)
    missing = set(seqs) - served.keys()
    if missing:
        raise LedgerError(f"events {sorted(missing)[:5]} are not in the log")
    return served


def _served_leaf(row: dict[str, Any], stored: bytes | None, hashed: str) -> bytes:
    """The entry of one event: its stored leaf if that is the encoding of its row as it is
    now (or the row's encoding if none was stored yet); if they disagree, whichever of the
    two no longer hashes to the leaf hash the event was recorded with."""
    try:
        encoded = ledger.leaf_bytes(**row, check=False)
    except ValueError:  # a row changed to hold a value JSON cannot encode (NaN)
        encoded = b""
    if stored is None or stored == encoded:
        return encoded
    return stored if ledger.leaf_hash(stored) != hashed else encoded


def source(size: int, read: Any = read_tile) -> TileSource:
    """A proof source over the first `size` leaves, reading each tile it needs once."""
    return TileSource(size, read)


class NodeCache:
    """The hashes of perfect subtrees this process computed, for the proofs that follow.

    A perfect subtree's hash never changes once its leaves are committed: the log only
    grows. So every proof can reuse the subtrees an earlier one hashed. Two kinds are kept:

    - every full tile above the leaves (tile level 1 and up: 65,536 leaves each at level 1),
      whole: its 511 perfect subtrees, one bytes object per height (16 KB a tile; 153 tiles,
      2.5 MB, at 10M events). The first proof that needs one reads **every** full tile of
      its level in one query (`warm_tiles` of them at most, 134M events at level 1), so a
      process pays that once instead of one query and 255 hashes for each of the first
      few hundred proofs it answers;
    - other subtrees asked for (in leaf tiles and partial tiles), least recently used first
      out at `limit` hashes, about 100 bytes each.

    What is left to read is, for an inclusion proof, the one tile of leaf hashes around its
    leaf (docs/benchmarks/auditlog.md, "Proofs and audits at 1M and 10M events").

    Only `verified_*` below use it, and only to answer proofs that are checked against a
    signed root before they are served: should the database ever hold a different log
    than the one cached (a restore, or a test that rolled back its events), the check
    fails, the cache is emptied and the proof is computed again from the database.
    """

    def __init__(self, limit: int = 100_000, warm_tiles: int = 2048) -> None:
        self.limit = limit
        self.warm_tiles = warm_tiles
        self.hashes: OrderedDict[tuple[str, merkle.Node], bytes] = OrderedDict()
        # (alias, tile level, tile index) -> the tile's perfect levels, each joined.
        self.tiles: OrderedDict[tuple[str, int, int], list[bytes]] = OrderedDict()
        self.warmed: dict[tuple[str, int], int] = {}  # (alias, tile level) -> full tiles read
        self.lock = threading.Lock()  # for threaded servers; a sync worker never waits on it

    def clear(self) -> None:
        with self.lock:
            self.hashes.clear()
            self.tiles.clear()
            self.warmed.clear()

    @staticmethod
    def _in_upper_tile(node: merkle.Node, size: int) -> tuple[int, int, int, int] | None:
        """`merkle.tile_of(node)` if `node` is in a full tile above the leaves, else None."""
        where = merkle.tile_of(node)
        tile_level, tile_index, _first, _count = where
        if not tile_level or node.end > size or merkle.tile_width(tile_level, tile_index, size) != TILE_WIDTH:
            return None
        return where

    def _from_tile(self, alias: str, node: merkle.Node, size: int) -> bytes | None:
        where = self._in_upper_tile(node, size)
        if where is None:
            return None
        tile_level, tile_index, first, count = where
        levels = self.tiles.get((alias, tile_level, tile_index))
        if levels is None:
            return None
        height = count.bit_length() - 1
        offset = (first >> height) * HASH_SIZE
        return levels[height][offset : offset + HASH_SIZE]

    def _look_up(
        self, alias: str, nodes: Sequence[merkle.Node], size: int, found: dict[merkle.Node, bytes]
    ) -> list[merkle.Node]:
        """Put the cached hashes of `nodes` in `found`; return the nodes not cached. Under the lock."""
        missing = []
        for node in nodes:
            value = self._from_tile(alias, node, size)
            if value is None and node.end <= size:
                value = self.hashes.get((alias, node))
                if value is not None:
                    self.hashes.move_to_end((alias, node))
            if value is None:
                missing.append(node)
            else:
                found[node] = value
        return missing

    def _warm(self, alias: str, tile_level: int, size: int, wanted: int) -> None:
        """Keep every full tile of `tile_level` not yet kept (one query), or, past
        `warm_tiles` of them, only tile `wanted`."""
        if self.limit <= 0:
            return
        full = (size >> (merkle.TILE_HEIGHT * tile_level)) // TILE_WIDTH
        every = full <= self.warm_tiles
        first = self.warmed.get((alias, tile_level), 0) if every else wanted
        last = full if every else wanted + 1
        if first >= last:
            return
        try:
            entries = _read_entries(tile_level, first * TILE_WIDTH, last * TILE_WIDTH)
        except LedgerError:  # a tree hash missing somewhere: each proof reads its own tiles, as before
            if every:
                with self.lock:
                    self.warmed[(alias, tile_level)] = last  # not again for this size
            return
        kept = {}
        for index in range(first, last):
            part = entries[(index - first) * TILE_WIDTH : (index - first + 1) * TILE_WIDTH]
            kept[(alias, tile_level, index)] = [b"".join(level) for level in merkle.perfect_levels(part)]
        with self.lock:
            self.tiles.update(kept)
            if every:
                self.warmed[(alias, tile_level)] = last
            while len(self.tiles) > self.warm_tiles:
                self.tiles.popitem(last=False)

    def source(self, size: int, read: Any = read_tile) -> merkle.Source:
        """A proof source over the first `size` leaves: cached hashes first, tiles for the rest."""
        tiles = source(size, read)
        alias = connection.alias

        def lookup(nodes: Sequence[merkle.Node]) -> dict[merkle.Node, bytes]:
            found: dict[merkle.Node, bytes] = {}
            with self.lock:
                missing = self._look_up(alias, nodes, size, found)
            upper = {where[:2] for where in (self._in_upper_tile(node, size) for node in missing) if where}
            for tile_level, tile_index in sorted(upper):
                self._warm(alias, tile_level, size, tile_index)
            if upper:
                with self.lock:
                    missing = self._look_up(alias, missing, size, found)
            if missing:
                computed = tiles(missing)
                with self.lock:
                    for node, value in computed.items():
                        self.hashes[(alias, node)] = value
                    while len(self.hashes) > self.limit:
                        self.hashes.popitem(last=False)
                found.update(computed)
            return found

        return lookup


node_cache = NodeCache()


def root(size: int, read: Any = read_tile) -> bytes:
    return merkle.tree_root(size, source(size, read))


def inclusion_proof(index: int, size: int, read: Any = read_tile) -> list[bytes]:
    return merkle.inclusion_proof(index, size, source(size, read))


def consistency_proof(old_size: int, new_size: int, read: Any = read_tile) -> list[bytes]:
    return merkle.consistency_proof(old_size, new_size, source(new_size, read))


def verified_inclusion_proof(index: int, size: int, leaf: bytes, signed_root: bytes) -> list[bytes]:
    """The inclusion proof of leaf hash `leaf` at `index` in the tree of `size` leaves whose
    signed root is `signed_root`, from the node cache; checked against that root before it is
    returned (computed again from the database, the cache emptied, if it does not verify)."""
    proof = merkle.inclusion_proof(index, size, node_cache.source(size))
    try:
        merkle.verify_inclusion(leaf, index, size, proof, signed_root)
    except merkle.ProofError:
        node_cache.clear()
        proof = inclusion_proof(index, size, read_tile_from_events)
    return proof


def leaf_and_tile(index: int, size: int) -> tuple[bytes, Tile, bytes]:
    """Leaf `index`'s data (as `iter_entries` serves it) and the level-0 tile around it in a
    tree of `size` leaves (its leaf hashes): all an inclusion proof reads from the database
    once the node cache holds the rest of the tree.

    One statement, the two reads side by side (UNION ALL), so one round trip to the
    database: on PostgreSQL each round trip was a third of a proof's SQL time. (A join of
    the leaf to the tile's 256 rows took twice as long as the two reads on PostgreSQL,
    docs/benchmarks/auditlog.md.) Where the database cannot compare the stored leaf, the
    two reads are made as `read_leaf` and `read_tile` make them."""
    tile = Tile(0, index // TILE_WIDTH, merkle.tile_width(0, index // TILE_WIDTH, size))
    matches = _MATCHES.get(connection.vendor)
    start = tile.index * TILE_WIDTH
    table, leaves = Event._meta.db_table, EventLeaf._meta.db_table
    full = tile.width == TILE_WIDTH
    tile_sql = (
        f"SELECT 1, position, hashes, NULL, NULL FROM {LeafTile._meta.db_table} WHERE position = %s"
        if full
        else f"SELECT 1, seq, NULL, NULL, leaf_hash FROM {table} WHERE seq > %s AND seq <= %s"
    )
    sql = (
        f"SELECT 0, e.seq, l.data, {matches}, NULL FROM {table} e "
        f"LEFT JOIN {leaves} l ON l.seq = e.seq WHERE e.seq = %s UNION ALL {tile_sql} ORDER BY 1, 2"
    )
    params = [index + 1, tile.index] if full else [index + 1, start, start + tile.width]
    rows = _fetch_or_none(sql, params) if matches else None
    if rows is None:
        return read_leaf(index), tile, read_tile(tile)
    leaf_rows = [(seq, data, bool(ok)) for part, seq, data, ok, _hash in rows if part == 0]
    if not leaf_rows:
        raise LedgerError(f"event {index + 1} is not in the log")
    tile_rows = [row for row in rows if row[0] == 1]
    if full:
        stored = bytes(tile_rows[0][2]) if tile_rows else b""
        hashes = stored if len(stored) == TILE_WIDTH * HASH_SIZE else read_tile_from_events(tile)
    else:
        found = _leaf_hashes_from_hex([row[4] for row in tile_rows])
        _check_count(found, 0, start, start + tile.width)
        hashes = b"".join(found)
    return _served_leaves(leaf_rows)[0], tile, hashes


def verified_inclusion_proof_of(index: int, size: int, signed_root: bytes) -> tuple[bytes, list[bytes]]:
    """Leaf `index`'s data and its inclusion proof in the tree of `size` leaves whose signed
    root is `signed_root`: its leaf and its tile (`leaf_and_tile`), the rest from the node cache;
    checked against the root before they are returned, like `verified_inclusion_proof`."""
    leaf, tile, hashes = leaf_and_tile(index, size)

    def read(wanted: Tile) -> bytes:
        return hashes if wanted == tile else read_tile(wanted)

    proof = merkle.inclusion_proof(index, size, node_cache.source(size, read))
    try:
        merkle.verify_inclusion(merkle.leaf_hash(leaf), index, size, proof, signed_root)
    except merkle.ProofError:
        node_cache.clear()
        proof = inclusion_proof(index, size, read_tile_from_events)
    return leaf, proof


def verified_consistency_proof(old_size: int, new_size: int, signed_root: bytes) -> tuple[bytes, list[bytes]]:
    """The root of the first `old_size` leaves and the proof that it is a prefix of the tree of
    `new_size` leaves whose signed root is `signed_root`, from the node cache; checked against
    that root before they are returned, like `verified_inclusion_proof`."""
    nodes = node_cache.source(new_size)
    old_root = merkle.tree_root(old_size, nodes)
    proof = merkle.consistency_proof(old_size, new_size, nodes)
    try:
        merkle.verify_consistency(old_size, new_size, old_root, signed_root, proof)
    except merkle.ProofError:
        node_cache.clear()
        old_root = root(old_size, read_tile_from_events)
        proof = consistency_proof(old_size, new_size, read_tile_from_events)
    return old_root, proof
