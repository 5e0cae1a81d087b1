"""Program snapshots: a program's current hashes at a sequence number, signed, compressed, on disk.

A member (or a peer) that starts from nothing would otherwise read the whole feed page by
page: every hash ever added and every withdrawal after it. A snapshot is the feed
compacted: for each hash listed in the program at sequence number `seq`, the one
`hash.added` entry that listed it last, exactly as the feed builds it (exchange/feed.py
`build_entries`, so its envelope bytes, origin and key binding are the feed's). Hashes
withdrawn or quarantined by `seq` are not in it (a hash restored after a quarantine is).
The reader then continues the ordinary feed with `after=seq`: everything after the
snapshot, withdrawals included, comes from there, so a stale snapshot only costs more
feed to read, never a wrong answer.

Files, in SNAPSHOT_DIR (one pair per build, never rewritten):

- `<program>-<seq>-<id>.ndjson.gz`: one entry per line (compact JSON), gzip-compressed,
  newest listing first, then every `key.revoked` entry up to `seq` (with its origin
  server's signed statement, so a peer that starts here still refuses what a revoked key
  signs later);
- `<program>-<seq>-<id>.json`: the manifest, a DSSE envelope of type SNAPSHOT_TYPE signed
  with the server's key, whose payload (canonical JSON) names the program, the seq, the
  number of entries, and the SHA-256 and size of the compressed file. A reader checks the
  signature against the key of `GET /api/v1/server-key`, the file against the digest,
  and every envelope in it against its origin's key binding.

The snapshot is the same for every member of the program, which is what makes it
cacheable; who may fetch it is decided by the one rule (members/selectors.py): the
program must be one the member receives. It is built from the ledger alone (events up
to `seq`, which are immutable and numbered in commit order), so a build needs no
long-lived transaction and two builds at one seq list the same hashes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.db.models import Max
from django.utils import timezone
from hashexchange_client import dsse
from hashexchange_client.snapshot import FORMAT, SNAPSHOT_TYPE, SnapshotError, verify_manifest

from core.ledger import Event, format_time
from members.models import Program

from . import crypto
from .feed import EVENT_COLUMNS, GROUP_KINDS, EventRow, build_entries

ADD_KINDS = ("hash.added", *GROUP_KINDS)
STATE_KINDS = ("hash.withdrawn", "hash.quarantined", "hash.restored")
# Events read per query while building; an imported group (1,000 hashes) counts as one.
BUILD_SLICE = 2000
BUILD_ENTRIES = 20_000  # entries built at once
# One encoder for every line: json.dumps would make one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
KEEP = 2  # builds kept per program: the newest, and the one before for readers still downloading it


@dataclass(frozen=True)
class Snapshot:
    program: str
    seq: int
    entries: int
    sha256: str
    size: int
    created_at: str
    name: str  # the file's name without its suffix: <program>-<seq>-<id>
    manifest: dict[str, Any]  # the signed DSSE envelope

    @property
    def data_path(self) -> Path:
        return snapshot_dir() / f"{self.name}.ndjson.gz"


def snapshot_dir() -> Path:
    return Path(settings.SNAPSHOT_DIR)


def latest_seq() -> int:
    return Event.objects.aggregate(last=Max("seq"))["last"] or 0


def manifest_payload(
    *, program: str, seq: int, entries: int, sha256: str, size: int, created_at: str, name: str
) -> bytes:
    """The exact bytes the server signs: canonical JSON (sorted keys, no spaces)."""
    data = {
        "format": FORMAT,
        "program": program,
        "seq": seq,
        "entries": entries,
        "sha256": sha256,
        "bytes": size,
        "created_at": created_at,
        "file": name,
        "server": crypto.server_key_id(),
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class _Digesting:
    """A file that hashes and counts what is written through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def _state_changes(program: str, seq: int) -> dict[int, tuple[int, str]]:
    """{hash id: (seq, kind)} of each hash's last withdrawal, quarantine or restoration up to `seq`."""
    last: dict[int, tuple[int, str]] = {}
    rows = (
        Event.objects.filter(program=program, kind__in=STATE_KINDS, seq__lte=seq)
        .order_by("seq")
        .values_list("seq", "kind", "data")
    )
    for event_seq, kind, data in rows.iterator(chunk_size=5000):
        last[int(data["hash_id"])] = (event_seq, kind)
    return last


