"""DRF plumbing shared by every app: the JSON parser, pagination, the rate limit per credential."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from hashexchange_client.encoding import lone_surrogate, value_depth
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)

# No request body of the API nests deeper than a few levels; a deeper one is refused
# before any view or serializer recurses into it (RecursionError would be a 500).
MAX_REQUEST_JSON_DEPTH = 64


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing too-deep nesting, numbers Python will not parse and lone surrogates as 400s."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except LookupError:  # a codec that is no text encoding: charset=rot13, base64, zlib
            raise ParseError(f"JSON parse error - charset={encoding} is not a text encoding; send UTF-8") from None
        except UnicodeError as exc:  # UnicodeDecodeError, and what codecs such as punycode raise
            raise ParseError(f"JSON parse error - the body is not {encoding}: {exc}") from None
        try:
            # Python's parser gives up on deep nesting with RecursionError (at about 1,000
            # levels); shallower nesting is measured on the parsed value, without recursion.
            value = json.loads(text, parse_constant=_no_constant)
        except RecursionError:
            value = None
            too_deep = True
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        else:
            too_deep = value_depth(value) > MAX_REQUEST_JSON_DEPTH
        if too_deep:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_REQUEST_JSON_DEPTH} levels")
        # A lone surrogate is no character: it would fail later, when a query or the answer
        # echoing it is encoded as UTF-8 (a 500 before). UTF-8 text has one only by an
        # escape; another charset the request names (UTF-7) may decode to one.
        surrogate = lone_surrogate(value) if "\\u" in text or not text.isascii() else None
        if surrogate is not None:
            raise ParseError(
                f"JSON parse error - {surrogate} is half of a UTF-16 surrogate pair, not a character; "
                "send text as UTF-8 or escape whole pairs"
            )
        return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Pagination(LimitOffsetPagination):
    """`?limit=&offset=` on list endpoints; the feed uses its own sequence cursor."""

    default_limit = 100
    max_limit = 1000


class CredentialRateThrottle(SimpleRateThrottle):
    """A rate limit per API credential, kept in Redis.

    It fails open: when Redis is unreachable, requests go through rather than the
    exchange refusing submissions (nothing is lost by a Redis outage). After a failure
    the limit is skipped for REDIS_QUIET_SECONDS in this process, so that a Redis that
    hangs costs one request one REDIS_TIMEOUT_SECONDS, not every request.

    With the cache in Redis (as configured), the limit is a sliding-window counter: one
    round trip (INCRBY this window's counter, read the previous one), the previous window
    weighted by how much of it still overlaps the last `duration` seconds; each process
    tells Redis of its requests in small batches (LOCAL_BATCH, below), exactly near the limit. DRF's own
    throttle keeps a list of every request's time, read and rewritten whole on each
    request (two round trips and a pickle of up to `num_requests` floats), and Django's
    cache builds a new Redis client for each call; that was a fifth of an API request's
    CPU (docs/benchmarks/match-api.md). Another cache backend gets DRF's throttle.
    """

    scope = "credential"
    # time.monotonic() until which this process does not ask the cache.
    quiet_until = 0.0

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        credential = getattr(request, "auth", None)
        if credential is None or not hasattr(credential, "pk"):
            return None
        return self.cache_format % {"scope": self.scope, "ident": credential.pk}

    def allow_request(self, request: Any, view: Any) -> bool:
        if time.monotonic() < CredentialRateThrottle.quiet_until:
            return True
        try:
            client = _cache_redis()
            if client is None or self.rate is None:
                return super().allow_request(request, view)
            key = self.get_cache_key(request, view)
            if key is None:
                return True
            return self._count(client, key)
        except Exception as exc:  # noqa: BLE001 - any cache failure must not block the API
            CredentialRateThrottle.quiet_until = time.monotonic() + settings.REDIS_QUIET_SECONDS
            logger.warning(
                "rate limit skipped for %s s, cache unavailable: %s", settings.REDIS_QUIET_SECONDS, type(exc).__name__
            )
            return True

    def _count(self, client: Any, key: str) -> bool:
        now = self.timer()
        window, elapsed = divmod(now, self.duration)
        weight = 1 - elapsed / self.duration
        self._wait = self.duration - elapsed
        # At most 2 % of the limit, and at most LOCAL_BATCH, counted here before Redis is told.
        batch = max(1, min(LOCAL_BATCH, int(self.num_requests) // 50))
        with _local_lock:
            state = _local_counts.get(key)
            if state is None or state.window != int(window):
                state = _local_counts[key] = _LocalCount(int(window), carried=state)
            state.pending += 1
            estimate = state.previous * weight + state.current + state.pending
            due = (
                state.pending >= batch
                or time.monotonic() - state.told >= LOCAL_SECONDS
                or estimate > 0.9 * self.num_requests  # near the limit: every request, exactly
            )
            if due:
                self._tell(client, key, state)
                estimate = state.previous * weight + state.current
        return estimate <= self.num_requests

    def _tell(self, client: Any, key: str, state: _LocalCount) -> None:
        """Add this process's uncounted requests to Redis; read back both windows' totals."""
        prefix = _cache_prefix()
        current = f"{prefix}:{key}:{state.window}"
        pipe = client.pipeline(transaction=False)
        if state.carried:  # requests of the window before, not yet told
            pipe.incrby(f"{prefix}:{key}:{state.window - 1}", state.carried)
        pipe.incrby(current, state.pending)
        pipe.expire(current, int(self.duration) * 2)
        pipe.get(f"{prefix}:{key}:{state.window - 1}")
        # Reset first: if Redis fails, the limit fails open and these are not told later.
        state.pending = state.carried = 0
        state.told = time.monotonic()
        *_, count, _, before = pipe.execute()
        state.current, state.previous = int(count), int(before or 0)

    def wait(self) -> float | None:
        if hasattr(self, "_wait"):
            return self._wait
        return super().wait()


# Requests a process counts itself before it adds them to the shared counter in Redis: a
# round trip on every request was a fifth of the API's own CPU and, on a busy machine, most
# of a cheap request's latency (docs/benchmarks/auditlog.md). Redis is told after
# LOCAL_BATCH requests (at most 2 % of the limit), after LOCAL_SECONDS, and on every request
# once the count is past 90 % of the limit; so a credential can exceed its limit by at most
# that batch per worker process, and a limit below 100 per window is counted exactly.
LOCAL_BATCH = 20
LOCAL_SECONDS = 0.1


class _LocalCount:
    """This process's view of one credential's counters in Redis, and what it has not told."""

    __slots__ = ("window", "pending", "carried", "current", "previous", "told")

    def __init__(self, window: int, carried: _LocalCount | None = None) -> None:
        self.window = window
        # Untold requests of the window just ended (only if it is the one before this).
        self.carried = carried.pending if carried is not None and carried.window == window - 1 else 0
        self.pending = 0
        self.current = self.previous = 0
        self.told = 0.0  # never: the first request asks Redis


_local_counts: dict[str, _LocalCount] = {}
_local_lock = threading.Lock()


# One Redis client per process for the cache's server (Django's RedisCache makes a new
# client, with its ~170 response callbacks, for every call).
_REDIS_CLIENTS: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
_DJANGO_REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"


def _cache_redis() -> Any:
    """A redis.Redis for the default cache's server, or None if that cache is not Redis."""
    config = settings.CACHES["default"]
    if config.get("BACKEND") != _DJANGO_REDIS_CACHE or not isinstance(config.get("LOCATION"), str):
        return None
    options = tuple(sorted((k, v) for k, v in config.get("OPTIONS", {}).items() if k in _REDIS_OPTIONS))
    key = (config["LOCATION"], options)
    client = _REDIS_CLIENTS.get(key)
    if client is None:
        import redis

        client = _REDIS_CLIENTS[key] = redis.Redis.from_url(config["LOCATION"], **dict(options))
    return client


_REDIS_OPTIONS = {"socket_connect_timeout", "socket_timeout", "health_check_interval", "retry_on_timeout"}


def _cache_prefix() -> str:
    return "hx:throttle:" + settings.CACHES["default"].get("KEY_PREFIX", "")


def batch_response(results: Sequence[Any], *, held: bool = False) -> Response:
    """The answer to a batch (submissions, outcomes): a result per item, and the counts.

    Each result has a `status` (accepted, duplicate or rejected; for submissions also
    held, counted when `held`) and `as_dict()`.
    """
    counts = Counter(result.status for result in results)
    body = {
        "results": [result.as_dict() for result in results],
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
    }
    if held:
        body["held"] = counts["held"]
    return Response(body)
