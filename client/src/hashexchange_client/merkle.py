"""RFC 6962 Merkle trees: hashes, roots, inclusion and consistency proofs, and tiles.

The exchange's audit log is an RFC 6962 tree whose leaves are the events of its ledger
(leaf i is the event with sequence number i + 1). The server builds the tree and serves
proofs; members and auditors verify them. Both use this module, so that there is one
implementation of the tree to get right (the server already verifies envelopes with the
client's DSSE code for the same reason).

Proofs are built from the hashes of *perfect* subtrees, `Node(level, index)`: the
2**level leaves starting at index * 2**level. A proof element or a root is the hash of
a range of leaves, and every range RFC 6962 asks for is a run of perfect subtrees of
decreasing size, hashed right to left (`range_nodes`, `fold`). So a proof is computed
in two steps: which nodes it needs (pure arithmetic), then their hashes from a *source*
(a callable from a list of nodes to their hashes): the server's source reads its stored
tiles, a client's source fetches tiles over HTTP.

Tiles are those of C2SP tlog-tiles: 256 consecutive hashes at a tile level t (t = 0:
leaf hashes; t >= 1: the hashes of full tiles of the level below, i.e. of perfect
subtrees of 256**t leaves). Node(level, index) lies in one tile, at tile level
level // 8, and is the root of 2**(level % 8) consecutive entries of it.

Verification follows RFC 9162 (section 2.1.3.2 and 2.1.4.2), the iterative form of
RFC 6962's proofs. Nothing here reads the network or a database.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

HASH_SIZE = 32
TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256 hashes per full tile
EMPTY_ROOT = hashlib.sha256(b"").digest()
# A tree of 2**63 leaves has a 63-element proof at most; tlog-witness allows 63 lines.
MAX_PROOF_LENGTH = 63


class ProofError(ValueError):
    """A proof that does not verify, or arguments no proof can exist for; the message says which."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class Node(NamedTuple):
    """A perfect subtree: the 2**level leaves [index * 2**level, (index + 1) * 2**level)."""

    level: int
    index: int

    @property
    def start(self) -> int:
        return self.index << self.level

    @property
    def end(self) -> int:
        return (self.index + 1) << self.level


Source = Callable[[Sequence[Node]], Mapping[Node, bytes]]


