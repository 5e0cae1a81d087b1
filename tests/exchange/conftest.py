"""Fixtures the webhook tests share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import local_server
from tests.exchange.test_webhook_races import GatedReceiver


@pytest.fixture
def gated(settings: Any) -> Iterator[GatedReceiver]:
    """A receiver that holds each POST until the test lets it go (test_webhook_races.py)."""
    yield from local_server(settings, GatedReceiver())
