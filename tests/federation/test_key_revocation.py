"""An origin member's key revoked at its server: the signed revocation crosses to peers,
which then refuse what the key signs from that time on, and keep what it signed before."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import pytest
from hashexchange_client import keys

from core.ledger import Event
from exchange import crypto, provenance, snapshots
from federation import services
from federation.models import Peer, Refusal
from hashes.models import Listing
from members import services as member_services
from members.models import Program, SigningKey
from tests.conftest import SETUP, Caller, make_caller, make_member
from tests.federation.remote import Origin, PeerServer
from tests.signing import Signer


@pytest.fixture
def reader(ncii: Program) -> Caller:
    return make_caller(make_member("our-platform", "platform", ncii))


def sync(peer: Peer) -> services.SyncResult:
    return services.peer_sync(peer=Peer.objects.get(pk=peer.pk))


def active(program: Program) -> set[str]:
    rows = Listing.objects.filter(program=program, status=Listing.Status.ACTIVE)
    return set(rows.values_list("hash__value", flat=True))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def test_a_revocation_at_the_origin_crosses_and_later_signatures_are_refused(
    peer: Peer, remote: PeerServer, ncii: Program, reader: Caller
) -> None:
    origin = remote.origin
    before = origin.added(1, created_at=now() - dt.timedelta(minutes=10))
    revoked_at = (now() - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    revocation = origin.revoked(2, revoked_at=revoked_at)
    after = origin.added(3, created_at=now())
    remote.entries = [before, revocation, after]

    result = sync(peer)
    assert result.error == "" and result.revoked == 1
    key = SigningKey.objects.get(key_id=keys.key_id(origin.member_key))
    assert key.revoked_at == dt.datetime.fromisoformat(revoked_at.replace("Z", "+00:00"))
    # What the key signed before stays; what it signed after is refused, by name.
    assert active(ncii) == {before["hash"]["value"]}
    refusal = Refusal.objects.get(peer__slug="other")
    assert (refusal.seq, refusal.reason) == (3, Refusal.Reason.KEY_REVOKED)
    assert result.refusals == {Refusal.Reason.KEY_REVOKED: 1}

    # Our members and our peers downstream hear it with the origin's statement unchanged.
    feed = reader.client.get("/api/v1/feed?after=0&limit=100").json()["entries"]
    [relayed] = [e for e in feed if e["kind"] == "key.revoked"]
    assert relayed["key"]["key_id"] == key.key_id
    assert relayed["origin"]["revocation"] == revocation["origin"]["revocation"]
    assert relayed["origin"]["path"] == [origin.server_id, crypto.server_key_id()]
    checked = provenance.check_revocation(relayed["origin"], key.key_id)
    assert (checked.server, checked.member) == (origin.server_id, origin.member)

    # So does a newcomer that starts from our snapshot of the program.
    built = snapshots.snapshot_build(program=ncii)
    lines = [json.loads(line) for line in gzip.decompress(built.data_path.read_bytes()).splitlines()]
    assert [e["kind"] for e in lines] == ["hash.added", "key.revoked"]
    assert lines[-1]["origin"]["revocation"] == revocation["origin"]["revocation"]

    # Read again (a resync), nothing is revoked or recorded twice.
    Peer.objects.filter(pk=peer.pk).update(cursor=0)
    again = sync(peer)
    assert again.revoked == 0 and Event.objects.filter(kind="key.revoked").count() == 1


def test_a_revocation_not_signed_by_the_origin_server_is_refused(peer: Peer, remote: PeerServer, ncii: Program) -> None:
    origin, forger = remote.origin, Origin()
    first = origin.added(1, created_at=now() - dt.timedelta(minutes=10))
    stamp = (now() - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    forged = origin.revoked(2, revoked_at=stamp, signer=forger.server_key)
    later = origin.added(3, created_at=now())
    remote.entries = [first, forged, later]
    result = sync(peer)
    assert result.refusals == {Refusal.Reason.BINDING_NOT_ATTESTED: 1}
    assert SigningKey.objects.get(key_id=keys.key_id(origin.member_key)).revoked_at is None
    assert active(ncii) == {first["hash"]["value"], later["hash"]["value"]}


def test_a_revocation_that_arrives_before_its_key_is_kept_and_applied_when_the_key_comes(
    peer: Peer, remote: PeerServer, ncii: Program, reader: Caller
) -> None:
    """The origin revoked a key none of whose hashes reached us yet (another program, a
    later page): the revocation is kept; when the key comes, what it signed before the
    stated time is listed, what it signed after is refused, and the key is revoked here."""
    origin = remote.origin
    revoked_at = (now() - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    revocation = origin.revoked(1, revoked_at=revoked_at)
    remote.entries = [revocation]
    first = sync(peer)
    assert first.error == "" and first.skipped == 1 and not first.refusals
    key_id = keys.key_id(origin.member_key)
    assert not SigningKey.objects.filter(key_id=key_id).exists()
    assert Event.objects.filter(kind="peer.revocation_kept", data__key_id=key_id).count() == 1
    assert not Event.objects.filter(kind="key.revoked").exists()

    before = origin.added(2, created_at=now() - dt.timedelta(minutes=10))
    after = origin.added(3, created_at=now())
    remote.entries = [before, after]
    result = sync(peer)
    assert result.error == "" and result.refusals == {Refusal.Reason.KEY_REVOKED: 1}
    assert active(ncii) == {before["hash"]["value"]}
    key = SigningKey.objects.get(key_id=key_id)
    assert key.revoked_at == dt.datetime.fromisoformat(revoked_at.replace("Z", "+00:00"))
    # Relayed on to our members and peers with the origin's statement, once.
    feed = reader.client.get("/api/v1/feed?after=0&limit=100").json()["entries"]
    [relayed] = [e for e in feed if e["kind"] == "key.revoked"]
    assert relayed["key"]["key_id"] == key_id
    assert relayed["origin"]["revocation"] == revocation["origin"]["revocation"]
    assert provenance.check_revocation(relayed["origin"], key_id).server == origin.server_id

    # Read again from zero: nothing revoked, kept or recorded twice.
    Peer.objects.filter(pk=peer.pk).update(cursor=0)
    remote.entries = [revocation, before, after]
    sync(peer)
    assert Event.objects.filter(kind="key.revoked").count() == 1
    assert Event.objects.filter(kind="peer.revocation_kept").count() == 1


def test_a_kept_revocation_signed_by_another_server_revokes_nothing(
    peer: Peer, remote: PeerServer, ncii: Program
) -> None:
    """Any server can sign a statement revoking any key under its own name; kept, it applies
    only to the key as that server binds it, so another origin's member keeps its key."""
    origin = remote.origin
    impostor = Origin(member=origin.member, member_key=origin.member_key)
    stamp = (now() - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    remote.entries = [impostor.revoked(1, revoked_at=stamp, path=[impostor.server_id, origin.server_id])]
    assert sync(peer).skipped == 1
    later = origin.added(2, created_at=now())
    remote.entries = [later]
    result = sync(peer)
    assert result.error == "" and not result.refusals
    assert active(ncii) == {later["hash"]["value"]}
    assert SigningKey.objects.get(key_id=keys.key_id(origin.member_key)).revoked_at is None


def test_our_own_members_revocations_are_attested_by_our_server_key(signer_a: Signer, platform_b: Caller) -> None:
    member_services.signing_key_revoke(key=signer_a.key, reason="lost", actor=SETUP)
    feed = platform_b.client.get("/api/v1/feed?after=0&limit=100").json()["entries"]
    [revoked] = [e for e in feed if e["kind"] == "key.revoked"]
    assert revoked["origin"]["server_public_key"] == crypto.server_public_key_b64()
    checked = provenance.check_revocation(revoked["origin"], signer_a.key.key_id)
    assert (checked.member, checked.path) == ("platform-a", (crypto.server_key_id(),))
    assert checked.revoked_at == SigningKey.objects.get(pk=signer_a.key.pk).revoked_at
