"""One beat, guaranteed: a Redis lock decides which beat process sends the periodic tasks.

A deployment must run exactly one Celery beat; a second one, started by mistake (a
container that runs `worker -B`, a unit enabled on two hosts), would send every periodic
task twice. So every beat uses this scheduler (CELERY_BEAT_SCHEDULER): before each tick it
takes, or renews, a lock in Redis (`hx:celery:beat-lock`, BEAT_LOCK_SECONDS long). The
beat that holds it schedules as usual; any other beat sends nothing, says once that it
is standing by (and who holds the lock), and keeps trying, so it takes over within
BEAT_LOCK_SECONDS when the holder dies. A beat that loses the lock (Redis restarted
empty, a pause longer than the lock) stops sending at once and competes again.

Ticks come at least every third of BEAT_LOCK_SECONDS, so the holder renews in time.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import redis
from celery.beat import PersistentScheduler
from django.conf import settings
from redis.exceptions import LockError

logger = logging.getLogger("hashexchange.beat")

LOCK_KEY = "hx:celery:beat-lock"


class LockedScheduler(PersistentScheduler):
    """Celery's file-backed scheduler, active only in the beat that holds the lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lock_seconds = float(settings.BEAT_LOCK_SECONDS)
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=settings.REDIS_TIMEOUT_SECONDS,
            socket_timeout=settings.REDIS_TIMEOUT_SECONDS,
        )
        self._lock = self._client.lock(LOCK_KEY, timeout=self.lock_seconds, blocking=False, thread_local=False)
        self._holding = False
        self._told_standby = False
        super().__init__(*args, **kwargs)
        self.max_interval = min(self.max_interval, self.lock_seconds / 3)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._hold():
            return self.lock_seconds / 3
        return min(super().tick(*args, **kwargs), self.lock_seconds / 3)

    def _hold(self) -> bool:
        """Take or renew the lock; False (send nothing) when another beat has it or Redis is away."""
        try:
            if self._holding:
                self._lock.reacquire()
                return True
            if self._lock.acquire(blocking=False, token=self.identity):
                self._holding, self._told_standby = True, False
                logger.info("beat %s holds the beat lock and sends the periodic tasks", self.identity)
                return True
            if not self._told_standby:
                holder = self._client.get(LOCK_KEY)
                logger.warning(
                    "another beat (%s) holds the beat lock; %s stands by and sends nothing",
                    holder.decode() if holder else "unknown",
                    self.identity,
                )
                self._told_standby = True
            return False
        except LockError:
            logger.warning("beat %s lost the beat lock; it stops sending and competes again", self.identity)
            self._holding = False
            return False
        except redis.RedisError as exc:
            if self._holding:
                logger.warning("beat %s cannot renew the beat lock (%s); it stops sending", self.identity, exc)
            self._holding = False
            return False

    def close(self) -> None:
        if self._holding:
            try:
                self._lock.release()
            except (LockError, redis.RedisError):
                pass  # it expires by itself
            self._holding = False
        super().close()
