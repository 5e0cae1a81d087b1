"""Key revocations that cross from peers: an origin server's signed statement that its
member's key is revoked, applied here to the key as that server bound it — at once when we
hold the key, or kept until a peer brings it (docs/federation.md, "Key revocations")."""

from __future__ import annotations

from typing import Any

from core import ledger
from core.ledger import Actor, Event
from core.problems import Problem
from exchange import provenance
from members.models import SigningKey

from .models import KeptRevocation, Peer, Refusal


class RevocationRefused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def revoked_at(origin: provenance.CheckedOrigin) -> Any:
    """When the origin's key was revoked here (None if it is not): the held key's revocation,
    or, for a key not held yet, one its origin server sent before it (`KeptRevocation`)."""
    held = list(SigningKey.objects.filter(key_id=origin.key_id).values_list("revoked_at", flat=True)[:1])
    if held:
        return held[0]
    kept = KeptRevocation.objects.filter(key_id=origin.key_id, server=origin.server, member=origin.member)
    return kept.values_list("revoked_at", flat=True).first()


def _imported_origin(key_id: str) -> tuple[str, str] | None:
    """(origin server, origin member) of a key a peer brought us, as recorded when it was imported."""
    row = (
        Event.objects.filter(kind="peer.key_imported", subject_type="peer", data__key_id=key_id)
        .order_by("seq")
        .values_list("data", flat=True)
        .first()
    )
    return (str(row["origin_server"]), str(row["origin_member"])) if row else None


def store_revocation(*, peer: Peer, entry: dict[str, Any], here: str) -> bool:
    """An origin server's signed revocation of its member's key, relayed by the peer.

    Accepted only for a key we imported with a binding of that same server for that same
    member; then the key is revoked here from the stated time (`key.revoked`, carrying the
    origin, so our feed relays it on). Hashes it signed before keep their state; entries it
    signs from then on are refused as `key_revoked`. A revocation of a key not held here is
    kept (`KeptRevocation`, `peer.revocation_kept`) and applied when a peer brings the key with
    a binding of the same server for the same member; one that does not verify is refused as
    `binding_not_attested`. True if a key was revoked here; False if nothing was to do (kept,
    already revoked, no key named); RevocationRefused with the reason otherwise.
    """
    key_id = str((entry.get("key") or {}).get("key_id") or "")
    if not key_id:
        return False
    held = SigningKey.objects.filter(key_id=key_id).first()
    try:
        checked = provenance.check_revocation(entry.get("origin"), key_id)
    except Problem as exc:
        raise RevocationRefused(Refusal.Reason.BINDING_NOT_ATTESTED, exc.detail) from None
    if here in checked.path:
        raise RevocationRefused(Refusal.Reason.LOOP, "its path contains us")
    if checked.path[-1] != peer.server_key_id:
        raise RevocationRefused(Refusal.Reason.PATH_MISMATCH, "its path does not end at the peer that sent it")
    if held is None:
        _keep(peer=peer, entry=entry, checked=checked)
        return False
    if _imported_origin(key_id) != (checked.server, checked.member):
        raise RevocationRefused(
            Refusal.Reason.BINDING_NOT_ATTESTED,
            "the key was not imported here with a binding of the server and member that revoke it",
        )
    if held.revoked_at is not None:
        return False  # already revoked (the same revocation by another path)
    _revoke(
        held,
        revoked_at=checked.revoked_at,
        member=checked.member,
        origin=_statement(entry),
        reason=f"revoked by its origin server {checked.server[:16]} (via peer {peer.slug})",
    )
    return True


def _statement(entry: dict[str, Any]) -> dict[str, Any]:
    """The parts of a `key.revoked` entry's origin that travel on with it."""
    return {name: entry["origin"][name] for name in ("server", "server_public_key", "member", "path", "revocation")}


def _revoke(key: SigningKey, *, revoked_at: Any, member: str, origin: dict[str, Any], reason: str) -> None:
    """Revoke a key here from its origin server's stated time, and record `key.revoked` with
    the origin's statement, which our feed and snapshots relay on."""
    key.revoked_at = revoked_at
    key.revocation_reason = reason[:500]
    key.save(update_fields=["revoked_at", "revocation_reason"])
    ledger.record(
        "key.revoked",
        actor=Actor.system("federation"),
        subject_type="signing_key",
        subject_id=key.key_id,
        data={
            "member": member,
            "key_id": key.key_id,
            "revoked_at": revoked_at.isoformat(),
            "reason": key.revocation_reason,
            "origin": origin,
        },
    )


def _keep(*, peer: Peer, entry: dict[str, Any], checked: provenance.CheckedRevocation) -> None:
    """Keep a verified revocation of a key not held here, for when a peer brings the key.

    Which server's binding the key will come with is not known yet, so it is kept under the
    server that signed it and applies only to the key as that server binds it to that
    member: a revocation signed by some other server cannot revoke anybody else's key.
    """
    _, created = KeptRevocation.objects.get_or_create(
        key_id=checked.key_id,
        server=checked.server,
        member=checked.member,
        defaults={"revoked_at": checked.revoked_at, "origin": _statement(entry), "peer": peer},
    )
    if created:
        ledger.record(
            "peer.revocation_kept",
            actor=Actor.system("federation"),
            subject_type="peer",
            subject_id=peer.slug,
            data={
                "peer": peer.slug,
                "key_id": checked.key_id,
                "origin_server": checked.server,
                "origin_member": checked.member,
                "revoked_at": checked.revoked_at.isoformat(),
            },
        )


def apply_kept(*, peer: Peer, key: SigningKey, origin: provenance.CheckedOrigin) -> None:
    """A key just imported whose origin server had revoked it before it got here: revoked now,
    from the stated time, and `key.revoked` recorded with the statement (relayed on)."""
    kept = KeptRevocation.objects.filter(key_id=key.key_id, server=origin.server, member=origin.member).first()
    if kept is None:
        return
    _revoke(
        key,
        revoked_at=kept.revoked_at,
        member=kept.member,
        origin=kept.origin,
        reason=f"revoked by its origin server {kept.server[:16]} (kept from peer {kept.peer.slug})",
    )
    kept.delete()
