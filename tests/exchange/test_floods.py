"""Flood and false-positive protection: each triggered and reversed, with its events."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from core.ledger import Event
from exchange import floods
from exchange.models import Dispute
from exchange.outcomes import dispute_decide, outcomes_create
from hashes import services as hash_services
from hashes.models import BenignHash, Hash, MatchAnomaly, MatchCount
from members.models import Member
from tests.conftest import SETUP, Caller, make_caller, make_member
from tests.signing import Signer, near, random_pdq

# Each test gets its own index snapshot directory and a freshly loaded registry.
pytestmark = pytest.mark.usefixtures("index_dir")


def submit(signer: Signer, value: str) -> dict[str, Any]:
    return signer.submit(signer.submission(value)).json()["results"][0]


def kinds_since(seq: int) -> list[str]:
    return list(Event.objects.filter(seq__gt=seq).order_by("seq").values_list("kind", flat=True))


def last_seq() -> int:
    return Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


# The benign list --------------------------------------------------------------------------------------


def test_the_benign_list_refuses_near_values_until_removed(signer_a: Signer, program: Any, admin_client: Any) -> None:
    meme = random_pdq()
    page = admin_client.post(
        "/admin/hashes/benignhash/add/",
        {"program": program.pk, "signal_type": "pdq", "value": meme.upper(), "reason": "a widely shared meme"},
    )
    assert page.status_code == 302, page.content.decode()[:2000]
    entry = BenignHash.objects.get()
    assert (entry.value, entry.added_by, entry.source) == (meme, "admin", "admin")
    added = Event.objects.get(kind="benign.added")
    assert added.data["benign_id"] == entry.pk and added.actor_id == "admin"

    before = last_seq()
    refused = submit(signer_a, near(meme, 9))
    assert refused["status"] == "rejected"
    assert refused["error"]["code"] == "benign_hash"
    assert f"within 9 bits of entry {entry.pk}" in refused["error"]["detail"]
    assert "a widely shared meme" in refused["error"]["detail"]
    assert not Hash.objects.exists()  # nothing stored for it
    [event] = Event.objects.filter(seq__gt=before)
    assert event.kind == "submission.refused"
    assert event.data == {
        "reason": "benign",
        "benign_id": entry.pk,
        "signal_type": "pdq",
        "distance": 9,
        "submitter": signer_a.caller.member.slug,
    }
    # Beyond the program's threshold (31) the list does not act.
    assert submit(signer_a, near(meme, 40))["status"] == "accepted"

    # Reversed in the admin, with a reason: the same value is taken now.
    ask = admin_client.post("/admin/hashes/benignhash/", {"action": "remove", "_selected_action": [entry.pk]})
    assert b"reason" in ask.content
    admin_client.post(
        "/admin/hashes/benignhash/",
        {"action": "remove", "_selected_action": [entry.pk], "apply": "1", "reason": "it was not a meme"},
    )
    entry.refresh_from_db()
    assert entry.status == BenignHash.Status.REMOVED and entry.removal_reason == "it was not a meme"
    assert Event.objects.filter(kind="benign.removed", subject_id=str(entry.pk)).exists()
    assert submit(signer_a, near(meme, 9))["status"] == "accepted"


def test_the_setting_turns_the_benign_list_off(signer_a: Signer, program: Any) -> None:
    meme = random_pdq()
    hash_services.benign_add(program=program, signal_type="pdq", value=meme, reason="logo", actor=SETUP)
    assert submit(signer_a, meme)["error"]["code"] == "benign_hash"
    program.refuse_benign = False
    program.save()
    assert submit(signer_a, meme)["status"] == "accepted"


def test_a_dispute_decided_not_violating_joins_the_benign_list(signer_a: Signer, program: Any) -> None:
    value = random_pdq()
    hash_id = submit(signer_a, value)["hash_id"]
    row = Hash.objects.get(pk=hash_id)
    row.status = Hash.Status.QUARANTINED
    row.save()
    dispute = Dispute.objects.create(hash=row, program=program, reporters=3)
    dispute_decide(dispute=dispute, decision=Dispute.Status.RETIRED, reason="members: not violating", actor=SETUP)
    entry = BenignHash.objects.get()
    assert (entry.value, entry.source, entry.program_id) == (value, "dispute", program.pk)
    refused = submit(signer_a, near(value, 4))
    assert refused["error"]["code"] == "benign_hash"


def test_a_benign_video_refuses_the_same_video(signer_a: Signer, program: Any) -> None:
    import json

    value = json.dumps([f"{random_pdq()},100,{i}" for i in range(3)])
    hash_services.benign_add(program=program, signal_type="vpdq", value=value, reason="a trailer", actor=SETUP)
    result = signer_a.submit(signer_a.submission(value, signal_type="vpdq")).json()["results"][0]
    assert result["error"]["code"] == "benign_hash"


# Match-rate anomalies ------------------------------------------------------------------------------------


def test_a_hash_matched_far_more_than_usual_is_quarantined_and_restored(
    signer_a: Signer, platform_b: Caller, program: Any, admin_client: Any
) -> None:
    program.anomaly_multiple, program.anomaly_window_days, program.anomaly_min_matches = 5, 7, 10
    program.save()
    other = make_member("platform-c", Member.Kind.PLATFORM, program)
    usual = [submit(signer_a, random_pdq())["hash_id"] for _ in range(3)]
    viral_value = random_pdq()
    viral = submit(signer_a, viral_value)["hash_id"]
    today = timezone.now().date()
    # The week before: each hash matched about 2-3 times a day (the baseline is their median, 2.5 a day).
    for days_ago in range(1, 8):
        for pk, n in zip([*usual, viral], [2, 3, 3, 2], strict=True):
            MatchCount.objects.create(
                hash_id=pk, member=platform_b.member, day=today - dt.timedelta(days=days_ago), count=n
            )
    # Today: 12 matches of the usual ones' kind would pass (limit max(10, 5 x 2.5) = 12.5)...
    body = {"queries": [{"signal_type": "pdq", "value": near(viral_value, 2)}] * 12}
    assert platform_b.client.post("/api/v1/match", body, format="json").json()["matched"] == 12
    assert floods.match_anomalies_scan() == []
    # ...and 13 more, reported as matched outcomes by another platform, do not.

    make_caller(other).client.get("/api/v1/feed?after=0")  # outcomes are taken on hashes a member was sent
    [reported] = outcomes_create(
        member=other,
        items=[
            {
                "hash_id": viral,
                "program": program.slug,
                "kind": "matched",
                "occurred_at": timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                "count": 13,
                "client_ref": "r1",
            }
        ],
    )
    assert reported.as_dict()["status"] == "accepted", reported.as_dict()["error"]
    before = last_seq()
    [anomaly] = floods.match_anomalies_scan()
    assert (anomaly.hash_id, anomaly.matches, anomaly.baseline, anomaly.limit) == (viral, 25, 2.5, 12.5)
    assert Hash.objects.get(pk=viral).status == Hash.Status.QUARANTINED
    [event] = Event.objects.filter(seq__gt=before)
    assert event.kind == "hash.quarantined" and event.actor_id == "floods"
    assert (event.data["anomaly_id"], event.data["matches"], event.data["limit"]) == (anomaly.pk, 25, "12.5")
    # Members are told by a tombstone, and the hash no longer matches.
    feed = platform_b.client.get("/api/v1/feed?after=0").json()
    assert [e["hash"]["id"] for e in feed["entries"] if e["kind"] == "hash.quarantined"] == [viral]
    assert platform_b.client.post("/api/v1/match", body, format="json").json()["matched"] == 0
    assert floods.match_anomalies_scan() == []  # once quarantined, not again

    # Visible in the admin; restored there with a reason.
    listing = admin_client.get("/admin/hashes/matchanomaly/")
    assert listing.status_code == 200 and str(viral) in listing.content.decode()
    admin_client.post(
        "/admin/hashes/matchanomaly/",
        {
            "action": "restore",
            "_selected_action": [anomaly.pk],
            "apply": "1",
            "reason": "a viral case, still violating",
        },
    )
    anomaly.refresh_from_db()
    assert anomaly.status == MatchAnomaly.Status.RESTORED and anomaly.decided_by == "admin"
    assert Hash.objects.get(pk=viral).status == Hash.Status.ACTIVE
    assert kinds_since(before)[-2:] == ["match_anomaly.decided", "hash.restored"]
    assert platform_b.client.post("/api/v1/match", body, format="json").json()["matched"] == 12


def test_the_anomaly_check_is_off_at_zero_and_retire_is_final(
    signer_a: Signer, platform_b: Caller, program: Any
) -> None:
    value = random_pdq()
    pk = submit(signer_a, value)["hash_id"]
    MatchCount.objects.create(hash_id=pk, member=platform_b.member, day=timezone.now().date(), count=1000)
    program.anomaly_multiple = 0
    program.save()
    assert floods.match_anomalies_scan() == []
    program.anomaly_multiple = 10
    program.save()
    [anomaly] = floods.match_anomalies_scan()  # no history: the floor (50) is the limit
    assert anomaly.limit == 50.0
    hash_services.anomaly_decide(anomaly=anomaly, decision="retired", reason="hits innocent images", actor=SETUP)
    assert Hash.objects.get(pk=pk).status == Hash.Status.RETIRED
    assert submit(signer_a, value)["error"]["code"] == "hash_retired"
