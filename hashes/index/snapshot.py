"""Snapshots: an index's hashes and chunk tables in one file that processes map read-only.

Why a file: every web process of a host maps the same file (MAP_SHARED, read-only), so
the kernel's page cache holds one copy of the 10-million-hash index (~1 GB) however many
workers there are, and a new worker starts answering without reading the database. A
snapshot is never changed once published: a newer one is written beside it and the
`<signal type>.current` symlink is swapped atomically; processes pick the new one up on
their next refresh, and an old file stays valid for those still mapping it (Linux frees
it after the last unmap).

Layout (little-endian, every section aligned to 4 KiB):

    header   4 KiB: MAGIC, then JSON {version, signal_type, words, count, seq, created_at,
             sections: {name: [offset, bytes]}}, NUL-padded
    codes    count x words uint64, rows ordered by hash id
    ids      count int64, ascending: the hash id of each row
    offsets  4*words x 65537 uint32: per 16-bit chunk, where each value's rows start
    postings 4*words x count uint32: per chunk, the rows grouped by chunk value

`seq` is the event-log watermark: every hash recorded by an event up to `seq` is in the
file (later ones may be too).
"""

from __future__ import annotations

import json
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import kernel

MAGIC = b"HXINDEX1"
HEADER_SIZE = 4096
ALIGN = 4096
VERSION = 1
SUFFIX = ".hxi"


class SnapshotError(ValueError):
    """A file that is not a snapshot this code can read."""


