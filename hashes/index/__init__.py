"""The matching index: exact Hamming-radius search over one signal type's hashes.

Pure (no Django): it knows hash ids and codes, never statuses, programs or members;
hashes/matching.py keeps it fresh from the event log and filters its answers.

An index is a memory-mapped snapshot (shared by every process of the host, see
snapshot.py) plus a small in-memory tail of hashes added since. Queries go to both: the
snapshot by multi-index hashing in the compiled kernel, the tail by a scan. The set only
grows: a withdrawn hash stays in the index and is filtered out at query time, so a
withdrawal takes effect at once and a hash that comes back needs no update.

Codes are the raw bytes of the hex value read as little-endian uint64 words; any fixed
byte order gives the same Hamming distances, so queries just have to use the same one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import kernel
from .kernel import DEFAULT_BRUTE_DIV, NATIVE
from .snapshot import Snapshot, SnapshotError, SnapshotStore, mapping_stats, open_snapshot, write_snapshot

__all__ = [
    "NATIVE",
    "HammingIndex",
    "Matches",
    "Snapshot",
    "SnapshotError",
    "SnapshotStore",
    "brute_force",
    "codes_from_hex",
    "open_snapshot",
    "mapping_stats",
    "write_snapshot",
]


def codes_from_hex(values: Sequence[str], bits: int) -> np.ndarray:
    """Validated lowercase hex values of `bits` bits → an (n, bits/64) uint64 array."""
    words = bits // 64
    if not values:
        return np.empty((0, words), np.uint64)
    raw = bytes.fromhex("".join(values))
    if len(raw) != len(values) * words * 8:
        raise ValueError(f"every value must be {bits // 4} hex digits")
    return np.frombuffer(raw, dtype="<u8").reshape(len(values), words).astype(np.uint64)


def brute_force(codes: np.ndarray, queries: np.ndarray, radius: int) -> list[list[tuple[int, int]]]:
    """The reference answer: (row, distance) of every code within `radius` of each query.

    Plain numpy, no kernel: tests and the benchmark check the index against it."""
    answers = []
    for query in np.asarray(queries, dtype=np.uint64):
        distances = np.bitwise_count(codes ^ query).sum(axis=1) if len(codes) else np.empty(0, int)
        rows = np.flatnonzero(distances <= radius)
        answers.append([(int(row), int(distances[row])) for row in rows])
    return answers


@dataclass(frozen=True)
class Matches:
    """Answers to a batch: parallel arrays of (query number, hash id, distance), ordered by
    query then distance, plus what each query cost (for the benchmark and logs)."""

    query: np.ndarray
    ids: np.ndarray
    distances: np.ndarray
    candidates: np.ndarray
    brute: np.ndarray

    def per_query(self, count: int) -> list[list[tuple[int, int]]]:
        """[(hash id, distance), ...] for each of the `count` queries."""
        answers: list[list[tuple[int, int]]] = [[] for _ in range(count)]
        for q, hash_id, distance in zip(self.query.tolist(), self.ids.tolist(), self.distances.tolist(), strict=True):
            answers[q].append((hash_id, distance))
        return answers


class HammingIndex:
    """The hashes of one signal type: a snapshot (or none) plus an in-memory tail.

    Thread-safe for concurrent searches during an add or a snapshot switch: writers
    replace whole arrays under a lock, and a search works on the arrays it started with.
    """

    TAIL_INITIAL = 1024

    def __init__(self, bits: int, snapshot: Snapshot | None = None, *, brute_div: int = DEFAULT_BRUTE_DIV) -> None:
        if bits % 64:
            raise ValueError("codes are whole 64-bit words")
        self.bits = bits
        self.words = bits // 64
        self.brute_div = brute_div
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._tail_ids = np.empty(0, np.int64)
        self._tail_codes = np.empty((self.TAIL_INITIAL, self.words), np.uint64)
        self._tail_len = 0
        self._tail_set: set[int] = set()
        self._seq = 0
        if snapshot is not None:
            self.use_snapshot(snapshot)

    # State ------------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def seq(self) -> int:
        """Every hash recorded by an event up to this sequence number is in the index."""
        return self._seq

    @seq.setter
    def seq(self, value: int) -> None:
        self._seq = max(self._seq, int(value))

    @property
    def tail_size(self) -> int:
        return self._tail_len

    @property
    def snapshot_size(self) -> int:
        return len(self._snapshot) if self._snapshot is not None else 0

    def __len__(self) -> int:
        return self.snapshot_size + self._tail_len

    def contains(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        found = np.fromiter((int(i) in self._tail_set for i in ids), bool, count=len(ids))
        if self._snapshot is not None:
            found |= self._snapshot.contains(ids)
        return found

    # Writes -----------------------------------------------------------------------------

    def add(self, ids: Sequence[int] | np.ndarray, codes: np.ndarray, *, seq: int | None = None) -> int:
        """Add hashes to the tail (those already in the index are skipped); returns how many
        were new. `seq` advances the watermark once they are in."""
        ids = np.asarray(ids, dtype=np.int64)
        codes = np.asarray(codes, dtype=np.uint64).reshape(len(ids), self.words)
        with self._lock:
            keep = ~self.contains(ids)
            if len(ids):
                # Also drop repeats within the batch, keeping the first.
                _, first = np.unique(ids, return_index=True)
                unique = np.zeros(len(ids), bool)
                unique[first] = True
                keep &= unique
            ids, codes = ids[keep], codes[keep]
            if len(ids):
                end = self._tail_len + len(ids)
                tail_codes = self._tail_codes
                if end > len(tail_codes):
                    tail_codes = np.empty((max(end, 2 * len(tail_codes)), self.words), np.uint64)
                    tail_codes[: self._tail_len] = self._tail_codes[: self._tail_len]
                tail_codes[self._tail_len : end] = codes
                # Searches read only [:tail_len] of the arrays they captured, so writing past
                # the end in place is safe; the ids array is replaced (it is small).
                self._tail_ids = np.concatenate([self._tail_ids, ids])
                self._tail_codes = tail_codes
                self._tail_len = end
                self._tail_set.update(ids.tolist())
            if seq is not None:
                self.seq = seq
            return len(ids)

    def use_snapshot(self, snapshot: Snapshot) -> None:
        """Switch to a (newer) snapshot; tail hashes it holds leave the tail."""
        if snapshot.words != self.words:
            raise ValueError(f"snapshot has {snapshot.words * 64}-bit codes, index {self.bits}-bit")
        with self._lock:
            ids = self._tail_ids
            codes = self._tail_codes[: self._tail_len]
            keep = ~snapshot.contains(ids)
            tail_codes = np.empty((max(self.TAIL_INITIAL, int(keep.sum()) * 2), self.words), np.uint64)
            tail_codes[: int(keep.sum())] = codes[keep]
            self._snapshot = snapshot
            self._tail_ids = ids[keep]
            self._tail_codes = tail_codes
            self._tail_len = len(self._tail_ids)
            self._tail_set = set(self._tail_ids.tolist())
            self.seq = snapshot.seq

    def tail(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, codes) of the tail: what a compaction merges into the next snapshot."""
        with self._lock:
            return self._tail_ids.copy(), self._tail_codes[: self._tail_len].copy()

    # Reads ------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, radius: int) -> Matches:
        """Every hash within `radius` bits of each query (exact), by query then distance."""
        queries = np.ascontiguousarray(np.asarray(queries, dtype=np.uint64).reshape(-1, self.words))
        with self._lock:
            snapshot, tail_len = self._snapshot, self._tail_len
            tail_ids, tail_codes = self._tail_ids, self._tail_codes
        parts = []
        candidates = np.zeros(len(queries), np.uint64)
        brute = np.zeros(len(queries), bool)
        if snapshot is not None and len(snapshot):
            found = kernel.search(
                snapshot.codes, snapshot.offsets, snapshot.postings, queries, radius, brute_div=self.brute_div
            )
            parts.append((found.query, snapshot.ids[found.row], found.dist))
            candidates += found.candidates
            brute |= found.brute
        if tail_len:
            found = kernel.search(tail_codes[:tail_len], None, None, queries, radius)
            parts.append((found.query, tail_ids[found.row], found.dist))
            candidates += found.candidates
        if not parts:
            empty = np.empty(0, np.int64)
            return Matches(empty.astype(np.uint32), empty, empty.astype(np.uint16), candidates, brute)
        query = np.concatenate([p[0] for p in parts]).astype(np.uint32)
        ids = np.concatenate([p[1] for p in parts]).astype(np.int64)
        distances = np.concatenate([p[2] for p in parts]).astype(np.uint16)
        order = np.lexsort((ids, distances, query))
        return Matches(query[order], ids[order], distances[order], candidates, brute)
