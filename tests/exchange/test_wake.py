"""The wake-up after a commit never holds the request longer than the Redis budget."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from celery import current_app

from exchange import tasks


@pytest.fixture
def hung_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A broker URL whose server accepts connections and never answers (a stopped Redis)."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
    monkeypatch.setitem(current_app.conf, "broker_url", url)
    monkeypatch.setitem(
        current_app.conf, "broker_transport_options", {"socket_connect_timeout": 1, "socket_timeout": 2}
    )
    _forget_connections()  # connections are made from the new URL
    monkeypatch.setitem(tasks._quiet, "until", 0.0)
    yield url
    monkeypatch.undo()
    _forget_connections()  # and from the real one again
    hung.close()


def _forget_connections() -> None:
    if current_app._pool is not None:
        current_app._pool.force_close_all()
    current_app._pool = None
    current_app.amqp._producer_pool = None


def test_a_commit_waits_for_a_hung_broker_no_longer_than_the_redis_budget(hung_broker: str, settings) -> None:  # noqa: ANN001
    settings.REDIS_TIMEOUT_SECONDS = 0.1
    tasks.wake_delivery()
    # Back before the publish could finish: it is still under way in its own thread.
    assert tasks._inflight.is_set()
    before = {t.ident for t in threading.enumerate() if t.name == "hx-wake"}
    tasks.wake_delivery()  # a commit meanwhile adds no second publish: the first covers it
    assert {t.ident for t in threading.enumerate() if t.name == "hx-wake"} == before
    for thread in threading.enumerate():
        if thread.name == "hx-wake":
            thread.join(30)
    assert not tasks._inflight.is_set()
    assert tasks._quiet["until"] > 0  # the failure was noticed; wake-ups rest, the sweep delivers
