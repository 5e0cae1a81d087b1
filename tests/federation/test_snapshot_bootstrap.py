"""A new peer link starts from the peer's signed snapshot, then continues by its feed."""

from __future__ import annotations

import gzip
import json

from federation import services
from federation.models import Peer, Refusal
from hashes.models import Listing, Submission
from members.models import Program
from tests.federation.remote import Origin, PeerServer


def listed(program: Program) -> set[str]:
    return set(
        Listing.objects.filter(program=program, status=Listing.Status.ACTIVE).values_list("hash__value", flat=True)
    )


def test_a_new_peer_imports_the_snapshot_then_reads_the_feed_after_it(
    peer: Peer, remote: PeerServer, ncii: Program
) -> None:
    origin = remote.origin
    before = [origin.added(seq) for seq in range(1, 8)]
    # What its feed holds: everything from the start (the snapshot leaves out what it withdrew).
    remote.entries = [*before, origin.withdrawn(8, before[0])]
    remote.publish_snapshot("ncii", 8, before[1:])
    after = [origin.added(seq) for seq in (9, 10)]
    remote.entries += [*after, origin.withdrawn(11, before[1])]  # a withdrawal after the snapshot

    result = services.peer_sync(peer=Peer.objects.get(pk=peer.pk))
    assert result.error == ""
    assert listed(ncii) == {e["hash"]["value"] for e in [*before[2:], *after]}
    assert Peer.objects.get(pk=peer.pk).cursor == 11
    # The feed was read from the snapshot's seq, not from the start.
    assert remote.feed_afters[0] == 8
    assert result.imported == 6 + 2 and result.withdrawn == 1
    # Envelopes kept byte for byte, as from the feed.
    stored = Submission.objects.get(hash__value=before[3]["hash"]["value"])
    assert stored.envelope == before[3]["envelopes"][0]
    # Continues by the feed: a new hash and a withdrawal of a snapshot hash.
    remote.entries += [origin.added(12), origin.withdrawn(13, before[2])]
    services.peer_sync(peer=Peer.objects.get(pk=peer.pk))
    assert before[2]["hash"]["value"] not in listed(ncii)
    assert remote.entries[-2]["hash"]["value"] in listed(ncii)


def test_a_tampered_snapshot_imports_nothing(peer: Peer, remote: PeerServer, ncii: Program) -> None:
    origin = remote.origin
    entries = [origin.added(seq) for seq in range(1, 4)]
    remote.entries = entries
    body = gzip.compress(b"".join(json.dumps(e).encode() + b"\n" for e in entries))
    remote.publish_snapshot("ncii", 3, entries, data=body[:-8] + b"\x00" * 8)
    result = services.peer_sync(peer=Peer.objects.get(pk=peer.pk))
    assert "SHA-256" in result.error
    assert listed(ncii) == set() and Peer.objects.get(pk=peer.pk).cursor == 0
    assert "snapshot" in Peer.objects.get(pk=peer.pk).last_error


def test_an_entry_that_fails_its_checks_is_refused_alone(peer: Peer, remote: PeerServer, ncii: Program) -> None:
    origin, forger = remote.origin, Origin()
    good = [origin.added(seq) for seq in (1, 2)]
    forged = origin.added(3)
    forged["origin"]["key_binding"] = forger.binding()  # not signed by the origin server
    remote.entries = [*good, forged]
    remote.publish_snapshot("ncii", 3, [*good, forged])
    result = services.peer_sync(peer=Peer.objects.get(pk=peer.pk))
    assert listed(ncii) == {e["hash"]["value"] for e in good}
    assert result.refusals == {Refusal.Reason.BINDING_NOT_ATTESTED: 1}
    assert Peer.objects.get(pk=peer.pk).cursor == 3


def test_without_a_snapshot_the_feed_is_read_from_the_start(peer: Peer, remote: PeerServer, ncii: Program) -> None:
    origin = remote.origin
    remote.entries = [origin.added(seq) for seq in range(1, 4)]
    result = services.peer_sync(peer=Peer.objects.get(pk=peer.pk))
    assert result.error == "" and len(listed(ncii)) == 3 and remote.feed_afters[0] == 0
