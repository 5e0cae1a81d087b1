"""The StopNCII-compatible facade: what Meta's threatexchange client needs, field by field.

Most tests drive the facade like the client does (the same headers, parameters and
bodies); the last ones run the real `threatexchange` package's `StopNCIIAPI` and its
SignalExchangeAPI against a live server on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from core.ledger import Actor, Event
from core.problems import Problem
from exchange.compat import selectors, stopncii
from exchange.compat.stopncii import Cursor
from exchange.models import FeedCursor, Outcome
from hashes import imports
from hashes.models import Hash, Submission
from hashes.services import hash_set_status
from members import services
from members.models import Member, Program
from tests.conftest import SETUP, Caller, make_caller, make_member
from tests.signing import Signer, random_pdq

BASE = "/compat/stopncii/v1"
CLIENT_ENUMS = {
    "signalType": {"Unknown", "ImagePDQ", "VideoMD5", "VideoTMK", "Text", "URL"},
    "hashStatus": {"Unknown", "Received", "Active", "Withdrawn", "Deleted"},
    "feedbackValue": set(stopncii.FEEDBACK_VALUES),
}


def stopncii_client(function_key: str, subscription_key: str | None = None) -> APIClient:
    """A client that authenticates as the StopNCII client does: two headers."""
    client = APIClient()
    client.credentials(
        HTTP_X_FUNCTIONS_KEY=function_key, HTTP_OCP_APIM_SUBSCRIPTION_KEY=subscription_key or function_key
    )
    return client


def fetch(client: APIClient, start: int = 10, page_size: int = 800, token: str | None = None, base: str = BASE) -> Any:
    query = f"startTimestamp={start}&pageSize={page_size}" + (f"&nextPageToken={token}" if token else "")
    response = client.get(f"{base}/FetchHashes?{query}")
    assert response.status_code == 200, response.content
    return response.json()


def fetch_run(client: APIClient, start: int = 10, page_size: int = 800, base: str = BASE) -> tuple[list[dict], int]:
    """One client run: every page until hasMoreRecords is false; the records and the checkpoint."""
    records, token, checkpoint = [], None, start
    while True:
        page = fetch(client, start, page_size, token, base)
        check_page(page, checkpoint)
        records += page["hashRecords"]
        checkpoint, token = page["nextSetTimestamp"], page["nextPageToken"]
        if not page["hasMoreRecords"]:
            return records, checkpoint


def check_page(page: dict, previous_checkpoint: int) -> None:
    """What the client's dacite parsing and checkpoint asserts require of every page."""
    assert set(page) == {"count", "nextPageToken", "nextSetTimestamp", "hasMoreRecords", "hashRecords"}
    assert page["count"] == len(page["hashRecords"])
    assert type(page["nextSetTimestamp"]) is int and page["nextSetTimestamp"] >= previous_checkpoint
    assert (page["nextPageToken"] is not None) == page["hasMoreRecords"]
    for record in page["hashRecords"]:
        assert type(record["lastModtimestamp"]) is int
        assert record["signalType"] in CLIENT_ENUMS["signalType"]
        assert record["hashStatus"] in CLIENT_ENUMS["hashStatus"]
        assert isinstance(record["caseNumbers"], dict)
        assert set(record["caseNumbers"].values()) <= CLIENT_ENUMS["hashStatus"]
        for feedback in record["CSPFeedbacks"]:
            assert feedback["feedbackValue"] in CLIENT_ENUMS["feedbackValue"]
            assert isinstance(feedback["source"], str) and isinstance(feedback["tags"], list)


def by_value(records: list[dict]) -> dict[str, dict]:
    return {record["hashValue"]: record for record in records}


