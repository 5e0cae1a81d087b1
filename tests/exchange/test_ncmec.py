"""The NCMEC-shaped facade under /compat/ncmec/, driven by python-threatexchange's own NCMEC classes.

`NCMECHashAPI` (status, members, feedback reasons, entries with `next` paging and
deletions, up- and downvotes) and `NCMECSignalExchangeAPI.fetch_iter` run against a live
server on 127.0.0.1. Their base URL is an enum of NCMEC's hosts, so the tests set the
client's base URL to ours after constructing it; nothing else of the library changes.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
import requests
from rest_framework.test import APIClient
from threatexchange.exchanges import fetch_state as state
from threatexchange.exchanges.clients.ncmec import hash_api
from threatexchange.exchanges.impl import ncmec_api
from threatexchange.signal_type.md5 import VideoMD5Signal
from threatexchange.signal_type.pdq.signal import PdqSignal

from exchange.compat import ncmec
from exchange.models import FeedCursor, Outcome
from hashes.models import Hash
from members.models import Member, Program
from tests.conftest import Caller, make_caller, make_member
from tests.signing import Signer, make_signer, random_pdq

ENV = hash_api.NCMECEnvironment.test_Industry


def client_for(live_server: Any, caller: Caller, base: str = "/compat/ncmec") -> hash_api.NCMECHashAPI:
    api = hash_api.NCMECHashAPI(caller.member.slug, caller.token, ENV)
    api._base_url = live_server.url + base
    return api


def basic(client: APIClient, user: str, password: str) -> APIClient:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {token}")
    return client


def all_updates(api: hash_api.NCMECHashAPI, start: int = 0, end: int = 0) -> list[hash_api.NCMECEntryUpdate]:
    end = end or int(time.time()) + 2
    return [u for page in api.get_entries_iter(start_timestamp=start, end_timestamp=end) for u in page.updates]


@pytest.mark.slow
def test_status_members_reasons_and_entries_with_deletions(
    live_server: Any, signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    values = [random_pdq() for _ in range(5)]
    signer_a.submit(*(signer_a.submission(v) for v in values))
    signer_a.submit(
        signer_a.submission("ab" * 16, signal_type="md5"), signer_a.submission("0f" * 8, signal_type="phash")
    )
    api = client_for(live_server, platform_b)

    assert api.status() == hash_api.StatusResult(platform_b.member.pk, "platform-b")
    assert api.members() == [hash_api.StatusResult(program.pk, "take-it-down")]
    reasons = api.feedback_reasons(hash_api.FingerprintType.pdq)
    assert sorted(reasons.values()) == sorted(r.name for r in ncmec.NEGATIVE_REASONS)

    pages = list(api.get_entries_iter(start_timestamp=0, end_timestamp=int(time.time()) + 2))
    updates = [u for page in pages for u in page.updates]
    assert {u.fingerprints.get("pdq") for u in updates} == {*values, None}
    [md5] = [u for u in updates if "md5" in u.fingerprints]
    assert md5.fingerprints == {"md5": "ab" * 16} and md5.entry_type == hash_api.NCMECEntryType.image
    assert {u.member_id for u in updates} == {program.pk} and not any(u.deleted for u in updates)
    assert len(updates) == 6  # the phash has no NCMEC name and is left out
    assert FeedCursor.objects.get(member=platform_b.member).reads >= 1

    withdrawn = values[0]
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(withdrawn), format="json")
    later = all_updates(api, start=int(time.time()) - 30)
    [gone] = [u for u in later if u.deleted]
    assert gone.id == str(Hash.objects.get(value=withdrawn).pk) and gone.member_id == program.pk
    assert gone.fingerprints == {}


@pytest.mark.slow
def test_next_pages_neither_skip_nor_repeat(live_server: Any, signer_a: Signer, platform_b: Caller) -> None:
    values = [random_pdq() for _ in range(7)]
    for value in values:  # one event each
        signer_a.submit(signer_a.submission(value))
    bare = basic(APIClient(), platform_b.member.slug, platform_b.token)
    end = hash_api._date_format(int(time.time()) + 2)
    response = bare.get(f"/compat/ncmec/v2/entries?from=2000-01-01T00:00:00Z&to={end}&size=3")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/xml")
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        parsed = hash_api.GetEntriesResponse.from_xml(hash_api._XMLWrapper(_xml(response.content)), 0)
        seen += [u.fingerprints["pdq"] for u in parsed.updates]
        if not parsed.next:
            break
        info = parsed.get_next_info()
        assert info is not None and info.size == 3
        signer_a.submit(signer_a.submission(random_pdq()))  # recorded meanwhile: after the window
        response = bare.get(f"/compat/ncmec{parsed.next}")
        assert response.status_code == 200, response.content
    assert pages == 3 and seen == values


def _xml(content: bytes) -> Any:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(content)
    for element in root.iter():
        element.tag = element.tag.rpartition("}")[2]
    return root


@pytest.mark.slow
def test_votes_become_outcomes_and_show_as_the_callers_feedback(
    live_server: Any, signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    api = client_for(live_server, platform_b)
    [entry] = all_updates(api)  # sent to platform-b: it may now report on it

    api.submit_upvote(entry.member_id, entry.id, hash_api.FingerprintType.pdq)
    api.submit_upvote(entry.member_id, entry.id, hash_api.FingerprintType.pdq)  # the same vote: recorded once
    assert list(Outcome.objects.filter(member=platform_b.member).values_list("kind", flat=True)) == ["removed"]
    [entry] = all_updates(api)
    [vote] = entry.feedback["PDQ"]
    assert vote.feedback_type == hash_api.FeedbackType.upvote and vote.member.esp_id == platform_b.member.pk

    not_violating = ncmec.REASON_BY_KIND["not_violating"]
    api.submit_feedback(
        entry.member_id, entry.id, hash_api.FingerprintType.pdq, hash_api.FeedbackType.downvote, not_violating.guid
    )
    kinds = list(Outcome.objects.filter(member=platform_b.member).order_by("id").values_list("kind", flat=True))
    assert kinds == ["removed", "not_violating"]
    [entry] = all_updates(api)
    [vote] = entry.feedback["PDQ"]
    assert (vote.feedback_type, vote.reason) == (hash_api.FeedbackType.downvote, not_violating.name)


@pytest.mark.slow
def test_the_signal_exchange_api_fetches_and_drops_a_withdrawn_hash(
    live_server: Any, signer_a: Signer, platform_b: Caller
) -> None:
    """NCMECSignalExchangeAPI's own fetch loop and merge, as the CLI and HMA run them."""
    kept, withdrawn = random_pdq(), random_pdq()
    signer_a.submit(signer_a.submission(kept), signer_a.submission(withdrawn))
    collab = ncmec_api.NCMECCollabConfig(name="NCMEC-shaped", environment=ENV)
    exchange = ncmec_api.NCMECSignalExchangeAPI(collab, platform_b.member.slug, platform_b.token)
    exchange.get_client = lambda environment: client_for(live_server, platform_b)  # type: ignore[method-assign]
    stored: dict[str, Any] = {}

    def fetch(checkpoint: Any) -> Any:
        for delta in exchange.fetch_iter([PdqSignal, VideoMD5Signal], checkpoint):
            ncmec_api.NCMECSignalExchangeAPI.naive_fetch_merge(stored, delta.updates)
            checkpoint = delta.checkpoint
        return checkpoint

    time.sleep(6)  # the library reads up to five seconds ago
    checkpoint = fetch(None)
    signals = ncmec_api.NCMECSignalExchangeAPI.naive_convert_to_signal_type([PdqSignal], collab, stored)
    assert set(signals[PdqSignal]) == {kept, withdrawn}
    opinion = signals[PdqSignal][kept].get_as_opinions()[0]
    assert opinion.category == state.SignalOpinionCategory.POSITIVE_CLASS

    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(withdrawn), format="json")
    time.sleep(6)
    fetch(checkpoint)
    signals = ncmec_api.NCMECSignalExchangeAPI.naive_convert_to_signal_type([PdqSignal], collab, stored)
    assert set(signals[PdqSignal]) == {kept}


