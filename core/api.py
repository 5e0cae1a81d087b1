"""DRF plumbing shared by every app: the JSON parser, pagination, the rate limit per credential."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from django.conf import settings
from hashexchange_client.encoding import json_depth, lone_surrogate
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)

# No request body of the API nests deeper than a few levels; a deeper one is refused
# before Python's parser recurses into it (it would raise RecursionError: a 500).
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
        if json_depth(text) > MAX_REQUEST_JSON_DEPTH:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_REQUEST_JSON_DEPTH} levels")
        try:
            value = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
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
            return super().allow_request(request, view)
        except Exception as exc:  # noqa: BLE001 - any cache failure must not block the API
            CredentialRateThrottle.quiet_until = time.monotonic() + settings.REDIS_QUIET_SECONDS
            logger.warning(
                "rate limit skipped for %s s, cache unavailable: %s", settings.REDIS_QUIET_SECONDS, type(exc).__name__
            )
            return True