def feedback(client: APIClient, *items: dict, base: str = BASE) -> dict:
    response = client.post(f"{base}/SubmitFeedback", {"count": len(items), "hashFeedbacks": list(items)}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def fetcher(platform_b: Caller) -> APIClient:
    """Platform B as a StopNCII client, with its ordinary API key in both headers."""
    return stopncii_client(platform_b.token)


# FetchHashes -----------------------------------------------------------------------------------


def test_a_run_pages_through_every_hash_with_the_clients_types(signer_a: Signer, fetcher: APIClient) -> None:
    pdqs = [random_pdq() for _ in range(5)]
    video = "0f343b0931126a20f133d67c2b018a3b"
    signer_a.submit(*[signer_a.submission(v) for v in pdqs])
    signer_a.submit(signer_a.submission(video, signal_type="video_md5"))
    signer_a.submit(signer_a.submission("d41d8cd98f00b204e9800998ecf8427e", signal_type="md5"))  # not carried
    records, checkpoint = fetch_run(fetcher, page_size=2)
    assert [r["hashValue"] for r in records] == [*pdqs, video]
    assert {r["signalType"] for r in records} == {"ImagePDQ", "VideoMD5"}
    assert {r["hashStatus"] for r in records} == {"Active"}
    last_event = Event.objects.filter(kind="hash.added").latest("seq")
    assert checkpoint == int(last_event.created_at.timestamp())
    for record in records:
        assert record["lastModtimestamp"] <= checkpoint
        assert len(record["caseNumbers"]) == 1
        assert uuid.UUID(next(iter(record["caseNumbers"]))).version == 8
        assert list(record["caseNumbers"].values()) == ["Active"]
        assert record["CSPFeedbacks"] == []


def test_the_checkpoint_never_goes_back_even_on_empty_pages(signer_a: Signer, fetcher: APIClient) -> None:
    empty = fetch(fetcher, start=10)
    assert empty["hashRecords"] == [] and empty["nextSetTimestamp"] >= 10 and empty["hasMoreRecords"] is False
    signer_a.submit(signer_a.submission())
    _, checkpoint = fetch_run(fetcher)
    again = fetch(fetcher, start=checkpoint)
    assert again["nextSetTimestamp"] == checkpoint
    future = 4_000_000_000
    assert fetch(fetcher, start=future) == {
        "count": 0,
        "nextPageToken": None,
        "nextSetTimestamp": future,
        "hasMoreRecords": False,
        "hashRecords": [],
    }


def test_a_later_run_gets_what_changed_and_misses_nothing(signer_a: Signer, fetcher: APIClient) -> None:
    first = [random_pdq() for _ in range(3)]
    signer_a.submit(*[signer_a.submission(v) for v in first])
    _, checkpoint = fetch_run(fetcher)
    later = [random_pdq() for _ in range(3)]
    signer_a.submit(*[signer_a.submission(v) for v in later])
    records, new_checkpoint = fetch_run(fetcher, start=checkpoint, page_size=1)
    # The overlap before the checkpoint re-sends recent records (harmless); nothing new is missing.
    assert set(later) <= set(by_value(records))
    assert new_checkpoint >= checkpoint


def test_the_start_is_found_from_the_event_times_with_an_overlap(signer_a: Signer, fetcher: APIClient) -> None:
    """Events older than the checkpoint minus the overlap are not read again."""
    old, new = random_pdq(), random_pdq()
    signer_a.submit(signer_a.submission(old))
    signer_a.submit(signer_a.submission(new))
    old_seq = Event.objects.get(kind="hash.added", data__value=old).seq
    new_event = Event.objects.get(kind="hash.added", data__value=new)
    assert selectors.start_seq(10) == 1
    checkpoint = int(new_event.created_at.timestamp())
    assert selectors.start_seq(checkpoint) <= old_seq  # within the overlap: read again
    far = checkpoint + int(selectors.CURSOR_OVERLAP.total_seconds()) + 5
    assert selectors.start_seq(far) == new_event.seq + 1
    assert fetch(fetcher, start=far)["hashRecords"] == []


def test_an_import_group_is_split_across_pages_without_loss(
    program: Program, fetcher: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imports, "EVENT_GROUP_SIZE", 1000)
    values = [random_pdq() for _ in range(7)]
    imports.import_hashes(
        lines=values, program=program, source="other-exchange", actor=SETUP, default_signal_type="pdq"
    )
    assert Event.objects.filter(kind="hashes.imported").count() == 1
    records, _ = fetch_run(fetcher, page_size=3)
    assert sorted(r["hashValue"] for r in records) == sorted(values)
    assert len(records) == 7
    # An imported hash is one case: the import.
    assert all(list(r["caseNumbers"].values()) == ["Active"] for r in records)


def test_only_the_callers_programs_are_served(signer_a: Signer, other_program: Program) -> None:
    outsider = make_caller(make_member("outsider", Member.Kind.PLATFORM, other_program))
    signer_a.submit(signer_a.submission())
    records, _ = fetch_run(stopncii_client(outsider.token))
    assert records == []


def test_one_programs_base_url_serves_only_that_program(
    signer_a: Signer, platform_b: Caller, other_program: Program
) -> None:
    services.enrollment_set(member=platform_b.member, program=other_program, state="opted_in", actor=SETUP)
    services.enrollment_set(member=signer_a.caller.member, program=other_program, state="opted_in", actor=SETUP)
    in_tid, in_ncii = random_pdq(), random_pdq()
    signer_a.submit(signer_a.submission(in_tid), signer_a.submission(in_ncii, program="ncii"))
    client = stopncii_client(platform_b.token)
    assert set(by_value(fetch_run(client)[0])) == {in_tid, in_ncii}
    only = fetch_run(client, base="/compat/stopncii/programs/ncii/v1")[0]
    assert [r["hashValue"] for r in only] == [in_ncii]
    missing = client.get("/compat/stopncii/programs/nope/v1/FetchHashes?startTimestamp=10&pageSize=10")
    assert (missing.status_code, missing.json()["code"]) == (404, "unknown_program")


def test_a_withdrawal_reaches_clients_that_may_hold_the_hash_and_no_others(
    signer_a: Signer, fetcher: APIClient
) -> None:
    kept, withdrawn = random_pdq(), random_pdq()
    signer_a.submit(signer_a.submission(kept), signer_a.submission(withdrawn))
    _, checkpoint = fetch_run(fetcher)
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(withdrawn), format="json")
    records = by_value(fetch_run(fetcher, start=checkpoint)[0])
    assert records[withdrawn]["hashStatus"] == "Withdrawn"
    assert list(records[withdrawn]["caseNumbers"].values()) == ["Withdrawn"]
    # A fresh client (reading from the start) gets no tombstones: pytx <= 1.2.17 would add them.
    assert set(by_value(fetch_run(fetcher, start=10)[0])) == {kept}
    # Nor does a client whose checkpoint is older than the hash: it cannot hold it.
    brief = random_pdq()
    signer_a.submit(signer_a.submission(brief))
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(brief), format="json")
    added_at = int(Event.objects.get(kind="hash.added", data__value=brief).created_at.timestamp())
    assert brief not in by_value(fetch_run(fetcher, start=added_at - 1)[0])
    assert by_value(fetch_run(fetcher, start=added_at)[0])[brief]["hashStatus"] == "Withdrawn"


