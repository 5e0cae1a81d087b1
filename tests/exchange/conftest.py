"""Fixtures the webhook tests share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.exchange.test_webhook_races import GatedReceiver


@pytest.fixture
def gated(settings: Any) -> Iterator[GatedReceiver]:
    """A receiver that holds each POST until the test lets it go (test_webhook_races.py)."""
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    server = GatedReceiver()
    yield server
    server.close()
