"""Celery with a real worker and the real Redis broker."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from core.redis import redis_client
from exchange.tasks import fanout_task, heartbeat_task
from tests.conftest import Caller, wait_for
from tests.signing import Signer


@pytest.mark.worker
def test_a_real_worker_runs_the_heartbeat_and_readyz_reports_it(celery_worker_process, client: Client) -> None:  # noqa: ANN001
    assert client.get("/readyz").json()["checks"]["worker_heartbeat_age_seconds"] is None
    heartbeat_task.delay()
    age = wait_for(
        lambda: client.get("/readyz").json()["checks"]["worker_heartbeat_age_seconds"] is not None,
        timeout=60,
        what="the worker to run the heartbeat task",
    )
    assert age
    assert client.get("/readyz").json()["checks"]["worker_heartbeat_age_seconds"] < 60


def _queued_task_names() -> list[str]:
    return [json.loads(raw)["headers"]["task"] for raw in redis_client().lrange("celery", 0, -1)]


@pytest.mark.django_db(transaction=True)
def test_a_stream_of_commits_queues_one_fan_out_until_it_starts(signer_a: Signer, platform_b: Caller) -> None:
    for _ in range(5):
        assert signer_a.submit(signer_a.submission()).json()["accepted"] == 1
    # No worker runs: the first commit queued a fan-out, which will see the later ones.
    assert _queued_task_names().count("exchange.tasks.fanout") == 1
    fanout_task()  # a worker starts it: the next commit needs a fan-out of its own
    assert _queued_task_names().count("exchange.tasks.project_obligations") == 1
    signer_a.submit(signer_a.submission())
    signer_a.submit(signer_a.submission())
    assert _queued_task_names().count("exchange.tasks.fanout") == 2