def _add_events(program: str, seq: int) -> Iterator[list[EventRow]]:
    """The program's add events up to `seq`, newest first, in slices."""
    upper = seq
    while True:
        rows = list(
            Event.objects.filter(program=program, kind__in=ADD_KINDS, seq__lte=upper)
            .order_by("-seq")
            .values_list(*EVENT_COLUMNS)[:BUILD_SLICE]
        )
        if not rows:
            return
        yield [EventRow._make(row) for row in rows]
        upper = rows[-1][0] - 1


def current_entries(program: str, seq: int) -> Iterator[dict[str, Any]]:
    """The feed entries that list the program's hashes at `seq`: one per hash, newest first.

    A hash's entry is its last add up to `seq`, and only if nothing took it out after that
    add (a withdrawal or quarantine not followed by a restoration). Reading newest first,
    the first add met for a hash is its last.
    """
    changes = _state_changes(program, seq)
    seen: set[int] = set()
    chosen: list[EventRow] = []
    keep: set[int] = set()

    def built() -> Iterator[dict[str, Any]]:
        for entry in build_entries(chosen):
            if entry["hash"]["id"] in keep:
                yield entry
        chosen.clear()
        keep.clear()

    for events in _add_events(program, seq):
        for event in events:
            ids = event.data["hash_ids"] if event.kind in GROUP_KINDS else [event.data["hash_id"]]
            wanted = False
            for hash_id in ids:
                if hash_id in seen:
                    continue
                seen.add(hash_id)
                change = changes.get(hash_id)
                if change is None or change[0] < event.seq or change[1] == "hash.restored":
                    keep.add(hash_id)
                    wanted = True
            if wanted:
                chosen.append(event)
            if len(keep) >= BUILD_ENTRIES:  # bounded memory: an imported event lists 1,000 hashes
                yield from built()
    yield from built()
    # Then every key revocation up to `seq` (few, and not per program): a reader that starts
    # here must still refuse what a revoked key signs later, as a whole-feed reader would.
    revocations = Event.objects.filter(kind="key.revoked", seq__lte=seq).order_by("seq").values_list(*EVENT_COLUMNS)
    rows = [EventRow._make(row) for row in revocations]
    for start in range(0, len(rows), BUILD_SLICE):
        yield from build_entries(rows[start : start + BUILD_SLICE])


def snapshot_build(*, program: Program, seq: int | None = None) -> Snapshot:
    """Write a new snapshot of `program` at `seq` (default: the ledger's end) and its signed manifest."""
    seq = latest_seq() if seq is None else seq
    directory = snapshot_dir()
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{program.slug}-{seq:012d}-{secrets.token_hex(4)}"
    temporary = directory / f".{name}.tmp"
    count = 0
    try:
        with open(temporary, "wb") as raw:
            digesting = _Digesting(raw)
            # Level 6: about as small as 9 for this data, at a third of the time; the file is
            # read many times and built once.
            with gzip.GzipFile(fileobj=digesting, mode="wb", compresslevel=6, mtime=0) as out:  # type: ignore[arg-type]
                lines: list[bytes] = []
                for entry in current_entries(program.slug, seq):
                    lines.append(_ENCODER.encode(entry).encode())
                    count += 1
                    if len(lines) >= 1000:
                        out.write(b"\n".join(lines) + b"\n")
                        lines.clear()
                if lines:
                    out.write(b"\n".join(lines) + b"\n")
            raw.flush()
            os.fsync(raw.fileno())
        described = {
            "program": program.slug,
            "seq": seq,
            "entries": count,
            "sha256": digesting.digest.hexdigest(),
            "size": digesting.size,
            "created_at": format_time(timezone.now()),
            "name": name,
        }
        envelope = dsse.sign_envelope(SNAPSHOT_TYPE, manifest_payload(**described), crypto.server_private_key())
        os.replace(temporary, directory / f"{name}.ndjson.gz")
        manifest_temporary = directory / f".{name}.json.tmp"
        manifest_temporary.write_text(json.dumps(envelope))
        os.replace(manifest_temporary, directory / f"{name}.json")
    finally:
        temporary.unlink(missing_ok=True)
    _prune(program.slug)
    return Snapshot(**described, manifest=envelope)


