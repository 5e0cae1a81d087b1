"""The compiled search kernel (native/hamming, loaded with ctypes) and its numpy stand-in.

The kernel does the work that must not run in Python: building the chunk tables of a
snapshot and answering radius queries by multi-index hashing or a blocked scan. When it
is not installed (a machine without a C compiler) the stand-in answers the same queries
by brute force with numpy, exactly but ~100x slower at 10M hashes; `NATIVE` says which
one is in use and /readyz reports it.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

CHUNK_VALUES = 1 << 16
ABI_VERSION = 2
# Scan every row instead when the buckets a query would probe hold more than 1/BRUTE_DIV
# of them: a candidate is a random read (~10-20 ns), a scanned row a sequential one (~1-2 ns).
DEFAULT_BRUTE_DIV = 10


class _Index(ctypes.Structure):
    _fields_ = [
        ("codes", ctypes.c_void_p),
        ("n", ctypes.c_uint64),
        ("words", ctypes.c_int32),
        ("chunks", ctypes.c_int32),
        ("offsets", ctypes.c_void_p),
        ("postings", ctypes.c_void_p),
    ]


class _Out(ctypes.Structure):
    _fields_ = [
        ("query", ctypes.c_void_p),
        ("row", ctypes.c_void_p),
        ("dist", ctypes.c_void_p),
        ("cap", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
    ]


def _load() -> ctypes.CDLL | None:
    try:
        import hx_hamming
    except ImportError:
        logger.warning("hx_hamming is not installed: PDQ matching falls back to a numpy brute-force scan")
        return None
    if getattr(hx_hamming, "ABI_VERSION", None) != ABI_VERSION:
        logger.warning("hx_hamming is stale (reinstall ./native/hamming): falling back to numpy")
        return None
    lib = ctypes.CDLL(str(hx_hamming.library_path()))
    if lib.hx_abi_version() != ABI_VERSION:
        logger.warning("hx_hamming's library is stale (reinstall ./native/hamming): falling back to numpy")
        return None
    lib.hx_init.restype = None
    lib.hx_init()
    lib.hx_build.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p]
    lib.hx_build.restype = ctypes.c_int
    lib.hx_search.argtypes = [
        ctypes.POINTER(_Index),
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int32,
        ctypes.c_uint32,
        ctypes.POINTER(_Out),
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.hx_search.restype = ctypes.c_int64
    lib.hx_scan.argtypes = [
        ctypes.POINTER(_Index),
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int32,
        ctypes.POINTER(_Out),
    ]
    lib.hx_scan.restype = ctypes.c_int
    return lib


_LIB = _load()
NATIVE = _LIB is not None


@dataclass(frozen=True)
class Found:
    """Raw answers: parallel arrays of (query number, row, distance), plus per-query cost."""

    query: np.ndarray  # uint32
    row: np.ndarray  # uint32
    dist: np.ndarray  # uint16
    candidates: np.ndarray  # uint64: rows compared per query
    brute: np.ndarray  # bool: the query scanned every row


def _ptr(array: np.ndarray | None) -> int | None:
    return None if array is None else array.ctypes.data


def chunk_values(codes: np.ndarray, chunk: int) -> np.ndarray:
    """The 16-bit value of chunk `chunk` of every code (the kernel's chunk order)."""
    return ((codes[:, chunk >> 2] >> np.uint64((chunk & 3) * 16)) & np.uint64(0xFFFF)).astype(np.uint32)


def build_tables(codes: np.ndarray, offsets: np.ndarray, postings: np.ndarray) -> None:
    """Fill `offsets` (chunks x 65537) and `postings` (chunks x n) for `codes` (n x words).

    The arrays may be views of a writable memory map, so a snapshot is built in place.
    """
    n, words = codes.shape
    if _LIB is not None:
        if _LIB.hx_build(_ptr(codes), n, words, _ptr(offsets), _ptr(postings)) != 0:
            raise MemoryError("hx_build could not allocate its cursor table")
        return
    for chunk in range(words * 4):
        values = chunk_values(codes, chunk)
        offsets[chunk, 0] = 0
        np.cumsum(np.bincount(values, minlength=CHUNK_VALUES), out=offsets[chunk, 1:])
        postings[chunk] = np.argsort(values, kind="stable").astype(np.uint32)


def _index_struct(codes: np.ndarray, offsets: np.ndarray | None, postings: np.ndarray | None) -> _Index:
    n, words = codes.shape
    return _Index(
        codes=_ptr(codes),
        n=n,
        words=words,
        chunks=words * 4 if offsets is not None else 0,
        offsets=_ptr(offsets),
        postings=_ptr(postings),
    )


def _run(call: object, nq: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Call the kernel with room for results, and again with more room if it ran out."""
    cap = max(1024, 16 * nq)
    while True:
        query = np.empty(cap, np.uint32)
        row = np.empty(cap, np.uint32)
        dist = np.empty(cap, np.uint16)
        out = _Out(query=_ptr(query), row=_ptr(row), dist=_ptr(dist), cap=cap, len=0)
        if call(out) != 0:  # type: ignore[operator]
            raise MemoryError("the search kernel ran out of memory")
        if out.len <= cap:
            length = int(out.len)
            return query[:length], row[:length], dist[:length]
        cap = int(out.len)


def search(
    codes: np.ndarray,
    offsets: np.ndarray | None,
    postings: np.ndarray | None,
    queries: np.ndarray,
    radius: int,
    *,
    brute_div: int = DEFAULT_BRUTE_DIV,
) -> Found:
    """Every row of `codes` within `radius` of each query, by multi-index hashing when the
    tables are given (falling back per query to a scan when that is cheaper), else by a scan."""
    nq = len(queries)
    candidates = np.zeros(nq, np.uint64)
    brute = np.zeros(nq, np.uint8)
    if nq == 0 or len(codes) == 0 or radius < 0:
        empty = np.empty(0, np.uint32)
        return Found(empty, empty, np.empty(0, np.uint16), candidates, brute.astype(bool))
    queries = np.ascontiguousarray(queries, dtype=np.uint64)
    if _LIB is None:
        return _numpy_search(codes, queries, radius)
    ix = _index_struct(codes, offsets, postings)
    if offsets is None:
        lib = _LIB

        def scan(out: _Out) -> int:
            return lib.hx_scan(ctypes.byref(ix), _ptr(queries), nq, radius, ctypes.byref(out))

        query, row, dist = _run(scan, nq)
        order = np.lexsort((row, query))
        candidates[:] = len(codes)
        return Found(query[order], row[order], dist[order], candidates, np.ones(nq, bool))
    parts_q, parts_r, parts_d = [], [], []
    done, cap = 0, max(1024, 64 * nq)
    while done < nq:
        query = np.empty(cap, np.uint32)
        row = np.empty(cap, np.uint32)
        dist = np.empty(cap, np.uint16)
        out = _Out(query=_ptr(query), row=_ptr(row), dist=_ptr(dist), cap=cap, len=0)
        answered = _LIB.hx_search(
            ctypes.byref(ix),
            _ptr(queries[done:]),
            nq - done,
            radius,
            brute_div,
            ctypes.byref(out),
            _ptr(candidates[done:]),
            _ptr(brute[done:]),
        )
        if answered < 0:
            raise MemoryError("the search kernel ran out of memory")
        length = int(out.len)
        parts_q.append(query[:length] + np.uint32(done))
        parts_r.append(row[:length])
        parts_d.append(dist[:length])
        if answered == 0:  # one query alone has more results than the arrays hold
            cap *= 4
        done += int(answered)
    return Found(
        np.concatenate(parts_q), np.concatenate(parts_r), np.concatenate(parts_d), candidates, brute.astype(bool)
    )


def _numpy_search(codes: np.ndarray, queries: np.ndarray, radius: int) -> Found:
    """The stand-in: a chunked brute-force scan with numpy's popcount."""
    parts_q, parts_r, parts_d = [], [], []
    step = 1 << 20
    for qi, q in enumerate(queries):
        for start in range(0, len(codes), step):
            block = codes[start : start + step]
            d = np.bitwise_count(block ^ q).sum(axis=1, dtype=np.uint16)
            hits = np.flatnonzero(d <= radius)
            parts_q.append(np.full(len(hits), qi, np.uint32))
            parts_r.append((hits + start).astype(np.uint32))
            parts_d.append(d[hits])
    nq = len(queries)
    return Found(
        np.concatenate(parts_q) if parts_q else np.empty(0, np.uint32),
        np.concatenate(parts_r) if parts_r else np.empty(0, np.uint32),
        np.concatenate(parts_d).astype(np.uint16) if parts_d else np.empty(0, np.uint16),
        np.full(nq, len(codes), np.uint64),
        np.ones(nq, bool),
    )
