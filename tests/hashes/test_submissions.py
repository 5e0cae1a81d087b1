"""Signed submissions and withdrawals through the API, as members send them."""

from __future__ import annotations

import base64
import json

import pytest
from django.test import override_settings
from hashexchange_client import dsse, payloads

from core.ledger import Event
from hashes import services as hash_services
from hashes.models import Hash, Listing, Submission, Withdrawal
from members import services
from members.models import Program
from tests.conftest import SETUP, Caller, make_caller, make_member
from tests.signing import Signer, make_signer, minutes_ago, random_pdq


def stored_counts() -> dict[str, int]:
    return {
        "hashes": Hash.objects.count(),
        "listings": Listing.objects.count(),
        "submissions": Submission.objects.count(),
        "withdrawals": Withdrawal.objects.count(),
        "events": Event.objects.count(),
    }


def test_a_signed_hash_is_accepted_stored_verbatim_and_announced(signer_a: Signer) -> None:
    value = random_pdq()
    envelope = signer_a.submission(value, labels=["ncii"], quality=90)
    response = signer_a.client.post("/api/v1/submissions", envelope, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "accepted"
    submission = Submission.objects.get(pk=body["submission_id"])
    assert submission.hash_id == body["hash_id"]
    assert submission.envelope == envelope
    assert (submission.labels, submission.quality, submission.signing_key_id) == (["ncii"], 90, signer_a.key.pk)
    row = Hash.objects.get(pk=body["hash_id"])
    assert (row.signal_type, row.value, row.status) == ("pdq", value, "active")
    assert Listing.objects.get(hash=row).program.slug == "take-it-down"
    event = Event.objects.filter(kind="hash.added").get()
    assert (event.program, event.subject_id, event.actor_id) == ("take-it-down", str(row.pk), "platform-a")
    assert event.data == {
        "hash_id": row.pk,
        "signal_type": "pdq",
        "value": value,
        "submission_id": submission.pk,
        "submitter": "platform-a",
    }


def test_the_same_envelope_twice_returns_the_same_result_and_stores_nothing(signer_a: Signer) -> None:
    envelope = signer_a.submission()
    first = signer_a.client.post("/api/v1/submissions", envelope, format="json").json()
    before = stored_counts()
    again = signer_a.client.post("/api/v1/submissions", envelope, format="json")
    assert again.status_code == 200
    assert (again.json()["hash_id"], again.json()["submission_id"]) == (first["hash_id"], first["submission_id"])
    assert again.json()["status"] == "duplicate"
    in_a_batch = signer_a.submit(envelope, envelope).json()
    assert [r["status"] for r in in_a_batch["results"]] == ["duplicate", "duplicate"]
    assert stored_counts() == before


def test_resubmitting_a_hash_with_a_fresh_envelope_is_a_duplicate(signer_a: Signer) -> None:
    """Re-running the client's submit signs new envelopes; the server must store nothing new."""
    value = random_pdq()
    first = signer_a.submit(signer_a.submission(value)).json()["results"][0]
    before = stored_counts()
    again = signer_a.submit(signer_a.submission(value), signer_a.submission(value)).json()
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]
    assert {r["submission_id"] for r in again["results"]} == {first["submission_id"]}
    assert stored_counts() == before


def test_a_second_member_supports_the_same_hash_without_a_second_announcement(
    signer_a: Signer, signer_b: Signer
) -> None:
    value = random_pdq()
    a = signer_a.submit(signer_a.submission(value)).json()["results"][0]
    b = signer_b.submit(signer_b.submission(value.upper())).json()["results"][0]
    assert b["status"] == "accepted"
    assert a["hash_id"] == b["hash_id"]
    assert list(Event.objects.filter(kind__in=["hash.added", "submission.added"]).values_list("kind", flat=True)) == [
        "hash.added",
        "submission.added",
    ]
    assert Listing.objects.count() == 1


