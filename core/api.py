"""DRF plumbing shared by every app: pagination and the rate limit per credential."""

from __future__ import annotations

import logging
from typing import Any

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)


class Pagination(LimitOffsetPagination):
    """`?limit=&offset=` on list endpoints; the feed uses its own sequence cursor."""

    default_limit = 100
    max_limit = 1000


class CredentialRateThrottle(SimpleRateThrottle):
    """A rate limit per API credential, kept in Redis.

    It fails open: when Redis is unreachable, requests go through rather than the
    exchange refusing submissions (nothing is lost by a Redis outage).
    """

    scope = "credential"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        credential = getattr(request, "auth", None)
        if credential is None or not hasattr(credential, "pk"):
            return None
        return self.cache_format % {"scope": self.scope, "ident": credential.pk}

    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # noqa: BLE001 - any cache failure must not block the API
            logger.warning("rate limit skipped, cache unavailable: %s", exc)
            return True
