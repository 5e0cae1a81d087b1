"""A new peer link starts from the peer's program snapshots, then reads its feed from there.

With our cursor at 0, a sync first asks the peer for a snapshot of each program that
flows (exchange/snapshots.py): the hashes listed there at a sequence number, each with its
origin and envelope exactly as the peer's feed would carry them. We check the manifest's
signature against the peer's pinned server key and the file against the manifest's
digest, then store the entries in chunks through the same checks as a feed page
(federation/imports.py: origin binding, envelope, program, path, hop limit), each chunk in
one transaction and idempotent on origin identity. The chunk that ends the last snapshot
moves our cursor to the oldest snapshot's seq in its own transaction; from there the feed
brings what happened after, withdrawals included. A worker killed half-way leaves the
cursor at 0: the next sync starts the snapshots again and skips what it already holds.

If any program that flows has no snapshot yet, or the peer is an older server without
snapshots, the sync reads the feed from 0 as before.
"""

from __future__ import annotations

import gzip
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from hashexchange_client import snapshot as checks

from . import imports, remote, verifying
from .models import Peer

CHUNK = 5000


def _lines(path: Path) -> Iterator[list[bytes]]:
    """The snapshot's lines in chunks of CHUNK (always at least one chunk, maybe empty)."""
    chunk: list[bytes] = []
    with gzip.open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            chunk.append(line)
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
    yield chunk


def bootstrap(*, peer: Peer, api_key: str, here: str, add: Any) -> bool:
    """Import the peer's snapshots and move the cursor to where its feed continues.

    Returns False (nothing done) when the peer has no snapshot of some program that flows;
    raises remote.PeerError when the peer fails or a snapshot does not check out. `add`
    is called with each stored chunk's PageResult.
    """
    found: list[tuple[dict[str, Any], checks.Manifest]] = []
    for mapping in peer.programs:
        answer = remote.snapshot(peer.base_url, api_key=api_key, program=str(mapping["theirs"]))
        if answer is None:
            return False
        try:
            manifest = checks.verify_manifest(answer["manifest"], peer.server_public_key)
        except checks.SnapshotError as exc:
            raise remote.PeerError(f"the peer's snapshot manifest: {exc}", retryable=False) from None
        if manifest.program != mapping["theirs"] or manifest.server != peer.server_key_id:
            raise remote.PeerError("the peer's snapshot manifest is for another program or server", retryable=False)
        found.append((answer, manifest))
    if not found:
        return False
    target = min(manifest.seq for _, manifest in found)
    context = imports.context_for(peer=peer, here=here)
    directory = Path(settings.SNAPSHOT_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".incoming-") as tmp:
        for number, (answer, manifest) in enumerate(found):
            path = Path(tmp) / "snapshot.ndjson.gz"
            remote.download(peer.base_url, answer["url"], api_key=api_key, dest=path, max_bytes=manifest.size)
            try:
                checks.check_file(path, manifest)
            except checks.SnapshotError as exc:
                raise remote.PeerError(f"the peer's snapshot file: {exc}", retryable=False) from None
            last_program = number == len(found) - 1
            workers = verifying.processes(manifest.entries)
            chunks = verifying.checked_chunks(_lines(path), context=context, upto=manifest.seq, workers=workers)
            try:
                chunk = next(chunks)
                while True:
                    following = next(chunks, None)
                    final = last_program and following is None
                    page = {"entries": [], "next": target if final else peer.cursor, "has_more": True}
                    stored = imports.page_store(peer=peer, page=page, here=here, verified=chunk)
                    add(stored)
                    if stored.cursor != peer.cursor and not final:
                        raise remote.PeerError("another sync of this peer moved its cursor meanwhile")
                    peer.cursor = stored.cursor
                    if following is None:
                        break
                    chunk = following
            except verifying.BadSnapshot as exc:
                raise remote.PeerError(f"the peer's snapshot: {exc}", retryable=False) from None
            except verifying.VerifierDied as exc:  # what was stored stays; the next sync skips it
                raise remote.PeerError(str(exc), retryable=True) from None
            finally:
                chunks.close()
    return True
