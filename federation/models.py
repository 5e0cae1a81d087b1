"""Peers (other clearinghouses) and what their feeds brought that we refused.

A peer has two halves on our side: a Member of kind `peer` (how its server
authenticates when it calls us, and what it may receive: the one rule in
members/selectors.py) and a Peer record (how we call it: its URL, its pinned server key,
our API key there, the programs that flow, our cursor in its feed). Every write goes
through federation/services.py, which records an event.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from members.models import Member


class Peer(models.Model):
    """Another clearinghouse whose feed we pull (docs/federation.md)."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused by an admin (not called)"
        KEY_CHANGED = "key_changed", "Its server key changed since it was pinned (not called until re-pinned)"

    slug = models.SlugField(max_length=64, unique=True, help_text="Our name for the peer; also its member's slug.")
    member = models.OneToOneField(
        Member, on_delete=models.PROTECT, related_name="peer", help_text="How the peer's server authenticates with us."
    )
    base_url = models.URLField(max_length=500, help_text="The peer's base URL; its API is under /api/v1/.")
    server_key_id = models.CharField(max_length=64, help_text="Key id of the peer's server key, pinned at setup.")
    server_public_key = models.CharField(max_length=64, help_text="The peer's server public key (base64), pinned.")
    api_key_encrypted = models.TextField(help_text="Our API key at the peer, encrypted with SECRETS_ENCRYPTION_KEY.")
    programs = models.JSONField(
        default=list,
        help_text='Their programs mapped to ours: {"theirs", "ours", "hop_limit"} each.',
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    cursor = models.BigIntegerField(default=0, help_text="The last sequence number of the peer's feed we stored.")
    outcomes_cursor = models.BigIntegerField(
        default=0, help_text="The last event of ours whose outcomes were sent back to the peer."
    )
    outcomes_sending_through = models.BigIntegerField(
        default=0, help_text="The end of the batch of outcomes being sent (resent as is after a failure)."
    )
    behind = models.BooleanField(default=False, help_text="The last sync stopped before the end of the peer's feed.")
    last_error = models.CharField(max_length=1000, blank=True, default="")
    last_sync_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0, help_text="Failed syncs in a row (the backoff grows with them).")
    next_sync_at = models.DateTimeField(default=timezone.now, help_text="Not synced by the schedule before this.")
    claimed_until = models.DateTimeField(null=True, blank=True, help_text="A worker is syncing it until then.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def lag_seconds(self) -> float | None:
        """Seconds since the last complete sync (None before the first)."""
        if self.last_sync_at is None:
            return None
        return max(0.0, (timezone.now() - self.last_sync_at).total_seconds())

    def mapped(self, theirs: str) -> dict[str, object] | None:
        for item in self.programs:
            if item.get("theirs") == theirs:
                return item
        return None


class Refusal(models.Model):
    """An entry of a peer's feed we did not import, and why; also recorded as `peer.refused`."""

    class Reason(models.TextChoices):
        BAD_ENVELOPE = "bad_envelope", "Forged or altered envelope"
        BINDING_NOT_ATTESTED = "binding_not_attested", "Key binding not attested by the origin server"
        PROGRAM_NOT_AGREED = "program_not_agreed", "Program not agreed with this peer"
        LOOP = "loop", "Its path already contains this server"
        HOP_LIMIT = "hop_limit", "Past the program's hop limit"
        PATH_MISMATCH = "path_mismatch", "Its path does not end at the peer"
        UNSIGNED = "unsigned", "No signed envelope or origin"
        MISMATCH = "envelope_mismatch", "The envelope does not say what the entry says"
        REFUSED_HERE = "refused_here", "Refused by this server's own rules"
        KEY_REVOKED = "key_revoked", "Signed after its origin server revoked the key"

    peer = models.ForeignKey(Peer, on_delete=models.PROTECT, related_name="refusals")
    seq = models.BigIntegerField(help_text="The entry's sequence number in the peer's feed.")
    kind = models.CharField(max_length=32)
    reason = models.CharField(max_length=32, choices=Reason.choices)
    detail = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-pk"]
        constraints = [models.UniqueConstraint(fields=["peer", "seq", "kind"], name="refusal_unique_peer_seq")]

    def __str__(self) -> str:
        return f"{self.peer.slug}#{self.seq}: {self.reason}"


class KeptRevocation(models.Model):
    """An origin server's signed revocation of a key not held here when it arrived: kept, so
    that the key, when a peer brings it later with a binding of that same server for that
    same member, is revoked from the stated time (and what it signed after is refused)."""

    key_id = models.CharField(max_length=64, db_index=True)
    server = models.CharField(max_length=64, help_text="The origin server's key id, which signed the revocation.")
    member = models.CharField(max_length=128)
    revoked_at = models.DateTimeField()
    origin = models.JSONField(help_text="The entry's origin with the signed statement, relayed on when applied.")
    peer = models.ForeignKey(Peer, on_delete=models.PROTECT, related_name="kept_revocations")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-pk"]
        constraints = [
            models.UniqueConstraint(fields=["key_id", "server", "member"], name="kept_revocation_unique_origin")
        ]

    def __str__(self) -> str:
        return f"{self.key_id[:16]} revoked by {self.server[:16]}"