def test_a_tombstone_follows_an_active_record_within_one_run(signer_a: Signer, fetcher: APIClient) -> None:
    """A hash served active on page 1 and withdrawn before page 2 gets its tombstone on page 2."""
    first, second = random_pdq(), random_pdq()
    signer_a.submit(signer_a.submission(first))
    page = fetch(fetcher, page_size=1)
    assert [r["hashValue"] for r in page["hashRecords"]] == [first] and page["hasMoreRecords"] is False
    signer_a.submit(signer_a.submission(second))
    page = fetch(fetcher, page_size=1)  # the same run again, from the start: now two pages
    assert page["hasMoreRecords"] is True
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(first), format="json")
    rest = fetch(fetcher, page_size=5, token=page["nextPageToken"])
    statuses = {r["hashValue"]: r["hashStatus"] for r in rest["hashRecords"]}
    assert statuses == {second: "Active", first: "Withdrawn"}


def test_a_retired_hash_is_deleted_and_a_quarantined_one_withdrawn(
    signer_a: Signer, program: Program, fetcher: APIClient
) -> None:
    retired, disputed = random_pdq(), random_pdq()
    signer_a.submit(signer_a.submission(retired), signer_a.submission(disputed))
    _, checkpoint = fetch_run(fetcher)
    hash_set_status(
        hash_=Hash.objects.get(value=retired), status=Hash.Status.RETIRED, reason="not NCII", actor=Actor.admin("x")
    )
    Program.objects.filter(pk=program.pk).update(dispute_threshold=1)
    feedback(fetcher, {"hashValue": disputed, "feedbackValue": "NotBlocked"})  # quarantines it
    assert Hash.objects.get(value=disputed).status == Hash.Status.QUARANTINED
    records = by_value(fetch_run(fetcher, start=checkpoint)[0])
    assert records[retired]["hashStatus"] == "Deleted"
    assert list(records[retired]["caseNumbers"].values()) == ["Deleted"]
    assert records[disputed]["hashStatus"] == "Withdrawn"
    assert records[disputed]["CSPFeedbacks"][0]["feedbackValue"] == "NotBlocked"


def test_case_numbers_are_per_member_pseudonyms(signer_intake: Signer, platform_a: Caller, platform_b: Caller) -> None:
    one, two = random_pdq(), random_pdq()
    signer_intake.submit(
        signer_intake.submission(one, case="case-8812"), signer_intake.submission(two, case="case-8812")
    )
    seen_by_a = by_value(fetch_run(stopncii_client(platform_a.token))[0])
    seen_by_b = by_value(fetch_run(stopncii_client(platform_b.token))[0])
    cases_a = set(seen_by_a[one]["caseNumbers"]) | set(seen_by_a[two]["caseNumbers"])
    cases_b = set(seen_by_b[one]["caseNumbers"]) | set(seen_by_b[two]["caseNumbers"])
    assert len(cases_a) == 1 and len(cases_b) == 1  # one case behind both hashes
    assert cases_a != cases_b  # but each member has its own name for it
    text = str(seen_by_a) + str(seen_by_b)
    assert "8812" not in text and "intake" not in text


