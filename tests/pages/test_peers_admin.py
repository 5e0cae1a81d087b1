"""Peers in the admin, in Chromium: status, cursor, lag and the last error in the list, refusals on
the peer's page, and the actions an admin takes (pause, resume, resync from zero)."""

from __future__ import annotations

from typing import Any

import pytest

from exchange import crypto
from federation.models import Peer, Refusal
from members.models import Member
from tests.conftest import make_member

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def peer(program: Any) -> Peer:
    member = make_member("other-exchange", Member.Kind.PEER, program)
    peer = Peer.objects.create(
        slug="other-exchange",
        member=member,
        base_url="https://other.example.org",
        server_key_id="ab" * 32,
        server_public_key="A" * 43 + "=",
        api_key_encrypted=crypto.encrypt("hxk_secret"),
        programs=[{"theirs": "take-it-down", "ours": "take-it-down", "hop_limit": 4}],
        cursor=120,
        last_error="the peer answered 503; retrying later",
    )
    Refusal.objects.create(
        peer=peer, seq=77, kind="hash.added", reason="bad_envelope", detail="the envelope does not verify"
    )
    return peer


def choose_action(page: Any, action: str) -> None:
    page.locator("input.action-select").first.check()
    page.select_option("select[name=action]", action)
    page.locator("button[name=index]").click()


def test_an_admin_sees_a_peers_state_and_refusals_and_pauses_resumes_and_resyncs_it(
    admin_page: Any, live_server: Any, peer: Peer
) -> None:
    admin_page.goto(f"{live_server.url}/admin/federation/peer/")
    row = admin_page.locator("#result_list tr", has_text="other-exchange")
    assert "503" in row.inner_text() and "never synced" in row.inner_text() and "120" in row.inner_text()
    assert "hxk_secret" not in admin_page.content()
    admin_page.goto(f"{live_server.url}/admin/federation/peer/{peer.pk}/change/")
    assert "Forged or altered envelope" in admin_page.locator("body").inner_text()
    admin_page.goto(f"{live_server.url}/admin/federation/peer/")
    choose_action(admin_page, "pause")
    assert "other-exchange: paused" in admin_page.locator(".messagelist").inner_text().lower()
    assert Peer.objects.get(pk=peer.pk).status == Peer.Status.PAUSED
    choose_action(admin_page, "resume")
    assert Peer.objects.get(pk=peer.pk).status == Peer.Status.ACTIVE
    choose_action(admin_page, "resync")
    assert Peer.objects.get(pk=peer.pk).cursor == 0
