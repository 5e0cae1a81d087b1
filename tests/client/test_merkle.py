"""The Merkle tree module against an RFC 6962 implementation written from the RFC's text.

`tests/rfc6962.py` follows section 2.1 literally: MTH, PATH and PROOF are the recursive
definitions, and its verifiers walk the same recursion to recompute the roots a proof
leads to. The module under test builds proofs from ranges of perfect subtrees and
verifies them with RFC 9162's iterative algorithms, so the two share no code beyond
SHA-256. Property tests check every size and index hypothesis picks; the published
tree heads of the Certificate Transparency test leaves pin both to the same numbers.
"""

from __future__ import annotations

import pytest
from hashexchange_client import merkle
from hashexchange_client.merkle import (
    EMPTY_ROOT,
    Node,
    ProofError,
    Tile,
    TileSource,
    completed_tiles,
    consistency_proof,
    encode_index,
    inclusion_proof,
    memory_source,
    parse_tile_path,
    range_nodes,
    root_of,
    tile_width,
    tiles_for_size,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.rfc6962 import Rfc6962, sha256


def leaves(n: int) -> list[bytes]:
    return [f"event {i}".encode() for i in range(n)]


def hashes_of(data: list[bytes]) -> list[bytes]:
    return [merkle.leaf_hash(item) for item in data]


# The published Certificate Transparency test leaves and the RFC 6962 roots of their prefixes.
CT_LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATHS = {
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}  # fmt: skip


def test_roots_of_the_ct_test_leaves_are_the_published_ones() -> None:
    hashes = hashes_of(CT_LEAVES)
    for size, expected in enumerate(CT_ROOTS):
        assert root_of(hashes[:size]).hex() == expected
        assert tree_root(size, memory_source(hashes)).hex() == expected
        assert Rfc6962.mth(CT_LEAVES[:size]).hex() == expected
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]


def test_paths_of_the_ct_test_leaves_are_the_published_ones() -> None:
    hashes = hashes_of(CT_LEAVES)
    for (index, size), expected in CT_PATHS.items():
        assert [h.hex() for h in inclusion_proof(index, size, memory_source(hashes))] == expected
        verify_inclusion(hashes[index], index, size, [bytes.fromhex(h) for h in expected], bytes.fromhex(CT_ROOTS[8]))


sizes = st.integers(min_value=1, max_value=300)


