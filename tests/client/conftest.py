"""Shared helpers for the client tests: plain pytest, no Django, no database.

The client is its own package (``client/``), installed into the environment with the
server's requirements (``-e ./client`` in requirements.txt); the server imports it too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hashexchange_client.dsse import EnvelopeError, verify_envelope
from hashexchange_client.payloads import SUBMISSION_TYPE, WITHDRAWAL_TYPE
from hashexchange_client.samples import jpeg_bytes, photo_like
from PIL import Image


@pytest.fixture(scope="session", autouse=True)
def _real_redis() -> None:
    """Overrides the suite-wide Redis check: the client needs no server services."""


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """Overrides the suite-wide Redis flush, for the same reason."""


@pytest.fixture
def make_photo() -> Callable[..., Image.Image]:
    """:func:`hashexchange_client.samples.photo_like`, as a fixture."""
    return photo_like


@pytest.fixture
def make_jpeg() -> Callable[..., bytes]:
    """:func:`jpeg_bytes`, as a fixture."""
    return jpeg_bytes


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A folder with a JPEG, a PNG, a video, a broken image and a stray text file."""
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(jpeg_bytes(photo_like(640, 480, 1)))
    photo_like(320, 240, 2).save(folder / "nested" / "b.png")
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.jpg").write_bytes(jpeg_bytes(photo_like(64, 64, 3)))
    return folder


class FakeExchange:
    """A tiny stand-in for the exchange's member API, on 127.0.0.1, for api/CLI tests.

    It verifies envelopes with registered keys, answers accepted/duplicate/rejected
    like the real server, records every request, and can be told to fail: answer the
    next requests with given statuses (``fail_next``, after letting ``pass_first``
    more requests through) or drop connections (``drop_next``).
    """

    API_KEY = "hx_test_0123456789"

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.keys: dict[str, bytes] = {}
        self.held: dict[tuple[str, str, str], str] = {}
        self.reject_values: set[str] = set()
        self.hold_new = False  # answer new submissions `held` (held for review), as a program's protection does
        self.enrollments: dict[str, str] = {"ncii": "opted_in", "paused-one": "paused"}
        self.programs: dict[str, list[str]] = {
            "ncii": ["pdq", "phash", "dhash", "md5", "sha256", "video_md5"],
            "paused-one": ["pdq"],
            "pdq-only": ["pdq"],
        }
        self.fail_next: list[tuple[int, dict[str, str]]] = []
        self.pass_first = 0
        self.drop_next = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        # A short poll interval, or every test would wait half a second in shutdown().
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FakeExchange:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def paths(self) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in self.requests]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass

            def do_GET(self) -> None:
                self._dispatch()

            def do_POST(self) -> None:
                self._dispatch()

            def _dispatch(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with fake._lock:
                    fake.requests.append(
                        {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    if fake.drop_next:
                        fake.drop_next -= 1
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if fake.fail_next and fake.pass_first:
                        fake.pass_first -= 1
                    elif fake.fail_next:
                        status, headers = fake.fail_next.pop(0)
                        self._send(status, {"detail": f"simulated failure {status}"}, headers)
                        return
                    if self.headers.get("Authorization") != f"Bearer {fake.API_KEY}":
                        self._send(401, {"detail": "Invalid API key.", "code": "authentication_failed"})
                        return
                    status, answer = fake._route(self.command, self.path, body)
                    self._send(status, answer)

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                kind = "application/problem+json" if status >= 400 else "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        path = path.split("?", 1)[0]
        if (method, path) == ("GET", "/api/v1/me"):
            return 200, {
                "slug": "platform-a",
                "kind": "platform",
                "enrollments": [{"program": slug, "state": state} for slug, state in self.enrollments.items()],
                "signing_keys": [{"key_id": kid, "revoked_at": None} for kid in sorted(self.keys)],
            }
        if (method, path) == ("GET", "/api/v1/programs"):
            return 200, {
                "count": len(self.programs),
                "results": [{"slug": slug, "signal_types": types} for slug, types in self.programs.items()],
            }
        if (method, path) == ("POST", "/api/v1/keys"):
            raw = base64.b64decode(body["public_key"])
            kid = hashlib.sha256(raw).hexdigest()
            self.keys[kid] = raw
            return 201, {"key_id": kid, "algorithm": "ed25519", "public_key": body["public_key"]}
        if (method, path) == ("POST", "/api/v1/submissions"):
            envelopes = body["envelopes"] if "envelopes" in body else [body]
            results = [self._submit(index, envelope) for index, envelope in enumerate(envelopes)]
            counts = {s: sum(r["status"] == s for r in results) for s in ("accepted", "duplicate", "rejected")}
            return 200, {
                "results": results,
                "accepted": counts["accepted"],
                "duplicates": counts["duplicate"],
                "rejected": counts["rejected"],
            }
        if (method, path) == ("POST", "/api/v1/withdrawals"):
            try:
                fields = json.loads(verify_envelope(body, self.keys, WITHDRAWAL_TYPE))
            except EnvelopeError as exc:
                return 400, {"detail": str(exc), "code": "bad_envelope"}
            hash_id = self.held.pop((fields["program"], fields["signal_type"], fields["value"]), None)
            if hash_id is None:
                return 404, {"detail": "You have no active submission of this hash in this program."}
            return 200, {"hash_id": hash_id, "status": "withdrawn"}
        return 404, {"detail": "Not found."}

    def _submit(self, index: int, envelope: Any) -> dict[str, Any]:
        result: dict[str, Any] = {"index": index, "hash_id": None, "submission_id": None, "error": None}
        try:
            fields = json.loads(verify_envelope(envelope, self.keys, SUBMISSION_TYPE))
        except EnvelopeError as exc:
            return result | {"status": "rejected", "error": {"code": "bad_signature", "detail": str(exc)}}
        if fields["value"] in self.reject_values:
            return result | {
                "status": "rejected",
                "error": {"code": "degenerate", "detail": "pdq value is degenerate"},
            }
        key = (fields["program"], fields["signal_type"], fields["value"])
        if key in self.held:
            return result | {"status": "duplicate", "hash_id": self.held[key]}
        self.held[key] = f"h{len(self.held) + 1}"
        status = "held" if self.hold_new else "accepted"
        return result | {"status": status, "hash_id": self.held[key], "submission_id": f"s{index}"}


@pytest.fixture
def exchange() -> Iterator[FakeExchange]:
    fake = FakeExchange().start()
    yield fake
    fake.stop()