# Refusals ------------------------------------------------------------------------------------


def test_credentials_are_checked(platform_b: Caller, platform_a: Caller) -> None:
    url = "/compat/ncmec/v2/status"
    assert APIClient().get(url).status_code == 401
    assert APIClient().get(url)["WWW-Authenticate"].startswith("Basic")
    assert basic(APIClient(), "platform-b", "hxk_wrong").get(url).status_code == 401
    mismatch = basic(APIClient(), "platform-b", platform_a.token).get(url)
    assert mismatch.status_code == 401 and "not the member" in mismatch.json()["detail"]
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Basic !!!")
    assert bad.get(url).status_code == 401
    assert basic(APIClient(), "platform-b", platform_b.token).get(url).status_code == 200


def test_feedback_needs_the_outcomes_scope(program: Program, signer_a: Signer) -> None:
    reader = make_caller(make_member("reader", Member.Kind.PLATFORM, program), scopes=["read"])
    signer_a.submit(signer_a.submission(random_pdq()))
    hash_id = Hash.objects.get().pk
    client = basic(APIClient(), "reader", reader.token)
    assert client.get("/compat/ncmec/v2/entries").status_code == 200
    response = client.put(
        f"/compat/ncmec/v2/entries/{program.pk}/{hash_id}/PDQ/feedback",
        b"<feedbackSubmission><affirmative/></feedbackSubmission>",
        content_type="application/xml",
    )
    assert response.status_code == 403


