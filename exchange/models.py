"""Models of the exchange app: the ledger's Event (core/ledger.py) and the audit log's
TreeHash and LeafTile (core/tlog.py), feed cursors, webhooks.

Webhook delivery keeps its state in the database, not in Celery: each endpoint has a
cursor into the event log (the last sequence number it acknowledged), and each POST is
a Delivery row covering a fixed range of events, retried on a schedule kept in the
row. Redis only carries wake-up calls; losing them delays delivery until the periodic
sweep, and loses nothing.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from hashexchange_client import note
from hashexchange_client.encoding import Base64Error, b64decode, b64encode

from core.ledger import Event, EventLeaf
from core.tlog import LeafTile, TreeHash
from members.models import Member

__all__ = [
    "Checkpoint",
    "Cosignature",
    "Delivery",
    "DeliveryAttempt",
    "Dispute",
    "Event",
    "EventLeaf",
    "FeedCursor",
    "Obligation",
    "Outcome",
    "Projection",
    "LeafTile",
    "TreeHash",
    "WebhookEndpoint",
    "Witness",
]


class FeedCursor(models.Model):
    """Where a member last read its pull feed, and when (participation tracking uses it)."""

    member = models.OneToOneField(Member, on_delete=models.CASCADE, related_name="feed_cursor")
    last_after = models.BigIntegerField(default=0, help_text="The `after` of the member's last feed read.")
    last_seq = models.BigIntegerField(default=0, help_text="The last sequence number the member was sent.")
    last_read_at = models.DateTimeField(default=timezone.now)
    reads = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.member.slug} at {self.last_seq}"


class WebhookEndpoint(models.Model):
    """A member's URL that receives its feed as signed POSTs (Standard Webhooks)."""

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="webhooks")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True, default="")
    event_kinds = models.JSONField(default=list, blank=True, help_text="Kinds to send; empty means all feed kinds.")
    secret_encrypted = models.TextField(help_text="whsec_ secret, encrypted with SECRETS_ENCRYPTION_KEY.")
    previous_secret_encrypted = models.TextField(blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    cursor_seq = models.BigIntegerField(default=0, help_text="Last sequence number delivered and acknowledged.")
    claimed_until = models.DateTimeField(null=True, blank=True, help_text="A worker is delivering until then.")
    wake_requested = models.BooleanField(default=False)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["member__slug", "pk"]

    def __str__(self) -> str:
        return f"{self.member.slug}: {self.url}"


class Delivery(models.Model):
    """One signed POST to one endpoint covering events first_seq..last_seq, retried as is."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (due at next_attempt_at)"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (retries exhausted)"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    message_id = models.CharField(max_length=64, unique=True, help_text="webhook-id: the receiver's idempotency key.")
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    event_count = models.PositiveIntegerField()
    body = models.TextField(help_text="The exact JSON body sent on every attempt.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        indexes = [models.Index(fields=["endpoint", "status"])]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.message_id} ({self.status})"


class DeliveryAttempt(models.Model):
    """One try at a delivery: what the receiver answered, and how fast."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)
    response_excerpt = models.CharField(max_length=1000, blank=True, default="")

    class Meta:
        ordering = ["attempted_at", "pk"]

    def __str__(self) -> str:
        return f"{self.delivery.message_id}: {self.status_code or self.error}"


class Outcome(models.Model):
    """What a member did about a hash it was sent: matched, removed, judged not violating…

    Counts only: no content, no user identifiers. Idempotent on the member's client_ref.
    """

    class Kind(models.TextChoices):
        MATCHED = "matched", "Matched an upload"
        REMOVED = "removed", "Removed"
        BLOCKED_AT_UPLOAD = "blocked_at_upload", "Blocked at upload"
        RESTRICTED = "restricted", "Restricted"
        NOT_VIOLATING = "not_violating", "Not violating (disputes the hash)"
        UNABLE_TO_ACTION = "unable_to_action", "Unable to action"
        DELETED_AFTER_WITHDRAWAL = "deleted_after_withdrawal", "Deleted after the hash was withdrawn"

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="outcomes")
    hash = models.ForeignKey("hashes.Hash", on_delete=models.PROTECT, related_name="outcomes")
    program = models.ForeignKey("members.Program", on_delete=models.PROTECT, related_name="outcomes")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    occurred_at = models.DateTimeField(help_text="When the member acted, as it reports.")
    count = models.PositiveIntegerField(default=1, help_text="How many items (uploads, copies) it concerned.")
    tags = models.JSONField(default=list, blank=True)
    client_ref = models.CharField(max_length=100, help_text="The member's own id for the report: repeats are no-ops.")
    content_digest = models.CharField(max_length=64, help_text="Digest of the report, to tell a repeat from a clash.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member", "client_ref"], name="outcome_unique_client_ref")]
        indexes = [
            models.Index(fields=["program", "occurred_at"]),
            models.Index(fields=["hash", "program", "kind"]),
            # Every column the auditors' reports read, so that PostgreSQL answers them from
            # the index alone (an index-only scan) and finds one member's removals in
            # a narrow range: docs/benchmarks/reports.md.
            models.Index(
                fields=["program", "member", "kind", "occurred_at", "hash", "count"], name="outcome_report_covering"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.member.slug} {self.kind} hash {self.hash_id}"


class Obligation(models.Model):
    """What a member owes: after a withdrawal, a `deleted_after_withdrawal` outcome by a deadline."""

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="obligations")
    hash = models.ForeignKey("hashes.Hash", on_delete=models.PROTECT, related_name="obligations")
    program = models.ForeignKey("members.Program", on_delete=models.PROTECT, related_name="obligations")
    kind = models.CharField(max_length=32, default=Outcome.Kind.DELETED_AFTER_WITHDRAWAL)
    event_seq = models.BigIntegerField(help_text="The hash.withdrawn event that created it.")
    created_at = models.DateTimeField()
    due_at = models.DateTimeField()
    fulfilled_at = models.DateTimeField(null=True, blank=True)
    outcome = models.ForeignKey(Outcome, on_delete=models.PROTECT, null=True, blank=True, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["member", "event_seq"], name="obligation_unique_member_event"),
        ]
        indexes = [models.Index(fields=["member", "fulfilled_at"]), models.Index(fields=["program", "created_at"])]

    def __str__(self) -> str:
        return f"{self.member.slug} owes {self.kind} for hash {self.hash_id}"

    @property
    def status(self) -> str:
        if self.fulfilled_at is not None:
            return "fulfilled" if self.fulfilled_at <= self.due_at else "fulfilled_late"
        return "overdue" if timezone.now() > self.due_at else "open"


