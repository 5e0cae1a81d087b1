"""Who may receive what: member status and enrollment state gate every outbound path.

Each test here failed before the rule lived in one place (members/selectors.py):
webhooks ignored a suspended member's status, and a closed program could be entered
with any receiving state other than opted_in.
"""

from __future__ import annotations

import pytest

from core.ledger import Actor
from exchange import delivery as webhook_delivery
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
    assert webhook_delivery.deliver_endpoint(endpoint).sent == 0
    assert endpoint not in webhook_delivery.endpoints_to_wake()
    assert receiver.received == []
    member_services.member_set_status(member=platform_b.member, status=Member.Status.ACTIVE, reason="t", actor=ADMIN)
    assert endpoint in webhook_delivery.endpoints_to_wake()
    assert webhook_delivery.deliver_endpoint(endpoint).sent == 1
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


# Whoever was sent a hash is told it was withdrawn, and owes the acknowledgement -------------


def read_feed(caller: Caller, after: int = 0) -> tuple[list[dict], int]:
    entries = []
    while True:
        page = caller.client.get(f"/api/v1/feed?after={after}").json()
        entries += page["entries"]
        after = page["next"]
        if not page["has_more"]:
            return entries, after


def set_state(caller: Caller, program: Program, state: str) -> None:
    member_services.enrollment_set(member=caller.member, program=program, state=state, actor=ADMIN)


def withdraw(signer: Signer, value: str) -> None:
    response = signer.client.post("/api/v1/withdrawals", signer.withdrawal(value), format="json")
    assert response.status_code in (200, 201), response.json()


def tombstones(entries: list[dict]) -> list[str]:
    return [e["hash"]["value"] for e in entries if e["kind"] == "hash.withdrawn"]


def hash_entries(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e.get("hash")]


