"""Outcomes, withdrawal acknowledgements, disputes and participation, as members and admins meet them."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from core.ledger import Event
from exchange import outcomes as outcome_services
from exchange.models import Dispute, Obligation, Outcome
from exchange.participation import participation_check
from hashes.models import Hash
from members.models import Enrollment, Program
from tests.conftest import Caller, make_caller, make_member
from tests.signing import Signer, random_pdq


def now_iso(minutes: float = 0) -> str:
    return (timezone.now() + dt.timedelta(minutes=minutes)).isoformat()


def report(caller: Caller, *items: dict) -> dict:
    response = caller.client.post("/api/v1/outcomes", {"outcomes": list(items)}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def read_feed(caller: Caller) -> None:
    after = 0
    while True:
        page = caller.client.get(f"/api/v1/feed?after={after}").json()
        after = page["next"]
        if not page["has_more"]:
            return


@pytest.fixture
def shared_hash(signer_a: Signer, platform_b: Caller) -> dict:
    """A hash platform A submitted and platform B has been sent (it read its feed)."""
    value = random_pdq()
    hash_id = signer_a.submit(signer_a.submission(value)).json()["results"][0]["hash_id"]
    read_feed(platform_b)
    return {"id": hash_id, "value": value}


def outcome(hash_id: int, kind: str = "removed", ref: str = "r1", **fields: object) -> dict:
    return {
        "hash_id": hash_id,
        "program": "take-it-down",
        "kind": kind,
        "occurred_at": now_iso(),
        "count": 1,
        "client_ref": ref,
        **fields,
    }


def test_a_member_reports_what_it_did_and_can_repeat_safely(shared_hash: dict, platform_b: Caller) -> None:
    item = outcome(shared_hash["id"], "removed", "case-77", count=3, tags=["ncii", "auto"])
    first = report(platform_b, item)
    assert (first["accepted"], first["results"][0]["status"]) == (1, "accepted")
    row = Outcome.objects.get()
    assert (row.kind, row.count, row.tags, row.member.slug) == ("removed", 3, ["auto", "ncii"], "platform-b")
    event = Event.objects.get(kind="outcome.reported")
    assert (event.program, event.data["kind"], event.data["count"]) == ("take-it-down", "removed", 3)
    again = report(platform_b, item, item)
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]
    assert {r["outcome_id"] for r in again["results"]} == {row.pk}
    clash = report(platform_b, {**item, "count": 4})
    assert clash["results"][0]["error"]["code"] == "client_ref_conflict"
    by_value = report(
        platform_b,
        {
            "signal_type": "pdq",
            "value": shared_hash["value"].upper(),
            "program": "take-it-down",
            "kind": "matched",
            "occurred_at": now_iso(),
            "client_ref": "m1",
        },
    )
    assert by_value["accepted"] == 1
    assert Outcome.objects.count() == 2


def test_bad_outcomes_are_refused_item_by_item(
    shared_hash: dict, platform_b: Caller, signer_a: Signer, other_program: Program
) -> None:
    never_sent = signer_a.submit(signer_a.submission()).json()["results"][0]["hash_id"]  # after B's last read
    hash_id = shared_hash["id"]
    cases = [
        ("accepted", None, outcome(hash_id, ref="ok")),
        ("rejected", "hash_not_sent", outcome(never_sent, ref="a")),
        ("rejected", "unknown_hash", outcome(999999, ref="b")),
        ("rejected", "unknown_kind", outcome(hash_id, "deleted", ref="c")),
        ("rejected", "future_time", outcome(hash_id, ref="d", occurred_at=now_iso(60))),
        ("rejected", "malformed", outcome(hash_id, ref="e", count=-1)),
        ("rejected", "malformed", outcome(hash_id, ref="f", count=0)),
        ("rejected", "personal_data_refused", outcome(hash_id, ref="g", user_id="u-1")),
        ("rejected", "personal_data_refused", outcome(hash_id, ref="h", tags=["uploader-12345678"])),
        ("rejected", "malformed", outcome(hash_id, ref="i", tags=["Has Space"])),
        ("rejected", "malformed", outcome(hash_id, ref="j", occurred_at="yesterday")),
        ("rejected", "malformed", {k: v for k, v in outcome(hash_id).items() if k != "client_ref"}),
        ("rejected", "unknown_program", outcome(hash_id, ref="k", program="nope")),
        ("rejected", "hash_not_sent", outcome(hash_id, ref="l", program="ncii")),
        ("rejected", "invalid_hash", {**outcome(0, ref="m"), "hash_id": None} | {"signal_type": "pdq", "value": "xx"}),
    ]
    cases[-1][2].pop("hash_id")
    body = report(platform_b, *[item for _, _, item in cases])
    got = [(r["status"], r["error"]["code"] if r["error"] else None) for r in body["results"]]
    assert got == [(status, code) for status, code, _ in cases]
    assert Outcome.objects.count() == 1
    assert "user_id" in body["results"][7]["error"]["detail"]


@pytest.mark.parametrize("body", [{}, {"outcomes": []}, {"outcomes": "x"}, [1]])
def test_bodies_without_outcomes_are_400(platform_b: Caller, body: object) -> None:
    response = platform_b.client.post("/api/v1/outcomes", body, format="json")
    assert response.status_code == 400
    assert "outcomes" in response.json()["detail"]


def test_feedback_aggregates_show_on_the_hash_where_the_program_shares_them(
    shared_hash: dict, platform_b: Caller, signer_a: Signer, program: Program
) -> None:
    report(platform_b, outcome(shared_hash["id"], "matched", "1"), outcome(shared_hash["id"], "removed", "2"))
    detail = signer_a.client.get(f"/api/v1/hashes/{shared_hash['id']}").json()
    feedback = detail["feedback"]["take-it-down"]
    assert (feedback["matched"], feedback["removed"], feedback["not_violating"], feedback["members"]) == (1, 1, 0, 1)
    program.share_feedback = False
    program.save()
    assert signer_a.client.get(f"/api/v1/hashes/{shared_hash['id']}").json()["feedback"] == {}


def test_a_withdrawal_creates_acknowledgements_for_members_that_were_sent_the_hash(
    shared_hash: dict, signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    unread = make_caller(make_member("never-reads", "platform", program))
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(shared_hash["value"]), format="json")
    assert outcome_services.obligations_project() == 1
    assert outcome_services.obligations_project() == 0  # each withdrawal is projected once
    owed = Obligation.objects.get()
    assert (owed.member.slug, owed.hash_id) == ("platform-b", shared_hash["id"])
    assert owed.due_at - owed.created_at == dt.timedelta(hours=48)
    listed = platform_b.client.get("/api/v1/obligations?status=open").json()["results"]
    assert [(o["hash_id"], o["status"], o["kind"]) for o in listed] == [
        (shared_hash["id"], "open", "deleted_after_withdrawal")
    ]
    assert unread.client.get("/api/v1/obligations").json()["count"] == 0
    report(platform_b, outcome(shared_hash["id"], "deleted_after_withdrawal", "del-1"))
    assert platform_b.client.get("/api/v1/obligations?status=fulfilled").json()["results"][0]["status"] == "fulfilled"
    assert platform_b.client.get("/api/v1/obligations?status=open").json()["count"] == 0


def test_late_and_early_acknowledgements(shared_hash: dict, signer_a: Signer, platform_b: Caller) -> None:
    report(platform_b, outcome(shared_hash["id"], "deleted_after_withdrawal", "early", occurred_at=now_iso(1)))
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(shared_hash["value"]), format="json")
    outcome_services.obligations_project()
    assert Obligation.objects.get().status == "fulfilled"  # reported before the projector ran
    Obligation.objects.all().delete()
    Obligation.objects.create(
        member=platform_b.member,
        hash_id=shared_hash["id"],
        program=Program.objects.get(slug="take-it-down"),
        event_seq=1,
        created_at=timezone.now() - dt.timedelta(hours=50),
        due_at=timezone.now() - dt.timedelta(hours=2),
    )
    assert platform_b.client.get("/api/v1/obligations?status=overdue").json()["count"] == 1
    report(platform_b, outcome(shared_hash["id"], "deleted_after_withdrawal", "late"))
    assert Obligation.objects.get().status == "fulfilled_late"


def test_enough_not_violating_reports_quarantine_the_hash_until_an_admin_decides(
    shared_hash: dict, signer_a: Signer, signer_b: Signer, platform_b: Caller, program: Program, admin_client
) -> None:  # noqa: ANN001
    program.dispute_threshold = 2
    program.save()
    third = make_caller(make_member("platform-c", "platform", program))
    read_feed(third)
    report(platform_b, outcome(shared_hash["id"], "not_violating", "nv"))
    report(platform_b, outcome(shared_hash["id"], "not_violating", "nv-again"))  # the same member counts once
    assert Hash.objects.get(pk=shared_hash["id"]).status == "active"
    report(third, outcome(shared_hash["id"], "not_violating", "nv"))
    assert Hash.objects.get(pk=shared_hash["id"]).status == "quarantined"
    dispute = Dispute.objects.get()
    assert (dispute.status, dispute.reporters) == ("open", 2)
    tombstone = platform_b.client.get(f"/api/v1/feed?after={Event.objects.get(kind='hash.added').seq}").json()
    assert [e["kind"] for e in tombstone["entries"] if e["kind"].startswith("hash.")] == ["hash.quarantined"]
    detail = signer_a.client.get(f"/api/v1/hashes/{shared_hash['id']}").json()
    assert detail["disputes"][0]["status"] == "open" and detail["status"] == "quarantined"
    refused = signer_b.submit(signer_b.submission(shared_hash["value"])).json()["results"][0]
    assert refused["error"]["code"] == "hash_quarantined"
    ask = admin_client.post("/admin/exchange/dispute/", {"action": "restore", "_selected_action": [dispute.pk]})
    assert "Reason (required)" in ask.content.decode()
    admin_client.post(
        "/admin/exchange/dispute/",
        {"action": "restore", "_selected_action": [dispute.pk], "apply": "1", "reason": "reviewed: violating"},
    )
    assert Hash.objects.get(pk=shared_hash["id"]).status == "active"
    restored = Event.objects.get(kind="hash.restored")
    assert (restored.actor_type, restored.data["reason"]) == ("admin", "reviewed: violating")
    assert Dispute.objects.get().status == "restored"


def test_retiring_a_disputed_hash(shared_hash: dict, platform_b: Caller, program: Program) -> None:
    program.dispute_threshold = 1
    program.save()
    report(platform_b, outcome(shared_hash["id"], "not_violating", "nv"))
    dispute = Dispute.objects.get()
    from core.ledger import Actor

    outcome_services.dispute_decide(dispute=dispute, decision="retired", reason="not violating", actor=Actor.admin("x"))
    assert Hash.objects.get(pk=shared_hash["id"]).status == "retired"
    assert Event.objects.filter(kind="hash.retired").exists()
    with pytest.raises(Exception, match="already decided"):
        outcome_services.dispute_decide(dispute=dispute, decision="restored", reason="x", actor=Actor.admin("x"))


def test_members_that_stop_taking_part_lapse_and_come_back(
    shared_hash: dict, platform_b: Caller, program: Program
) -> None:
    quiet = make_caller(make_member("quiet", "platform", program))
    assert participation_check() == []  # everyone is inside their window
    later = timezone.now() + dt.timedelta(days=8)
    changes = {(c.member, c.state) for c in participation_check(now=later)}
    assert ("quiet", "lapsed") in changes and ("platform-b", "lapsed") in changes
    enrollment = Enrollment.objects.get(member=quiet.member)
    assert enrollment.state == "lapsed"
    assert "since enrolling" in enrollment.reason
    event = Event.objects.filter(kind="enrollment.changed", subject_id="quiet:take-it-down").last()
    assert (event.actor_type, event.data["to"]) == ("system", "lapsed")
    read_feed(quiet)  # taking part again
    assert {(c.member, c.state) for c in participation_check()} == {("quiet", "opted_in")}
    assert Enrollment.objects.get(member=quiet.member).reason == "participation resumed"


def test_overdue_acknowledgements_lapse_the_enrollment(
    shared_hash: dict, signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(shared_hash["value"]), format="json")
    outcome_services.obligations_project()
    changes = participation_check(now=timezone.now() + dt.timedelta(hours=49))
    assert [(c.member, c.state, c.reason) for c in changes if c.member == "platform-b"] == [
        ("platform-b", "lapsed", "overdue withdrawal acknowledgements")
    ]


def test_feed_entries_carry_the_feedback_too(shared_hash: dict, platform_b: Caller, program: Program) -> None:
    report(platform_b, outcome(shared_hash["id"], "removed", "1"))
    entries = platform_b.client.get("/api/v1/feed?after=0").json()["entries"]
    added = next(e for e in entries if e["kind"] == "hash.added")
    assert (added["feedback"]["removed"], added["feedback"]["members"]) == (1, 1)
    program.share_feedback = False
    program.save()
    entries = platform_b.client.get("/api/v1/feed?after=0").json()["entries"]
    assert "feedback" not in next(e for e in entries if e["kind"] == "hash.added")


def test_a_platform_that_only_asks_match_can_report_on_what_matched(signer_a: Signer, program: Program) -> None:
    matcher = make_caller(make_member("match-only", "platform", program))
    value = random_pdq()
    hash_id = signer_a.submit(signer_a.submission(value)).json()["results"][0]["hash_id"]
    item = outcome(hash_id, "removed", "m-1")
    assert report(matcher, item)["results"][0]["error"]["code"] == "hash_not_sent"
    answer = matcher.client.post("/api/v1/match", {"queries": [{"signal_type": "pdq", "value": value}]}, format="json")
    assert [m["hash_id"] for m in answer.json()["results"][0]["matches"]] == [hash_id]
    assert report(matcher, item)["accepted"] == 1
