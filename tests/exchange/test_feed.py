"""The pull feed: ordered, resumable, scoped to the member, self-verifying entries."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hashexchange_client import dsse, payloads

from core.ledger import Event
from exchange.feed import feed_page
from exchange.models import FeedCursor
from members import services
from members.models import Program
from tests.conftest import SETUP, Caller, make_caller, make_member
from tests.signing import Signer, random_pdq


def read_all(caller: Caller, limit: int = 1000) -> list[dict]:
    entries, after = [], 0
    while True:
        page = caller.client.get(f"/api/v1/feed?after={after}&limit={limit}").json()
        entries += page["entries"]
        after = page["next"]
        if not page["has_more"]:
            return entries


def test_added_and_withdrawn_hashes_arrive_with_envelopes_that_verify(signer_a: Signer, platform_b: Caller) -> None:
    value = random_pdq()
    signer_a.submit(signer_a.submission(value, labels=["ncii"]))
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value, reason="asked"), format="json")
    entries = read_all(platform_b)
    kinds = [e["kind"] for e in entries]
    assert kinds == ["key.registered", "hash.added", "hash.withdrawn"]
    key, added, withdrawn = entries
    assert key["key"]["key_id"] == signer_a.key.key_id and key["key"]["member"] == "platform-a"
    assert added["hash"]["value"] == value and added["program"] == "take-it-down"
    # A member verifies with the public key it got from the same feed: no trust in us needed.
    ring = dsse.keyring([__import__("base64").b64decode(key["key"]["public_key"])])
    payload = json.loads(dsse.verify_envelope(added["envelopes"][0], ring, payloads.SUBMISSION_TYPE))
    assert payload["value"] == value and payload["labels"] == ["ncii"]
    withdrawal = json.loads(dsse.verify_envelope(withdrawn["envelopes"][0], ring, payloads.WITHDRAWAL_TYPE))
    assert withdrawal["reason"] == "asked"
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)


def test_members_see_only_their_programs(signer_a: Signer, other_program: Program) -> None:
    outsider = make_caller(make_member("outsider", "platform", other_program))
    signer_a.submit(signer_a.submission())
    assert [e["kind"] for e in read_all(outsider)] == ["key.registered"]
    services.enrollment_set(
        member=signer_a.caller.member, program=Program.objects.get(slug="take-it-down"), state="opted_out", actor=SETUP
    )
    assert [e["kind"] for e in read_all(signer_a.caller)] == ["key.registered"]


def test_bootstrap_pages_through_everything_without_skipping(signer_a: Signer, platform_b: Caller) -> None:
    for _ in range(3):
        signer_a.submit(*[signer_a.submission() for _ in range(7)])
    visible = list(Event.objects.filter(kind__in=["hash.added", "key.registered"]).values_list("seq", flat=True))
    entries = read_all(platform_b, limit=4)
    assert [e["seq"] for e in entries] == visible
    assert len(entries) == 22
    page = platform_b.client.get("/api/v1/feed?after=0&limit=4").json()
    assert (len(page["entries"]), page["has_more"], page["next"]) == (4, True, page["entries"][-1]["seq"])
    last = platform_b.client.get(f"/api/v1/feed?after={visible[-1]}").json()
    assert last == {"entries": [], "next": visible[-1], "has_more": False}


def test_a_page_costs_the_same_number_of_queries_whatever_its_size(signer_a: Signer, platform_b: Caller) -> None:
    signer_a.submit(*[signer_a.submission() for _ in range(60)])
    platform_b.client.get("/api/v1/feed?after=0&limit=1")  # first read creates the member's cursor row
    counts = []
    for limit in (5, 50):
        with CaptureQueriesContext(connection) as queries:
            response = platform_b.client.get(f"/api/v1/feed?after=0&limit={limit}")
        assert len(response.json()["entries"]) == limit
        counts.append(len(queries))
    assert counts[0] == counts[1]
    assert counts[0] <= 12


def test_imported_groups_become_entries_and_are_never_split(
    tmp_path, program: Program, platform_b: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    from django.core.management import call_command

    from hashes import imports

    monkeypatch.setattr(imports, "EVENT_GROUP_SIZE", 3)
    values = [random_pdq() for _ in range(7)]
    (tmp_path / "list.txt").write_text("\n".join(values))
    call_command(
        "import_hashes",
        str(tmp_path / "list.txt"),
        "--program",
        "take-it-down",
        "--source",
        "x",
        "--signal-type",
        "pdq",
        "--no-progress",
        stdout=open("/dev/null", "w"),
    )  # noqa: SIM115
    page = platform_b.client.get("/api/v1/feed?after=0&limit=4").json()
    assert len(page["entries"]) == 3 and page["has_more"]  # a group of 3, not split to fill 4
    entries = read_all(platform_b, limit=4)
    assert sorted(e["hash"]["value"] for e in entries) == sorted(values)
    assert {(e["kind"], e["imported_from"]) for e in entries} == {("hash.added", "x")}
    big = platform_b.client.get("/api/v1/feed?after=0&limit=1").json()
    assert len(big["entries"]) == 3  # a group larger than the limit still comes whole


def test_reading_the_feed_is_recorded_for_participation(signer_a: Signer, platform_b: Caller) -> None:
    signer_a.submit(signer_a.submission())
    page = platform_b.client.get("/api/v1/feed?after=0").json()
    cursor = FeedCursor.objects.get(member=platform_b.member)
    assert (cursor.last_seq, cursor.reads) == (page["next"], 1)
    platform_b.client.get("/api/v1/feed?after=0&limit=1")
    cursor.refresh_from_db()
    assert (cursor.last_seq, cursor.reads) == (page["next"], 2)  # never goes backwards


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=-1", "after"),
        ("after=abc", "after"),
        ("limit=0", "limit"),
        ("limit=5001", "limit"),
        ("limit=ten", "limit"),
    ],
)
def test_bad_cursors_and_limits_are_400s_naming_the_field(platform_a: Caller, query: str, field: str) -> None:
    response = platform_a.client.get(f"/api/v1/feed?{query}")
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert response.json()["detail"].startswith(f"{field}:")


def test_feed_page_is_usable_without_http(signer_a: Signer, platform_b: Caller) -> None:
    signer_a.submit(signer_a.submission())
    page = feed_page(member=platform_b.member, after=0, limit=10, kinds=["hash.added"])
    assert [e["kind"] for e in page.entries] == ["hash.added"]
