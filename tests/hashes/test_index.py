"""The pure matching index: exact against brute force, snapshots, sharing between processes.

No database. The property tests compare every answer with numpy's brute-force scan, for
every radius up to past the PDQ threshold, with the snapshot searched by multi-index
hashing, by the scan fallback, and through the in-memory tail.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashes.index import (
    HammingIndex,
    SnapshotError,
    SnapshotStore,
    brute_force,
    codes_from_hex,
    kernel,
    mapping_stats,
    open_snapshot,
    write_snapshot,
)

ROOT = Path(__file__).resolve().parents[2]


def flip(code: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """A copy of `code` with the given bit positions flipped."""
    out = code.copy()
    for bit in bits:
        out[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return out


def planted(rng: np.random.Generator, codes: np.ndarray, count: int, max_distance: int) -> np.ndarray:
    """Queries at known distances 0..max_distance from stored codes."""
    width = codes.shape[1] * 64
    queries = []
    for _ in range(count):
        source = codes[rng.integers(0, len(codes))]
        distance = int(rng.integers(0, min(max_distance, width) + 1))
        queries.append(flip(source, rng.choice(width, distance, replace=False)))
    return np.array(queries, dtype=np.uint64).reshape(count, codes.shape[1])


def clustered(rng: np.random.Generator, n: int, words: int, centres: int, spread: int) -> np.ndarray:
    """Skewed data: families of near-duplicates around a few centres."""
    width = words * 64
    centre_codes = rng.integers(0, 2**64, size=(centres, words), dtype=np.uint64)
    rows = []
    for i in range(n):
        distance = int(rng.integers(0, spread + 1))
        rows.append(flip(centre_codes[i % centres], rng.choice(width, distance, replace=False)))
    return np.array(rows, dtype=np.uint64)


def expected(ids: np.ndarray, codes: np.ndarray, queries: np.ndarray, radius: int) -> list[list[tuple[int, int]]]:
    return [sorted((int(ids[row]), d) for row, d in answer) for answer in brute_force(codes, queries, radius)]


def answers(index: HammingIndex, queries: np.ndarray, radius: int) -> list[list[tuple[int, int]]]:
    return [sorted(a) for a in index.search(queries, radius).per_query(len(queries))]


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "index")


def snapshot_of(store: SnapshotStore, ids: np.ndarray, codes: np.ndarray, seq: int = 1, signal_type: str = "pdq"):  # noqa: ANN201
    path = write_snapshot(store.new_path(signal_type, seq), signal_type=signal_type, ids=ids, codes=codes, seq=seq)
    return open_snapshot(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    words=st.sampled_from([1, 4]),
    n=st.integers(0, 400),
    skewed=st.booleans(),
    brute_div=st.sampled_from([0, 10, 10**9]),
)
def test_snapshot_search_equals_brute_force_at_every_radius(
    tmp_path: Path, seed: int, words: int, n: int, skewed: bool, brute_div: int
) -> None:
    rng = np.random.default_rng(seed)
    if skewed and n:
        codes = clustered(rng, n, words, centres=max(1, n // 50), spread=24 if words == 4 else 8)
    else:
        codes = rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)
    ids = rng.permutation(np.arange(1, 10 * n + 2))[:n].astype(np.int64)
    store = SnapshotStore(tmp_path / f"s{seed}-{words}-{n}-{skewed}-{brute_div}")
    snapshot = snapshot_of(store, ids, codes)
    index = HammingIndex(words * 64, snapshot, brute_div=brute_div)
    queries = (
        planted(rng, codes, 12, 48 if words == 4 else 20)
        if n
        else rng.integers(0, 2**64, size=(3, words), dtype=np.uint64)
    )
    for radius in range(0, (72 if words == 4 else 24) + 1, 1 if words == 1 else 3):
        assert answers(index, queries, radius) == expected(ids, codes, queries, radius), radius


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), split=st.floats(0, 1), radius=st.integers(0, 40))
def test_snapshot_plus_tail_equals_brute_force(seed: int, split: float, radius: int, tmp_path_factory) -> None:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    n = 300
    codes = rng.integers(0, 2**64, size=(n, 4), dtype=np.uint64)
    ids = np.arange(1, n + 1, dtype=np.int64)
    cut = int(n * split)
    store = SnapshotStore(tmp_path_factory.mktemp("tail"))
    index = HammingIndex(256, snapshot_of(store, ids[:cut], codes[:cut]))
    index.add(ids[cut:], codes[cut:], seq=9)
    queries = planted(rng, codes, 20, 45)
    assert answers(index, queries, radius) == expected(ids, codes, queries, radius)


def test_pdq_threshold_planted_at_scale(store: SnapshotStore) -> None:
    """50,000 random hashes: planted near-duplicates at 0..31 are found, at 32..40 are not."""
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 2**64, size=(50_000, 4), dtype=np.uint64)
    ids = np.arange(1, len(codes) + 1, dtype=np.int64)
    index = HammingIndex(256, snapshot_of(store, ids, codes))
    targets = rng.integers(0, len(codes), 41)
    queries = np.array([flip(codes[t], rng.choice(256, d, replace=False)) for d, t in enumerate(targets)])
    found = index.search(queries, 31).per_query(len(queries))
    for distance, (target, answer) in enumerate(zip(targets, found, strict=True)):
        if distance <= 31:
            assert answer == [(int(ids[target]), distance)]
        else:
            assert answer == []


def test_no_answer_is_reported_twice_on_near_duplicate_families(store: SnapshotStore) -> None:
    """A code close to the query in many chunks is probed many times, but reported once."""
    rng = np.random.default_rng(3)
    codes = clustered(rng, 2_000, 4, centres=4, spread=10)
    ids = np.arange(1, len(codes) + 1, dtype=np.int64)
    index = HammingIndex(256, snapshot_of(store, ids, codes), brute_div=0)
    queries = codes[:8]
    matches = index.search(queries, 31)
    pairs = list(zip(matches.query.tolist(), matches.ids.tolist(), strict=True))
    assert len(pairs) == len(set(pairs))
    assert answers(index, queries, 31) == expected(ids, codes, queries, 31)


def test_a_hot_bucket_falls_back_to_a_scan(store: SnapshotStore) -> None:
    """When the probed buckets hold most rows, the planner scans instead (same answer)."""
    rng = np.random.default_rng(5)
    codes = clustered(rng, 3_000, 4, centres=1, spread=6)
    ids = np.arange(1, len(codes) + 1, dtype=np.int64)
    index = HammingIndex(256, snapshot_of(store, ids, codes))
    matches = index.search(codes[:2], 31)
    assert matches.brute.all()
    assert answers(index, codes[:2], 31) == expected(ids, codes, codes[:2], 31)


def test_results_are_ordered_by_query_then_distance(store: SnapshotStore) -> None:
    rng = np.random.default_rng(11)
    codes = clustered(rng, 500, 4, centres=5, spread=20)
    index = HammingIndex(256, snapshot_of(store, np.arange(1, 501), codes))
    matches = index.search(codes[:5], 31)
    keys = list(zip(matches.query.tolist(), matches.distances.tolist(), matches.ids.tolist(), strict=True))
    assert keys == sorted(keys)


def test_add_skips_hashes_already_present_and_moves_the_watermark(store: SnapshotStore) -> None:
    codes = np.arange(40, dtype=np.uint64).reshape(10, 4)
    index = HammingIndex(256, snapshot_of(store, np.arange(1, 6), codes[:5], seq=4))
    assert index.seq == 4
    assert index.add(np.arange(4, 11), codes[3:], seq=12) == 5  # 4 and 5 are in the snapshot
    assert index.add([10, 10, 11], codes[[9, 9, 0]], seq=11) == 1
    assert (len(index), index.tail_size, index.seq) == (11, 6, 12)
    assert index.contains([1, 6, 11, 12]).tolist() == [True, True, True, False]


def test_switching_snapshots_drops_the_tail_they_cover(store: SnapshotStore) -> None:
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 2**64, size=(100, 4), dtype=np.uint64)
    ids = np.arange(1, 101, dtype=np.int64)
    index = HammingIndex(256, snapshot_of(store, ids[:50], codes[:50], seq=10))
    index.add(ids[50:], codes[50:], seq=20)
    tail_ids, tail_codes = index.tail()
    merged = snapshot_of(store, ids[:80], codes[:80], seq=15)
    index.use_snapshot(merged)
    assert (index.snapshot_size, index.tail_size, index.seq) == (80, 20, 20)
    assert answers(index, codes, 0) == [[(i, 0)] for i in ids.tolist()]
    assert len(tail_ids) == 50 and (tail_codes == codes[50:]).all()


def test_codes_from_hex_and_distance() -> None:
    a, b = "f" * 64, "0" * 63 + "7"
    codes = codes_from_hex([a, b], 256)
    assert codes.shape == (2, 4)
    assert int(np.bitwise_count(codes[0] ^ codes[1]).sum()) == (int(a, 16) ^ int(b, 16)).bit_count()
    with pytest.raises(ValueError):
        codes_from_hex(["abc"], 256)


def test_snapshot_file_round_trip_and_store(store: SnapshotStore) -> None:
    assert store.current_path("pdq") is None
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 2**64, size=(30, 4), dtype=np.uint64)
    ids = rng.permutation(np.arange(100, 130)).astype(np.int64)
    first = write_snapshot(store.new_path("pdq", 3), signal_type="pdq", ids=ids, codes=codes, seq=3)
    store.publish(first)
    snapshot = open_snapshot(store.current_path("pdq"))
    assert (snapshot.signal_type, snapshot.words, snapshot.seq, len(snapshot)) == ("pdq", 4, 3, 30)
    assert (np.diff(snapshot.ids) > 0).all()
    order = np.argsort(ids)
    assert (snapshot.codes == codes[order]).all()
    second = write_snapshot(store.new_path("pdq", 9), signal_type="pdq", ids=ids, codes=codes, seq=9)
    store.publish(second)
    assert store.current_path("pdq") == second
    assert store.prune("pdq") == [first]
    assert not first.exists()
    # The deleted file stays readable through the mapping: the very codes and ids written.
    assert (snapshot.codes == codes[order]).all()
    assert (snapshot.ids == ids[order]).all()
    assert sorted(p.name for p in store.directory.iterdir()) == sorted([second.name, "pdq.current"])


def test_a_damaged_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.hxi"
    bad.write_bytes(b"not an index" + bytes(5000))
    with pytest.raises(SnapshotError):
        open_snapshot(bad)


def test_an_empty_snapshot_answers_nothing(store: SnapshotStore) -> None:
    index = HammingIndex(256, snapshot_of(store, np.empty(0, np.int64), np.empty((0, 4), np.uint64)))
    assert answers(index, np.zeros((2, 4), np.uint64), 31) == [[], []]


def test_the_native_kernel_is_in_use() -> None:
    """requirements.txt builds native/hamming; without it matching would be ~100x slower."""
    assert kernel.NATIVE


def test_the_numpy_stand_in_gives_the_same_answers(store: SnapshotStore, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    codes = rng.integers(0, 2**64, size=(400, 4), dtype=np.uint64)
    ids = np.arange(1, 401, dtype=np.int64)
    index = HammingIndex(256, snapshot_of(store, ids, codes))
    queries = planted(rng, codes, 10, 40)
    native = answers(index, queries, 31)
    monkeypatch.setattr(kernel, "_LIB", None)
    assert answers(index, queries, 31) == native == expected(ids, codes, queries, 31)
    rebuilt = snapshot_of(store, ids, codes, seq=2)  # tables built by numpy, read by the kernel
    monkeypatch.undo()
    assert answers(HammingIndex(256, rebuilt), queries, 31) == native


def test_two_processes_share_one_copy_of_the_snapshot(store: SnapshotStore) -> None:
    """Both processes map the same file MAP_SHARED, and its pages are shared between them."""
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 2**64, size=(200_000, 4), dtype=np.uint64)
    snapshot = snapshot_of(store, np.arange(1, len(codes) + 1), codes)
    int(snapshot.codes.sum()) + int(snapshot.postings.sum())  # touch every page here
    child_code = textwrap.dedent(
        f"""
        import sys, json
        from hashes.index import open_snapshot, mapping_stats
        s = open_snapshot({str(snapshot.path)!r})
        int(s.codes.sum()) + int(s.postings.sum())
        print(json.dumps(mapping_stats(s.path)), flush=True)
        sys.stdin.read()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", child_code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        import json

        theirs = json.loads(child.stdout.readline())
        ours = mapping_stats(snapshot.path)
        assert ours["shared"] is True and theirs["shared"] is True
        touched_kb = (snapshot.codes.nbytes + snapshot.postings.nbytes) // 1024
        # The same page-cache pages are resident in both: counted as shared, split in Pss.
        assert ours["shared_clean_kb"] >= touched_kb * 0.9
        assert ours["pss_kb"] <= ours["rss_kb"] * 0.6
    finally:
        child.communicate("")
