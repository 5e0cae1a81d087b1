"""Logs: JSON lines, request ids from the edge into Celery, and nothing sensitive at any level.

The flow below does what members, operators and workers do (keys issued, hashes signed and
submitted with a case reference, matched, withdrawn, reported on, webhooks created, sent,
tested and failing), with every logger at DEBUG and SQL logging forced on, in the web
process and in a real Celery worker; then no line may contain a hash value, an API key,
a webhook secret, a case reference or one of the server's own secrets.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import IntegrityError, connection
from django.test import override_settings

from core.logs import ContextFilter, JsonFormatter, PlainFormatter, redact, request_id
from core.problems import problem_exception_handler
from core.redis import redis_client
from exchange import delivery as webhook_delivery
from exchange import tasks as exchange_tasks
from tests.conftest import ROOT, Caller, Receiver, make_caller, start_worker, stop_process, wait_for
from tests.signing import Signer, random_pdq

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@contextmanager
def captured(level: int = logging.DEBUG, formatter: logging.Formatter | None = None) -> Iterator[io.StringIO]:
    """Every log record of this process at `level` and above, formatted as in production."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter or JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_every_request_has_an_id_that_comes_back_and_is_on_its_log_lines(platform_a: Caller) -> None:
    with captured(logging.INFO) as buffer:
        given = platform_a.client.get("/api/v1/me", HTTP_X_REQUEST_ID="edge-7f3a.1")
        made = platform_a.client.get("/api/v1/me")
        refused = platform_a.client.get("/api/v1/me", HTTP_X_REQUEST_ID="two words\nand a newline")
    assert given["X-Request-ID"] == "edge-7f3a.1"
    assert UUID.match(made["X-Request-ID"])
    assert UUID.match(refused["X-Request-ID"])  # not plain enough to copy into logs: replaced
    access = [line for line in lines(buffer) if line["logger"] == "hashexchange.http"]
    assert [line["request_id"] for line in access] == ["edge-7f3a.1", made["X-Request-ID"], refused["X-Request-ID"]]
    first = access[0]
    assert set(first) >= {"time", "level", "logger", "message", "request_id", "task_id", "task_name", "process"}
    assert (first["method"], first["route"], first["status"], first["member"]) == (
        "GET",
        "/api/v1/me",
        200,
        "platform-a",
    )
    assert first["level"] == "INFO" and first["message"].startswith("GET /api/v1/me 200 ")


def test_the_access_line_names_the_route_not_the_path(signer_a: Signer) -> None:
    hash_id = signer_a.submit(signer_a.submission()).json()["results"][0]["hash_id"]
    with captured(logging.INFO) as buffer:
        signer_a.client.get(f"/api/v1/hashes/{hash_id}?probe=1")
        signer_a.client.get("/no/such/page")
    routes = [line["route"] for line in lines(buffer) if line["logger"] == "hashexchange.http"]
    assert routes == ["/api/v1/hashes/<int:hash_id>", "(unrouted)"]


def test_json_and_plain_lines_redact_keys_secrets_and_hash_values() -> None:
    key = "hxk_0123456789ab_" + "S" * 43
    secret = "whsec_" + "A" * 40
    pdq, md5, phash = "ab" * 32, "cd" * 16, "ef" * 8
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key %s secret %s", (key, secret), None)
    try:
        raise ValueError(f"values {pdq} {md5} {phash}")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    for formatter in (JsonFormatter(), PlainFormatter()):
        ContextFilter().filter(record)
        line = formatter.format(record)
        record.exc_text = None  # each formatter formats the traceback anew
        for value in (key, secret, pdq, md5, phash):
            assert value not in line
        assert "hxk_0123456789ab_[redacted]" in line and "whsec_[redacted]" in line and "[hex]" in line
    assert redact("request 123e4567-e89b-12d3-a456-426614174000") == "request 123e4567-e89b-12d3-a456-426614174000"


