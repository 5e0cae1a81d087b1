"""Submissions held for review (docs/floods.md): submitter trust and bulk-add review, each
triggered, held, released and retired with its events; a held hash reaches no member by any
path (feed, webhooks, match, the match index's snapshot, hash details, the StopNCII and NCMEC
facades, a peer reading our feed) until it is released, and then it flows as new."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework.test import APIClient

from core.ledger import Event
from core.problems import Problem
from exchange import delivery as webhook_delivery
from exchange.outcomes import outcomes_create
from hashes import matching
from hashes import services as hash_services
from hashes.models import Hash, HeldBatch, Listing, Submission
from members import services as member_services
from members.models import Member, Program
from tests.conftest import SETUP, Caller, Receiver, make_caller, make_member
from tests.signing import Signer, make_signer, random_pdq

# Each test gets its own index snapshot directory and a freshly loaded registry.
pytestmark = pytest.mark.usefixtures("index_dir")


def last_seq() -> int:
    return Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def kinds_since(seq: int) -> list[str]:
    return list(Event.objects.filter(seq__gt=seq).order_by("seq").values_list("kind", flat=True))


def submit(signer: Signer, *values: str, program: str = "take-it-down") -> dict[str, Any]:
    response = signer.submit(*(signer.submission(v, program=program) for v in values))
    assert response.status_code == 200, response.content
    return response.json()


def feed_values(caller: Caller) -> list[tuple[str, str]]:
    entries = caller.client.get("/api/v1/feed?after=0&limit=5000").json()["entries"]
    return [(e["kind"], e["hash"]["value"]) for e in entries if "hash" in e]


def matched(caller: Caller, value: str) -> int:
    body = {"queries": [{"signal_type": "pdq", "value": value}]}
    return caller.client.post("/api/v1/match", body, format="json").json()["matched"]


def set_program(program: Program, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(program, name, value)
    member_services.program_update(program=program, actor=SETUP)


def decide(client: Any, batch: HeldBatch, action: str, reason: str = "looked at every hash") -> Any:
    return client.post(
        "/admin/hashes/heldbatch/",
        {"action": action, "_selected_action": [batch.pk], "apply": "1", "reason": reason},
    )


# Submitter trust ----------------------------------------------------------------------------------


def test_a_submitter_whose_hashes_are_disputed_is_held_then_released(
    signer_a: Signer, platform_b: Caller, program: Program, admin_client: Any
) -> None:
    set_program(program, hold_dispute_percent=50, hold_dispute_min=2, dispute_threshold=1)
    first, second = random_pdq(), random_pdq()
    assert [r["status"] for r in submit(signer_a, first, second)["results"]] == ["accepted", "accepted"]
    # Platform B was sent the first and says it is not violating: a dispute quarantines it.
    platform_b.client.get("/api/v1/feed?after=0")
    [reported] = outcomes_create(
        member=platform_b.member,
        items=[
            {
                "hash_id": Hash.objects.get(value=first).pk,
                "program": program.slug,
                "kind": "not_violating",
                "occurred_at": timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                "client_ref": "n1",
            }
        ],
    )
    assert reported.status == "accepted"
    assert Hash.objects.get(value=first).status == Hash.Status.QUARANTINED

    # One of A's two hashes is disputed (50 %): its next submission is held, not distributed.
    before = last_seq()
    third = random_pdq()
    answer = submit(signer_a, third)
    assert answer["held"] == 1 and answer["accepted"] == 0
    [item] = answer["results"]
    assert item["status"] == "held" and item["error"] is None
    batch = HeldBatch.objects.get()
    assert (batch.reason, batch.status, batch.submitter_id) == ("trust", "open", signer_a.caller.member.pk)
    assert batch.evidence == {"disputed": 1, "submissions": 2, "percent_limit": 50, "window_days": 90}
    assert kinds_since(before) == ["held_batch.opened", "submission.held"]
    opened, held = Event.objects.filter(seq__gt=before).order_by("seq")
    assert opened.actor_id == "floods" and opened.data["reason"] == "trust"
    assert held.data["held_batch_id"] == batch.pk and held.data["submission_id"] == item["submission_id"]
    row = Hash.objects.get(pk=item["hash_id"])
    assert row.status == Hash.Status.HELD
    assert Listing.objects.get(hash=row).status == Listing.Status.HELD
    assert Submission.objects.get(pk=item["submission_id"]).status == Submission.Status.HELD
    assert ("hash.added", third) not in feed_values(platform_b)
    assert matched(platform_b, third) == 0
    # The same envelope's hash again is a duplicate of the held one; a single envelope answers 201.
    again = signer_a.submit(signer_a.submission(third))
    assert again.json()["results"][0]["status"] == "duplicate"
    single = signer_a.client.post("/api/v1/submissions", signer_a.submission(random_pdq()), format="json")
    assert single.status_code == 201 and single.json()["status"] == "held"

    # Visible in the admin, released there with a reason: the hashes flow as new.
    page = admin_client.get("/admin/hashes/heldbatch/")
    assert page.status_code == 200 and "platform-a" in page.content.decode()
    ask = admin_client.post("/admin/hashes/heldbatch/", {"action": "release", "_selected_action": [batch.pk]})
    assert b"reason" in ask.content
    before = last_seq()
    decide(admin_client, batch, "release", "every hash is an intimate image")
    batch.refresh_from_db()
    assert (batch.status, batch.decided_by, batch.decision_reason) == (
        "released",
        "admin",
        "every hash is an intimate image",
    )
    assert kinds_since(before) == ["held_batch.decided", "hash.added", "hash.added"]
    decided = Event.objects.get(kind="held_batch.decided")
    assert decided.data["decision"] == "released" and decided.data["submissions"] == 2 and decided.actor_id == "admin"
    assert ("hash.added", third) in feed_values(platform_b)
    assert matched(platform_b, third) == 1
    assert Hash.objects.get(value=third).status == Hash.Status.ACTIVE
    # A decided batch cannot be decided again.
    with pytest.raises(Problem, match="already decided"):
        hash_services.held_batch_decide(batch=batch, decision="retired", reason="changed my mind", actor=SETUP)
    # The released hashes count as A's undisputed ones: 1 disputed of 4 (25 %) is below the limit.
    assert submit(signer_a, random_pdq())["results"][0]["status"] == "accepted"
    # Another dispute would bring it back to 2 of 5 (40 %): still below; a retirement of 3 is not.
    for value in (second, third):
        hash_services.hash_set_status(
            hash_=Hash.objects.get(value=value), status=Hash.Status.RETIRED, reason="not violating", actor=SETUP
        )
    assert submit(signer_a, random_pdq())["results"][0]["status"] == "held"
    assert HeldBatch.objects.filter(status="open").count() == 1


def test_trust_is_judged_per_case_for_an_intake_member(intake: Caller, program: Program) -> None:
    set_program(program, hold_dispute_percent=100, hold_dispute_min=1)
    case_one, case_two = make_signer(intake), make_signer(intake)
    bad = random_pdq()
    submit(case_one, bad)
    hash_services.hash_set_status(
        hash_=Hash.objects.get(value=bad), status=Hash.Status.RETIRED, reason="not an image of a person", actor=SETUP
    )
    submit(case_two, random_pdq())
    assert submit(case_one, random_pdq())["results"][0]["status"] == "held"
    assert submit(case_two, random_pdq())["results"][0]["status"] == "accepted"
    assert HeldBatch.objects.get().signing_key_id == case_one.key.pk


# Bulk-add review ----------------------------------------------------------------------------------


def test_a_burst_is_held_as_one_batch_and_retired(
    signer_a: Signer, signer_b: Signer, platform_b: Caller, program: Program, admin_client: Any
) -> None:
    set_program(program, hold_burst_size=3, hold_burst_minutes=60)
    assert submit(signer_a, random_pdq(), random_pdq())["accepted"] == 2
    before = last_seq()
    burst = [random_pdq() for _ in range(3)]
    answer = submit(signer_a, *burst)
    assert answer["held"] == 3 and [r["status"] for r in answer["results"]] == ["held"] * 3
    batch = HeldBatch.objects.get()
    assert batch.reason == "burst" and batch.evidence == {"submissions": 5, "size_limit": 3, "window_minutes": 60}
    assert kinds_since(before) == ["held_batch.opened"] + ["submission.held"] * 3
    # Later submissions of the same submitter join the open batch; others are not held.
    later = random_pdq()
    assert submit(signer_a, later)["held"] == 1
    assert HeldBatch.objects.count() == 1 and batch.submissions.count() == 4
    assert submit(signer_b, random_pdq())["accepted"] == 1
    # Another member submits one of the held values itself: it is distributed on its word.
    shared = burst[0]
    assert submit(signer_b, shared)["accepted"] == 1
    assert ("hash.added", shared) in feed_values(platform_b)

    page = admin_client.post(
        "/admin/hashes/heldbatch/", {"action": "retire", "_selected_action": [batch.pk], "apply": "1", "reason": ""}
    )
    assert b"Give a reason" in page.content
    before = last_seq()
    decide(admin_client, batch, "retire", "a scraped meme collection")
    batch.refresh_from_db()
    assert batch.status == "retired"
    kinds = kinds_since(before)
    assert kinds[0] == "held_batch.decided" and kinds.count("submission.retired") == 4
    # The three hashes nothing else supports are retired for good; the shared one stays.
    assert kinds.count("hash.retired") == 3
    assert Hash.objects.get(value=shared).status == Hash.Status.ACTIVE
    for value in (*burst[1:], later):
        assert Hash.objects.get(value=value).status == Hash.Status.RETIRED
        assert not Listing.objects.filter(hash__value=value).exists()
    assert set(batch.submissions.values_list("status", flat=True)) == {"retired"}
    assert all(("hash.added", v) not in feed_values(platform_b) for v in (*burst[1:], later))
    assert not any(kind == "hash.withdrawn" for kind in kinds)  # nobody was sent them: nobody is told
    assert submit(signer_b, later)["results"][0]["error"]["code"] == "hash_retired"


def test_a_released_burst_does_not_count_again(signer_a: Signer, program: Program) -> None:
    set_program(program, hold_burst_size=2)
    assert submit(signer_a, *(random_pdq() for _ in range(3)))["held"] == 3
    hash_services.held_batch_decide(
        batch=HeldBatch.objects.get(), decision="released", reason="an incident, reviewed", actor=SETUP
    )
    assert submit(signer_a, random_pdq())["accepted"] == 1


def test_a_submitter_may_withdraw_a_held_submission_and_nobody_is_told(
    signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    set_program(program, hold_burst_size=2)
    values = [random_pdq() for _ in range(3)]
    submit(signer_a, *values)
    before = last_seq()
    response = signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(values[0]), format="json")
    assert response.status_code in (200, 201), response.content
    assert kinds_since(before) == ["submission.withdrawn"]
    assert not Listing.objects.filter(hash__value=values[0]).exists()
    assert Hash.objects.get(value=values[0]).status == Hash.Status.WITHDRAWN
    hash_services.held_batch_decide(batch=HeldBatch.objects.get(), decision="released", reason="ok", actor=SETUP)
    assert sorted(v for kind, v in feed_values(platform_b)) == sorted(values[1:])


def test_peers_are_not_held(peer: Caller, program: Program) -> None:
    """A peer relays what another clearinghouse already took; its own burst rules applied there."""
    set_program(program, hold_burst_size=2, hold_dispute_percent=1, hold_dispute_min=1)
    answer = submit(make_signer(peer), *(random_pdq() for _ in range(3)))
    assert answer["accepted"] == 3 and not HeldBatch.objects.exists()


# Settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hold_dispute_percent", 101, "less than or equal to 100"),
        ("hold_dispute_min", 0, "greater than or equal to 1"),
        ("hold_window_days", 0, "greater than or equal to 1"),
        ("hold_burst_size", 1, "a burst is more than one submission"),
        ("hold_burst_minutes", 0, "greater than or equal to 1"),
        ("hold_burst_minutes", 20000, "less than or equal to 10080"),
    ],
)
def test_bad_settings_are_refused_in_the_admin_and_the_service(
    admin_client: Any, program: Program, field: str, value: int, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        member_services.program_create(slug="other", protection={field: value}, actor=SETUP)
    form = admin_client.get(f"/admin/members/program/{program.pk}/change/")
    assert field in form.content.decode()
    data = {
        "name": program.name,
        "description": "",
        "signal_types": '["pdq"]',
        "thresholds": '{"pdq": 31}',
        "submitter_kinds": '["platform"]',
        "min_pdq_quality": 50,
        "removal_deadline_hours": 48,
        "dispute_threshold": 3,
        "lapse_after_days": 7,
        "is_active": "on",
        "refuse_benign": "on",
        "anomaly_multiple": 10,
        "anomaly_window_days": 14,
        "anomaly_min_matches": 50,
        "hold_dispute_percent": 0,
        "hold_dispute_min": 20,
        "hold_window_days": 90,
        "hold_burst_size": 0,
        "hold_burst_minutes": 60,
        field: value,
    }
    page = admin_client.post(f"/admin/members/program/{program.pk}/change/", data)
    assert page.status_code == 200 and message in page.content.decode()
    assert getattr(Program.objects.get(pk=program.pk), field) != value
    data[field] = {"hold_burst_size": 5, "hold_burst_minutes": 30}.get(field, 50)
    assert admin_client.post(f"/admin/members/program/{program.pk}/change/", data).status_code == 302
    updated = Event.objects.filter(kind="program.updated").last()
    assert updated.data[field] == data[field]


# A held hash reaches no member by any path ------------------------------------------------------------


@dataclass
class Held:
    value: str
    hash_id: int
    batch: HeldBatch

    def release(self) -> None:
        hash_services.held_batch_decide(batch=self.batch, decision="released", reason="reviewed", actor=SETUP)


@pytest.fixture
def held(signer_a: Signer, platform_b: Caller, program: Program) -> Held:
    """One hash held in a burst (size 1: two submissions are a burst), after one distributed hash."""
    submit(signer_a, random_pdq())
    set_program(program, hold_burst_size=2)
    value = random_pdq()
    [first, _second] = submit(signer_a, value, random_pdq())["results"]
    assert first["status"] == "held"
    return Held(value, first["hash_id"], HeldBatch.objects.get())


def test_path_feed(held: Held, platform_b: Caller) -> None:
    assert held.value not in [v for _, v in feed_values(platform_b)]
    held.release()
    assert ("hash.added", held.value) in feed_values(platform_b)


def test_path_webhooks(held: Held, platform_b: Caller, receiver: Receiver) -> None:
    response = platform_b.client.post("/api/v1/webhooks", {"url": receiver.url}, format="json")
    assert response.status_code == 201
    endpoint = response.json()["id"]
    webhook_delivery.deliver_endpoint(endpoint)
    assert held.value not in [e["hash"]["value"] for e in receiver.entries() if "hash" in e]
    held.release()
    webhook_delivery.deliver_endpoint(endpoint)
    assert held.value in [e["hash"]["value"] for e in receiver.entries() if "hash" in e]


def test_path_match_and_the_index_snapshot(held: Held, platform_b: Caller) -> None:
    assert matched(platform_b, held.value) == 0
    matching.index_build(signal_type="pdq", full=True)  # a snapshot written from the database
    matching.registry.reset()
    assert matched(platform_b, held.value) == 0
    held.release()
    assert matched(platform_b, held.value) == 1


def test_path_hash_details(held: Held, platform_b: Caller, signer_a: Signer) -> None:
    assert platform_b.client.get(f"/api/v1/hashes/{held.hash_id}").status_code == 404
    own = signer_a.client.get(f"/api/v1/hashes/{held.hash_id}")
    assert own.status_code == 200  # its submitter sees its own held submission
    held.release()
    assert platform_b.client.get(f"/api/v1/hashes/{held.hash_id}").status_code == 200


def test_path_stopncii_facade(held: Held, platform_b: Caller) -> None:
    client = APIClient()
    client.credentials(HTTP_X_FUNCTIONS_KEY=platform_b.token, HTTP_OCP_APIM_SUBSCRIPTION_KEY=platform_b.token)

    def values() -> list[str]:
        answer = client.get("/compat/stopncii/v1/FetchHashes?startTimestamp=10&pageSize=800")
        assert answer.status_code == 200
        return [r["hashValue"].lower() for r in answer.json()["hashRecords"]]

    assert held.value not in values()
    held.release()
    assert held.value in values()


def test_path_ncmec_facade(held: Held, platform_b: Caller, program: Program, signer_a: Signer) -> None:
    client = APIClient()
    token = base64.b64encode(f"platform-b:{platform_b.token}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {token}")
    vote = f"/compat/ncmec/v2/entries/{program.pk}/{held.hash_id}/PDQ/feedback"
    body = b"<feedbackSubmission><affirmative/></feedbackSubmission>"
    assert held.value.encode() not in client.get("/compat/ncmec/v2/entries").content
    assert client.put(vote, body, content_type="application/xml").status_code == 404
    # Its submitter withdraws another held hash: that event names it, but no entry shows it.
    other = Submission.objects.filter(held_batch=held.batch).exclude(hash_id=held.hash_id).get()
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(other.hash.value), format="json")
    listed = client.get("/compat/ncmec/v2/entries").content
    assert other.hash.value.encode() not in listed and f"<id>{other.hash_id}</id>".encode() not in listed
    held.release()
    assert held.value.encode() in client.get("/compat/ncmec/v2/entries").content


def test_path_a_peer_reading_our_feed(held: Held, program: Program) -> None:
    peer = make_caller(make_member("peer-c", Member.Kind.PEER, program))
    assert held.value not in [v for _, v in feed_values(peer)]
    held.release()
    assert ("hash.added", held.value) in feed_values(peer)


def test_path_stopncii_cases_show_no_held_submission(
    signer_a: Signer, signer_b: Signer, platform_b: Caller, program: Program
) -> None:
    """A held submission of a value another member distributes adds no case to its record."""
    value = random_pdq()
    assert submit(signer_b, value)["accepted"] == 1
    set_program(program, hold_burst_size=2)
    assert submit(signer_a, value, random_pdq(), random_pdq())["held"] == 3
    client = APIClient()
    client.credentials(HTTP_X_FUNCTIONS_KEY=platform_b.token, HTTP_OCP_APIM_SUBSCRIPTION_KEY=platform_b.token)

    def cases() -> dict[str, str]:
        answer = client.get("/compat/stopncii/v1/FetchHashes?startTimestamp=10&pageSize=800").json()
        [record] = [r for r in answer["hashRecords"] if r["hashValue"].lower() == value]
        return record["caseNumbers"]

    assert list(cases().values()) == ["Active"]
    hash_services.held_batch_decide(batch=HeldBatch.objects.get(), decision="released", reason="ok", actor=SETUP)
    assert list(cases().values()) == ["Active", "Active"]
