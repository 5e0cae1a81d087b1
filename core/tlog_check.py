"""Checking the audit log's stored tree against the events, and storing what is missing:
tree hashes and leaf tiles (`check`, for `manage.py auditlog_check`), and the stored leaves of
events recorded before there were any (`backfill_leaves`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db import connection, models, transaction
from hashexchange_client import merkle
from hashexchange_client.merkle import HASH_SIZE, TILE_WIDTH

from core import ledger
from core.ledger import Event, EventLeaf
from core.tlog import LeafTile, TreeHash, tree_size

# Checking and rebuilding -------------------------------------------------------------------


def _leaf_hashes(chunk: int = 5000) -> Iterator[bytes]:
    for value in Event.objects.order_by("seq").values_list("leaf_hash", flat=True).iterator(chunk_size=chunk):
        yield bytes.fromhex(value)


@dataclass
class CheckResult:
    size: int
    checked: int
    wrong: list[tuple[int, int]]  # tree hashes (level, position)
    missing: list[tuple[int, int]]
    extra: list[tuple[int, int]]
    tiles_wrong: list[int] = field(default_factory=list)  # leaf tiles (position)
    tiles_missing: list[int] = field(default_factory=list)
    tiles_extra: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.wrong or self.missing or self.extra or self.tiles_wrong or self.tiles_missing or self.tiles_extra
        )


def check(*, repair: bool = False) -> CheckResult:
    """Recompute every stored tree hash and leaf tile from the events' leaf hashes and compare.

    Missing ones are stored when `repair` is set (a database restored from a dump that
    lacked them, or a log from before the tree or the leaf tiles); wrong ones never are: a
    stored hash that differs means events or hashes were changed, which is for a person to
    look into (docs/auditlog.md). The caller holds the ledger lock if it repairs.
    """
    stored = {
        (level, index): bytes(value)
        for level, index, value in TreeHash.objects.values_list("level", "position", "hash")
    }
    size = tree_size()
    tiles = LeafTiles(repair=repair)
    wrong, missing, checked = [], [], 0
    to_create = []
    for level, index, value in merkle.tile_hashes(tiles.watch(_leaf_hashes())):
        checked += 1
        if level == 1:
            tiles.roots[index] = value
        found = stored.pop((level, index), None)
        if found is None:
            missing.append((level, index))
            to_create.append(TreeHash(level=level, position=index, hash=value))
        elif found != value:
            wrong.append((level, index))
    if repair and to_create:
        TreeHash.objects.bulk_create(to_create, batch_size=1000)
    result = CheckResult(size=size, checked=checked, wrong=wrong, missing=missing, extra=sorted(stored))
    tiles.finish(result)
    return result


class LeafTiles:
    """The leaf tiles' part of `check`: which full tiles are not stored (stored by `repair`
    as the leaf hashes go by `watch`, in batches), and which stored ones are not the events' — a
    stored tile is right when the root of its 256 hashes is the root recomputed from the
    events (the tree hash of level 1 at its position)."""

    def __init__(self, *, repair: bool) -> None:
        self.repair = repair
        self.positions = set(LeafTile.objects.values_list("position", flat=True))
        self.roots: dict[int, bytes] = {}
        self.missing: list[int] = []
        self.batch: list[LeafTile] = []

    def watch(self, leaves: Iterator[bytes]) -> Iterator[bytes]:
        tile, position = [], 0
        for leaf in leaves:
            yield leaf
            tile.append(leaf)
            if len(tile) == TILE_WIDTH:
                if position not in self.positions:
                    self.missing.append(position)
                    if self.repair:
                        self.batch.append(LeafTile(position=position, hashes=b"".join(tile)))
                        if len(self.batch) >= 500:
                            self.flush()
                tile, position = [], position + 1

    def flush(self) -> None:
        """Store the missing tiles not stored yet (with `repair`)."""
        LeafTile.objects.bulk_create(self.batch)
        self.batch = []

    def finish(self, result: CheckResult) -> None:
        self.flush()
        result.tiles_missing = self.missing
        rows = LeafTile.objects.order_by("position").values_list("position", "hashes")
        for position, hashes in rows.iterator(chunk_size=500):
            root = self.roots.get(position)
            if root is None:
                result.tiles_extra.append(position)
                continue
            whole = len(hashes) == TILE_WIDTH * HASH_SIZE
            if not whole or merkle.perfect_root(merkle.split_hashes(bytes(hashes))) != root:
                result.tiles_wrong.append(position)


# Stored leaves of events recorded before they were stored ---------------------------------


@dataclass
class BackfillResult:
    stored: int
    changed: list[int]  # events whose row no longer gives their leaf hash: no leaf stored


def backfill_leaves(*, batch: int = 5000, after: int = 0) -> Iterator[tuple[int, BackfillResult]]:
    """Store the leaf data of every event that has none (recorded before EventLeaf existed).

    In batches of `batch` consecutive events, each in its own short transaction (inserts
    only: safe while the exchange runs, and resumable, since events that have a stored leaf
    are skipped). A leaf is stored only if it hashes to the leaf hash the event was recorded
    with: a row changed since is reported, never laundered into a stored leaf. Yields
    (the last seq covered, the totals so far) after each batch.
    """
    totals = BackfillResult(0, [])
    size = tree_size()
    for first in range(after, size, batch):
        last = min(size, first + batch)
        have = EventLeaf.objects.filter(seq__gt=first, seq__lte=last).values("seq")
        missing = Event.objects.filter(seq__gt=first, seq__lte=last).exclude(seq__in=have).order_by("seq")
        leaves = []
        for event in missing.iterator(chunk_size=1000):
            leaf = event.leaf_data()
            if ledger.leaf_hash(leaf) == event.leaf_hash:
                leaves.append(EventLeaf(seq=event.seq, data=leaf))
            else:
                totals.changed.append(event.seq)
        with transaction.atomic():
            EventLeaf.objects.bulk_create(leaves, batch_size=500, ignore_conflicts=True)
        totals.stored += len(leaves)
        yield last, totals


def check_leaves(chunk: int = 5000) -> list[int]:
    """The seqs whose stored leaf does not hash to its event's leaf hash (or has no event)."""
    wrong = []
    last = EventLeaf.objects.aggregate(last=models.Max("seq"))["last"] or 0
    sql = (
        f"SELECT l.seq, l.data, e.leaf_hash FROM {EventLeaf._meta.db_table} l "
        f"LEFT JOIN {Event._meta.db_table} e ON e.seq = l.seq WHERE l.seq > %s AND l.seq <= %s"
    )
    for first in range(0, last, chunk):
        with connection.cursor() as cursor:
            cursor.execute(sql, [first, first + chunk])
            for seq, data, hashed in cursor.fetchall():
                if hashed is None or ledger.leaf_hash(bytes(data)) != hashed:
                    wrong.append(seq)
    return sorted(wrong)