def test_a_409_is_logged_without_the_conflicting_values() -> None:
    value = random_pdq()
    exc = IntegrityError(f'duplicate key value violates unique constraint "hash_unique"\nDETAIL: Key (value)=({value})')
    with captured() as buffer:
        response = problem_exception_handler(exc, {})
    assert response.status_code == 409
    assert value not in buffer.getvalue() and "integrity error answered as 409" in buffer.getvalue()


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_no_hash_value_key_secret_or_case_id_reaches_a_log_line(
    receiver: Receiver, signer_a: Signer, platform_b: Caller, intake: Caller
) -> None:
    log_name = f"logging-{uuid.uuid4().hex[:8]}"
    worker_log = ROOT / "var" / f"test-{log_name}.log"
    worker = start_worker(
        extra_env={"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG", "WEBHOOKS_ALLOW_PRIVATE": "1"},
        queues="celery,webhooks",
        pool="threads",
        log_name=log_name,
    )
    sensitive: list[str] = [settings.SECRET_KEY, settings.API_KEY_PEPPER, signer_a.caller.token, platform_b.token]
    case = "CASE-Q7x2-Lk9p"
    values = [random_pdq() for _ in range(3)]
    md5 = uuid.uuid4().hex
    sensitive += [case, md5, *values]
    # The fixtures' commits queued one fan-out, and commits queue no other until a worker
    # starts it; wait for that, so that the request below queues one that carries its id.
    wait_for(lambda: not redis_client().exists(exchange_tasks._FANOUT_QUEUED_KEY), timeout=60, what="the worker")
    connection.force_debug_cursor = True  # SQL with parameters is what DEBUG logs first
    try:
        with captured() as buffer, override_settings(WEBHOOKS_ALLOW_PRIVATE=True):
            extra = make_caller(signer_a.caller.member)
            sensitive.append(extra.token)
            hook = platform_b.client.post(
                "/api/v1/webhooks", {"url": receiver.url}, format="json", HTTP_X_REQUEST_ID="flow-hooks"
            ).json()
            sensitive.append(hook["secret"])
            rotated = platform_b.client.post(f"/api/v1/webhooks/{hook['id']}/rotate-secret", {}, format="json").json()
            sensitive.append(rotated["secret"])
            submitted = signer_a.submit(
                *[signer_a.submission(v, case=case) for v in values],
                signer_a.submission(md5, signal_type="md5", case=case),
            ).json()
            assert submitted["accepted"] == 4
            signer_a.submit(signer_a.submission(values[0], case=case))  # a duplicate
            signer_a.client.post(
                "/api/v1/submissions", {"envelopes": [{"payloadType": "x", "payload": values[1]}]}, format="json"
            )  # refused
            platform_b.client.post(
                "/api/v1/match", {"queries": [{"signal_type": "pdq", "value": v} for v in values]}, format="json"
            )
            platform_b.client.get("/api/v1/feed?after=0")
            for v in values[:2]:
                platform_b.client.get(f"/api/v1/hashes/{submitted['results'][0]['hash_id']}")
                platform_b.client.post(
                    "/api/v1/outcomes",
                    {
                        "outcomes": [
                            {
                                "signal_type": "pdq",
                                "value": v,
                                "program": "take-it-down",
                                "kind": "removed",
                                "occurred_at": "2026-01-01T00:00:00Z",
                                "client_ref": f"ref-{v[:4]}",
                            }
                        ]
                    },
                    format="json",
                )
            signer_a.client.post(
                "/api/v1/withdrawals", signer_a.withdrawal(values[2], case=case, reason="mistake"), format="json"
            )
            platform_b.client.post(f"/api/v1/webhooks/{hook['id']}/test")
            platform_b.client.post("/api/v1/keys", {"public_key": "not base64!", "algorithm": "ed25519"}, format="json")
            platform_b.client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {platform_b.token}x")  # a wrong key
            webhook_delivery.deliver_endpoint(hook["id"])
            # The worker delivers too (woken by the commits above) and logs at DEBUG.
            wait_for(lambda: worker_log.exists() and "hx_request_id" in worker_log.read_text(), what="worker logs")
        web = buffer.getvalue()
        wait_for(lambda: '"request_id": "flow-hooks"' in worker_log.read_text(), timeout=30, what="request id")
    finally:
        connection.force_debug_cursor = False
        stop_process(worker)
    worker_text = worker_log.read_text()
    assert len(web.splitlines()) > 15  # the flow logged, at DEBUG, in this process
    for text, where in ((web, "web"), (worker_text, "worker")):
        for value in sensitive:
            assert value not in text, f"{where} log contains {value[:12]}…"
            assert value.lower() not in text.lower()
    # The worker's lines are JSON, and a task the request caused carries its id.
    worker_lines = [json.loads(line) for line in worker_text.splitlines() if line.startswith("{")]
    assert worker_lines and all("request_id" in line for line in worker_lines)
    caused = [line for line in worker_lines if line["request_id"] == "flow-hooks" and line["task_name"]]
    assert caused, "no task line carried the request id"
    worker_log.unlink()


def test_settings_choose_the_formatter_and_hold_sql_logging_back() -> None:
    from core.logs import logging_config

    config = logging_config(log_format="json", level="DEBUG")
    assert config["handlers"]["console"]["formatter"] == "json"
    assert config["loggers"]["django.db.backends"]["level"] == "INFO"  # no SQL parameters, even at DEBUG
    assert logging_config(log_format="plain", level="INFO")["handlers"]["console"]["formatter"] == "plain"
    assert request_id.get() is None  # outside a request