def test_a_batch_reports_each_item_and_stores_only_the_accepted(
    signer_a: Signer, signer_b: Signer, other_program: Program
) -> None:
    services.enrollment_set(member=signer_a.caller.member, program=other_program, state="opted_in", actor=SETUP)
    unregistered = make_signer(make_caller(make_member("stranger", "platform")))
    good = signer_a.submission()
    forged = signer_a.submission()
    forged["payload"] = base64.b64encode(
        base64.b64decode(forged["payload"]).replace(b'"take-it-down"', b'"take-it-d0wn"')
    ).decode()
    nonce_first = signer_a.submission(nonce="ab" * 16)
    nonce_again = signer_a.submission(nonce="ab" * 16)
    not_mine = signer_b.submission()
    not_mine["signatures"][0]["keyid"] = signer_a.key.key_id  # claims A's key, signed by B's
    unknown = unregistered.submission()
    unregistered.key.delete()  # the signer's key is not (any more) registered
    cases = [
        ("accepted", None, good),
        ("rejected", "bad_signature", forged),
        ("accepted", None, nonce_first),
        ("rejected", "nonce_reused", nonce_again),
        ("rejected", "key_not_yours", signer_b.submission()),
        ("rejected", "bad_signature", not_mine),
        ("rejected", "unknown_key", unknown),
        ("rejected", "stale_timestamp", signer_a.submission(created_at=minutes_ago(11))),
        ("rejected", "future_timestamp", signer_a.submission(created_at=minutes_ago(-11))),
        (
            "rejected",
            "invalid_value",
            signer_a.raw(
                json.dumps(
                    {
                        "program": "take-it-down",
                        "signal_type": "pdq",
                        "value": "xyz" * 21 + "a",
                        "created_at": payloads.format_timestamp(),
                        "nonce": "cd" * 16,
                    }
                ).encode()
            ),
        ),
        (
            "rejected",
            "invalid_value",
            signer_a.raw(
                json.dumps(
                    {
                        "program": "take-it-down",
                        "signal_type": "md5",
                        "value": "ab" * 15,
                        "created_at": payloads.format_timestamp(),
                        "nonce": "ce" * 16,
                    }
                ).encode()
            ),
        ),
        (
            "rejected",
            "invalid_value",
            signer_a.raw(
                json.dumps(
                    {
                        "program": "take-it-down",
                        "signal_type": "pdq",
                        "value": "0" * 64,
                        "created_at": payloads.format_timestamp(),
                        "nonce": "cf" * 16,
                    }
                ).encode()
            ),
        ),
        (
            "rejected",
            "unknown_signal_type",
            signer_a.raw(
                json.dumps(
                    {
                        "program": "take-it-down",
                        "signal_type": "tmk",
                        "value": "ab" * 16,
                        "created_at": payloads.format_timestamp(),
                        "nonce": "d0" * 16,
                    }
                ).encode()
            ),
        ),
        ("rejected", "malformed_payload", signer_a.raw(b'{"program": "take-it-down"}')),
        ("rejected", "malformed_payload", signer_a.raw(b"not json")),
        ("rejected", "wrong_payload_type", signer_a.raw(b"{}", payloads.WITHDRAWAL_TYPE)),
        (
            "rejected",
            "malformed_envelope",
            {
                "payloadType": payloads.SUBMISSION_TYPE,
                "payload": "%%%",
                "signatures": [{"keyid": signer_a.key.key_id, "sig": "AA=="}],
            },
        ),
        ("rejected", "malformed_envelope", {"payloadType": payloads.SUBMISSION_TYPE}),
        ("rejected", "unknown_program", signer_a.submission(program="nope")),
        ("rejected", "signal_type_not_allowed", signer_a.submission("ab" * 32, program="ncii", signal_type="sha256")),
        ("rejected", "low_quality", signer_a.submission(quality=49)),
    ]
    before = stored_counts()
    response = signer_a.submit(*[envelope for _, _, envelope in cases])
    assert response.status_code == 200
    body = response.json()
    got = [(r["status"], r["error"]["code"] if r["error"] else None) for r in body["results"]]
    assert got == [(status, code) for status, code, _ in cases]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 0, len(cases) - 2)
    for result in body["results"]:
        if result["error"]:
            assert result["error"]["detail"] and result["hash_id"] is None and result["submission_id"] is None
    after = stored_counts()
    assert after["submissions"] - before["submissions"] == 2
    assert after["hashes"] - before["hashes"] == 2
    assert after["events"] - before["events"] == 2