def _largest_power_below(n: int) -> int:
    """RFC 6962's k: the largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The maximal perfect subtrees that make up leaves [start, end), left to right.

    For every range RFC 6962 hashes (a whole tree, or the right part of a split), these
    are its subtrees in the RFC's own split order, so `fold` of their hashes is MTH.
    """
    if not 0 <= start <= end:
        raise ValueError(f"not a range of leaves: [{start}, {end})")
    nodes = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        nodes.append(Node(level, start >> level))
        start += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """Hash a run of subtree hashes right to left: H(a, H(b, H(c, d)))."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """The root over a power-of-two number of subtree hashes, pairwise level by level."""
    return perfect_levels(hashes)[-1][0]


def perfect_levels(hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the perfect subtree over a power-of-two number of subtree hashes, from
    `hashes` itself up to the one root: level h holds the roots of its runs of 2**h.

    `node_hash` written out in the loop: a proof hashes a tile's 255 nodes, and the call
    was half of it (docs/benchmarks/auditlog.md).
    """
    if not hashes or len(hashes) & (len(hashes) - 1):
        raise ValueError(f"a perfect subtree has a power-of-two number of children, not {len(hashes)}")
    sha256 = hashlib.sha256
    levels = [list(hashes)]
    level = levels[0]
    while len(level) > 1:
        it = iter(level)
        level = [sha256(b"\x01" + left + right).digest() for left, right in zip(it, it, strict=True)]
        levels.append(level)
    return levels


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes held in memory (small trees, tests, a client's own copy)."""
    return fold([_hash_of(node, leaf_hashes) for node in range_nodes(0, len(leaf_hashes))])


def _hash_of(node: Node, leaf_hashes: Sequence[bytes]) -> bytes:
    return perfect_root(leaf_hashes[node.start : node.end])


def memory_source(leaf_hashes: Sequence[bytes]) -> Source:
    """A source over leaf hashes held in memory (tests and small trees)."""

    def source(nodes: Sequence[Node]) -> dict[Node, bytes]:
        found = {}
        for node in nodes:
            if node.end > len(leaf_hashes):
                raise ProofError(f"no subtree {node} in a tree of {len(leaf_hashes)} leaves")
            found[node] = _hash_of(node, leaf_hashes)
        return found

    return source


class CompactRange:
    """The perfect subtrees that cover leaves [0, size), largest first: all a verifier needs
    to keep to go on appending leaves and compute each root, at most 63 hashes."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError(f"a compact range of {size} leaves has {size.bit_count()} hashes, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        self.hashes.append(leaf)
        self.size += 1
        merges = (self.size & -self.size).bit_length() - 1  # a subtree completes per trailing zero bit
        for _ in range(merges):
            right = self.hashes.pop()
            self.hashes[-1] = node_hash(self.hashes[-1], right)

    def append_subtree(self, root: bytes, count: int) -> None:
        """Append `count` leaves (a power of two, the range's size a multiple of it) by the
        root of their perfect subtree: what appending them one by one would give, with only
        the merges above that subtree left to do."""
        if count < 1 or count & (count - 1) or self.size % count:
            raise ValueError(f"a subtree of {count} leaves cannot be appended to a range of {self.size}")
        self.hashes.append(root)
        self.size += count
        merges = (self.size & -self.size).bit_length() - count.bit_length()
        for _ in range(merges):
            right = self.hashes.pop()
            self.hashes[-1] = node_hash(self.hashes[-1], right)

    def root(self) -> bytes:
        return fold(self.hashes)


# Which ranges a proof is made of ---------------------------------------------------------


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make up PATH(index, D[size]), from the leaf's sibling up."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    ranges = []
    start, end = 0, size
    while end - start > 1:
        k = _largest_power_below(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make up PROOF(old_size, D[new_size]), deepest first.

    Empty when old_size is 0 or equals new_size (tlog-witness sends no proof then).
    """
    if not 0 <= old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to the smaller size {new_size}")
    if old_size in (0, new_size):
        return []
    ranges = []
    start, end, m, whole = 0, new_size, old_size, True
    while True:
        if m == end - start:
            if not whole:
                ranges.append((start, end))
            break
        k = _largest_power_below(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            whole = False
    ranges.reverse()
    return ranges


def _resolve(ranges: Sequence[tuple[int, int]], source: Source) -> list[bytes]:
    per_range = [range_nodes(start, end) for start, end in ranges]
    wanted = list(dict.fromkeys(node for nodes in per_range for node in nodes))
    found = source(wanted) if wanted else {}
    return [fold([found[node] for node in nodes]) for nodes in per_range]


def tree_root(size: int, source: Source) -> bytes:
    """MTH of the first `size` leaves."""
    return _resolve([(0, size)], source)[0] if size else EMPTY_ROOT


def inclusion_proof(index: int, size: int, source: Source) -> list[bytes]:
    """The audit path of leaf `index` in the tree of `size` leaves."""
    return _resolve(inclusion_ranges(index, size), source)


def consistency_proof(old_size: int, new_size: int, source: Source) -> list[bytes]:
    """The proof that the tree of `old_size` leaves is a prefix of the tree of `new_size`."""
    return _resolve(consistency_ranges(old_size, new_size), source)


# Verification ------------------------------------------------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes")


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` leads to from leaf hash `leaf` at `index` (RFC 9162, 2.1.3.2)."""
    _check_hash(leaf, "the leaf hash")
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    if len(proof) > MAX_PROOF_LENGTH:
        raise ProofError(f"a proof has at most {MAX_PROOF_LENGTH} hashes, this one {len(proof)}")
    fn, sn, result = index, size - 1, leaf
    for position, sibling in enumerate(proof):
        _check_hash(sibling, f"proof hash {position}")
        if sn == 0:
            raise ProofError("the proof is longer than the path from this leaf to the root")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the path from this leaf to the root")
    return result


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless `proof` shows leaf hash `leaf` at `index` in the tree with `root`."""
    _check_hash(root, "the root hash")
    if root_from_inclusion(leaf, index, size, proof) != root:
        raise ProofError(f"leaf {index} is not in the tree of size {size} with this root: the proof leads elsewhere")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise ProofError unless `proof` shows the tree (old_size, old_root) is a prefix of
    (new_size, new_root) (RFC 9162, 2.1.4.2; an empty old tree is a prefix of any tree)."""
    _check_hash(old_root, "the old root hash")
    _check_hash(new_root, "the new root hash")
    if not 0 <= old_size <= new_size:
        raise ProofError(f"a tree of size {new_size} cannot extend one of size {old_size}")
    if len(proof) > MAX_PROOF_LENGTH:
        raise ProofError(f"a proof has at most {MAX_PROOF_LENGTH} hashes, this one {len(proof)}")
    for position, item in enumerate(proof):
        _check_hash(item, f"proof hash {position}")
    if old_size == 0:
        if old_root != EMPTY_ROOT:
            raise ProofError("the root of the empty tree is SHA-256 of nothing")
        if proof:
            raise ProofError("the proof from the empty tree is empty")
        return
    if old_size == new_size:
        if proof:
            raise ProofError("the proof between two trees of the same size is empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old_size}")
        return
    if not proof:
        raise ProofError(f"a proof from size {old_size} to {new_size} cannot be empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # the old tree is a perfect subtree: its root starts the walk
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    old_result = new_result = path[0]
    for item in path[1:]:
        if sn == 0:
            raise ProofError("the proof is longer than the two trees need")
        if fn & 1 or fn == sn:
            old_result = node_hash(item, old_result)
            new_result = node_hash(item, new_result)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            new_result = node_hash(new_result, item)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the two trees need")
    if old_result != old_root:
        raise ProofError(f"the proof does not lead to the old root: size {old_size} is not a prefix of this tree")
    if new_result != new_root:
        raise ProofError(f"the proof does not lead to the new root of size {new_size}")


# Tiles (C2SP tlog-tiles) ---------------------------------------------------------------


class Tile(NamedTuple):
    """Tile `index` at tile `level`, `width` hashes wide (256 when full). Level -1: an entry bundle."""

    level: int
    index: int
    width: int = TILE_WIDTH

    @property
    def is_entries(self) -> bool:
        return self.level == ENTRIES

    def path(self) -> str:
        """Its path under the log's prefix: tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]."""
        level = "entries" if self.is_entries else str(self.level)
        partial = f".p/{self.width}" if self.width < TILE_WIDTH else ""
        return f"tile/{level}/{encode_index(self.index)}{partial}"


ENTRIES = -1
_TILE_PATH = re.compile(r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")


def encode_index(index: int) -> str:
    """A tile index as tlog-tiles spells it: 1234067 -> x001/x234/067."""
    if index < 0:
        raise ValueError("a tile index is not negative")
    digits = str(index)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([f"x{group}" for group in groups[:-1]] + [groups[-1]])


def parse_tile_path(path: str) -> Tile:
    """The tile a tlog-tiles path names; ValueError naming what is wrong otherwise."""
    match = _TILE_PATH.fullmatch(path)
    if not match:
        raise ValueError(f"{path!r} is not a tile path: tile/<level>/<index>[.p/<width>], index as x001/x234/067")
    level_text, index_text, width_text = match.groups()
    level = ENTRIES if level_text == "entries" else int(level_text)
    if level > 63:
        raise ValueError(f"tile level {level} is above 63")
    groups = index_text.split("/")
    if len(groups) > 1 and groups[0] == "x000":
        raise ValueError(f"{path!r}: a tile index has no leading zero groups")
    width = int(width_text) if width_text else TILE_WIDTH
    if width_text and width >= TILE_WIDTH:
        raise ValueError(f"{path!r}: a partial tile is 1 to 255 hashes wide")
    return Tile(level, int("".join(group.lstrip("x") for group in groups)), width)


def tile_of(node: Node) -> tuple[int, int, int, int]:
    """(tile level, tile index, first entry, entry count) of the tile entries node hashes."""
    tile_level, height = divmod(node.level, TILE_HEIGHT)
    first = node.index << height
    return tile_level, first >> TILE_HEIGHT, first & (TILE_WIDTH - 1), 1 << height


def tile_width(tile_level: int, tile_index: int, size: int) -> int:
    """How many hashes tile (tile_level, tile_index) holds in a tree of `size` leaves (0: none yet)."""
    entries = size >> (TILE_HEIGHT * tile_level)
    return max(0, min(TILE_WIDTH, entries - tile_index * TILE_WIDTH))


def tiles_for_size(size: int, tile_level: int = 0) -> Iterator[Tile]:
    """Every tile at `tile_level` of a tree of `size` leaves, the last one partial if it is."""
    entries = size >> (TILE_HEIGHT * tile_level)
    for index in range(-(-entries // TILE_WIDTH)):
        yield Tile(tile_level, index, min(TILE_WIDTH, entries - index * TILE_WIDTH))


def completed_tiles(old_size: int, new_size: int) -> Iterator[tuple[int, int]]:
    """The (tile level, tile index) of every tile that becomes full as the tree grows
    from old_size to new_size leaves, lowest level first (each full tile's hash is an
    entry of the level above, so a caller storing them can go in this order)."""
    tile_level = 0
    while True:
        span = TILE_HEIGHT * (tile_level + 1)
        first, last = old_size >> span, new_size >> span
        if last == 0:
            return
        for index in range(first, last):
            yield tile_level, index
        tile_level += 1


def tile_hashes(leaf_hashes: Iterable[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """(tile level, index, hash) of every entry at tile level 1 and above of the tree over
    `leaf_hashes`, in order, each as soon as the full tile below it is complete: what a
    log stores beside its leaf hashes to serve every tile (a rebuild, or a check)."""
    pending: list[list[bytes]] = [[]]
    emitted: list[int] = [0]
    for leaf in leaf_hashes:
        pending[0].append(leaf)
        level = 0
        while len(pending[level]) == TILE_WIDTH:
            root = perfect_root(pending[level])
            pending[level] = []
            if len(pending) == level + 1:
                pending.append([])
                emitted.append(0)
            yield level + 1, emitted[level + 1], root
            emitted[level + 1] += 1
            pending[level + 1].append(root)
            level += 1


def split_hashes(data: bytes) -> list[bytes]:
    """A tile's bytes as its hashes; ValueError when it is not a whole number of them."""
    if len(data) % HASH_SIZE:
        raise ValueError(f"a tile is a whole number of {HASH_SIZE}-byte hashes, not {len(data)} bytes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


class TileSource:
    """A proof source over a tree of `size` leaves whose tiles `read_tile(tile)` returns.

    Each tile is read once, as wide as the tree has it (a full tile, or the rightmost
    partial one), and kept for later proofs over the same size.
    """

    def __init__(self, size: int, read_tile: Callable[[Tile], bytes]) -> None:
        self.size = size
        self.read_tile = read_tile
        self.tiles: dict[tuple[int, int], list[bytes]] = {}
        self.levels: dict[tuple[int, int], list[list[bytes]]] = {}

    def entries(self, tile_level: int, tile_index: int) -> list[bytes]:
        key = (tile_level, tile_index)
        if key not in self.tiles:
            width = tile_width(tile_level, tile_index, self.size)
            if width == 0:
                raise ProofError(f"tile {tile_level}/{tile_index} is beyond a tree of size {self.size}")
            hashes = split_hashes(self.read_tile(Tile(tile_level, tile_index, width)))
            if len(hashes) != width:
                raise ProofError(f"tile {tile_level}/{tile_index} has {len(hashes)} hashes, not {width}")
            self.tiles[key] = hashes
        return self.tiles[key]

    def subtrees(self, tile_level: int, tile_index: int) -> list[list[bytes]] | None:
        """Every perfect subtree of a full tile, level by level (`perfect_levels`), hashed
        once for all the nodes asked of it; None for a partial tile."""
        key = (tile_level, tile_index)
        if key not in self.levels:
            entries = self.entries(tile_level, tile_index)
            if len(entries) != TILE_WIDTH:
                return None
            self.levels[key] = perfect_levels(entries)
        return self.levels[key]

    def subtree_nodes(self, tile_level: int, tile_index: int) -> dict[Node, bytes]:
        """The hashes of every perfect subtree of a full tile, its entries included, by node."""
        levels = self.subtrees(tile_level, tile_index)
        if levels is None:
            return {}
        base = tile_level * TILE_HEIGHT
        return {
            Node(base + height, (tile_index << (TILE_HEIGHT - height)) + i): value
            for height, level in enumerate(levels)
            for i, value in enumerate(level)
        }

    def __call__(self, nodes: Sequence[Node]) -> dict[Node, bytes]:
        found = {}
        # Largest first: a proof's largest sibling in a tile hashes the whole tile once, and
        # the smaller ones are then read from it.
        for node in sorted(nodes, key=lambda node: node.level, reverse=True):
            if node.end > self.size:
                raise ProofError(f"no subtree {node} in a tree of {self.size} leaves")
            tile_level, tile_index, first, count = tile_of(node)
            # A tile's every subtree once a node asks for a quarter of it or more (a proof's
            # siblings in a tile add up to all of it); a small node alone, as it is.
            levels = self.levels.get((tile_level, tile_index))
            if levels is None and count >= TILE_WIDTH // 4:
                levels = self.subtrees(tile_level, tile_index)
            if levels is not None:
                height = count.bit_length() - 1
                found[node] = levels[height][first >> height]
            else:
                found[node] = perfect_root(self.entries(tile_level, tile_index)[first : first + count])
        return found
