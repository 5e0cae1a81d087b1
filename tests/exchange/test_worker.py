"""Celery with a real worker and the real Redis broker."""

from __future__ import annotations

import pytest
from django.test import Client

from exchange.tasks import heartbeat_task
from tests.conftest import wait_for


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
