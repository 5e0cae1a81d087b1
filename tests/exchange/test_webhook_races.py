"""Webhook delivery when workers overlap: concurrent transactions on real databases.

Each test runs workers as threads with their own database connections (so, on
PostgreSQL, their own transactions and row locks) against real HTTP receivers on
127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings
from django.utils import timezone
from hashexchange_client import webhooks as signing

from core.ledger import Event
from exchange import delivery as webhook_delivery
from exchange.models import Delivery, WebhookEndpoint
from tests.conftest import Caller, Receiver
from tests.signing import Signer

pytestmark = pytest.mark.django_db(transaction=True)

# Enough rows, rounds and concurrent wake-ups that the unordered marking met "deadlock
# detected" in each of three runs on PostgreSQL (4 of the 6 wake-ups failed each time);
# with 80 endpoints it passed by luck.
ENDPOINTS, ROUNDS, WAKERS = 300, 40, 6


class GatedReceiver:
    """Answers 200; the first POST is held until `gate` is set (a receiver slower than the claim)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.first_arrived = threading.Event()
        self.bodies: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    first = not receiver.bodies
                    receiver.bodies.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if first:
                    receiver.first_arrived.set()
                    receiver.gate.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


class Worker(threading.Thread):
    """A delivery worker on its own connection; keeps what it returned or raised."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            connections.close_all()


def create_endpoint(caller: Caller, url: str) -> dict:
    response = caller.client.post("/api/v1/webhooks", {"url": url}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_a_worker_whose_claim_lapsed_does_not_fail_on_what_its_successor_sent(
    gated: GatedReceiver, signer_a: Signer, platform_b: Caller
) -> None:
    """Worker A's POST outlives its claim; B takes the endpoint over and sends everything,
    then A's answer arrives. A must not build again what B already built and sent (it
    used to insert a Delivery with the same message id and die on the unique key)."""
    hook = create_endpoint(platform_b, gated.url)
    signer_a.submit(*[signer_a.submission() for _ in range(3)])
    seqs = list(Event.objects.filter(kind="hash.added").order_by("seq").values_list("seq", flat=True))
    with override_settings(WEBHOOK_BATCH_SIZE=1):
        a = Worker(lambda: webhook_delivery.deliver_endpoint(hook["id"]))
        a.start()
        assert gated.first_arrived.wait(30), "worker A never posted"
        # A's claim lapses while its receiver holds the answer (as if it took longer than
        # WEBHOOK_CLAIM_SECONDS); worker B claims the endpoint and drains it.
        WebhookEndpoint.objects.filter(pk=hook["id"]).update(claimed_until=timezone.now() - dt.timedelta(seconds=1))
        b = webhook_delivery.deliver_endpoint(hook["id"])
        assert b.claimed and b.sent == 3
        gated.gate.set()
        a.join(30)
    assert not a.is_alive()
    assert a.error is None, f"worker A failed: {a.error!r}"
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}
    assert Delivery.objects.count() == 3
    assert WebhookEndpoint.objects.get(pk=hook["id"]).cursor_seq == seqs[-1]
    # Every message was a signed one of the three, and every seq arrived (A's one twice: at least once).
    ids = {headers["webhook-id"] for headers, _ in gated.bodies}
    assert ids == set(Delivery.objects.values_list("message_id", flat=True))
    for headers, body in gated.bodies:
        signing.verify_webhook(headers, body, secret=hook["secret"])


def test_two_workers_building_the_same_delivery_send_one_message(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    """Two workers that both read the same cursor (one's claim had lapsed) store one Delivery:
    the second finds the first's instead of failing on the unique message id."""
    hook = create_endpoint(platform_b, receiver.url)
    signer_a.submit(signer_a.submission(), signer_a.submission())
    endpoint = WebhookEndpoint.objects.select_related("member").get(pk=hook["id"])
    latest = Event.objects.order_by("-seq").values_list("seq", flat=True).first()
    now = timezone.now()
    first = webhook_delivery._next_delivery(endpoint, now, latest)
    stale = WebhookEndpoint.objects.select_related("member").get(pk=hook["id"])
    second = webhook_delivery._next_delivery(stale, now, latest)
    assert first is not None and second is not None
    assert second.delivery.pk == first.delivery.pk
    assert second.body == first.body
    assert Delivery.objects.count() == 1


def test_wake_ups_and_deliveries_on_the_same_endpoints_do_not_deadlock(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    """The fan-out's and the sweep's wake-ups mark many endpoints at once while deliveries
    claim, move and release the same rows. Marking them in no fixed order let two
    transactions wait for each other ("deadlock detected"); the marks are now taken in
    id order. (On SQLite writers take turns: the same run must simply finish.)"""
    hooks = [create_endpoint(platform_b, receiver.url)["id"] for _ in range(ENDPOINTS)]
    signer_a.submit(signer_a.submission())
    stop = threading.Event()
    rounds = ROUNDS

    def wake() -> int:
        for _ in range(rounds):
            # Every endpoint claimed by somebody else: each wake-up marks them all.
            webhook_delivery.endpoints_to_wake()
        return rounds

    def churn(order: list[int]) -> int:
        count = 0
        while not stop.is_set():
            for endpoint_id in order:
                until = timezone.now() + dt.timedelta(seconds=60)
                WebhookEndpoint.objects.filter(pk=endpoint_id).update(claimed_until=until, wake_requested=False)
                count += 1
        return count

    WebhookEndpoint.objects.update(claimed_until=timezone.now() + dt.timedelta(seconds=60))
    churners = [Worker(lambda: churn(hooks)), Worker(lambda: churn(hooks[::-1]))]
    wakers = [Worker(wake) for _ in range(WAKERS)]
    for worker in churners + wakers:
        worker.start()
    for worker in wakers:
        worker.join(120)
    stop.set()
    for worker in churners:
        worker.join(30)
    errors = [w.error for w in churners + wakers if w.error is not None]
    assert not errors, f"{len(errors)} worker(s) failed, first: {errors[0]!r}"
    assert all(w.result == rounds for w in wakers)
