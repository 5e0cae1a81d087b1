"""The Redis client every process uses, and the keys more than one app reads."""

from __future__ import annotations

import redis
from django.conf import settings

# Celery beat writes the time here; /readyz reports its age to operators.
HEARTBEAT_KEY = "hx:celery:heartbeat"


def redis_client() -> redis.Redis:
    """A client bounded by REDIS_TIMEOUT_SECONDS, so a hung Redis cannot hold a request."""
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=settings.REDIS_TIMEOUT_SECONDS,
        socket_timeout=settings.REDIS_TIMEOUT_SECONDS,
    )
