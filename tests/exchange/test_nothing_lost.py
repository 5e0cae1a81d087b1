"""Nothing is lost: Redis goes away, a worker is killed mid-delivery, a receiver fails.

Everything here is real: a Redis server this test starts and stops, Celery workers and
beat in their own processes, HTTP receivers on 127.0.0.1. Each test ends by checking
that every receiver got every event at least once and that the pull feed, read from
after=0, has every sequence number visible to the member.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings

from config.celery import app as celery_app
from core.ledger import Event
from dev import services as devservices
from exchange import tasks
from exchange.models import Delivery, DeliveryAttempt, WebhookEndpoint
from tests.conftest import Caller, Receiver, celery_command, start_worker, stop_process, wait_for
from tests.signing import Signer

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OwnRedis:
    """A Redis server that the test can stop and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        # No persistence: whatever was queued in Redis is gone after a restart, the hard case.
        self.proc = devservices.start_redis(self.port, self.workdir, persist=False)

    def stop(self) -> None:
        if self.proc is not None:
            devservices.stop_process(self.proc)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path, settings) -> Iterator[OwnRedis]:  # noqa: ANN001
    # Read first: Celery loads its configuration from Django's settings lazily, on first use.
    previous = celery_app.conf.broker_url
    server = OwnRedis(tmp_path)
    settings.REDIS_URL = settings.CELERY_BROKER_URL = server.url
    celery_app.conf.broker_url = server.url
    celery_app._pool = None  # the producer pool was made for the old URL
    celery_app.amqp._producer_pool = None
    tasks._quiet["until"] = 0.0
    yield server
    celery_app.conf.broker_url = previous
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    server.stop()


WORKER_ENV = {
    "WEBHOOKS_ALLOW_PRIVATE": "1",
    "WEBHOOK_RETRY_SCHEDULE": "1,1,1,1,1,1,1,1,1,1",
    "WEBHOOK_SWEEP_SECONDS": "1",
    "WEBHOOK_CLAIM_SECONDS": "3",
}


@pytest.fixture
def async_stack(own_redis: OwnRedis, receiver: Receiver) -> Iterator[dict]:
    """A worker (thread pool, both queues) and beat, on the test's own Redis."""
    env = {**WORKER_ENV, "REDIS_URL": own_redis.url, "CELERY_BROKER_URL": own_redis.url}
    procs = {
        "worker": start_worker(extra_env=env, queues="celery,webhooks", pool="threads"),
        "beat": celery_command(
            "beat", "-l", "info", "--schedule", str(own_redis.workdir / "beat-schedule"), extra_env=env, log_name="beat"
        ),
    }
    procs["env"] = env
    yield procs
    for name in ("worker", "beat"):
        if procs[name].poll() is None:
            stop_process(procs[name])


def make_hook(caller: Caller, receiver: Receiver) -> int:
    response = caller.client.post("/api/v1/webhooks", {"url": receiver.url}, format="json")
    assert response.status_code == 201
    return response.json()["id"]


def visible_seqs() -> list[int]:
    return list(Event.objects.filter(kind__in=["hash.added", "hash.withdrawn"]).values_list("seq", flat=True))


def assert_everything_arrived(receiver: Receiver, caller: Caller) -> None:
    expected = visible_seqs()
    # Bounded, not timed: after a Redis restart the worker and beat reconnect with backoff,
    # which on a loaded 2-core machine took more than a minute.
    wait_for(
        lambda: set(expected) <= {e["seq"] for e in receiver.entries()},
        timeout=180,
        what=f"all of {expected} to reach the receiver",
    )
    entries, after = [], 0
    while True:
        page = caller.client.get(f"/api/v1/feed?after={after}&limit=3").json()
        entries += page["entries"]
        after = page["next"]
        if not page["has_more"]:
            break
    assert [e["seq"] for e in entries if e["kind"] != "key.registered"] == expected


