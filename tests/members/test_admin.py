"""The Django admin: actions go through the services and are recorded with the admin as actor."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from core.ledger import Event
from members.models import ApiCredential, Member, Program, SigningKey
from tests.conftest import SETUP, Caller
from tests.test_permissions import new_public_key


def test_admin_login_page_is_served(client: Client, db: None) -> None:
    assert client.get("/admin/login/").status_code == 200
    assert client.get("/admin/").status_code == 302


def test_admin_pages_list_everything(admin_client: Client, platform_a: Caller) -> None:
    for url in [
        "/admin/members/member/",
        "/admin/members/program/",
        "/admin/members/enrollment/",
        "/admin/members/apicredential/",
        "/admin/members/signingkey/",
        "/admin/exchange/event/",
        "/admin/members/member/?kind__exact=platform&q=platform",
        "/admin/exchange/event/?kind=member.created",
    ]:
        response = admin_client.get(url)
        assert response.status_code == 200, url
    assert "platform-a" in admin_client.get("/admin/members/member/?q=platform").content.decode()


def test_suspending_from_the_admin_stops_the_api_and_is_an_event(admin_client: Client, platform_a: Caller) -> None:
    response = admin_client.post(
        "/admin/members/member/", {"action": "suspend", "_selected_action": [platform_a.member.pk]}, follow=True
    )
    assert response.status_code == 200
    assert Member.objects.get(pk=platform_a.member.pk).status == "suspended"
    event = Event.objects.get(kind="member.suspended")
    assert (event.actor_type, event.actor_id) == ("admin", "admin")
    assert platform_a.client.get("/api/v1/me").status_code == 403
    admin_client.post("/admin/members/member/", {"action": "activate", "_selected_action": [platform_a.member.pk]})
    assert platform_a.client.get("/api/v1/me").status_code == 200


def test_issuing_a_key_from_the_admin_shows_it_once(admin_client: Client, platform_a: Caller) -> None:
    response = admin_client.post(
        "/admin/members/member/",
        {"action": "issue_credential", "_selected_action": [platform_a.member.pk]},
        follow=True,
    )
    token = re.search(r"hxk_[0-9a-f]{12}_[A-Za-z0-9_-]+", response.content.decode()).group(0)
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.get("/api/v1/me").status_code == 200
    listing = admin_client.get("/admin/members/apicredential/").content.decode()
    assert token not in listing


def test_revoking_keys_and_credentials_from_the_admin(admin_client: Client, platform_a: Caller) -> None:
    from members import services

    key = services.signing_key_register(member=platform_a.member, public_key=new_public_key(), actor=SETUP)
    admin_client.post("/admin/members/signingkey/", {"action": "revoke", "_selected_action": [key.pk]})
    admin_client.post(
        "/admin/members/apicredential/", {"action": "revoke", "_selected_action": [platform_a.credential.pk]}
    )
    assert SigningKey.objects.get(pk=key.pk).revoked_at is not None
    assert ApiCredential.objects.get(pk=platform_a.credential.pk).revoked_at is not None
    assert platform_a.client.get("/api/v1/me").status_code == 401
    assert Event.objects.filter(kind__in=["key.revoked", "credential.revoked"], actor_type="admin").count() == 2


HOLD_DEFAULTS = {
    "hold_dispute_percent": 0,
    "hold_dispute_min": 20,
    "hold_window_days": 90,
    "hold_burst_size": 0,
    "hold_burst_minutes": 60,
}


def test_creating_a_member_and_a_program_in_the_admin_records_events(admin_client: Client, db: None) -> None:
    response = admin_client.post(
        "/admin/members/program/add/",
        {
            "slug": "ncii",
            "name": "NCII",
            "description": "",
            "signal_types": '["pdq"]',
            "thresholds": '{"pdq": 20}',
            "submitter_kinds": '["platform"]',
            "min_pdq_quality": 50,
            "removal_deadline_hours": 24,
            "dispute_threshold": 3,
            "lapse_after_days": 7,
            "is_active": "on",
            "refuse_benign": "on",
            "anomaly_multiple": 8,
            "anomaly_window_days": 14,
            "anomaly_min_matches": 50,
            **HOLD_DEFAULTS,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Program.objects.get(slug="ncii").anomaly_multiple == 8
    response = admin_client.post(
        "/admin/members/member/add/",
        {
            "slug": "acme",
            "name": "Acme",
            "kind": "platform",
            "enrollments-TOTAL_FORMS": 0,
            "enrollments-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert list(Event.objects.values_list("kind", "actor_type")) == [
        ("program.created", "admin"),
        ("member.created", "admin"),
    ]


@pytest.mark.parametrize("method", ["get", "post"])
def test_events_cannot_be_edited_or_deleted_in_the_admin(admin_client: Client, platform_a: Caller, method: str) -> None:
    seq = Event.objects.first().seq
    detail = getattr(admin_client, method)(f"/admin/exchange/event/{seq}/change/", {"kind": "forged"})
    if method == "get":
        assert detail.status_code == 200  # viewable, read-only
        assert 'name="kind"' not in detail.content.decode()
    else:
        assert detail.status_code == 403
    assert admin_client.post(f"/admin/exchange/event/{seq}/delete/", {"post": "yes"}).status_code == 403
    assert Event.objects.get(seq=seq).kind != "forged"


@pytest.mark.parametrize("what", ["member", "program"])
def test_members_and_programs_are_not_deleted_in_the_admin(
    admin_client: Client, platform_a: Caller, program: Program, what: str
) -> None:
    """A member is suspended and a program deactivated instead: events name them, and
    submissions refer to them without a database constraint (docs/decisions.md)."""
    row = platform_a.member if what == "member" else program
    assert admin_client.post(f"/admin/members/{what}/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    changelist = admin_client.get(f"/admin/members/{what}/").content.decode()
    assert "delete_selected" not in changelist
    assert type(row).objects.filter(pk=row.pk).exists()
