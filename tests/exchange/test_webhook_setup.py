"""Setting a webhook up: where it starts, and what a failed test call tells the member."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from core.ledger import Event
from exchange import delivery as webhook_delivery
from tests.conftest import Caller, Receiver
from tests.signing import Signer


def test_a_new_endpoint_starts_now_unless_told_where(receiver: Receiver, signer_a: Signer, platform_b: Caller) -> None:
    signer_a.submit(signer_a.submission(), signer_a.submission())
    latest = Event.objects.order_by("-seq").values_list("seq", flat=True)[0]
    first_added = Event.objects.filter(kind="hash.added").order_by("seq").values_list("seq", flat=True)[0]

    now = platform_b.client.post("/api/v1/webhooks", {"url": receiver.url}, format="json").json()
    assert now["starts_after"] == now["cursor_seq"] == latest
    assert webhook_delivery.deliver_endpoint(now["id"]).sent == 0

    middle = platform_b.client.post(
        "/api/v1/webhooks", {"url": receiver.url, "after": first_added}, format="json"
    ).json()
    assert middle["starts_after"] == first_added
    assert webhook_delivery.deliver_endpoint(middle["id"]).sent == 1
    assert [entry["kind"] for entry in receiver.entries()] == ["hash.added"]

    beyond = platform_b.client.post("/api/v1/webhooks", {"url": receiver.url, "after": latest + 100}, format="json")
    assert beyond.status_code == 400
    newest = Event.objects.order_by("-seq").values_list("seq", flat=True)[0]  # creating endpoints is recorded too
    assert f"from 0 to {newest} (the newest event)" in beyond.json()["errors"]["after"][0]
    negative = platform_b.client.post("/api/v1/webhooks", {"url": receiver.url, "after": -1}, format="json")
    assert negative.status_code == 400 and "after" in negative.json()["errors"]


class _Crashing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["content-length"]))
        raise KeyError("kind")  # as the README's receiver once did on the test message

    def log_message(self, *args: Any) -> None:
        pass

    def handle_error(self, *args: Any) -> None:
        pass


@pytest.fixture
def crashing_receiver() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Crashing)
    server.handle_error = lambda *args: None  # type: ignore[method-assign]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_receiver_that_fails_on_the_message_is_named_as_the_cause(
    settings: Any, crashing_receiver: str, platform_b: Caller
) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    hook = platform_b.client.post("/api/v1/webhooks", {"url": crashing_receiver}, format="json").json()
    answer = platform_b.client.post(f"/api/v1/webhooks/{hook['id']}/test").json()
    assert answer["ok"] is False and answer["status_code"] is None
    assert "closed it without answering" in answer["error"]
    assert "receiver's own log" in answer["error"]


def test_a_receiver_that_is_not_running_is_named_as_the_cause(settings: Any, platform_b: Caller) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hook = platform_b.client.post("/api/v1/webhooks", {"url": f"http://127.0.0.1:{port}/"}, format="json").json()
    answer = platform_b.client.post(f"/api/v1/webhooks/{hook['id']}/test").json()
    assert f"nothing accepts connections at 127.0.0.1:{port}" in answer["error"]
