"""Peers on one server: adding one, pulling its feed, what is refused and why, and the origin we pass on.

The peer is a real HTTP server on 127.0.0.1 (tests/federation/remote.py) whose entries
are signed like another clearinghouse's; the three-server test (test_three_servers.py)
runs the real thing end to end.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from hashexchange_client import dsse, keys

from core.ledger import Event
from exchange import crypto, provenance
from federation import services
from federation.models import Peer, Refusal
from hashes.models import Hash, Listing, Submission
from members.models import Member, Program
from tests.conftest import SETUP, Caller, make_caller, make_member
from tests.federation.remote import Origin, PeerServer, altered
from tests.signing import Signer, make_signer


def sync(peer: Peer) -> services.SyncResult:
    return services.peer_sync(peer=Peer.objects.get(pk=peer.pk))


def test_peer_add_pins_the_key_and_keeps_our_key_encrypted(peer: Peer, remote: PeerServer, origin: Origin) -> None:
    assert peer.server_key_id == origin.server_id
    assert peer.member.kind == Member.Kind.PEER and peer.member.is_active
    assert peer.member.enrollments.get().program.slug == "ncii"
    assert "hxk_theirs_secret" not in peer.api_key_encrypted
    assert crypto.decrypt(peer.api_key_encrypted) == "hxk_theirs_secret"
    assert Event.objects.filter(kind="peer.added", subject_id="other").exists()


def test_peer_add_command_and_its_refusals(remote: PeerServer, ncii: Program, settings: Any) -> None:
    call_command("peer_add", "other", "--url", remote.url, "--key", "k", "--program", "theirs:ncii")
    assert Peer.objects.get(slug="other").programs == [{"theirs": "theirs", "ours": "ncii", "hop_limit": 4}]
    with pytest.raises(CommandError, match="a peer called 'other' already exists"):
        call_command("peer_add", "other", "--url", remote.url, "--key", "k", "--program", "ncii")
    with pytest.raises(CommandError, match="no program 'nope' here"):
        call_command("peer_add", "third", "--url", remote.url, "--key", "k", "--program", "x:nope")
    with pytest.raises(CommandError, match="already peer 'other'"):
        call_command("peer_add", "third", "--url", remote.url, "--key", "k", "--program", "ncii")
    with pytest.raises(CommandError, match="unreachable"):
        call_command("peer_add", "third", "--url", "http://127.0.0.1:9", "--key", "k", "--program", "ncii")
    settings.PEERS_ALLOW_HTTP = False
    with pytest.raises(CommandError, match="must be https"):
        call_command("peer_add", "third", "--url", remote.url, "--key", "k", "--program", "ncii")


def test_a_page_is_imported_with_its_cursor_and_a_second_read_adds_nothing(
    peer: Peer, remote: PeerServer, origin: Origin
) -> None:
    remote.entries = [origin.added(seq) for seq in (3, 5, 9)]
    result = sync(peer)
    assert (result.imported, result.error) == (3, "")
    assert Peer.objects.get(pk=peer.pk).cursor == 9
    assert ("/api/v1/feed", "Bearer hxk_theirs_secret") in remote.requests
    stored = Submission.objects.filter(submitter=peer.member)
    assert {s.envelope["payload"] for s in stored} == {e["envelopes"][0]["payload"] for e in remote.entries}
    # Read again from zero (a resync, or a worker killed before the cursor moved): nothing twice.
    services.peer_resync(peer=peer, actor=SETUP)
    again = sync(peer)
    assert (again.imported, again.duplicates) == (0, 3)
    assert Listing.objects.count() == 3


def test_each_refusal_is_named_and_the_rest_of_the_page_is_imported(
    peer: Peer, remote: PeerServer, origin: Origin
) -> None:
    here = crypto.server_key_id()
    good = origin.added(1)
    forged = origin.added(2)
    forged["envelopes"] = [altered(forged["envelopes"][0], value="f" * 64)]
    stranger = keys.generate_private_key()
    unattested = origin.added(3)
    unattested["origin"]["key_binding"] = origin.binding(signer=stranger)
    other_program = origin.added(4, program="take-it-down")
    loop = origin.added(5, path=[origin.server_id, here, origin.server_id])
    far = origin.added(6, path=[origin.server_id, "a" * 64, "b" * 64, origin.server_id])
    detour = origin.added(7, path=[origin.server_id, "c" * 64])
    unsigned = {**origin.added(8), "envelopes": [], "origin": None, "signed": False}
    mismatch = origin.added(9)
    mismatch["hash"] = {**mismatch["hash"], "value": "0" * 63 + "1"}
    unreadable = origin.added(10)
    unreadable["hash"] = [unreadable["hash"]["signal_type"], unreadable["hash"]["value"]]
    # The entry's copy of the hash in capitals is still the signed hash, once normalised.
    shouting = origin.added(11)
    shouting["hash"] = {**shouting["hash"], "value": shouting["hash"]["value"].upper()}
    # A hash this server's admins quarantined takes no new submission, from a peer either.
    quarantined = origin.added(12)
    Hash.objects.create(signal_type="pdq", value=quarantined["hash"]["value"], status=Hash.Status.QUARANTINED)
    remote.entries = [
        good,
        forged,
        unattested,
        other_program,
        loop,
        far,
        detour,
        unsigned,
        mismatch,
        unreadable,
        shouting,
        quarantined,
    ]
    result = sync(peer)
    assert result.imported == 2
    refused = dict(Refusal.objects.filter(peer=peer).values_list("seq", "reason"))
    assert refused == {
        2: "bad_envelope",
        3: "binding_not_attested",
        4: "program_not_agreed",
        5: "loop",
        6: "hop_limit",
        7: "path_mismatch",
        8: "unsigned",
        9: "envelope_mismatch",
        10: "envelope_mismatch",
        12: "refused_here",
    }
    events = Event.objects.filter(kind="peer.refused")
    assert sorted(e.data["reason"] for e in events) == sorted(refused.values())
    assert all(e.data["peer"] == "other" for e in events)
    assert "quarantined" in Refusal.objects.get(peer=peer, seq=12).detail
    assert Peer.objects.get(pk=peer.pk).cursor == 12


def test_our_feed_passes_the_origin_on_and_a_member_verifies_it_with_the_origin_key_alone(
    peer: Peer, remote: PeerServer, origin: Origin, program: Program, ncii: Program
) -> None:
    entry = origin.added(1)
    remote.entries = [entry]
    sync(peer)
    reader = make_caller(make_member("reader", Member.Kind.PLATFORM, ncii))
    got = [e for e in reader.client.get("/api/v1/feed?after=0").json()["entries"] if e["kind"] == "hash.added"]
    assert len(got) == 1
    assert got[0]["envelopes"] == entry["envelopes"]
    assert got[0]["origin"]["path"] == [origin.server_id, crypto.server_key_id()]
    # The member knows only the origin server's public key:
    binding = dsse.verify_envelope(
        got[0]["origin"]["key_binding"],
        {origin.server_id: keys.public_key_from_b64(origin.server_public_key)},
        provenance.KEY_BINDING_TYPE,
    )
    bound = json.loads(binding)
    assert bound["member"] == origin.member
    dsse.verify_envelope(got[0]["envelopes"][0], {bound["key_id"]: keys.public_key_from_b64(bound["public_key"])})


def test_a_local_submission_carries_an_origin_attested_by_this_server(signer_a: Signer, peer_caller: Caller) -> None:
    envelope = signer_a.submission()
    assert signer_a.submit(envelope).status_code in (200, 201, 207)
    entry = next(
        e for e in peer_caller.client.get("/api/v1/feed?after=0").json()["entries"] if e["kind"] == "hash.added"
    )
    server = peer_caller.client.get("/api/v1/server-key").json()
    checked = provenance.check_origin(entry["origin"])
    assert checked.server == server["key_id"] and entry["origin"]["path"] == [server["key_id"]]
    assert checked.member == "platform-a" and checked.key_id == signer_a.key.key_id
    assert entry["envelopes"] == [envelope]


@pytest.fixture
def peer_caller(program: Program) -> Caller:
    return make_caller(make_member("downstream", Member.Kind.PEER, program))


def test_a_signed_withdrawal_crosses_with_its_origin(
    peer: Peer, remote: PeerServer, origin: Origin, ncii: Program
) -> None:
    added = origin.added(1)
    remote.entries = [added]
    sync(peer)
    reader = make_caller(make_member("reader", Member.Kind.PLATFORM, ncii))
    remote.entries.append(origin.withdrawn(2, added))
    result = sync(peer)
    assert result.withdrawn == 1
    assert Listing.objects.get().status == Listing.Status.WITHDRAWN
    tomb = [e for e in reader.client.get("/api/v1/feed?after=0").json()["entries"] if e["kind"] == "hash.withdrawn"]
    assert tomb[0]["envelopes"] == remote.entries[1]["envelopes"]
    assert tomb[0]["origin"]["server"] == origin.server_id
    # Read again: still one withdrawal.
    services.peer_resync(peer=peer, actor=SETUP)
    assert sync(peer).withdrawn == 0


def test_a_changed_server_key_stops_the_peer_until_it_is_re_pinned(
    peer: Peer, remote: PeerServer, origin: Origin
) -> None:
    remote.entries = [origin.added(1)]
    remote.server_key = keys.public_key_to_b64(keys.generate_private_key())
    result = sync(peer)
    assert "server key changed" in result.error
    peer.refresh_from_db()
    assert peer.status == Peer.Status.KEY_CHANGED and peer.cursor == 0 and Submission.objects.count() == 0
    assert Event.objects.filter(kind="peer.key_changed").exists()
    assert "not called" in sync(peer).error
    with pytest.raises(Exception, match="re-pin"):
        services.peer_set_status(peer=peer, status=Peer.Status.ACTIVE, actor=SETUP)
    remote.server_key = origin.server_public_key
    services.peer_repin(peer=peer, actor=SETUP)
    assert sync(peer).imported == 1


def test_a_failing_peer_backs_off_and_a_paused_one_is_not_called(
    peer: Peer, remote: PeerServer, origin: Origin
) -> None:
    remote.entries = [origin.added(1)]
    remote.fail_with = 503
    result = sync(peer)
    assert "503" in result.error
    peer.refresh_from_db()
    assert peer.failures == 1 and "503" in peer.last_error and peer.next_sync_at > peer.created_at
    assert peer.pk not in services.peers_due()
    remote.fail_with = None
    services.peer_set_status(peer=peer, status=Peer.Status.PAUSED, actor=SETUP)
    calls = len(remote.requests)
    assert "paused" in sync(peer).error
    assert len(remote.requests) == calls
    services.peer_set_status(peer=peer, status=Peer.Status.ACTIVE, actor=SETUP)
    assert peer.pk in services.peers_due()
    assert sync(peer).imported == 1


def test_one_sync_at_a_time_per_peer(peer: Peer) -> None:
    assert services.peer_claim(peer.pk)
    assert not services.peer_claim(peer.pk)
    assert services.peer_sync_claimed(peer.pk) is None
    services.peer_release(peer.pk)
    assert services.peer_claim(peer.pk)


def test_outcomes_on_imported_hashes_go_back_aggregated_and_once(
    peer: Peer, remote: PeerServer, origin: Origin, ncii: Program
) -> None:
    entries = [origin.added(1), origin.added(2)]
    remote.entries = entries
    sync(peer)
    platforms = [make_caller(make_member(slug, Member.Kind.PLATFORM, ncii)) for slug in ("p1", "p2")]
    for caller in platforms:
        caller.client.get("/api/v1/feed?after=0")
    value = entries[0]["hash"]["value"]
    for n, caller in enumerate(platforms):
        answer = caller.client.post(
            "/api/v1/outcomes",
            {
                "outcomes": [
                    {
                        "signal_type": "pdq",
                        "value": value,
                        "program": "ncii",
                        "kind": "removed",
                        "occurred_at": f"2026-12-01T10:0{n}:00Z",
                        "count": 2,
                        "client_ref": f"r{n}",
                    }
                ]
            },
            format="json",
        )
        assert answer.status_code == 200, answer.json()
    result = sync(peer)
    assert result.outcomes_sent == 1
    [sent] = remote.outcomes
    assert {k: sent[k] for k in ("value", "program", "kind", "count", "occurred_at")} == {
        "value": value,
        "program": "ncii",
        "kind": "removed",
        "count": 4,
        "occurred_at": "2026-12-01T10:01:00.000000Z",
    }
    assert ("/api/v1/outcomes", "Bearer hxk_theirs_secret") in remote.requests
    assert "p1" not in json.dumps(sent) and "p2" not in json.dumps(sent)
    assert sync(peer).outcomes_sent == 0
    # Sent, but the cursor did not move (the worker died before it could): sent again, a repeat.
    Peer.objects.filter(pk=peer.pk).update(
        outcomes_cursor=0, outcomes_sending_through=Peer.objects.get(pk=peer.pk).outcomes_cursor
    )
    assert sync(peer).outcomes_sent == 1
    assert len(remote.outcomes) == 1


def test_a_peer_member_receives_only_the_programs_shared_with_it(
    signer_a: Signer, peer_caller: Caller, other_program: Program, platform_a: Caller
) -> None:
    from members import services as member_services

    member_services.enrollment_set(member=platform_a.member, program=other_program, state="opted_in", actor=SETUP)
    shared, unshared = signer_a.submission(), signer_a.submission(program="ncii")
    signer_a.submit(shared, unshared)
    got = [
        e["envelopes"]
        for e in peer_caller.client.get("/api/v1/feed?after=0").json()["entries"]
        if e["kind"] == "hash.added"
    ]
    assert got == [[shared]]


def test_a_peers_own_withdrawal_or_quarantine_takes_back_only_what_it_brought(
    peer: Peer, remote: PeerServer, origin: Origin, ncii: Program
) -> None:
    first, second = origin.added(1), origin.added(2)
    remote.entries = [first, second]
    sync(peer)
    # A platform here submitted the second hash too: it stays listed on that platform's word.
    local = make_caller(make_member("local", Member.Kind.PLATFORM, ncii))
    signer = make_signer(local)
    assert signer.submit(signer.submission(second["hash"]["value"], program="ncii")).json()["accepted"] == 1
    unsigned = {"envelopes": [], "origin": None, "reason": "withdrawn by an admin"}
    remote.entries += [
        {**first, **unsigned, "seq": 3, "kind": "hash.withdrawn"},
        {**second, **unsigned, "seq": 4, "kind": "hash.quarantined"},
    ]
    result = sync(peer)
    assert result.withdrawn == 2
    statuses = dict(Listing.objects.values_list("hash__value", "status"))
    assert statuses == {first["hash"]["value"]: "withdrawn", second["hash"]["value"]: "active"}
    assert not Submission.objects.filter(submitter=peer.member, status="active").exists()
    assert Submission.objects.filter(submitter=local.member, status="active").count() == 1