def test_a_member_that_opted_out_after_it_was_sent_a_hash_is_told_of_the_withdrawal_and_owes_it(
    signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    from exchange import outcomes
    from exchange.models import Obligation

    sent, later = random_pdq(), random_pdq()
    signer_a.submit(signer_a.submission(sent))
    entries, cursor = read_feed(platform_b)
    assert sent in [e["hash"]["value"] for e in entries if e.get("hash")]
    set_state(platform_b, program, "opted_out")
    signer_a.submit(signer_a.submission(later))  # added after B left: never sent to B
    withdraw(signer_a, sent)
    withdraw(signer_a, later)
    entries, _ = read_feed(platform_b, cursor)
    assert tombstones(entries) == [sent]
    assert [e["kind"] for e in hash_entries(entries)] == ["hash.withdrawn"]
    outcomes.obligations_project()
    assert list(Obligation.objects.filter(member=platform_b.member).values_list("hash__value", flat=True)) == [sent]
    hash_id = hash_entries(entries)[0]["hash"]["id"]
    body = {
        "outcomes": [
            {
                "hash_id": hash_id,
                "program": program.slug,
                "kind": "deleted_after_withdrawal",
                "occurred_at": "2026-12-01T00:00:00Z",
                "count": 1,
                "client_ref": "gone-1",
            }
        ]
    }
    result = platform_b.client.post("/api/v1/outcomes", body, format="json").json()
    assert result["results"][0]["status"] == "accepted", result


def test_a_member_that_left_before_a_hash_was_added_hears_nothing_of_it(
    signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    from exchange import outcomes
    from exchange.models import Obligation

    _, cursor = read_feed(platform_b)
    set_state(platform_b, program, "opted_out")
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    withdraw(signer_a, value)
    entries, _ = read_feed(platform_b, cursor)
    assert tombstones(entries) == []
    outcomes.obligations_project()
    assert not Obligation.objects.filter(member=platform_b.member).exists()


@pytest.mark.parametrize("state", ["opted_out", "paused"])
def test_a_webhook_that_was_sent_a_hash_gets_its_withdrawal_after_the_member_left_or_paused(
    state: str, receiver: Receiver, signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    endpoint = create_endpoint(platform_b, receiver.url)
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    assert webhook_delivery.deliver_endpoint(endpoint).sent == 1
    set_state(platform_b, program, state)
    other = random_pdq()
    signer_a.submit(signer_a.submission(other))
    withdraw(signer_a, value)
    withdraw(signer_a, other)
    webhook_delivery.deliver_endpoint(endpoint)
    kinds = [(e["kind"], e["hash"]["value"]) for e in hash_entries(receiver.entries())]
    assert kinds == [("hash.added", value), ("hash.withdrawn", value)]


def test_an_intake_service_owes_no_acknowledgement_for_what_it_was_sent(
    signer_a: Signer, intake: Caller, platform_b: Caller
) -> None:
    from exchange import outcomes
    from exchange.models import Obligation

    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    read_feed(intake)
    read_feed(platform_b)
    withdraw(signer_a, value)
    outcomes.obligations_project()
    assert set(Obligation.objects.values_list("member__slug", flat=True)) == {"platform-b"}


# The matrix: member status x program state x enrollment state, on every outbound path ----------

RECEIVES = {"opted_in", "paused", "lapsed"}  # may read (feed, hash details, facade)
PUSHED = {"opted_in", "lapsed"}  # sent by webhook
MATCHES = {"opted_in"}  # may match


@pytest.mark.parametrize("status", ["active", "suspended", "pending"])
@pytest.mark.parametrize("program_open", [True, False], ids=["program-open", "program-closed"])
@pytest.mark.parametrize("state", ["opted_in", "paused", "lapsed", "opted_out", None])
def test_what_a_member_receives_on_every_path(
    status: str,
    program_open: bool,
    state: str | None,
    receiver: Receiver,
    signer_a: Signer,
    program: Program,
) -> None:
    """One hash, one other member in every combination of states; every outbound path
    (feed, hash details, match, the StopNCII facade, webhook delivery) answers by the
    same rule: nothing unless the member is active, then by enrollment state."""
    from rest_framework.test import APIClient

    from members.models import Enrollment
    from tests.conftest import make_caller

    member = member_services.member_create(slug="other", kind="platform", status="active", actor=ADMIN)
    caller = make_caller(member)
    endpoint = create_endpoint(caller, receiver.url)
    value = random_pdq()
    hash_id = signer_a.submit(signer_a.submission(value)).json()["results"][0]["hash_id"]
    # Set the states directly: the services refuse some of these ways in (a closed
    # program admits nobody new), but a member can be in them (it was there before).
    if state is not None:
        Enrollment.objects.create(member=member, program=program, state=state)
    Program.objects.filter(pk=program.pk).update(is_active=program_open)
    Member.objects.filter(pk=member.pk).update(status=status)
    active = status == "active"

    feed = caller.client.get("/api/v1/feed?after=0&limit=100")
    detail = caller.client.get(f"/api/v1/hashes/{hash_id}")
    match = caller.client.post("/api/v1/match", {"queries": [{"signal_type": "pdq", "value": value}]}, format="json")
    facade = APIClient()
    facade.credentials(HTTP_X_FUNCTIONS_KEY=caller.token, HTTP_OCP_APIM_SUBSCRIPTION_KEY=caller.token)
    fetched = facade.get("/compat/stopncii/v1/FetchHashes?startTimestamp=10&pageSize=100")
    webhook_delivery.deliver_endpoint(endpoint)
    pushed = [e["hash"]["value"] for e in receiver.entries() if e.get("hash")]

    if not active:
        assert feed.status_code == detail.status_code == match.status_code == 403
        assert fetched.status_code == 403
        assert pushed == []
        return
    feed_values = [e["hash"]["value"] for e in feed.json()["entries"] if e.get("hash")]
    assert (value in feed_values) == (state in RECEIVES)
    assert (detail.status_code == 200) == (state in RECEIVES), detail.status_code
    matched = [m for result in match.json()["results"] for m in result["matches"]]
    assert bool(matched) == (state in MATCHES)
    records = fetched.json().get("hashRecords", []) if fetched.status_code == 200 else []
    assert (value in [r["hashValue"] for r in records]) == (state in RECEIVES)
    assert (value in pushed) == (state in PUSHED)
