"""A clearinghouse elsewhere, as far as one server's tests need: its keys, its signed entries, its HTTP answers.

`Origin` signs like another server and its member would (with the client package's
DSSE code and the binding format of docs/federation.md); `PeerServer` is a real HTTP
server on 127.0.0.1 that answers GET /api/v1/server-key and GET /api/v1/feed with what
the test puts in it.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hashexchange_client import dsse, keys, payloads, snapshot

from exchange import provenance
from tests.signing import random_pdq


@dataclass
class Origin:
    """Another server and one of its members, each with a key."""

    member: str = "their-platform"
    server_key: Ed25519PrivateKey = field(default_factory=keys.generate_private_key)
    member_key: Ed25519PrivateKey = field(default_factory=keys.generate_private_key)

    @property
    def server_id(self) -> str:
        return keys.key_id(self.server_key)

    @property
    def server_public_key(self) -> str:
        return keys.public_key_to_b64(self.server_key)

    def binding(self, *, signer: Ed25519PrivateKey | None = None, member: str | None = None) -> dict[str, Any]:
        payload = provenance.binding_payload(
            server=self.server_id,
            member=member or self.member,
            key_id=keys.key_id(self.member_key),
            public_key_b64=keys.public_key_to_b64(self.member_key),
            valid_from="2026-01-01T00:00:00Z",
        )
        return dsse.sign_envelope(provenance.KEY_BINDING_TYPE, payload, signer or self.server_key)

    def origin(self, *, program: str, path: list[str] | None = None) -> dict[str, Any]:
        return {
            "server": self.server_id,
            "server_public_key": self.server_public_key,
            "member": self.member,
            "program": program,
            "path": path or [self.server_id],
            "key_binding": self.binding(),
        }

    def added(
        self,
        seq: int,
        *,
        program: str = "ncii",
        value: str | None = None,
        created_at: dt.datetime | None = None,
        **origin: Any,
    ) -> dict[str, Any]:
        """A hash.added entry as the origin's own feed would show it."""
        value = value or random_pdq()
        payload = payloads.submission_payload(program=program, signal_type="pdq", value=value, created_at=created_at)
        envelope = dsse.sign_envelope(payloads.SUBMISSION_TYPE, payload, self.member_key)
        return {
            "seq": seq,
            "kind": "hash.added",
            "program": program,
            "hash": {"id": seq, "signal_type": "pdq", "value": value},
            "envelopes": [envelope],
            "signed": True,
            "origin": self.origin(program=program, **origin),
        }

    def withdrawn(self, seq: int, added: dict[str, Any]) -> dict[str, Any]:
        value, program = added["hash"]["value"], added["program"]
        payload = payloads.withdrawal_payload(program=program, signal_type="pdq", value=value)
        envelope = dsse.sign_envelope(payloads.WITHDRAWAL_TYPE, payload, self.member_key)
        return {
            **added,
            "seq": seq,
            "kind": "hash.withdrawn",
            "envelopes": [envelope],
            "reason": "",
            "origin": added["origin"],
        }

    def revoked(
        self, seq: int, *, revoked_at: str, signer: Ed25519PrivateKey | None = None, path: list[str] | None = None
    ) -> dict[str, Any]:
        """A key.revoked entry for the member's key, with the origin server's signed statement."""
        key_id = keys.key_id(self.member_key)
        payload = provenance.revocation_payload(
            server=self.server_id, member=self.member, key_id=key_id, revoked_at=revoked_at
        )
        return {
            "seq": seq,
            "leaf_index": seq - 1,
            "kind": "key.revoked",
            "program": None,
            "key": {"member": self.member, "key_id": key_id, "revoked_at": revoked_at},
            "origin": {
                "server": self.server_id,
                "server_public_key": self.server_public_key,
                "member": self.member,
                "path": path or [self.server_id],
                "revocation": dsse.sign_envelope(provenance.KEY_REVOCATION_TYPE, payload, signer or self.server_key),
            },
        }