def test_submitting_to_a_program_the_member_left_is_refused(signer_a: Signer, program: Program) -> None:
    services.enrollment_set(member=signer_a.caller.member, program=program, state="opted_out", actor=SETUP)
    response = signer_a.client.post("/api/v1/submissions", signer_a.submission(), format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "not_enrolled"
    assert "POST /api/v1/enrollments" in response.json()["detail"]


def test_programs_say_which_kinds_may_submit(signer_intake: Signer, program: Program) -> None:
    program.submitter_kinds = ["platform"]
    program.save()
    response = signer_intake.client.post("/api/v1/submissions", signer_intake.submission(), format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "not_allowed"


def test_a_revoked_key_signs_nothing_new(signer_a: Signer) -> None:
    services.signing_key_revoke(key=signer_a.key, actor=SETUP)
    response = signer_a.client.post("/api/v1/submissions", signer_a.submission(), format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "key_revoked"


@override_settings(SUBMISSION_BATCH_MAX=3)
def test_a_batch_over_the_limit_is_refused_whole(signer_a: Signer) -> None:
    before = stored_counts()
    response = signer_a.submit(*[signer_a.submission() for _ in range(4)])
    assert response.status_code == 400
    assert "at most 3 envelopes" in response.json()["detail"]
    assert response.json()["errors"]["envelopes"]
    assert stored_counts() == before


@pytest.mark.parametrize("body", [{"envelopes": []}, {"envelopes": "x"}, {"something": 1}, []])
def test_bodies_that_are_no_envelope_get_a_400(signer_a: Signer, body: object) -> None:
    response = signer_a.client.post("/api/v1/submissions", body, format="json")
    assert response.status_code == 400
    assert "envelope" in response.json()["detail"]


@override_settings(API_MAX_BODY_BYTES=2000)
def test_a_body_over_the_size_limit_is_refused(signer_a: Signer) -> None:
    response = signer_a.submit(*[signer_a.submission() for _ in range(10)])
    assert response.status_code == 413
    assert not Submission.objects.exists()


def test_withdrawing_the_only_support_withdraws_the_hash(signer_a: Signer) -> None:
    value = random_pdq()
    added = signer_a.submit(signer_a.submission(value)).json()["results"][0]
    envelope = signer_a.withdrawal(value, reason="the person asked")
    response = signer_a.client.post("/api/v1/withdrawals", envelope, format="json")
    assert response.status_code == 201, response.json()
    assert response.json() | {"withdrawal_id": 0} == {
        "hash_id": added["hash_id"],
        "withdrawal_id": 0,
        "status": "withdrawn",
        "listing_status": "withdrawn",
    }
    assert Submission.objects.get(pk=added["submission_id"]).status == "withdrawn"
    assert Withdrawal.objects.get().envelope == envelope
    kinds = list(Event.objects.filter(subject_id=str(added["hash_id"])).values_list("kind", flat=True))
    assert kinds == ["hash.added", "submission.withdrawn", "hash.withdrawn"]
    before = stored_counts()
    again = signer_a.client.post("/api/v1/withdrawals", envelope, format="json")
    assert again.status_code == 200
    assert again.json()["withdrawal_id"] == response.json()["withdrawal_id"]
    assert stored_counts() == before
    # Submitting it again brings it back, announced afresh.
    back = signer_a.submit(signer_a.submission(value)).json()["results"][0]
    assert back["status"] == "accepted"
    assert Hash.objects.get(pk=added["hash_id"]).status == "active"
    assert Event.objects.last().kind == "hash.added"


def test_withdrawing_one_of_two_supports_keeps_the_hash_listed(signer_a: Signer, signer_b: Signer) -> None:
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    signer_b.submit(signer_b.submission(value))
    response = signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value), format="json")
    assert response.json()["listing_status"] == "active"
    assert response.json()["status"] == "active"
    assert not Event.objects.filter(kind="hash.withdrawn").exists()


def test_withdrawals_are_checked_like_submissions(signer_a: Signer, signer_b: Signer) -> None:
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    before = stored_counts()
    cases = [
        (signer_b, signer_b.withdrawal(value), 409, "nothing_to_withdraw"),
        (signer_a, signer_a.withdrawal(random_pdq()), 404, "unknown_hash"),
        (signer_a, signer_a.withdrawal(value, created_at=minutes_ago(30)), 400, "stale_timestamp"),
        (signer_a, signer_a.submission(value), 400, "wrong_payload_type"),
        (signer_a, signer_a.withdrawal(value, program="nope"), 400, "unknown_program"),
        (signer_a, signer_a.withdrawal(value, case="case-1"), 409, "nothing_to_withdraw"),
    ]
    for signer, envelope, status, code in cases:
        response = signer.client.post("/api/v1/withdrawals", envelope, format="json")
        assert (response.status_code, response.json()["code"]) == (status, code), response.json()
    assert stored_counts() == before


def test_a_case_scoped_withdrawal_leaves_the_members_other_cases(signer_intake: Signer) -> None:
    value = random_pdq()
    signer_intake.submit(signer_intake.submission(value, case="case-1"))
    response = signer_intake.client.post(
        "/api/v1/withdrawals", signer_intake.withdrawal(value, case="case-1"), format="json"
    )
    assert response.json()["listing_status"] == "withdrawn"


def test_a_hash_shows_its_status_and_envelopes_that_verify_without_trusting_the_server(
    signer_a: Signer, platform_b: Caller
) -> None:
    value = random_pdq()
    hash_id = signer_a.submit(signer_a.submission(value)).json()["results"][0]["hash_id"]
    body = platform_b.client.get(f"/api/v1/hashes/{hash_id}").json()
    assert (body["signal_type"], body["value"], body["status"]) == ("pdq", value, "active")
    assert [p["program"] for p in body["programs"]] == ["take-it-down"]
    [support] = body["submissions"]
    assert support["submitter"] == "platform-a"
    # A member verifies the relayed envelope with the submitter's public key alone.
    ring = dsse.keyring([signer_a.private_key.public_key()])
    verified = dsse.verify_envelope(support["envelope"], ring, payloads.SUBMISSION_TYPE)
    assert json.loads(verified)["value"] == value


def test_hashes_are_hidden_from_members_outside_their_programs(signer_a: Signer, other_program: Program) -> None:
    outsider = make_caller(make_member("outsider", "platform", other_program))
    hash_id = signer_a.submit(signer_a.submission()).json()["results"][0]["hash_id"]
    assert outsider.client.get(f"/api/v1/hashes/{hash_id}").status_code == 404
    assert outsider.client.get("/api/v1/hashes/999999").status_code == 404
    assert signer_a.client.get(f"/api/v1/hashes/{hash_id}").status_code == 200


def test_retired_hashes_take_no_new_submissions(signer_a: Signer, signer_b: Signer) -> None:
    value = random_pdq()
    hash_id = signer_a.submit(signer_a.submission(value)).json()["results"][0]["hash_id"]
    hash_services.hash_set_status(
        hash_=Hash.objects.get(pk=hash_id), status="retired", reason="false positive", actor=SETUP
    )
    assert list(Event.objects.filter(subject_id=str(hash_id)).values_list("kind", flat=True)) == [
        "hash.added",
        "hash.withdrawn",
        "hash.retired",
    ]
    result = signer_b.submit(signer_b.submission(value)).json()["results"][0]
    assert result["error"]["code"] == "hash_retired"
    assert not Submission.objects.filter(submitter=signer_b.caller.member).exists()


def test_admins_retire_a_hash_with_a_reason(admin_client, signer_a: Signer) -> None:  # noqa: ANN001
    hash_id = signer_a.submit(signer_a.submission()).json()["results"][0]["hash_id"]
    ask = admin_client.post("/admin/hashes/hash/", {"action": "retire", "_selected_action": [hash_id]})
    assert ask.status_code == 200
    assert "Reason (required)" in ask.content.decode()
    assert Hash.objects.get(pk=hash_id).status == "active"
    done = admin_client.post(
        "/admin/hashes/hash/",
        {"action": "retire", "_selected_action": [hash_id], "apply": "1", "reason": "false positive"},
        follow=True,
    )
    assert done.status_code == 200
    row = Hash.objects.get(pk=hash_id)
    assert (row.status, row.status_reason) == ("retired", "false positive")
    retired = Event.objects.get(kind="hash.retired")
    assert (retired.actor_type, retired.data["reason"]) == ("admin", "false positive")
    for url in [
        "/admin/hashes/hash/?status__exact=retired",
        f"/admin/hashes/hash/{hash_id}/change/",
        "/admin/hashes/submission/?program__id__exact=1",
        "/admin/hashes/withdrawal/",
        f"/admin/hashes/submission/{Submission.objects.get().pk}/change/",
    ]:
        assert admin_client.get(url).status_code == 200, url