class Dispute(models.Model):
    """Enough members said a hash is not violating: it is quarantined until an admin decides."""

    class Status(models.TextChoices):
        OPEN = "open", "Open (hash quarantined)"
        RESTORED = "restored", "Restored by an admin"
        RETIRED = "retired", "Retired by an admin"

    hash = models.ForeignKey("hashes.Hash", on_delete=models.PROTECT, related_name="disputes")
    program = models.ForeignKey("members.Program", on_delete=models.PROTECT, related_name="disputes")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    reporters = models.PositiveIntegerField(help_text="Distinct members that reported not_violating.")
    opened_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True, default="")
    decision_reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hash"], condition=models.Q(status="open"), name="dispute_one_open_per_hash"
            )
        ]

    def __str__(self) -> str:
        return f"dispute on hash {self.hash_id} ({self.status})"


class Projection(models.Model):
    """How far a consumer of the event log (e.g. the obligations projector) has read."""

    name = models.CharField(max_length=64, unique=True)
    seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} at {self.seq}"


# The audit log (exchange/auditlog.py, docs/auditlog.md) ------------------------------------


class Checkpoint(models.Model):
    """A signed tree head of the audit log: a C2SP checkpoint (origin, size, root hash) as a
    signed note, signed with the server's Ed25519 key. Made every CHECKPOINT_SECONDS when the
    log grew; each one consistent with the one before, or it is not signed."""

    origin = models.CharField(max_length=200, help_text="The log's name, and the key name of its signature.")
    size = models.BigIntegerField(help_text="Number of events (leaves) the tree head covers.")
    root_hash = models.BinaryField(max_length=32)
    note = models.TextField(help_text="The checkpoint as a signed note, with the server's signature only.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["origin", "size"], name="checkpoint_unique_origin_size")]
        ordering = ["-size"]

    def __str__(self) -> str:
        return f"{self.origin} at {self.size}"


_VKEY = re.compile(r"[^+\s]+\+[0-9a-fA-F]{8}\+")


class Witness(models.Model):
    """A C2SP tlog-witness that cosigns our checkpoints after checking they are consistent
    with those it saw before: a second party that would notice if we showed two members
    two different logs."""

    name = models.CharField(
        max_length=200,
        unique=True,
        blank=True,
        help_text="The witness's key name, e.g. witness.example/w1 (taken from its verifier key if you give one).",
    )
    public_key = models.CharField(
        max_length=300,
        help_text="The witness's Ed25519 cosigning key: base64 of 32 bytes, or its verifier key "
        "(<name>+<key id>+<base64>); stored as base64.",
    )
    url = models.URLField(max_length=500, help_text="Its submission prefix: we POST to <url>/add-checkpoint.")
    is_active = models.BooleanField(default=True)
    last_size = models.BigIntegerField(default=0, help_text="The size of the last checkpoint it cosigned for us.")
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "witnesses"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Take the key as base64 of 32 bytes, or as the witness's verifier key
        (`<name>+<key id>+<base64>`, as witnesses publish it), which also gives the name."""
        text = (self.public_key or "").strip()
        try:
            if _VKEY.match(text):
                verifier = note.parse_vkey(text)
                if verifier.signature_type != note.COSIGNATURE_V1:
                    raise ValidationError({"public_key": "a witness's verifier key has type 0x04 (cosignature/v1)"})
                if self.name and self.name != verifier.name:
                    raise ValidationError({"public_key": f"this verifier key is named {verifier.name!r}"})
                self.name, text = verifier.name, b64encode(verifier.public_key)
            elif len(b64decode(text, what="the public key")) != 32:
                raise ValidationError({"public_key": "an Ed25519 public key is 32 bytes"})
        except (note.NoteError, Base64Error) as exc:
            raise ValidationError({"public_key": str(exc)}) from None
        self.public_key = text
        if not note.valid_name(self.name):
            raise ValidationError({"name": "a key name is non-empty, with no spaces or plus signs"})


class Cosignature(models.Model):
    """A witness's cosignature on one of our checkpoints: a signature line to append to it."""

    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="cosignatures")
    witness = models.ForeignKey(Witness, on_delete=models.PROTECT, related_name="cosignatures")
    line = models.TextField(help_text="The note signature line, as the witness sent it.")
    signed_at = models.DateTimeField(help_text="The time the witness states it cosigned.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["checkpoint", "witness"], name="cosignature_unique_checkpoint_witness")
        ]

    def __str__(self) -> str:
        return f"{self.witness.name} on {self.checkpoint}"