def altered(envelope: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The envelope with its payload changed after signing."""
    data = json.loads(base64.b64decode(envelope["payload"]))
    data.update(fields)
    return {**envelope, "payload": base64.b64encode(json.dumps(data).encode()).decode()}


class PeerServer:
    """A real HTTP server standing in for a peer: its server key and feed pages are the test's."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.server_key = origin.server_public_key
        self.entries: list[dict[str, Any]] = []
        self.fail_with: int | None = None
        self.requests: list[tuple[str, str]] = []
        self.outcomes: list[dict[str, Any]] = []
        # program -> (the snapshot answer, the gzip file), as exchange/snapshots.py serves them
        self.snapshots: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.feed_afters: list[int] = []  # the `after` of each feed read
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                outer.requests.append((parts.path, self.headers.get("authorization", "")))
                if outer.fail_with and parts.path.endswith("/feed"):
                    return self._send(outer.fail_with, {"detail": "down"})
                if parts.path == "/api/v1/server-key":
                    return self._send(200, {"algorithm": "ed25519", "public_key": outer.server_key})
                if parts.path.startswith("/api/v1/programs/"):
                    program, _, name = parts.path.removeprefix("/api/v1/programs/").partition("/snapshot")
                    found = outer.snapshots.get(program)
                    if found is None:
                        return self._send(404, {"code": "snapshot_not_ready"})
                    if not name:
                        return self._send(200, found[0])
                    self.send_response(200)
                    self.send_header("content-type", "application/gzip")
                    self.send_header("content-length", str(len(found[1])))
                    self.end_headers()
                    self.wfile.write(found[1])
                    return None
                if parts.path == "/api/v1/feed":
                    query = parse_qs(parts.query)
                    after, limit = int(query["after"][0]), int(query["limit"][0])
                    outer.feed_afters.append(after)
                    rest = [e for e in outer.entries if e["seq"] > after]
                    page = rest[:limit]
                    return self._send(
                        200,
                        {"entries": page, "next": page[-1]["seq"] if page else after, "has_more": len(rest) > limit},
                    )
                return self._send(404, {})

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append((self.path, self.headers.get("authorization", "")))
                if self.path != "/api/v1/outcomes":
                    return self._send(404, {})
                fresh = [
                    i for i in body["outcomes"] if i["client_ref"] not in {o["client_ref"] for o in outer.outcomes}
                ]
                outer.outcomes.extend(fresh)
                results = [{"status": "accepted" if i in fresh else "duplicate"} for i in body["outcomes"]]
                n = len(fresh)
                return self._send(
                    200, {"results": results, "accepted": n, "duplicates": len(results) - n, "rejected": 0}
                )

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def publish_snapshot(
        self, program: str, seq: int, entries: list[dict[str, Any]], *, data: bytes | None = None
    ) -> None:
        """Serve a snapshot of `program` at `seq` holding `entries`, its manifest signed with the
        origin's server key (`data`: serve these bytes as the file instead, e.g. altered ones)."""
        body = gzip.compress(b"".join(json.dumps(e).encode() + b"\n" for e in entries))
        name = f"{program}-{seq:012d}-test"
        payload = json.dumps(
            {
                "format": snapshot.FORMAT,
                "program": program,
                "seq": seq,
                "entries": len(entries),
                "sha256": hashlib.sha256(body).hexdigest(),
                "bytes": len(body),
                "created_at": "2026-01-01T00:00:00Z",
                "file": name,
                "server": self.origin.server_id,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        manifest = dsse.sign_envelope(snapshot.SNAPSHOT_TYPE, payload, self.origin.server_key)
        answer = {"seq": seq, "url": f"/api/v1/programs/{program}/snapshot/{name}", "manifest": manifest}
        self.snapshots[program] = (answer, body if data is None else data)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