def _manifests(program: str) -> list[Path]:
    """The program's manifests, newest seq first (then newest file)."""
    directory = snapshot_dir()
    if not directory.is_dir():
        return []
    found = [p for p in directory.glob(f"{program}-*.json") if p.name.rsplit("-", 2)[0] == program]
    return sorted(found, key=lambda p: (p.name.rsplit("-", 2)[1], p.stat().st_mtime), reverse=True)


def _load(path: Path) -> Snapshot | None:
    # Read as a member reads it (the client's `verify_manifest`): the same checks, one parser.
    try:
        envelope = json.loads(path.read_text())
        manifest = verify_manifest(envelope, crypto.server_private_key().public_key())
    except (OSError, ValueError, SnapshotError):
        return None  # half written, or signed by a key this server no longer has: not served
    snapshot = Snapshot(
        program=manifest.program,
        seq=manifest.seq,
        entries=manifest.entries,
        sha256=manifest.sha256,
        size=manifest.size,
        created_at=manifest.created_at,
        name=manifest.file,
        manifest=envelope,
    )
    return snapshot if snapshot.data_path.exists() else None


def snapshot_latest(*, program: Program) -> Snapshot | None:
    """The newest snapshot of the program on this host's disk, or None."""
    for path in _manifests(program.slug):
        found = _load(path)
        if found is not None:
            return found
    return None


def snapshot_named(*, program: Program, name: str) -> Snapshot | None:
    """A snapshot by its file name (what a manifest names), if it is still kept."""
    if not name.startswith(f"{program.slug}-") or "/" in name or name.startswith("."):
        return None
    path = snapshot_dir() / f"{name}.json"
    found = _load(path) if path.exists() else None
    # By the signed manifest, not the name: "ncii-adults-…" also starts with "ncii-".
    return found if found is not None and found.program == program.slug else None


def _prune(program: str) -> None:
    for path in _manifests(program)[KEEP:]:
        name = path.name.removesuffix(".json")
        path.unlink(missing_ok=True)
        (path.parent / f"{name}.ndjson.gz").unlink(missing_ok=True)


def snapshot_is_stale(*, program: Program, snapshot: Snapshot | None, now: dt.datetime | None = None) -> bool:
    """True when a new build is worth it: none yet, or the program's log grew past
    SNAPSHOT_MIN_NEW_EVENTS events since, or it grew at all and the snapshot is older than
    SNAPSHOT_MAX_AGE_SECONDS (the feed after the snapshot covers the gap in the meantime)."""
    if snapshot is None:
        return True
    newer = Event.objects.filter(program=program.slug, seq__gt=snapshot.seq)
    if not newer.exists():
        return False
    if newer.count() >= settings.SNAPSHOT_MIN_NEW_EVENTS:
        return True
    created = dt.datetime.fromisoformat(snapshot.created_at.replace("Z", "+00:00"))
    return ((now or timezone.now()) - created).total_seconds() >= settings.SNAPSHOT_MAX_AGE_SECONDS


def snapshots_due() -> list[int]:
    """Ids of the active programs whose snapshot is missing or stale."""
    return [
        program.pk
        for program in Program.objects.filter(is_active=True).order_by("slug")
        if snapshot_is_stale(program=program, snapshot=snapshot_latest(program=program))
    ]


def open_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The entries of a snapshot file (used by tests and the bench; clients have their own reader)."""
    with gzip.open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
