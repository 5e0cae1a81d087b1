"""Who may receive what: member status and enrollment state gate every outbound path.

Each test here failed before the rule lived in one place (members/selectors.py):
webhooks ignored a suspended member's status, and a closed program could be entered
with any receiving state other than opted_in.
"""

from __future__ import annotations

import pytest

from core.ledger import Actor
from exchange import services
from members import services as member_services
from members.models import Member, Program
from tests.conftest import Caller, Receiver
from tests.signing import Signer, random_pdq

ADMIN = Actor.admin("test")


def create_endpoint(caller: Caller, url: str) -> int:
    response = caller.client.post("/api/v1/webhooks", {"url": url}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


@pytest.mark.parametrize("status", [Member.Status.SUSPENDED, Member.Status.PENDING])
def test_a_member_that_is_not_active_gets_no_webhook_and_catches_up_when_active_again(
    status: str, receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    endpoint = create_endpoint(platform_b, receiver.url)
    member_services.member_set_status(member=platform_b.member, status=status, reason="test", actor=ADMIN)
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    assert services.deliver_endpoint(endpoint).sent == 0
    assert endpoint not in services.endpoints_to_wake()
    assert receiver.received == []
    member_services.member_set_status(member=platform_b.member, status=Member.Status.ACTIVE, reason="t", actor=ADMIN)
    assert endpoint in services.endpoints_to_wake()
    assert services.deliver_endpoint(endpoint).sent == 1
    assert [e["hash"]["value"] for e in receiver.entries()] == [value]


@pytest.mark.parametrize("state", ["opted_in", "paused"])
def test_a_closed_program_lets_nobody_new_in_whatever_the_state(state: str, platform_a: Caller) -> None:
    closed = member_services.program_create(slug="closed", name="Closed", actor=ADMIN)
    Program.objects.filter(pk=closed.pk).update(is_active=False)
    response = platform_a.client.post("/api/v1/enrollments", {"program": "closed", "state": state}, format="json")
    assert response.status_code == 400, response.json()
    assert "closed to new enrollments" in response.json()["detail"]
    assert not platform_a.member.enrollments.filter(program__slug="closed").exists()


def test_a_member_already_receiving_a_program_that_closes_may_still_pause_and_resume(
    platform_a: Caller, program: Program
) -> None:
    Program.objects.filter(pk=program.pk).update(is_active=False)
    program.refresh_from_db()
    for state in ("paused", "opted_in"):
        member_services.enrollment_set(member=platform_a.member, program=program, state=state, actor=ADMIN)


def test_an_auditor_cannot_enroll_in_any_receiving_state(auditor: Caller, program: Program) -> None:
    for state in ("opted_in", "paused"):
        with pytest.raises(Exception, match="auditors read reports"):
            member_services.enrollment_set(member=auditor.member, program=program, state=state, actor=ADMIN)
