"""The Celery broker transport: kombu's Redis transport, made to survive losing Redis.

With Celery 5.7.0 and kombu 5.7.0 a worker that loses Redis while it holds an
unacknowledged message (our tasks are acknowledged late, so any task running or
reserved at that moment) exits with "Unrecoverable error: AttributeError". On the lost
connection Celery collects and closes it, which detaches the transport from the old
channel; the old channel then tries to put the unacknowledged messages back, and later
to acknowledge the task that finished meanwhile, and both read the detached transport's
address and raise AttributeError where Celery and kombu expect a connection error. The
worker is gone, and nothing is delivered until something starts it again.

Here the old channel raises redis.ConnectionError instead: kombu ignores it on close and
logs it on acknowledgement, and the consumer reconnects as it is meant to. Losing those
messages costs nothing: Redis is gone with them, and the periodic sweep re-derives every
delivery from the database. tests/exchange/test_nothing_lost.py holds a worker to this;
docs/decisions.md has the record.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.ConnectionError("this broker connection was closed when Redis went away")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