@given(sizes, st.data())
def test_inclusion_proofs_are_rfc_paths_and_verify(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    d = leaves(size)
    hashes = hashes_of(d)
    proof = inclusion_proof(index, size, memory_source(hashes))
    root = Rfc6962.mth(d)
    assert proof == Rfc6962.path(index, d)
    assert root_of(hashes) == root
    verify_inclusion(hashes[index], index, size, proof, root)
    assert Rfc6962.inclusion_holds(hashes[index], index, size, proof, root)


@given(sizes, st.data())
def test_consistency_proofs_are_rfc_proofs_and_verify(size: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(min_value=0, max_value=size))
    d = leaves(size)
    hashes = hashes_of(d)
    proof = consistency_proof(old, size, memory_source(hashes))
    old_root, new_root = Rfc6962.mth(d[:old]), Rfc6962.mth(d)
    if 0 < old < size:
        assert proof == Rfc6962.proof(old, d)
    else:
        assert proof == []
    verify_consistency(old, size, old_root, new_root, proof)
    assert Rfc6962.consistency_holds(old, size, proof, old_root, new_root)


@given(sizes, st.data())
def test_an_altered_inclusion_proof_fails_both_verifiers(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    hashes = hashes_of(leaves(size))
    proof = inclusion_proof(index, size, memory_source(hashes))
    root = root_of(hashes)
    wrong = data.draw(
        st.sampled_from(["flip", "index", "size", "drop", "extra", "leaf", "root"] if proof else ["index", "extra"])
    )
    leaf, at, n, path, expected = hashes[index], index, size, list(proof), root
    if wrong == "flip":
        position = data.draw(st.integers(min_value=0, max_value=len(path) - 1))
        path[position] = bytes([path[position][0] ^ 1]) + path[position][1:]
    elif wrong == "index":
        at = data.draw(st.integers(min_value=0, max_value=size).filter(lambda i: i != index))
        assume(at >= size or hashes[at] != leaf)
    elif wrong == "size":
        # Against the true root of that other size: a (size, root) pair comes from a signed
        # checkpoint, so a proof only has to fail for the root that goes with its size.
        n = data.draw(st.integers(min_value=index + 1, max_value=size + 300).filter(lambda s: s != size))
        expected = root_of(hashes_of(leaves(n)))
    elif wrong == "drop":
        path.pop(data.draw(st.integers(min_value=0, max_value=len(path) - 1)))
    elif wrong == "extra":
        path.append(sha256(b"extra"))
    elif wrong == "leaf":
        leaf = sha256(leaf)
    else:
        expected = sha256(root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, at, n, path, expected)
    assert not (at < n and Rfc6962.inclusion_holds(leaf, at, n, path, expected))


@given(st.integers(min_value=2, max_value=300), st.data())
def test_an_altered_consistency_proof_fails_both_verifiers(size: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(min_value=1, max_value=size - 1))
    d = leaves(size)
    hashes = hashes_of(d)
    proof = consistency_proof(old, size, memory_source(hashes))
    old_root, new_root = root_of(hashes[:old]), root_of(hashes)
    wrong = data.draw(st.sampled_from(["flip", "old_size", "new_size", "drop", "extra", "old_root", "new_root"]))
    m, n, path, a, b = old, size, list(proof), old_root, new_root
    if wrong == "flip":
        position = data.draw(st.integers(min_value=0, max_value=len(path) - 1))
        path[position] = bytes([path[position][0] ^ 1]) + path[position][1:]
    elif wrong == "old_size":
        m = data.draw(st.integers(min_value=1, max_value=size).filter(lambda s: s != old))
        a = root_of(hashes[:m])
    elif wrong == "new_size":
        n = data.draw(st.integers(min_value=old, max_value=size + 300).filter(lambda s: s != size))
        b = root_of(hashes_of(leaves(n)))
    elif wrong == "drop":
        path.pop(data.draw(st.integers(min_value=0, max_value=len(path) - 1)))
    elif wrong == "extra":
        path.append(sha256(b"extra"))
    elif wrong == "old_root":
        a = sha256(old_root)
    else:
        b = sha256(new_root)
    with pytest.raises(ProofError):
        verify_consistency(m, n, a, b, path)
    assert not Rfc6962.consistency_holds(m, n, path, a, b)


@given(st.integers(min_value=0, max_value=600))
def test_a_compact_range_keeps_the_root_as_leaves_are_appended(size: int) -> None:
    hashes = hashes_of(leaves(size))
    compact = merkle.CompactRange()
    for leaf in hashes:
        compact.append(leaf)
    assert compact.root() == root_of(hashes) and compact.size == size
    resumed = merkle.CompactRange(compact.size, compact.hashes)
    resumed.append(sha256(b"next"))
    assert resumed.root() == root_of([*hashes, sha256(b"next")])


def test_consistency_edges() -> None:
    hashes = hashes_of(leaves(5))
    root = root_of(hashes)
    verify_consistency(0, 5, EMPTY_ROOT, root, [])
    verify_consistency(5, 5, root, root, [])
    with pytest.raises(ProofError, match="same tree size"):
        verify_consistency(5, 5, root, EMPTY_ROOT, [])
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 5, EMPTY_ROOT, root, [root])
    with pytest.raises(ProofError, match="cannot extend"):
        verify_consistency(6, 5, root, root, [])
    with pytest.raises(ProofError, match="cannot be empty"):
        verify_consistency(3, 5, root_of(hashes[:3]), root, [])
    with pytest.raises(ProofError, match="32 bytes"):
        verify_inclusion(b"short", 0, 5, [], root)
    with pytest.raises(ProofError, match="not in a tree"):
        inclusion_proof(5, 5, memory_source(hashes))


@given(st.integers(min_value=0, max_value=2**40), st.integers(min_value=0, max_value=2**20))
def test_range_nodes_cover_the_range_with_perfect_aligned_subtrees(start: int, length: int) -> None:
    nodes = range_nodes(start, start + length)
    position = start
    for node in nodes:
        assert node.start == position
        position = node.end
    assert position == start + length
    assert len(nodes) <= 2 * 64


# Tiles ---------------------------------------------------------------------------------------


def test_tile_index_encoding_is_tlog_tiles() -> None:
    assert encode_index(1234067) == "x001/x234/067"
    assert encode_index(0) == "000"
    assert encode_index(999) == "999"
    assert encode_index(1000) == "x001/000"
    assert Tile(0, 1234067).path() == "tile/0/x001/x234/067"
    assert Tile(2, 5, 17).path() == "tile/2/005.p/17"
    assert Tile(merkle.ENTRIES, 7, 3).path() == "tile/entries/007.p/3"
    assert parse_tile_path("tile/0/x001/x234/067") == Tile(0, 1234067, 256)
    assert parse_tile_path("tile/entries/007.p/3") == Tile(merkle.ENTRIES, 7, 3)


@pytest.mark.parametrize(
    "path",
    ["tile/0/1234", "tile/0/01", "tile/0/x000/001", "tile/00/000", "tile/64/000", "tile/0/000.p/0",
     "tile/0/000.p/256", "tile/0/000.p/012", "tile/-1/000", "tile/0/x1/000", "tile/0/000/"],
)  # fmt: skip
def test_tile_paths_that_are_not_tlog_tiles_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        parse_tile_path(path)


@given(st.integers(min_value=0, max_value=2**63), st.integers(min_value=0, max_value=63),
       st.integers(min_value=1, max_value=256))  # fmt: skip
def test_tile_paths_round_trip(index: int, level: int, width: int) -> None:
    tile = Tile(level, index, width)
    assert parse_tile_path(tile.path()) == tile


def test_tiles_of_a_tree_of_70000_are_those_the_spec_lists() -> None:
    level0 = list(tiles_for_size(70_000, 0))
    assert sum(t.width == 256 for t in level0) == 273 and level0[-1].width == 112 and len(level0) == 274
    assert [t.width for t in tiles_for_size(70_000, 1)] == [256, 17]
    assert [t.width for t in tiles_for_size(70_000, 2)] == [1]
    assert list(tiles_for_size(70_000, 3)) == []
    assert [t.width for t in tiles_for_size(256, 1)] == [1]
    assert tile_width(1, 1, 70_000) == 17 and tile_width(1, 2, 70_000) == 0


@given(st.lists(st.integers(min_value=0, max_value=300_000), min_size=1, max_size=6))
def test_growing_in_any_steps_completes_each_full_tile_once(steps: list[int]) -> None:
    sizes_ = sorted(steps)
    seen: list[tuple[int, int]] = []
    previous = 0
    for size in sizes_:
        seen += list(completed_tiles(previous, size))
        previous = size
    full = [(t.level, t.index) for level in range(4) for t in tiles_for_size(previous, level) if t.width == 256]
    assert sorted(seen) == sorted(full)
    assert len(seen) == len(set(seen))


def tiles_of(hashes: list[bytes]) -> dict[tuple[int, int], list[bytes]]:
    """Every tile (full and partial) of a tree held in memory, built level by level."""
    tiles, level_hashes, level = {}, hashes, 0
    while level_hashes:
        for start in range(0, len(level_hashes), 256):
            tiles[(level, start // 256)] = level_hashes[start : start + 256]
        level_hashes = [merkle.perfect_root(level_hashes[i : i + 256]) for i in range(0, len(level_hashes) - 255, 256)]
        level += 1
    return tiles


def test_proofs_from_tiles_equal_proofs_from_the_leaves() -> None:
    """Across tile boundaries and tile levels (70,000 leaves: three tile levels)."""
    hashes = [sha256(i.to_bytes(4, "big")) for i in range(70_000)]
    tiles = tiles_of(hashes)
    reads: list[Tile] = []

    def read_tile(tile: Tile) -> bytes:
        reads.append(tile)
        return b"".join(tiles[(tile.level, tile.index)][: tile.width])

    for size in (1, 255, 256, 257, 65_535, 65_536, 65_537, 70_000):
        reads.clear()
        source = TileSource(size, read_tile)
        reference = memory_source(hashes[:size])
        assert tree_root(size, source) == root_of(hashes[:size])
        for index in {0, size // 2, size - 1, min(size - 1, 300)}:
            assert inclusion_proof(index, size, source) == inclusion_proof(index, size, reference)
        for old in {1, size // 3, size - 1, min(size, 65_536)}:
            assert consistency_proof(old, size, source) == consistency_proof(old, size, reference)
        # Each tile is read once per source, and a proof needs few of them.
        assert len(reads) == len(set(reads)) <= 12


def test_tile_hashes_of_a_stream_are_the_tiles_above_level_0() -> None:
    hashes = [sha256(i.to_bytes(4, "big")) for i in range(70_000)]
    tiles = tiles_of(hashes)
    streamed = {}
    for level, index, value in merkle.tile_hashes(iter(hashes)):
        streamed.setdefault((level, index // 256), []).append(value)
        assert index % 256 == len(streamed[(level, index // 256)]) - 1
    assert streamed == {key: value for key, value in tiles.items() if key[0] >= 1}


def test_a_node_lies_in_one_tile() -> None:
    assert merkle.tile_of(Node(0, 300)) == (0, 1, 44, 1)
    assert merkle.tile_of(Node(3, 33)) == (0, 1, 8, 8)
    assert merkle.tile_of(Node(8, 5)) == (1, 0, 5, 1)
    assert merkle.tile_of(Node(17, 3)) == (2, 0, 6, 2)


def test_a_full_tiles_subtrees_are_the_subtrees_of_its_leaves() -> None:
    """What a server keeps of a tile it read (core.tlog.NodeCache): every perfect subtree of
    it, each the root of exactly the leaves below it; a partial tile gives none."""
    hashes = [sha256(i.to_bytes(4, "big")) for i in range(70_000)]
    tiles = tiles_of(hashes)
    source = TileSource(70_000, lambda tile: b"".join(tiles[(tile.level, tile.index)][: tile.width]))
    reference = memory_source(hashes)
    for tile_level, tile_index in ((0, 0), (0, 17), (1, 0)):
        nodes = source.subtree_nodes(tile_level, tile_index)
        assert len(nodes) == 511
        assert nodes == dict(reference(list(nodes)))
        assert {node.level for node in nodes} == set(range(8 * tile_level, 8 * tile_level + 9))
    assert source.subtree_nodes(1, 1) == {}  # 70,000 leaves: 273 level-8 nodes, the second tile partial
    assert source.subtree_nodes(0, 273) == {}