def _align(value: int) -> int:
    return (value + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class Snapshot:
    """A mapped snapshot. Arrays are read-only views of the shared mapping."""

    path: Path
    signal_type: str
    words: int
    seq: int
    created_at: float
    codes: np.ndarray
    ids: np.ndarray
    offsets: np.ndarray
    postings: np.ndarray
    mapping: mmap.mmap
    meta: dict[str, object]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return len(self.mapping)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Which of `ids` are in the snapshot (a binary search in the sorted ids)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.zeros(len(ids), bool)
        where = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return self.ids[where] == ids


def _layout(count: int, words: int) -> dict[str, tuple[int, int]]:
    chunks = 4 * words
    sizes = {
        "codes": count * words * 8,
        "ids": count * 8,
        "offsets": chunks * (kernel.CHUNK_VALUES + 1) * 4,
        "postings": chunks * count * 4,
    }
    sections, position = {}, HEADER_SIZE
    for name, size in sizes.items():
        sections[name] = (position, size)
        position = _align(position + size)
    return sections


def write_snapshot(
    path: Path, *, signal_type: str, ids: np.ndarray, codes: np.ndarray, seq: int, meta: dict[str, object] | None = None
) -> Path:
    """Write a snapshot of `codes` (n x words uint64) with their hash `ids` to `path`.

    `meta` is kept in the header for the caller (the matching service records which event
    `seq` was, to notice a snapshot made from another database).

    Built in a temporary file in the same directory (the chunk tables are filled in
    place, in the mapped file, so building needs no second copy in memory), flushed, then
    renamed over `path`: readers see the whole file or none of it.
    """
    ids = np.asarray(ids, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.uint64)
    if codes.ndim != 2 or len(codes) != len(ids):
        raise ValueError("codes must be one row of words per id")
    if len(ids) >= 2**32 - 1:
        raise ValueError("a snapshot holds fewer than 2**32 - 1 hashes")
    if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
        order = np.argsort(ids, kind="stable")
        ids, codes = ids[order], codes[order]
        if np.any(ids[1:] == ids[:-1]):
            raise ValueError("hash ids must be unique")
    count, words = codes.shape
    sections = _layout(count, words)
    total = max(end for end in (offset + size for offset, size in sections.values()))
    header = json.dumps(
        {
            "version": VERSION,
            "signal_type": signal_type,
            "words": words,
            "count": count,
            "seq": int(seq),
            "created_at": time.time(),
            "sections": sections,
            "meta": meta or {},
        }
    ).encode()
    if len(MAGIC) + len(header) > HEADER_SIZE:
        raise ValueError("snapshot header too long")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w+b") as handle:
            handle.truncate(total)
            with mmap.mmap(handle.fileno(), total) as mapped:
                mapped[: len(MAGIC) + len(header)] = MAGIC + header
                views = _views(mapped, sections, count, words)
                views["codes"][:] = codes
                views["ids"][:] = ids
                kernel.build_tables(views["codes"], views["offsets"], views["postings"])
                del views
                mapped.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _views(mapped: mmap.mmap, sections: dict[str, tuple[int, int]], count: int, words: int) -> dict[str, np.ndarray]:
    chunks = 4 * words

    def view(name: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
        offset, size = sections[name]
        return np.frombuffer(mapped, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset).reshape(shape)

    return {
        "codes": view("codes", np.uint64, (count, words)),
        "ids": view("ids", np.int64, (count,)),
        "offsets": view("offsets", np.uint32, (chunks, kernel.CHUNK_VALUES + 1)),
        "postings": view("postings", np.uint32, (chunks, count)),
    }


def open_snapshot(path: Path, *, populate: bool = False) -> Snapshot:
    """Map a snapshot read-only and shared. `populate` faults every page in now (MAP_POPULATE),
    so the first queries do not pay for it."""
    path = Path(path)
    with open(path, "rb") as handle:
        flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
        mapped = mmap.mmap(handle.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
    if mapped[: len(MAGIC)] != MAGIC:
        mapped.close()
        raise SnapshotError(f"{path} is not an index snapshot")
    raw = mapped[len(MAGIC) : HEADER_SIZE].rstrip(b"\x00")
    meta = json.loads(raw)
    if meta.get("version") != VERSION:
        mapped.close()
        raise SnapshotError(f"{path} is snapshot version {meta.get('version')}, this code reads {VERSION}")
    sections = {name: (int(o), int(s)) for name, (o, s) in meta["sections"].items()}
    if len(mapped) < max(o + s for o, s in sections.values()):
        mapped.close()
        raise SnapshotError(f"{path} is truncated")
    views = _views(mapped, sections, meta["count"], meta["words"])
    mapped.madvise(mmap.MADV_RANDOM)  # candidates are random reads; read-ahead would only waste the cache
    return Snapshot(
        path=path,
        signal_type=meta["signal_type"],
        words=meta["words"],
        seq=meta["seq"],
        created_at=meta["created_at"],
        codes=views["codes"],
        ids=views["ids"],
        offsets=views["offsets"],
        postings=views["postings"],
        mapping=mapped,
        meta=dict(meta.get("meta") or {}),
    )


class SnapshotStore:
    """A directory of snapshots with one `<signal type>.current` symlink per signal type."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def current_path(self, signal_type: str) -> Path | None:
        """The published snapshot's path (one readlink), or None."""
        try:
            target = os.readlink(self.directory / f"{signal_type}.current")
        except (FileNotFoundError, NotADirectoryError):
            return None
        return self.directory / target

    def new_path(self, signal_type: str, seq: int) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / f"{signal_type}-{seq:012d}-{time.time_ns()}{SUFFIX}"

    def publish(self, path: Path) -> None:
        """Point `<signal type>.current` at `path`, atomically."""
        signal_type = path.name.split("-", 1)[0]
        link = self.directory / f"{signal_type}.current"
        tmp = self.directory / f".{signal_type}.current.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(path.name, tmp)
        os.replace(tmp, link)

    def prune(self, signal_type: str, *, keep: int = 1) -> list[Path]:
        """Delete older snapshots of a type, keeping the current one and `keep - 1` more.

        Processes still mapping a deleted file keep using it until they switch."""
        current = self.current_path(signal_type)
        files = sorted(self.directory.glob(f"{signal_type}-*{SUFFIX}"), reverse=True)
        kept = [current] if current else []
        removed = []
        for path in files:
            if path == current:
                continue
            if len(kept) < keep:
                kept.append(path)
                continue
            path.unlink(missing_ok=True)
            removed.append(path)
        return removed


def mapping_stats(path: Path, pid: int | str = "self") -> dict[str, object]:
    """How a process maps `path`, from /proc/PID/smaps: whether shared, and kB resident.

    Rss counts every page of the file the process touched; Pss divides shared pages by
    the number of processes mapping them, so Pss summed over the workers of a host is what
    the index really costs there. Empty when the process does not map the file (or on a
    system without /proc).
    """
    target = str(Path(path).resolve())
    stats: dict[str, object] = {}
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return stats
    inside = False
    for line in lines:
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            inside = len(fields) >= 6 and fields[5] == target
            if inside:
                stats["shared"] = fields[1][3] == "s"
            continue
        if inside and len(fields) >= 2 and fields[0].endswith(":") and fields[1].isdigit():
            key = fields[0][:-1].lower() + "_kb"
            stats[key] = int(stats.get(key, 0)) + int(fields[1])  # type: ignore[call-overload]
    return stats