def test_who_may_receive(program: Program, other_program: Program, platform_b: Caller) -> None:
    """Hashes of a program the caller does not receive never appear, and cannot be voted on."""
    outsider = make_caller(make_member("ncii-intake", Member.Kind.INTAKE, other_program))
    make_signer(outsider).submit(make_signer(outsider).submission(random_pdq(), program="ncii"))
    client = basic(APIClient(), "platform-b", platform_b.token)
    listed = client.get("/compat/ncmec/v2/entries")
    assert listed.status_code == 200 and b"<pdq>" not in listed.content
    hidden = Hash.objects.filter(listings__program=other_program).first()
    assert hidden is not None
    put = client.put(
        f"/compat/ncmec/v2/entries/{other_program.pk}/{hidden.pk}/PDQ/feedback",
        b"<feedbackSubmission><affirmative/></feedbackSubmission>",
        content_type="application/xml",
    )
    assert put.status_code == 404
    assert client.get("/compat/ncmec/programs/ncii/v2/entries").status_code == 403
    assert client.get("/compat/ncmec/programs/nope/v2/status").status_code == 404


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/compat/ncmec/v2/entries?from=yesterday", 400),
        ("/compat/ncmec/v2/entries?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", 400),
        ("/compat/ncmec/v2/entries?size=0", 400),
        ("/compat/ncmec/v2/entries?size=5000", 400),
        ("/compat/ncmec/v2/entries?start=-1", 400),
        ("/compat/ncmec/v2/entries?start=10&max=3", 400),
        ("/compat/ncmec/v2/feedback/TLSH/reasons", 404),
        ("/compat/ncmec/v3/status", 404),
    ],
)
def test_bad_queries_are_clear_4xx(platform_b: Caller, path: str, code: int) -> None:
    response = basic(APIClient(), "platform-b", platform_b.token).get(path)
    assert response.status_code == code, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", 400),
        (b"not xml", 400),
        (b"<other/>", 400),
        (b"<feedbackSubmission/>", 400),
        (b"<feedbackSubmission><affirmative/><affirmative/></feedbackSubmission>", 400),
        (b"<feedbackSubmission><negative/></feedbackSubmission>", 400),
        (b"<feedbackSubmission><negative><reasonIds><guid>x</guid></reasonIds></negative></feedbackSubmission>", 400),
        (
            b'<!DOCTYPE a [<!ENTITY e "aaaaaaaa"><!ENTITY f "&e;&e;&e;&e;">]>'
            b"<feedbackSubmission><affirmative/>&f;</feedbackSubmission>",
            400,
        ),
    ],
)
def test_bad_feedback_is_refused_and_records_nothing(
    program: Program, signer_a: Signer, platform_b: Caller, body: bytes, code: int
) -> None:
    signer_a.submit(signer_a.submission(random_pdq()))
    hash_id = Hash.objects.get().pk
    client = basic(APIClient(), "platform-b", platform_b.token)
    client.get("/compat/ncmec/v2/entries")  # sent to platform-b
    response = client.put(
        f"/compat/ncmec/v2/entries/{program.pk}/{hash_id}/PDQ/feedback", body, content_type="application/xml"
    )
    assert response.status_code == code, response.content
    assert response.json()["detail"]
    assert not Outcome.objects.exists()
    wrong_type = client.put(
        f"/compat/ncmec/v2/entries/{program.pk}/{hash_id}/MD5/feedback",
        b"<feedbackSubmission><affirmative/></feedbackSubmission>",
        content_type="application/xml",
    )
    assert wrong_type.status_code == 404
    missing = client.put(
        f"/compat/ncmec/v2/entries/{program.pk}/999999/PDQ/feedback",
        b"<feedbackSubmission><affirmative/></feedbackSubmission>",
        content_type="application/xml",
    )
    assert missing.status_code == 404


def test_network_errors_surface_as_http_errors(live_server: Any, platform_b: Caller) -> None:
    api = hash_api.NCMECHashAPI(platform_b.member.slug, "hxk_wrong", ENV)
    api._base_url = live_server.url + "/compat/ncmec"
    with pytest.raises(requests.HTTPError, match="401"):
        api.status()