def test_submissions_succeed_while_redis_is_down_and_are_delivered_when_it_returns(
    async_stack: dict, own_redis: OwnRedis, receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    make_hook(platform_b, receiver)
    signer_a.submit(signer_a.submission())
    wait_for(lambda: len(receiver.entries()) == 1, timeout=60, what="the first delivery")
    # The drain that sent it ends by letting go of the endpoint; until then it would also
    # send what is committed next, Redis or not.
    wait_for(
        lambda: not WebhookEndpoint.objects.filter(claimed_until__isnull=False).exists(),
        timeout=60,
        what="the first drain to end",
    )
    own_redis.stop()
    results = [signer_a.submit(*[signer_a.submission() for _ in range(3)]).json() for _ in range(3)]
    assert [r["accepted"] for r in results] == [3, 3, 3]
    assert len(receiver.entries()) == 1  # nothing could be dispatched meanwhile
    own_redis.start()
    assert_everything_arrived(receiver, platform_b)
    assert len(visible_seqs()) == 10


def test_a_worker_survives_redis_going_away_while_a_delivery_is_in_flight(
    async_stack: dict, own_redis: OwnRedis, receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    # The delivery task is acknowledged late, so it is still unacknowledged when Redis
    # stops; a worker that crashed on the lost connection would leave nobody to deliver.
    make_hook(platform_b, receiver)
    receiver.delay = 3.0
    signer_a.submit(signer_a.submission())
    wait_for(lambda: len(receiver.received) == 1, timeout=60, what="the delivery to start")
    own_redis.stop()
    time.sleep(5)  # the worker notices the lost connection and tries to reconnect
    assert async_stack["worker"].poll() is None, "the worker exited when Redis went away"
    receiver.delay = 0.0
    signer_a.submit(signer_a.submission())
    own_redis.start()
    assert_everything_arrived(receiver, platform_b)
    assert async_stack["worker"].poll() is None


def test_a_worker_killed_mid_delivery_is_replaced_and_the_delivery_retried(
    async_stack: dict, receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    make_hook(platform_b, receiver)
    receiver.delay = 4.0
    signer_a.submit(signer_a.submission())
    wait_for(lambda: len(receiver.received) == 1, timeout=60, what="the delivery to start")
    async_stack["worker"].send_signal(signal.SIGKILL)
    async_stack["worker"].wait()
    assert Delivery.objects.get().status == "pending"  # the POST never came back
    receiver.delay = 0.0
    async_stack["worker"] = start_worker(extra_env=async_stack["env"], queues="celery,webhooks", pool="threads")
    wait_for(
        lambda: Delivery.objects.filter(status="delivered").exists(),
        timeout=60,
        what="the replacement worker to redeliver",
    )
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) >= 2 and len(set(ids)) == 1  # the same message again: receivers deduplicate on it
    assert_everything_arrived(receiver, platform_b)


def test_a_receiver_that_fails_for_a_while_gets_everything_after_retries(
    async_stack: dict, receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    make_hook(platform_b, receiver)
    receiver.responses = [500, 500, 500]
    signer_a.submit(*[signer_a.submission() for _ in range(4)])
    wait_for(
        lambda: Delivery.objects.filter(status="delivered").count() >= 1,
        timeout=60,
        what="delivery after the receiver recovers",
    )
    statuses = list(DeliveryAttempt.objects.order_by("pk").values_list("status_code", flat=True))
    assert statuses[:4] == [500, 500, 500, 200]
    assert_everything_arrived(receiver, platform_b)


def test_the_wake_up_fails_fast_and_quietly_when_redis_is_down(own_redis: OwnRedis, signer_a: Signer) -> None:
    own_redis.stop()
    response = signer_a.submit(signer_a.submission())
    assert response.json()["accepted"] == 1
    assert tasks._quiet["until"] > 0  # the failure was noticed, and later requests skip the attempt
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(django_settings.REDIS_URL, socket_connect_timeout=0.5).ping()
