"""What every API call shares: probes, docs, errors, size and rate limits."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from core.api import CredentialRateThrottle
from tests.conftest import Caller


def test_healthz_answers_without_credentials(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_database_and_redis(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"
    assert response.json()["checks"]["redis"] == "ok"


@pytest.mark.django_db
def test_readyz_is_503_naming_redis_when_redis_is_down(client: Client) -> None:
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("error")
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_api_docs_are_served_without_an_external_cdn(client: Client) -> None:
    page = client.get("/api/v1/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger" in html.lower()
    assert "cdn." not in html and "unpkg" not in html
    schema = client.get("/api/v1/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/v1/me", "/api/v1/keys", "/api/v1/enrollments", "/api/v1/programs"} <= set(paths)
    assert schema.json()["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


def test_openapi_schema_validates_without_warnings(tmp_path) -> None:  # noqa: ANN001
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/v1/keys" in (tmp_path / "schema.yaml").read_text()


@pytest.mark.django_db
def test_unknown_api_urls_are_problem_documents(client: Client) -> None:
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert "/api/v1/docs/" in response.json()["detail"]


@override_settings(API_MAX_BODY_BYTES=1000)
def test_oversized_bodies_are_refused_before_parsing(platform_a: Caller) -> None:
    response = platform_a.client.post("/api/v1/keys", {"public_key": "A" * 5000}, format="json")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/problem+json"
    assert "1000 bytes" in response.json()["detail"]


def _pin_throttle_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit's clock stands one second into the current minute for the whole test.

    The limit is a sliding window: just after a minute ends, the minute before counts a
    little less, so a few more requests pass (as they should). A test that runs across the
    boundary would see them; with the clock pinned it counts requests, not seconds."""
    pinned = (time.time() // 60) * 60 + 1
    monkeypatch.setattr(CredentialRateThrottle, "timer", staticmethod(lambda: pinned))


@pytest.fixture
def low_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CredentialRateThrottle, "THROTTLE_RATES", {"credential": "3/min"})
    monkeypatch.setattr(CredentialRateThrottle, "quiet_until", 0.0)
    _pin_throttle_clock(monkeypatch)


@pytest.mark.usefixtures("low_rate_limit")
def test_rate_limit_is_per_credential(platform_a: Caller, platform_b: Caller) -> None:
    statuses = [platform_a.client.get("/api/v1/me").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = platform_a.client.get("/api/v1/me")
    assert refused["Content-Type"] == "application/problem+json"
    assert int(refused["Retry-After"]) > 0
    assert refused.json()["retry_after"] > 0
    assert platform_b.client.get("/api/v1/me").status_code == 200


@pytest.mark.usefixtures("low_rate_limit")
def test_the_rate_limit_slides_a_minute_that_ended_counts_for_what_still_overlaps(
    platform_a: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 a minute, 4 asked half-way through a minute (the refused one counts too): half-way
    through the next minute half of those 4 still count, so one more passes, not three; half
    a minute after that minute, half of its 2 count, so two pass."""
    clock = [(time.time() // 60) * 60 + 30]  # (the test moves the fixture's pinned clock)
    monkeypatch.setattr(CredentialRateThrottle, "timer", staticmethod(lambda: clock[0]))

    def statuses(n: int) -> list[int]:
        return [platform_a.client.get("/api/v1/me").status_code for _ in range(n)]

    assert statuses(4) == [200, 200, 200, 429]
    clock[0] += 60
    assert statuses(2) == [200, 429]
    clock[0] += 60
    assert statuses(4) == [200, 200, 429, 429]


@pytest.mark.usefixtures("low_rate_limit")
def test_rate_limit_fails_open_when_redis_is_down(platform_a: Caller) -> None:
    unreachable = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    with override_settings(CACHES=unreachable):
        statuses = [platform_a.client.get("/api/v1/me").status_code for _ in range(5)]
    assert statuses == [200] * 5


@pytest.mark.usefixtures("low_rate_limit")
def test_a_hung_redis_costs_one_request_a_timeout_not_every_request(platform_a: Caller) -> None:
    """A Redis that accepts connections and never answers (stopped, or a network black
    hole): the first request waits for the timeout and fails open; the next ones within
    REDIS_QUIET_SECONDS do not ask it again."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # the kernel completes handshakes; nobody ever reads or answers
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        hung.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(hung.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = hung.getsockname()[1]
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    try:
        with override_settings(CACHES=caches, REDIS_QUIET_SECONDS=60):
            statuses = [platform_a.client.get("/api/v1/me").status_code for _ in range(5)]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        hung.close()
    assert statuses == [200] * 5
    assert len(accepted) == 1


@pytest.fixture
def fast_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CredentialRateThrottle, "THROTTLE_RATES", {"credential": "300/min"})
    monkeypatch.setattr(CredentialRateThrottle, "quiet_until", 0.0)
    _pin_throttle_clock(monkeypatch)


@pytest.mark.usefixtures("fast_rate_limit")
def test_a_fast_client_gets_exactly_its_limit_though_requests_are_counted_in_batches(
    platform_a: Caller, platform_b: Caller
) -> None:
    """A worker counts requests itself and tells Redis in batches (6 at 300/min), every
    request once past 90 % of the limit: the 301st request of the minute is refused, not a
    batch later; other credentials are not touched."""
    statuses = [platform_a.client.get("/api/v1/me").status_code for _ in range(305)]
    assert statuses[:300] == [200] * 300
    assert statuses[300:] == [429] * 5
    assert platform_b.client.get("/api/v1/me").status_code == 200
