"""DRF plumbing shared by every app: the JSON parser, pagination, the rate limit per credential."""

from __future__ import annotations

import json
import logging
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


def batch_response(results: Sequence[Any]) -> Response:
    """The answer to a batch (submissions, outcomes): a result per item, and the counts.

    Each result has a `status` (accepted, duplicate or rejected) and `as_dict()`.
    """
    counts = Counter(result.status for result in results)
    return Response(
        {
            "results": [result.as_dict() for result in results],
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
        }
    )
