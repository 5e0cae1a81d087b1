"""Read and check a program snapshot: the feed compacted at a sequence number.

A snapshot (``GET /api/v1/programs/{slug}/snapshot``) is a manifest and a file. The
manifest is a DSSE envelope of type :data:`SNAPSHOT_TYPE` signed with the server's key
(the one ``GET /api/v1/server-key`` publishes); its payload names the program, the
sequence number ``seq`` the snapshot is consistent at, the number of entries and the
SHA-256 and size of the file. The file is gzip-compressed NDJSON: one feed entry per line,
each the ``hash.added`` entry that listed a hash still listed at ``seq``, byte for byte
as the feed serves it, then the ``key.revoked`` entries up to ``seq``. Read it, then read the feed with ``after=seq``.

Checks, in order: the manifest's signature against the pinned server key; the file's size
and digest against the manifest; each line a JSON object for the manifest's program; and
for each signed entry, its origin's key binding against the origin server's key and its
envelope against the bound member key, with the payload saying the entry's hash. Any
failure raises :class:`SnapshotError` and nothing of the snapshot should be used.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import dsse, keys, payloads
from .encoding import Base64Error, b64decode

SNAPSHOT_TYPE = "application/vnd.hashexchange.snapshot+json"
KEY_BINDING_TYPE = "application/vnd.hashexchange.key-binding+json"
FORMAT = "hashexchange-snapshot/1 ndjson+gzip"


class SnapshotError(ValueError):
    """The snapshot, or an entry in it, does not check out."""


@dataclass(frozen=True)
class Manifest:
    program: str
    seq: int
    entries: int
    sha256: str
    size: int
    created_at: str
    file: str
    server: str


def verify_manifest(envelope: Mapping[str, Any], server_public_key: Ed25519PublicKey | bytes | str) -> Manifest:
    """The manifest's payload, if the server's key signed it."""
    key = keys.public_key_from_b64(server_public_key) if isinstance(server_public_key, str) else server_public_key
    try:
        payload = dsse.open_envelope(
            envelope, {keys.key_id(key): key}, SNAPSHOT_TYPE, fallback_keys={keys.key_id(key): key}
        ).payload
        data = json.loads(payload)
        manifest = Manifest(
            program=str(data["program"]),
            seq=int(data["seq"]),
            entries=int(data["entries"]),
            sha256=str(data["sha256"]),
            size=int(data["bytes"]),
            created_at=str(data["created_at"]),
            file=str(data["file"]),
            server=str(data["server"]),
        )
        if data.get("format") != FORMAT:
            raise SnapshotError(f"unknown snapshot format {data.get('format')!r}")
    except dsse.EnvelopeError as exc:
        raise SnapshotError(f"the manifest is not signed by the server's key: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"the manifest's payload is malformed: {exc}") from None
    if manifest.server != keys.key_id(key):
        raise SnapshotError("the manifest names another server than the key that signed it")
    return manifest


@dataclass
class EntryChecker:
    """Checks signed entries; each distinct key binding is verified once."""

    _bindings: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    verified: int = 0

    def _bound_key(self, origin: Mapping[str, Any]) -> tuple[str, bytes]:
        cache_key = json.dumps(
            [origin.get(name) for name in ("server", "server_public_key", "member", "key_binding")], sort_keys=True
        )
        found = self._bindings.get(cache_key)
        if found is not None:
            return found
        try:
            server = str(origin["server"])
            server_key = keys.public_key_from_b64(str(origin["server_public_key"]))
            path = [str(p) for p in origin["path"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"an entry's origin is incomplete: {exc}") from None
        if not path or path[0] != server or keys.key_id(server_key) != server:
            raise SnapshotError("an entry's origin server key does not match its key id or path")
        try:
            binding = json.loads(dsse.verify_envelope(origin["key_binding"], {server: server_key}, KEY_BINDING_TYPE))
            public_key = b64decode(binding["public_key"], what="the bound key")
        except (dsse.EnvelopeError, ValueError, KeyError, TypeError, Base64Error) as exc:
            raise SnapshotError(f"an entry's key binding is not attested by its origin server: {exc}") from None
        if binding.get("server") != server or binding.get("member") != origin.get("member"):
            raise SnapshotError("an entry's key binding is for another server or member")
        if len(public_key) != 32 or keys.key_id(public_key) != binding.get("key_id"):
            raise SnapshotError("an entry's key binding names a key id that is not its key's")
        found = self._bindings[cache_key] = (str(binding["key_id"]), public_key)
        return found

    def check(self, entry: Mapping[str, Any]) -> None:
        """Raise SnapshotError unless a signed entry's envelope verifies and says the entry's hash."""
        envelopes = entry.get("envelopes") or []
        if not envelopes:
            return  # an unsigned (imported) listing: vouched for by the server's signed digest only
        origin = entry.get("origin")
        if not isinstance(origin, Mapping):
            raise SnapshotError(f"entry {entry.get('seq')}: a signed entry without an origin")
        key_id, public_key = self._bound_key(origin)
        payload_type = payloads.WITHDRAWAL_TYPE if entry.get("kind") == "hash.withdrawn" else payloads.SUBMISSION_TYPE
        try:
            payload = dsse.open_envelope(
                envelopes[0], {key_id: public_key}, payload_type, fallback_keys={key_id: public_key}
            ).payload
            signed = json.loads(payload)
        except (dsse.EnvelopeError, ValueError) as exc:
            raise SnapshotError(f"entry {entry.get('seq')}: its envelope does not verify: {exc}") from None
        hash_ = entry.get("hash") or {}
        if (signed.get("signal_type"), signed.get("value")) != (hash_.get("signal_type"), hash_.get("value")):
            raise SnapshotError(f"entry {entry.get('seq')}: its envelope signs another hash than the entry says")
        self.verified += 1


def check_file(path: str | os.PathLike[str], manifest: Manifest) -> None:
    """Raise SnapshotError unless the file's size and SHA-256 are the manifest's."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    if size != manifest.size or digest.hexdigest() != manifest.sha256:
        raise SnapshotError("the snapshot file is not the one the manifest signs (size or SHA-256 differ)")


def read_entries(
    path: str | os.PathLike[str], manifest: Manifest, *, checker: EntryChecker | None = None
) -> Iterator[dict[str, Any]]:
    """The entries of a file that passed check_file, each checked (``checker=None``: envelopes unchecked)."""
    count = 0
    decode = json.JSONDecoder().decode  # one decoder for every line; lines are read as text
    program, newest = manifest.program, manifest.seq
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                if line == "\n":
                    continue
                entry = decode(line)
                if not isinstance(entry, dict):
                    raise SnapshotError("a snapshot line is not a JSON object")
                kind = entry.get("kind")
                if kind == "hash.added":
                    if entry.get("program") != program:
                        raise SnapshotError("a snapshot line is not an entry of the manifest's program")
                elif kind != "key.revoked" or entry.get("program") is not None:
                    raise SnapshotError("a snapshot line is neither a hash.added nor a key.revoked entry")
                seq = entry.get("seq")
                if not isinstance(seq, int) or seq > newest:
                    raise SnapshotError("a snapshot entry is newer than the snapshot's seq")
                if checker is not None and entry.get("envelopes"):
                    checker.check(entry)
                count += 1
                yield entry
    except SnapshotError:
        raise
    except (OSError, EOFError, ValueError) as exc:
        raise SnapshotError(f"the snapshot file is unreadable: {exc}") from None
    if count != manifest.entries:
        raise SnapshotError(f"the snapshot holds {count} entries, its manifest says {manifest.entries}")
