"""Celery tasks of the exchange: thin wrappers around services."""

from __future__ import annotations

import time

from celery import shared_task

from config.health import HEARTBEAT_KEY, redis_client


@shared_task(name="exchange.tasks.heartbeat", ignore_result=True)
def heartbeat() -> float:
    """Beat schedules it, a worker runs it: its age in /readyz shows both are alive."""
    now = time.time()
    redis_client().set(HEARTBEAT_KEY, now, ex=3600)
    return now