def test_a_fetch_counts_as_a_feed_read(signer_a: Signer, platform_b: Caller, fetcher: APIClient) -> None:
    signer_a.submit(signer_a.submission())
    fetch_run(fetcher)
    cursor = FeedCursor.objects.get(member=platform_b.member)
    assert cursor.last_seq == Event.objects.latest("seq").seq and cursor.reads == 1


def test_a_page_costs_the_same_number_of_queries_whatever_its_size(
    signer_a: Signer, signer_intake: Signer, fetcher: APIClient, platform_b: Caller
) -> None:
    values = [random_pdq() for _ in range(40)]
    signer_a.submit(*[signer_a.submission(v) for v in values])
    signer_intake.submit(*[signer_intake.submission(v, case=f"c-{i}") for i, v in enumerate(values)])
    fetch_run(fetcher)
    feedback(fetcher, *[{"hashValue": v, "feedbackValue": "Blocked", "tags": ["nude"]} for v in values[:20]])
    counts = []
    for size in (4, 20):
        with CaptureQueriesContext(connection) as queries:
            page = fetch(fetcher, page_size=size)
        assert page["count"] == size
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


# SubmitFeedback --------------------------------------------------------------------------------


def test_feedback_becomes_outcomes_and_comes_back_as_csp_feedbacks(
    signer_a: Signer, platform_b: Caller, fetcher: APIClient
) -> None:
    value, other = random_pdq(), random_pdq()
    signer_a.submit(signer_a.submission(value), signer_a.submission(other))
    fetch_run(fetcher)
    body = feedback(
        fetcher,
        {"hashValue": value.upper(), "feedbackValue": "Blocked", "tags": ["Nude", "Sexual Content"]},
        {"hashValue": random_pdq(), "feedbackValue": "Blocked", "tags": []},
        {"hashValue": other, "feedbackValue": "None", "tags": ["x"]},
        {"hashValue": other, "feedbackValue": "Undefined"},
        {"feedbackValue": "Blocked"},
        {"hashValue": other, "feedbackValue": "PendingReview"},
    )
    got = [(r["status"], r["error"]["code"] if r["error"] else None) for r in body["results"]]
    assert got == [
        ("accepted", None),
        ("rejected", "unknown_hash"),
        ("rejected", "no_outcome"),
        ("rejected", "unknown_feedback_value"),
        ("rejected", "malformed"),
        ("accepted", None),
    ]
    assert (body["accepted"], body["rejected"]) == (2, 4)
    row = Outcome.objects.get(hash__value=value)
    assert (row.kind, row.tags, row.member, row.program.slug) == (
        "removed",
        ["nude", "sexual-content"],
        platform_b.member,
        "take-it-down",
    )
    assert Outcome.objects.get(hash__value=other).kind == "matched"
    # Posting the same state again records nothing; a new state is a new outcome.
    again = feedback(fetcher, {"hashValue": value, "feedbackValue": "Blocked", "tags": ["nude", "sexual-content"]})
    assert again["results"][0]["status"] == "duplicate"
    feedback(fetcher, {"hashValue": value, "feedbackValue": "NotBlocked"})
    assert list(Outcome.objects.filter(hash__value=value).order_by("id").values_list("kind", flat=True)) == [
        "removed",
        "not_violating",
    ]
    # B sees its own latest state under its own name; A sees it from "other member 1", without tags.
    own = by_value(fetch_run(fetcher)[0])[value]["CSPFeedbacks"]
    assert own == [{"source": "platform-b", "feedbackValue": "NotBlocked", "tags": []}]
    seen_by_a = by_value(fetch_run(stopncii_client(signer_a.caller.token))[0])
    assert seen_by_a[value]["CSPFeedbacks"] == [{"source": "other member 1", "feedbackValue": "NotBlocked", "tags": []}]
    assert seen_by_a[other]["CSPFeedbacks"] == [
        {"source": "other member 1", "feedbackValue": "PendingReview", "tags": []}
    ]


def test_feedback_is_private_where_the_program_does_not_share_it(
    signer_a: Signer, program: Program, fetcher: APIClient
) -> None:
    Program.objects.filter(pk=program.pk).update(share_feedback=False)
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    fetch_run(fetcher)
    feedback(fetcher, {"hashValue": value, "feedbackValue": "Blocked", "tags": ["nude"]})
    assert by_value(fetch_run(fetcher)[0])[value]["CSPFeedbacks"][0]["source"] == "platform-b"
    assert by_value(fetch_run(stopncii_client(signer_a.caller.token))[0])[value]["CSPFeedbacks"] == []


def test_feedback_on_a_hash_not_yet_fetched_is_refused_per_item(signer_a: Signer, fetcher: APIClient) -> None:
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    body = feedback(fetcher, {"hashValue": value, "feedbackValue": "Blocked"})
    assert body["results"][0]["error"]["code"] == "hash_not_sent"
    assert not Outcome.objects.exists()


