"""The audit log's tree in the database (core/tlog.py): grown with the events, in their
transaction; the same tree as RFC 6962's over the leaf hashes; append-only; checkable."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from hashexchange_client import merkle
from hashexchange_client.merkle import Tile

from core import tlog, tlog_check
from core.ledger import Actor, Event, LedgerError, NewEvent, record, record_many
from core.tlog import LeafTile, TreeHash
from tests.exchange.rewrite import rewrite
from tests.rfc6962 import Rfc6962

ACTOR = Actor.system("test")


def record_batches(sizes: list[int], *, start: int = 0) -> None:
    n = start
    for size in sizes:
        with transaction.atomic():
            record_many([NewEvent("t.event", "t", str(n + i), data={"n": n + i}) for i in range(size)], actor=ACTOR)
        n += size


def leaf_hashes() -> list[bytes]:
    return [bytes.fromhex(h) for h in Event.objects.order_by("seq").values_list("leaf_hash", flat=True)]


def leaf_data() -> list[bytes]:
    return [event.leaf_data() for event in Event.objects.order_by("seq")]


def stored() -> dict[tuple[int, int], bytes]:
    return {
        (level, index): bytes(value)
        for level, index, value in TreeHash.objects.values_list("level", "position", "hash")
    }


@pytest.mark.django_db
def test_tree_hashes_are_stored_as_tiles_fill_whatever_the_batches() -> None:
    # Batches that end short of, exactly on and across tile boundaries, and one spanning two tiles.
    record_batches([1, 254, 1, 1, 300, 211, 600, 2])
    size = tlog.tree_size()
    assert size == 1370
    expected = {(level, index): value for level, index, value in merkle.tile_hashes(leaf_hashes())}
    assert stored() == expected
    assert sorted(expected) == [(1, i) for i in range(5)]
    # Each full tile of leaf hashes is stored whole too, for proofs to read as one row.
    hashes = leaf_hashes()
    assert dict(LeafTile.objects.values_list("position", "hashes")) == {
        i: b"".join(hashes[i * 256 : (i + 1) * 256]) for i in range(5)
    }
    assert tlog_check.check().ok


@pytest.mark.django_db
def test_roots_and_proofs_from_storage_are_rfc_6962s() -> None:
    record_batches([40, 300, 277])
    data = leaf_data()
    hashes = [merkle.leaf_hash(item) for item in data]
    assert [h.hex() for h in hashes] == list(Event.objects.order_by("seq").values_list("leaf_hash", flat=True))
    for size in (1, 2, 255, 256, 257, 511, 512, 617):
        root = tlog.root(size)
        assert root == Rfc6962.mth(data[:size])
        for index in {0, size // 2, size - 1}:
            proof = tlog.inclusion_proof(index, size)
            assert proof == Rfc6962.path(index, data[:size])
            assert Rfc6962.inclusion_holds(hashes[index], index, size, proof, root)
        for old in {1, size // 2, size - 1}:
            if 0 < old < size:
                assert tlog.consistency_proof(old, size) == Rfc6962.proof(old, data[:size])


@pytest.mark.django_db
def test_a_level_two_tile_is_stored_when_65536_events_are_in() -> None:
    """Tile level 2 (the hash of 65,536 leaves) completes in the middle of a batch."""
    with transaction.atomic():
        for start in range(0, 66_000, 6000):
            count = min(6000, 66_000 - start)
            record_many([NewEvent("t.e", "t", str(start + i)) for i in range(count)], actor=ACTOR)
    hashes = leaf_hashes()
    assert stored()[(2, 0)] == merkle.root_of(hashes[:65_536])
    assert TreeHash.objects.filter(level=1).count() == 66_000 // 256
    assert tlog.root(66_000) == merkle.root_of(hashes)
    proof = tlog.inclusion_proof(65_535, 66_000)
    merkle.verify_inclusion(hashes[65_535], 65_535, 66_000, proof, merkle.root_of(hashes))


@pytest.mark.django_db
def test_a_rolled_back_transaction_leaves_no_tree_hash() -> None:
    record_batches([250])
    with pytest.raises(RuntimeError), transaction.atomic():
        record_many([NewEvent("t.e", "t", str(i)) for i in range(10)], actor=ACTOR)
        assert TreeHash.objects.count() == 1
        raise RuntimeError("roll back")
    assert TreeHash.objects.count() == 0
    record_batches([10], start=250)
    assert tlog_check.check().ok and TreeHash.objects.count() == 1


@pytest.mark.django_db
def test_tiles_and_entry_bundles_read_back() -> None:
    record_batches([300])
    hashes = leaf_hashes()
    assert tlog.read_tile(Tile(0, 0)) == b"".join(hashes[:256])
    assert tlog.read_tile(Tile(0, 1, 44)) == b"".join(hashes[256:300])
    assert tlog.read_tile(Tile(1, 0, 1)) == merkle.root_of(hashes[:256])
    bundle = tlog.read_entry_bundle(Tile(merkle.ENTRIES, 1, 44))
    entries, position = [], 0
    while position < len(bundle):
        length = int.from_bytes(bundle[position : position + 2], "big")
        entries.append(bundle[position + 2 : position + 2 + length])
        position += 2 + length
    assert [merkle.leaf_hash(entry) for entry in entries] == hashes[256:300]
    with pytest.raises(LedgerError):
        tlog.read_tile(Tile(0, 1, 45))


@pytest.mark.django_db
def test_tree_hashes_cannot_be_changed() -> None:
    record_batches([256])
    row = TreeHash.objects.get()
    row.hash = b"\x00" * 32
    with pytest.raises(LedgerError):
        row.save()
    with pytest.raises(LedgerError):
        row.delete()
    with pytest.raises(LedgerError):
        TreeHash.objects.update(hash=b"\x00" * 32)
    with pytest.raises(LedgerError):
        TreeHash.objects.all().delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE exchange_treehash SET hash = %s", [b"\x00" * 32])
    assert tlog_check.check().ok


@pytest.mark.django_db
def test_check_finds_changed_and_missing_hashes_and_repairs_only_missing_ones() -> None:
    record_batches([800])
    rewrite(
        ("UPDATE exchange_treehash SET hash = %s WHERE position = 1", [b"\x01" * 32]),
        ("DELETE FROM exchange_treehash WHERE position = 2", []),
        table="exchange_treehash",
    )
    result = tlog_check.check()
    assert (result.wrong, result.missing, result.extra) == ([(1, 1)], [(1, 2)], [])
    assert not result.ok
    repaired = tlog_check.check(repair=True)
    assert repaired.missing == [(1, 2)]
    assert tlog_check.check().wrong == [(1, 1)] and tlog_check.check().missing == []


@pytest.mark.django_db
def test_the_migration_backfills_a_log_recorded_before_the_tree() -> None:
    record_batches([700])
    expected = stored()
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE exchange_treehash" if connection.vendor == "postgresql" else "DELETE FROM exchange_treehash"
        )
    assert TreeHash.objects.count() == 0
    migration = importlib.import_module("exchange.migrations.0008_tree_hashes")
    migration.backfill(apps, None)
    assert stored() == expected


@pytest.mark.django_db
def test_an_event_too_large_for_an_entry_bundle_is_refused() -> None:
    with pytest.raises(LedgerError, match="leaf data"), transaction.atomic():
        record("t.huge", actor=ACTOR, subject_type="t", subject_id="1", data={"blob": "x" * 70_000})
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_auditlog_check_command_reports_and_repairs() -> None:
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    record_batches([600])
    out = StringIO()
    call_command("auditlog_check", stdout=out)
    assert "events: 600, tree hashes recomputed: 2" in out.getvalue() and out.getvalue().endswith("ok\n")
    rewrite(("DELETE FROM exchange_treehash WHERE position = 1", []), table="exchange_treehash")
    out = StringIO()
    call_command("auditlog_check", stdout=out)
    assert "missing (run with --repair" in out.getvalue()
    call_command("auditlog_check", "--repair", stdout=StringIO())
    assert tlog_check.check().ok
    rewrite(("UPDATE exchange_event SET data = %s WHERE seq = 5", ['{"n": 99}']), table="exchange_event")
    with pytest.raises(CommandError, match="leaf hash: 5"):
        call_command("auditlog_check", stdout=StringIO())


@pytest.mark.django_db
def test_a_proof_reads_every_full_tile_above_the_leaves_once_and_stays_right() -> None:
    """The node cache keeps the full tiles above the leaves whole, all of a level read in one
    query by the first proof that needs one; later proofs read only their own leaves' tile.
    A cache that no longer matches the database changes no answer."""
    size = 2 * 65_536 + 300
    with transaction.atomic():
        for start in range(0, size, 10_000):
            count = min(10_000, size - start)
            record_many([NewEvent("t.e", "t", str(start + i)) for i in range(count)], actor=ACTOR)
    hashes = leaf_hashes()
    root = merkle.root_of(hashes)
    tlog.node_cache.clear()

    def proof_of(index: int) -> tuple[list[bytes], int]:
        with CaptureQueriesContext(connection) as queries:
            leaf, proof = tlog.verified_inclusion_proof_of(index, size, root)
        assert merkle.leaf_hash(leaf) == hashes[index]
        merkle.verify_inclusion(hashes[index], index, size, proof, root)
        # Statements that read (on PostgreSQL a test's transaction adds savepoints around them).
        return proof, sum(query["sql"].startswith("SELECT") for query in queries.captured_queries)

    first, queries = proof_of(70_000)
    # Its leaf and tile; both full level-1 tiles, in one query; the right edge of the tree
    # (the partial tiles of levels 2, 1 and 0), which later proofs of this size share.
    assert queries == 5
    assert len(tlog.node_cache.tiles) == 2
    # The two entries of the partial level-2 tile, asked for once each.
    assert proof_of(5)[1] == 2 and proof_of(size - 1)[1] == 2
    for index in (65_535, 65_536 + 256 * 17, 300, 131_000):
        assert proof_of(index)[1] == 1  # only its leaf and tile
    for key, levels in tlog.node_cache.tiles.items():  # every kept tile now says something else
        tlog.node_cache.tiles[key] = [bytes(len(level)) for level in levels]
    again, _queries = proof_of(70_000)
    assert again == first == merkle.inclusion_proof(70_000, size, merkle.TileSource(size, tlog.read_tile))
    # A tree hash missing in one tile: proofs under the other still come, from their own tiles.
    rewrite(("DELETE FROM exchange_treehash WHERE level = 1 AND position = 300", []), table="exchange_treehash")
    tlog.node_cache.clear()
    assert proof_of(5)[0] == merkle.inclusion_proof(5, size, merkle.TileSource(size, tlog.read_tile))
    with pytest.raises(LedgerError, match="missing entries"):
        proof_of(70_000)


@pytest.mark.django_db
def test_leaf_tiles_are_checked_a_missing_one_is_read_from_the_events_and_repair_stores_it() -> None:
    record_batches([900])
    tiles = {tile: tlog.read_tile(Tile(0, tile, 256)) for tile in range(3)}
    hashes = leaf_hashes()
    assert tiles == {tile: b"".join(hashes[tile * 256 : (tile + 1) * 256]) for tile in range(3)}
    with pytest.raises(LedgerError, match="leaf tiles are append-only"):
        LeafTile.objects.update(hashes=b"")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE exchange_leaftile SET hashes = %s", [bytes(8192)])
    rewrite(
        ("UPDATE exchange_leaftile SET hashes = %s WHERE position = 0", [bytes(8192)]),
        ("DELETE FROM exchange_leaftile WHERE position = 2", []),
        table="exchange_leaftile",
    )
    assert tlog.read_tile(Tile(0, 2, 256)) == tiles[2]  # not stored: read from the events
    # A proof from the damaged tile does not verify against the signed root: it is computed
    # again from the events, and the proof served is right.
    root = merkle.root_of(hashes)
    tlog.node_cache.clear()
    leaf, proof = tlog.verified_inclusion_proof_of(9, 900, root)
    merkle.verify_inclusion(merkle.leaf_hash(leaf), 9, 900, proof, root)
    leaf, _tile, read = tlog.leaf_and_tile(2 * 256 + 7, 900)
    assert read == tiles[2] and merkle.leaf_hash(leaf) == hashes[2 * 256 + 7]
    result = tlog_check.check()
    assert (result.tiles_wrong, result.tiles_missing, result.tiles_extra) == ([0], [2], [])
    assert not result.ok and result.wrong == result.missing == []
    repaired = tlog_check.check(repair=True)
    assert repaired.tiles_missing == [2] and repaired.tiles_wrong == [0]  # a wrong one is never overwritten
    after = tlog_check.check()
    assert (after.tiles_wrong, after.tiles_missing) == ([0], [])
    assert bytes(LeafTile.objects.get(position=2).hashes) == tiles[2]
