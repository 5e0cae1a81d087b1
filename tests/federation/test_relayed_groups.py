"""What a peer brings is recorded as grouped `hashes.relayed` events; members see the same entries.

docs/federation.md "Grouped relayed events": a page's first listings are one event per
up to 1,000 hashes of a program, each distinct origin once in it; the feed shows each
hash as the signed `hash.added` entry it would have had, and a refused entry leaves the
rest of the group listed. A large snapshot is checked by a pool of processes
(federation/verifying.py); one killed mid-bootstrap leaves what was stored, and the next
sync lists every hash exactly once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Any

import pytest
from django.utils import timezone

from core.ledger import Event
from exchange import crypto
from federation import imports, services, snapshots
from federation.models import Peer, Refusal
from hashes.models import Listing, Submission
from members.models import Member, Program
from tests.conftest import make_caller, make_member
from tests.federation.remote import Origin, PeerServer, altered


def sync(peer: Peer) -> services.SyncResult:
    return services.peer_sync(peer=Peer.objects.get(pk=peer.pk))


def test_a_group_with_a_refused_entry_lists_the_rest_and_the_feed_shows_each_as_a_signed_addition(
    peer: Peer, remote: PeerServer, origin: Origin, ncii: Program
) -> None:
    second = Origin(member="second-platform", server_key=origin.server_key)  # another member of the same server
    forged = origin.added(2)
    forged["envelopes"] = [altered(forged["envelopes"][0], value="e" * 64)]
    remote.entries = [origin.added(1), forged, second.added(3), origin.added(4), second.added(5)]
    result = sync(peer)
    assert (result.imported, result.refusals) == (4, {Refusal.Reason.BAD_ENVELOPE: 1})
    assert Refusal.objects.get(peer=peer).seq == 2

    # One event lists the four, each origin (with its signed key binding) once.
    assert not Event.objects.filter(kind="hash.added").exists()
    group = Event.objects.get(kind="hashes.relayed")
    assert group.program == "ncii" and group.data["count"] == 4 and group.data["peer"] == "other"
    assert [o["member"] for o in group.data["origins"]] == [origin.member, second.member]
    assert group.data["origin_of"] == [0, 1, 0, 1]
    stored = Submission.objects.filter(pk__in=group.data["submission_ids"])
    assert {s.relayed_in for s in stored} == {group.seq}

    # A member sees four hash.added entries, in the peer's order, as one hash.added each showed before.
    reader = make_caller(make_member("reader", Member.Kind.PLATFORM, ncii))
    got = [e for e in reader.client.get("/api/v1/feed?after=0").json()["entries"] if "hash" in e]
    sent = [e for e in remote.entries if e is not forged]
    assert [e["hash"]["value"] for e in got] == [e["hash"]["value"] for e in sent]
    here = crypto.server_key_id()
    for entry, original in zip(got, sent, strict=True):
        assert entry["kind"] == "hash.added" and entry["signed"] is True and entry["imported_from"] is None
        assert entry["envelopes"] == original["envelopes"]  # the origin member's envelope, verbatim
        assert entry["origin"] == {**original["origin"], "path": [origin.server_id, here]}
        assert (entry["seq"], entry["leaf_index"]) == (group.seq, group.seq - 1)
    assert list(got[0]) == ["seq", "leaf_index", "kind", "program", "at", "hash", "envelopes", "signed"] + [
        "imported_from",
        "origin",
    ]

    # A member that was sent them may report on them (the distribution rule knows the group).
    item = {
        "hash_id": got[0]["hash"]["id"],
        "program": "ncii",
        "kind": "removed",
        "occurred_at": timezone.now().isoformat(),
        "count": 1,
        "client_ref": "r1",
    }
    answer = reader.client.post("/api/v1/outcomes", {"outcomes": [item]}, format="json")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["results"][0]["status"] == "accepted", answer.json()


def test_groups_hold_at_most_a_thousand_hashes_of_one_program(
    peer: Peer, remote: PeerServer, origin: Origin, ncii: Program
) -> None:
    remote.entries = [origin.added(seq) for seq in range(1, 1203)]
    assert sync(peer).imported == 1202
    counts = list(Event.objects.filter(kind="hashes.relayed").order_by("seq").values_list("data__count", flat=True))
    assert counts == [1000, 202]  # one page of the peer's feed is 1,000 entries (PEER_PAGE_SIZE)
    assert Listing.objects.filter(program=ncii, status=Listing.Status.ACTIVE).count() == 1202


@pytest.mark.django_db(transaction=True)
def test_a_verifying_process_killed_mid_bootstrap_then_every_hash_exactly_once(
    peer: Peer, remote: PeerServer, origin: Origin, ncii: Program, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.PEER_VERIFY_PROCESSES = 2
    settings.PEER_VERIFY_MIN_ENTRIES = 0
    monkeypatch.setattr(snapshots, "CHUNK", 2)
    entries = [origin.added(seq) for seq in range(1, 41)]
    remote.entries = list(entries)
    remote.publish_snapshot("ncii", 40, entries)
    stored_chunks = []
    page_store = imports.page_store

    def store_then_kill(**kwargs: Any) -> imports.PageResult:
        stored = page_store(**kwargs)
        stored_chunks.append(stored)
        if len(stored_chunks) == 1:  # after the first chunk is committed: kill the pool's processes
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        return stored

    monkeypatch.setattr(imports, "page_store", store_then_kill)
    first = sync(peer)
    assert "verifying process died" in first.error
    assert Peer.objects.get(pk=peer.pk).cursor == 0  # the cursor moves with the last chunk only
    kept = Listing.objects.filter(program=ncii).count()
    assert 2 <= kept < 40

    monkeypatch.setattr(imports, "page_store", page_store)
    again = sync(peer)
    assert again.error == "" and again.imported == 40 - kept and again.duplicates == kept
    assert Peer.objects.get(pk=peer.pk).cursor == 40
    assert Listing.objects.filter(program=ncii, status=Listing.Status.ACTIVE).count() == 40
    assert Submission.objects.filter(submitter=peer.member).count() == 40
    listed = [
        h
        for data in Event.objects.filter(kind="hashes.relayed").values_list("data", flat=True)
        for h in data["hash_ids"]
    ]
    assert sorted(listed) == sorted(set(listed)) and len(listed) == 40


@pytest.mark.usefixtures("index_dir")
def test_a_member_matches_what_a_peer_brought(peer: Peer, remote: PeerServer, origin: Origin, ncii: Program) -> None:
    remote.entries = [origin.added(seq) for seq in (1, 2)]
    reader = make_caller(make_member("reader", Member.Kind.PLATFORM, ncii))
    body = {"queries": [{"signal_type": "pdq", "value": remote.entries[1]["hash"]["value"]}]}
    # The index is loaded before the peer's hashes arrive: they reach it by the log's tail.
    assert reader.client.post("/api/v1/match", body, format="json").json()["matched"] == 0
    assert sync(peer).imported == 2
    answer = reader.client.post("/api/v1/match", body, format="json").json()
    assert answer["matched"] == 1, answer
