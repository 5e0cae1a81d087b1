"""The members API as a platform integration uses it."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.ledger import Event
from members.models import Enrollment, SigningKey
from tests.conftest import Caller


def raw_public_key() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_me_shows_the_member_its_enrollments_keys_and_credential_but_no_secret(platform_a: Caller) -> None:
    platform_a.client.post("/api/v1/keys", {"public_key": base64.b64encode(raw_public_key()).decode()}, format="json")
    body = platform_a.client.get("/api/v1/me").json()
    assert body["slug"] == "platform-a"
    assert body["kind"] == "platform"
    assert body["status"] == "active"
    assert [e["program"] for e in body["enrollments"]] == ["take-it-down"]
    assert len(body["signing_keys"]) == 1
    assert body["credential"]["prefix"] == platform_a.credential.prefix
    assert "submit" in body["credential"]["scopes"]
    assert platform_a.token.split("_", 2)[2] not in str(body)
    assert "digest" not in str(body)


def test_register_a_key_returns_its_id_and_records_the_event(platform_a: Caller) -> None:
    raw = raw_public_key()
    response = platform_a.client.post(
        "/api/v1/keys", {"public_key": base64.b64encode(raw).decode(), "label": "laptop"}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["key_id"] == hashlib.sha256(raw).hexdigest()
    assert body["public_key"] == base64.b64encode(raw).decode()
    assert body["revoked_at"] is None
    event = Event.objects.get(kind="key.registered")
    assert (event.actor_type, event.actor_id) == ("member", "platform-a")
    assert event.data["key_id"] == body["key_id"]
    listed = platform_a.client.get("/api/v1/keys").json()
    assert listed["count"] == 1
    assert listed["results"][0]["label"] == "laptop"


@pytest.mark.parametrize(
    ("public_key", "message"),
    [
        ("not base64!!", "not valid base64"),
        (base64.b64encode(b"\x01" * 31).decode(), "decodes to 31 bytes"),
        (base64.b64encode(b"\x01" * 33).decode(), "decodes to 33 bytes"),
        ("", "may not be blank"),
    ],
)
def test_malformed_keys_are_refused_naming_the_field(platform_a: Caller, public_key: str, message: str) -> None:
    response = platform_a.client.post("/api/v1/keys", {"public_key": public_key}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert "public_key" in body["errors"]
    assert message in body["detail"]
    assert body["detail"].startswith("public_key:")
    assert not SigningKey.objects.exists()
    assert not Event.objects.filter(kind="key.registered").exists()


def test_a_duplicate_key_is_refused_even_from_another_member(platform_a: Caller, platform_b: Caller) -> None:
    encoded = base64.b64encode(raw_public_key()).decode()
    assert platform_a.client.post("/api/v1/keys", {"public_key": encoded}, format="json").status_code == 201
    again = platform_a.client.post("/api/v1/keys", {"public_key": encoded}, format="json")
    other = platform_b.client.post("/api/v1/keys", {"public_key": encoded}, format="json")
    assert again.status_code == other.status_code == 400
    assert "already registered" in again.json()["detail"]
    assert SigningKey.objects.count() == 1


def test_unsupported_algorithm_is_refused(platform_a: Caller) -> None:
    encoded = base64.b64encode(raw_public_key()).decode()
    response = platform_a.client.post("/api/v1/keys", {"public_key": encoded, "algorithm": "rsa"}, format="json")
    assert response.status_code == 400
    assert "algorithm" in response.json()["errors"]


def test_revoking_a_key_keeps_it_listed_with_its_revocation_and_is_idempotent(platform_a: Caller) -> None:
    key_id = platform_a.client.post(
        "/api/v1/keys", {"public_key": base64.b64encode(raw_public_key()).decode()}, format="json"
    ).json()["key_id"]
    first = platform_a.client.post(f"/api/v1/keys/{key_id}/revoke", {"reason": "laptop lost"}, format="json")
    second = platform_a.client.post(f"/api/v1/keys/{key_id}/revoke", {}, format="json")
    assert first.status_code == second.status_code == 200
    assert first.json()["revoked_at"] is not None
    assert first.json()["revocation_reason"] == "laptop lost"
    assert second.json()["revoked_at"] == first.json()["revoked_at"]
    assert Event.objects.filter(kind="key.revoked").count() == 1
    assert platform_a.client.get(f"/api/v1/keys/{key_id}").json()["revoked_at"] is not None


def test_opting_in_out_and_again(platform_a: Caller, other_program) -> None:  # noqa: ANN001
    opt_in = platform_a.client.post("/api/v1/enrollments", {"program": "ncii"}, format="json")
    assert opt_in.status_code == 201
    assert opt_in.json()["state"] == "opted_in"
    repeat = platform_a.client.post("/api/v1/enrollments", {"program": "ncii", "state": "opted_in"}, format="json")
    assert repeat.status_code == 200
    opt_out = platform_a.client.post(
        "/api/v1/enrollments", {"program": "ncii", "state": "opted_out", "reason": "leaving"}, format="json"
    )
    assert opt_out.status_code == 201
    events = Event.objects.filter(kind="enrollment.changed", program="ncii").order_by("seq")
    assert [(e.data["from"], e.data["to"]) for e in events] == [(None, "opted_in"), ("opted_in", "opted_out")]
    assert events.last().data["reason"] == "leaving"
    listed = platform_a.client.get("/api/v1/enrollments").json()["results"]
    assert {(e["program"], e["state"]) for e in listed} == {("take-it-down", "opted_in"), ("ncii", "opted_out")}


def test_opting_into_an_unknown_program_is_refused_and_stores_nothing(platform_a: Caller) -> None:
    before = (Enrollment.objects.count(), Event.objects.count())
    response = platform_a.client.post("/api/v1/enrollments", {"program": "no-such-program"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["program"]
    assert "unknown program 'no-such-program'" in response.json()["detail"]
    assert (Enrollment.objects.count(), Event.objects.count()) == before


def test_members_cannot_set_the_system_state_lapsed(platform_a: Caller) -> None:
    response = platform_a.client.post(
        "/api/v1/enrollments", {"program": "take-it-down", "state": "lapsed"}, format="json"
    )
    assert response.status_code == 400
    assert "state" in response.json()["errors"]


def test_closed_programs_take_no_new_enrollments(platform_a: Caller, other_program) -> None:  # noqa: ANN001
    other_program.is_active = False
    other_program.save()
    response = platform_a.client.post("/api/v1/enrollments", {"program": "ncii"}, format="json")
    assert response.status_code == 400
    assert "closed" in response.json()["detail"]


def test_programs_list_shows_rules(platform_a: Caller, other_program) -> None:  # noqa: ANN001
    programs = {p["slug"]: p for p in platform_a.client.get("/api/v1/programs").json()["results"]}
    assert programs["ncii"]["signal_types"] == ["pdq", "md5"]
    assert programs["take-it-down"]["thresholds"]["pdq"] == 31
    assert programs["take-it-down"]["removal_deadline_hours"] == 48


def test_non_json_bodies_get_a_clear_415(platform_a: Caller) -> None:
    response = platform_a.client.post(
        "/api/v1/keys", "public_key=abc", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    assert response["Content-Type"] == "application/problem+json"
    assert "application/json" in response.json()["detail"]


def test_malformed_json_gets_a_400_not_a_500(platform_a: Caller) -> None:
    response = platform_a.client.post("/api/v1/keys", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]


def test_list_endpoints_page_with_limit_and_offset(platform_a: Caller) -> None:
    for _ in range(3):
        platform_a.client.post(
            "/api/v1/keys", {"public_key": base64.b64encode(raw_public_key()).decode()}, format="json"
        )
    page = platform_a.client.get("/api/v1/keys?limit=2").json()
    assert page["count"] == 3
    assert len(page["results"]) == 2
    assert page["next"]
    rest = platform_a.client.get("/api/v1/keys?limit=2&offset=2").json()
    assert len(rest["results"]) == 1
