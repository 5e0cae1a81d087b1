"""A C2SP tlog-witness for the tests: a real HTTP server on 127.0.0.1 that checks what the
exchange sends it as the spec says a witness must, and cosigns.

It knows one log (origin and key). For each add-checkpoint it checks the log's signature
(403), the origin (404), the old size against the last size it cosigned (409, answering
its size as text/x.tlog.size), the consistency proof (422) or, at equal sizes, the root
(409); then it cosigns with its own Ed25519 key (cosignature/v1) and remembers the new
tree head. It uses only the client package, as an independent witness would use its own
verifier.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hashexchange_client import merkle, note
from hashexchange_client.encoding import b64decode, b64encode


@dataclass
class TlogWitness:
    log: note.Verifier
    name: str = "witness.test/w1"
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    size: int = 0
    root: bytes = merkle.EMPTY_ROOT
    requests: list[tuple[int, int]] = field(default_factory=list)  # (old size, status answered)
    timestamp: int | None = None

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        witness = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path != "/add-checkpoint":
                    return self.answer(404, "text/plain", b"not found\n")
                status, content_type, answer = witness.add_checkpoint(body)
                self.answer(status, content_type, answer)

            def answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def cosigner(self) -> note.Cosigner:
        return note.Cosigner(self.name, self.key)

    @property
    def public_key_b64(self) -> str:
        return b64encode(self.cosigner.verifier.public_key)

    def add_checkpoint(self, body: bytes) -> tuple[int, str, bytes]:
        with self.lock:
            status, content_type, answer, old = self._add_checkpoint(body)
            self.requests.append((old, status))
            return status, content_type, answer

    def _add_checkpoint(self, body: bytes) -> tuple[int, str, bytes, int]:
        text = body.decode()
        head, sep, signed = text.partition("\n\n")
        lines = head.split("\n")
        if not sep or not lines[0].startswith("old "):
            return 400, "text/plain", b"malformed\n", -1
        old = int(lines[0][4:])
        try:
            proof = [b64decode(line) for line in lines[1:]]
            checkpoint, parsed, _ = note.open_checkpoint(signed, self.log)
        except note.NoteError as exc:
            if "origin" in str(exc):
                return 404, "text/plain", b"unknown origin\n", old
            return 403, "text/plain", str(exc).encode(), old
        if old > checkpoint.size:
            return 400, "text/plain", b"old size above the checkpoint's\n", old
        if old != self.size:
            return 409, "text/x.tlog.size", f"{self.size}\n".encode(), old
        if old == checkpoint.size:
            if checkpoint.root_hash != self.root:
                return 409, "text/x.tlog.size", f"{self.size}\n".encode(), old
        else:
            try:
                merkle.verify_consistency(old, checkpoint.size, self.root, checkpoint.root_hash, proof)
            except merkle.ProofError as exc:
                return 422, "text/plain", str(exc).encode(), old
        self.size, self.root = checkpoint.size, checkpoint.root_hash
        return 200, "text/plain", self.cosigner.sign(parsed.text, self.timestamp).line().encode(), old

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
