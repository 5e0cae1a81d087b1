"""The federation tests' cast: our program `ncii`, another clearinghouse played by a small
HTTP server on 127.0.0.1 (tests/federation/remote.py), and our link to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation import services
from federation.models import Peer
from members.models import Program
from tests.conftest import SETUP
from tests.federation.remote import Origin, PeerServer


@pytest.fixture
def ncii(db: None) -> Program:
    from members import services as member_services

    return member_services.program_create(slug="ncii", name="NCII", actor=SETUP)


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture
def remote(origin: Origin, settings: Any, tmp_path: Path) -> Iterator[PeerServer]:
    settings.PEERS_ALLOW_HTTP = True
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    settings.SNAPSHOT_DIR = tmp_path / "snapshots"
    server = PeerServer(origin)
    yield server
    server.close()


@pytest.fixture
def peer(remote: PeerServer, ncii: Program) -> Peer:
    """Our link to the other clearinghouse (in these tests `peer` is the link, not the caller
    of tests/conftest.py)."""
    return services.peer_create(
        slug="other", base_url=remote.url, api_key="hxk_theirs_secret", programs=["ncii"], actor=SETUP
    )