@pytest.mark.parametrize(
    "body",
    [{}, {"hashFeedbacks": []}, {"hashFeedbacks": "x"}, [1], {"hashFeedbacks": [{}] * 1001}],
)
def test_feedback_bodies_without_items_are_400_json(fetcher: APIClient, body: object) -> None:
    response = fetcher.post(f"{BASE}/SubmitFeedback", body, format="json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json" and response.json()["detail"]


# SubmitHashes ----------------------------------------------------------------------------------


def submit_hashes(client: APIClient, *records: dict, base: str = BASE) -> Any:
    return client.post(f"{base}/SubmitHashes", {"count": len(records), "hashRecords": list(records)}, format="json")


def record(value: str, signal_type: str = "StopNCIISignalType.ImagePDQ", tags: list[str] | None = None) -> dict:
    return {
        "lastModtimestamp": 1_700_000_000,
        "signalType": signal_type,
        "hashValue": value,
        "CSPFeedbacks": [{"tags": tags or [], "feedbackValue": "Blocked"}],
    }


def test_unsigned_hashes_are_refused_unless_the_program_allows_them(platform_b: Caller, program: Program) -> None:
    client = stopncii_client(platform_b.token)
    refused = submit_hashes(client, record(random_pdq()))
    assert refused.status_code == 403
    assert refused["Content-Type"] == "application/problem+json"
    assert refused.json()["code"] == "unsigned_not_allowed"
    assert not Submission.objects.exists()


def test_allowed_unsigned_hashes_are_recorded_as_unsigned_and_distributed(
    platform_a: Caller, platform_b: Caller, program: Program
) -> None:
    program.unsigned_submitters.add(platform_b.member)
    client = stopncii_client(platform_b.token)
    value, video = random_pdq(), "0F343B0931126A20F133D67C2B018A3B"
    response = submit_hashes(
        client,
        record(value, tags=["Nude", "Sexual Content"]),
        record(video, "VideoMD5"),
        record(value, "ImagePDQ"),
        record("abc"),
        record(random_pdq(), "VideoTMK"),
        record(random_pdq(), "Banana"),
        record("0" * 64),
    )
    assert response.status_code == 200, response.content
    got = [(r["status"], r["error"]["code"] if r["error"] else None) for r in response.json()["results"]]
    assert got == [
        ("accepted", None),
        ("accepted", None),
        ("duplicate", None),
        ("rejected", "invalid_value"),
        ("rejected", "signal_type_not_supported"),
        ("rejected", "unknown_signal_type"),
        ("rejected", "invalid_value"),
    ]
    row = Submission.objects.get(hash__value=value)
    assert (row.signed, row.source, row.envelope, row.signing_key, row.nonce) == (False, "stopncii", None, None, None)
    assert row.labels == ["Nude", "Sexual-Content"] and row.submitter == platform_b.member
    assert Submission.objects.get(hash__value=video.lower()).hash.signal_type == "video_md5"
    event = Event.objects.get(kind="hash.added", data__value=value)
    assert (event.data["signed"], event.data["source"], event.actor_id) == (False, "stopncii", "platform-b")
    # Distributed like any hash: in the pull feed (marked unsigned) and through the facade.
    entries = platform_a.client.get("/api/v1/feed?after=0").json()["entries"]
    added = next(e for e in entries if e["kind"] == "hash.added" and e["hash"]["value"] == value)
    assert (added["signed"], added["envelopes"]) == (False, [])
    assert value in by_value(fetch_run(stopncii_client(platform_a.token))[0])
    # Sent again later: a duplicate, nothing new.
    again = submit_hashes(client, record(value))
    assert again.json()["results"][0]["status"] == "duplicate"
    assert Event.objects.filter(kind__in=["hash.added", "submission.added"]).count() == 2


def test_a_second_supporter_adds_a_submission_not_a_hash(
    signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    program.unsigned_submitters.add(platform_b.member)
    body = submit_hashes(stopncii_client(platform_b.token), record(value)).json()
    assert body["accepted"] == 1
    assert Event.objects.filter(kind="submission.added", data__value=value).get().data["signed"] is False
    assert Event.objects.filter(kind="hash.added", data__value=value).count() == 1


def test_unsigned_submissions_need_an_opted_in_member(platform_b: Caller, program: Program) -> None:
    program.unsigned_submitters.add(platform_b.member)
    services.enrollment_set(member=platform_b.member, program=program, state="paused", actor=SETUP)
    response = submit_hashes(stopncii_client(platform_b.token), record(random_pdq()))
    assert (response.status_code, response.json()["code"]) == (403, "not_enrolled")


def test_with_two_programs_allowing_it_the_program_must_be_named(
    platform_b: Caller, program: Program, other_program: Program
) -> None:
    services.enrollment_set(member=platform_b.member, program=other_program, state="opted_in", actor=SETUP)
    program.unsigned_submitters.add(platform_b.member)
    other_program.unsigned_submitters.add(platform_b.member)
    client = stopncii_client(platform_b.token)
    ambiguous = submit_hashes(client, record(random_pdq()))
    assert (ambiguous.status_code, ambiguous.json()["code"]) == (409, "program_ambiguous")
    assert "/compat/stopncii/programs/ncii/v1" in ambiguous.json()["detail"]
    named = submit_hashes(client, record(random_pdq()), base="/compat/stopncii/programs/ncii/v1")
    assert named.json()["results"][0]["programs"] == ["ncii"]


# Authentication and bad input ------------------------------------------------------------------


def problem(response: Any, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["detail"]
    if code:
        assert body["code"] == code
    return body


def test_missing_or_wrong_keys_are_401_with_a_json_body(platform_a: Caller, platform_b: Caller) -> None:
    url = f"{BASE}/FetchHashes?startTimestamp=10&pageSize=10"
    problem(APIClient().get(url), 401)
    assert APIClient().get(url)["WWW-Authenticate"].startswith("ApiKey")
    only_one = APIClient()
    only_one.credentials(HTTP_OCP_APIM_SUBSCRIPTION_KEY=platform_a.token)
    assert "x-functions-key" in problem(only_one.get(url), 401)["detail"]
    problem(stopncii_client("hxk_nope_" + "x" * 30).get(url), 401)
    problem(stopncii_client(platform_a.token, "not-a-key").get(url), 401)
    mixed = problem(stopncii_client(platform_a.token, platform_b.token).get(url), 401)
    assert "different members" in mixed["detail"]
    services.credential_revoke(credential=platform_a.credential, actor=SETUP)
    problem(stopncii_client(platform_a.token).get(url), 401)


def test_the_function_key_carries_the_endpoints_scope(platform_b: Caller, program: Program) -> None:
    reader = make_caller(platform_b.member, scopes=["read"])
    client = stopncii_client(reader.token, platform_b.token)
    assert client.get(f"{BASE}/FetchHashes?startTimestamp=10&pageSize=10").status_code == 200
    problem(client.post(f"{BASE}/SubmitFeedback", {"hashFeedbacks": [{}]}, format="json"), 403)
    program.unsigned_submitters.add(platform_b.member)
    problem(submit_hashes(client, record(random_pdq())), 403)
    # The subscription key only says who calls; the function key's scopes decide.
    full = stopncii_client(platform_b.token, reader.token)
    assert submit_hashes(full, record(random_pdq())).status_code == 200


def test_suspended_members_and_auditors_are_refused(platform_b: Caller, auditor: Caller) -> None:
    url = f"{BASE}/FetchHashes?startTimestamp=10&pageSize=10"
    problem(stopncii_client(auditor.token).get(url), 403)
    services.member_set_status(member=platform_b.member, status=Member.Status.SUSPENDED, actor=SETUP)
    problem(stopncii_client(platform_b.token).get(url), 403)


@pytest.mark.parametrize(
    "query",
    [
        "startTimestamp=abc&pageSize=10",
        "startTimestamp=-5&pageSize=10",
        "startTimestamp=1.5&pageSize=10",
        "startTimestamp=99999999999999999999&pageSize=10",
        "startTimestamp=10&pageSize=0",
        "startTimestamp=10&pageSize=ten",
        "startTimestamp=10&pageSize=10&nextPageToken=garbage",
    ],
)
def test_malformed_parameters_are_400_json(fetcher: APIClient, query: str) -> None:
    problem(fetcher.get(f"{BASE}/FetchHashes?{query}"), 400)


def test_a_page_token_only_works_for_its_caller_and_start(
    signer_a: Signer, fetcher: APIClient, platform_a: Caller
) -> None:
    signer_a.submit(*[signer_a.submission() for _ in range(3)])
    token = fetch(fetcher, page_size=1)["nextPageToken"]
    assert token
    problem(fetcher.get(f"{BASE}/FetchHashes?startTimestamp=11&pageSize=1&nextPageToken={token}"), 400)
    other = stopncii_client(platform_a.token)
    problem(other.get(f"{BASE}/FetchHashes?startTimestamp=10&pageSize=1&nextPageToken={token}"), 400)
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    problem(fetcher.get(f"{BASE}/FetchHashes?startTimestamp=10&pageSize=1&nextPageToken={forged}"), 400)


def test_every_answer_is_json(fetcher: APIClient) -> None:
    problem(fetcher.get("/compat/stopncii/v1/Nope"), 404)
    problem(fetcher.get("/compat/stopncii/v2/FetchHashes"), 404)
    problem(fetcher.get(f"{BASE}/SubmitFeedback"), 405)
    problem(fetcher.post(f"{BASE}/SubmitFeedback", "{not json", content_type="application/json"), 400)
    # A base configured with a trailing slash still works.
    assert fetcher.get("/compat/stopncii/v1//FetchHashes?startTimestamp=10&pageSize=5").status_code == 200


# Plain parts -----------------------------------------------------------------------------------


def test_signal_types_are_accepted_in_both_spellings() -> None:
    assert stopncii.parse_signal_type("ImagePDQ") == "pdq"
    assert stopncii.parse_signal_type("StopNCIISignalType.ImagePDQ") == "pdq"
    assert stopncii.parse_signal_type("StopNCIISignalType.VideoMD5") == "video_md5"
    for bad in ("Text", "StopNCIISignalType.URL", "pdq", None, 3):
        with pytest.raises(Problem):
            stopncii.parse_signal_type(bad)


def test_every_outcome_maps_to_a_value_in_the_clients_enum_and_back() -> None:
    assert set(stopncii.OUTCOME_TO_FEEDBACK) == set(Outcome.Kind.values)
    assert set(stopncii.OUTCOME_TO_FEEDBACK.values()) <= CLIENT_ENUMS["feedbackValue"]
    assert set(stopncii.FEEDBACK_TO_OUTCOME.values()) <= set(Outcome.Kind.values)
    for value, kind in stopncii.FEEDBACK_TO_OUTCOME.items():
        assert stopncii.OUTCOME_TO_FEEDBACK[kind] in (value, "Deleted")


def test_pseudonyms_are_stable_uuids_per_member_and_case() -> None:
    key = b"k" * 32
    name = stopncii.case_pseudonym(key, member_id=1, case="case:abc")
    assert uuid.UUID(name).version == 8 and re.fullmatch(r"[0-9a-f-]{36}", name)
    assert name == stopncii.case_pseudonym(key, member_id=1, case="case:abc")
    assert name != stopncii.case_pseudonym(key, member_id=2, case="case:abc")
    assert name != stopncii.case_pseudonym(b"j" * 32, member_id=1, case="case:abc")


def test_page_tokens_round_trip_and_refuse_tampering() -> None:
    key = b"t" * 32
    cursor = Cursor(member_id=3, start=1_700_000_000, seq=42, offset=7, high=1_700_000_100)
    token = stopncii.encode_cursor(cursor, key)
    assert stopncii.decode_cursor(token, key, member_id=3, start=1_700_000_000) == cursor
    for bad in (token + "x", "x" + token, token.replace(".", ""), ""):
        with pytest.raises(Problem):
            stopncii.decode_cursor(bad, key, member_id=3, start=1_700_000_000)
    with pytest.raises(Problem):
        stopncii.decode_cursor(token, b"u" * 32, member_id=3, start=1_700_000_000)


def test_tags_become_outcome_tags_and_labels() -> None:
    assert stopncii.outcome_tags(["Nude", "Sexual Content", "  ", "--", "nude"]) == ["nude", "sexual-content"]
    assert stopncii.submission_labels(["Nude", "Sexual Content", "!!"]) == ["Nude", "Sexual-Content"]


def test_a_checkpoint_after_every_event_starts_after_the_newest(signer_a: Signer) -> None:
    signer_a.submit(signer_a.submission())
    later = int(dt.datetime.now(dt.UTC).timestamp()) + 3600
    newest = Event.objects.filter(kind__in=selectors.RELEVANT_KINDS).latest("seq").seq
    assert selectors.start_seq(later) == newest + 1


# The real client, against a live server ---------------------------------------------------------


def real_client(live_url: str, function_key: str, subscription_key: str | None = None, base: str = BASE) -> Any:
    """threatexchange's StopNCIIAPI, pointed at us by `base_url_override` as a platform would."""
    from threatexchange.exchanges.clients.stopncii import api as tx

    keys = {tx.StopNCIIEndpoint.SubmitFeedback: function_key, tx.StopNCIIEndpoint.SubmitHashes: function_key}
    return tx.StopNCIIAPI(
        subscription_key or function_key, function_key, additional_function_keys=keys, base_url_override=live_url + base
    )


def test_the_real_client_pages_posts_feedback_and_submits_hashes(
    live_server: Any, signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    import requests
    from threatexchange.exchanges.clients.stopncii import api as tx

    values = [random_pdq() for _ in range(5)]
    signer_a.submit(*[signer_a.submission(v) for v in values])
    client = real_client(live_server.url, platform_b.token)
    # Paging by hand with a small page, as fetch_hashes_iter does with 800.
    pages, token = [], ""
    while True:
        page = client.fetch_hashes(page_size=2, start_timestamp=10, next_page=token)
        pages.append(page)
        if not page.hasMoreRecords:
            break
        token = page.nextPageToken
    assert [len(p.hashRecords) for p in pages] == [2, 2, 1]
    assert [p.nextSetTimestamp for p in pages] == sorted(p.nextSetTimestamp for p in pages)
    records = [r for p in pages for r in p.hashRecords]
    assert [r.hashValue for r in records] == values
    assert {(r.signalType, r.hashStatus) for r in records} == {
        (tx.StopNCIISignalType.ImagePDQ, tx.StopNCIICaseStatus.Active)
    }
    assert all(list(r.caseNumbers.values()) == [tx.StopNCIICaseStatus.Active] for r in records)
    # Feedback by value alone; it comes back as the caller's own CSPFeedback.
    client.submit_feedback(
        tx.StopNCIISignalType.ImagePDQ, values[0], tx.StopNCIICSPFeedbackValue.Blocked, tags={"Nude"}
    )
    row = Outcome.objects.get()
    assert (row.kind, row.tags, row.member) == ("removed", ["nude"], platform_b.member)
    again = {r.hashValue: r for p in client.fetch_hashes_iter(pages[-1].nextSetTimestamp) for r in p.hashRecords}
    assert again[values[0]].CSPFeedbacks == [
        tx.StopNCIICSPFeedback(tx.StopNCIICSPFeedbackValue.Blocked, {"nude"}, "platform-b")
    ]
    # SubmitHashes, with the client's "StopNCIISignalType.ImagePDQ" spelling.
    program.unsigned_submitters.add(platform_b.member)
    fresh = random_pdq()
    client.submit_hash(tx.StopNCIISignalType.ImagePDQ, fresh, tags={"Nude"})
    submission = Submission.objects.get(hash__value=fresh)
    assert (submission.signed, submission.source, submission.labels) == (False, "stopncii", ["Nude"])
    # Errors are JSON the client can read.
    with pytest.raises(requests.HTTPError) as refused:
        real_client(live_server.url, "hxk_wrong_" + "x" * 30).fetch_hashes()
    assert refused.value.response.status_code == 401
    assert refused.value.response.json()["code"] == "authentication_failed"


def test_the_real_exchange_api_fetches_over_many_pages_with_rising_checkpoints(
    live_server: Any, signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    """StopNCIISignalExchangeAPI (what the CLI and HMA run): 900 imported + signed hashes, pages of 800."""
    from threatexchange.exchanges.collab_config import CollaborationConfigBase
    from threatexchange.exchanges.impl.stop_ncii_api import StopNCIICredentials, StopNCIISignalExchangeAPI
    from threatexchange.signal_type.md5 import VideoMD5Signal
    from threatexchange.signal_type.pdq.signal import PdqSignal

    imported = [random_pdq() for _ in range(900)]
    imports.import_hashes(
        lines=imported, program=program, source="other-exchange", actor=SETUP, default_signal_type="pdq"
    )
    video = "0f343b0931126a20f133d67c2b018a3b"
    signer_a.submit(signer_a.submission(video, signal_type="video_md5"))
    collab = CollaborationConfigBase(name="Hashexchange", api="stop_ncii", enabled=True)
    credentials = StopNCIICredentials(platform_b.token, platform_b.token, live_server.url + BASE)
    exchange = StopNCIISignalExchangeAPI.for_collab(collab, credentials)
    deltas = list(exchange.fetch_iter([PdqSignal, VideoMD5Signal], None))
    assert len(deltas) == 2
    times = [d.checkpoint.get_progress_timestamp() for d in deltas]
    assert times == sorted(times)
    fetched = {key: value for d in deltas for key, value in d.updates.items()}
    assert set(fetched) == {("pdq", v) for v in imported} | {("video_md5", video)}
    assert all(value is not None for value in fetched.values())
    # An incremental run from the checkpoint: nothing new, and the checkpoint holds.
    later = list(exchange.fetch_iter([PdqSignal, VideoMD5Signal], deltas[-1].checkpoint))
    assert later[-1].checkpoint.get_progress_timestamp() >= times[-1]


def test_an_unsigned_submission_brings_a_withdrawn_hash_back(
    signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value), format="json")
    assert Hash.objects.get(value=value).status == Hash.Status.WITHDRAWN
    program.unsigned_submitters.add(platform_b.member)
    assert submit_hashes(stopncii_client(platform_b.token), record(value)).json()["accepted"] == 1
    assert Hash.objects.get(value=value).status == Hash.Status.ACTIVE
    assert [e.kind for e in Event.objects.filter(subject_type="hash").order_by("seq")] == [
        "hash.added",
        "submission.withdrawn",
        "hash.withdrawn",
        "hash.added",
    ]
