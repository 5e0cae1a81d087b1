"""Hashes, where they are listed, and the signed submissions and withdrawals behind them.

A Hash is one signal type + value, shared by every program it is listed in. A Listing
says the hash is distributed in a program: it is active while at least one active
submission (or an operator's import) supports it there. Submissions and withdrawals
keep the signed envelope exactly as the member sent it, so members and peers can
verify who said what without trusting the clearinghouse.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from members.models import Member, Program, SigningKey


class Hash(models.Model):
    """A signal type and normalised value, unique together."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        WITHDRAWN = "withdrawn", "Withdrawn (no active support left)"
        QUARANTINED = "quarantined", "Quarantined (disputed; excluded until an admin decides)"
        RETIRED = "retired", "Retired by an admin"
        HELD = "held", "Held for review (stored; its only submissions wait for an admin)"

    signal_type = models.CharField(max_length=16)
    value = models.CharField(max_length=64, help_text="Normalised lowercase hex.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    status_reason = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    status_changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["signal_type", "value"], name="hash_unique_type_value")]
        # Nearly every hash is active: only the others are indexed by status (what an admin
        # filters for); a bootstrap writing a million active ones pays no index for them.
        indexes = [models.Index(fields=["status"], condition=~Q(status="active"), name="hash_status_not_active_idx")]
        verbose_name_plural = "hashes"

    def event_data(self) -> dict[str, Any]:
        """What every event about this hash names it by (the value as stored: a long one by its digest)."""
        return {"hash_id": self.pk, "signal_type": self.signal_type, "value": self.value}

    def __str__(self) -> str:
        return f"{self.signal_type}:{self.value[:16]}…"


class ImportBatch(models.Model):
    """An operator's bulk import of an existing hash list (e.g. from another exchange).

    Imported hashes are not signed by a member; their listings point here, so every
    imported record says where it came from.
    """

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="imports")
    source = models.CharField(max_length=100, help_text="Where the list came from, e.g. the other exchange's name.")
    file_name = models.CharField(max_length=500, blank=True, default="")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    lines_read = models.PositiveBigIntegerField(default=0)
    lines_invalid = models.PositiveBigIntegerField(default=0)
    hashes_listed = models.PositiveBigIntegerField(default=0, help_text="Hashes newly listed in the program.")

    class Meta:
        verbose_name_plural = "import batches"

    def __str__(self) -> str:
        return f"import {self.pk} from {self.source} into {self.program.slug}"


class Listing(models.Model):
    """A hash distributed in a program. Its changes are the hash.added / hash.withdrawn events.

    It is active while an active submission or an import supports it.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        WITHDRAWN = "withdrawn", "Withdrawn"
        HELD = "held", "Held for review (never distributed yet)"

    # (hash, program) is unique, which indexes the hash; only imported listings index their batch.
    # (checked by Django, not the database, as a submission's: see Submission)
    hash = models.ForeignKey(
        Hash, on_delete=models.PROTECT, related_name="listings", db_index=False, db_constraint=False
    )
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="listings", db_constraint=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    import_batch = models.ForeignKey(
        ImportBatch,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        db_index=False,
        related_name="listings",
        help_text="Set when an operator's import supports the listing.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["hash", "program"], name="listing_unique_hash_program")]
        indexes = [
            models.Index(
                fields=["import_batch"], condition=Q(import_batch__isnull=False), name="listing_import_batch_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.hash} in {self.program.slug}"


class Submission(models.Model):
    """One submission that puts a hash in a program: a signed envelope, exactly as received.

    Unsigned submissions exist only for compatibility facades whose clients cannot sign
    (the StopNCII API shape), and only where the program allows them from that member;
    they are marked `signed=False` and carry no envelope, key or nonce.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        WITHDRAWN = "withdrawn", "Withdrawn by its submitter"
        HELD = "held", "Held for review (stored, not distributed)"
        RETIRED = "retired", "Retired by an admin while held (never distributed)"

    # Every index is paid on each of the million rows a new peer's bootstrap writes: a column
    # that leads another index or constraint gets no index of its own (docs/decisions.md).
    # The hash, program, submitter and key are checked by Django (PROTECT, and every write
    # path reads or creates them first in the same transaction), not by database
    # constraints: on PostgreSQL each constraint is a query per row at commit, and none of
    # these rows is ever deleted (docs/decisions.md, "References that Django checks").
    hash = models.ForeignKey(
        Hash, on_delete=models.PROTECT, related_name="submissions", db_index=False, db_constraint=False
    )
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="submissions", db_constraint=False)
    submitter = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="submissions", db_constraint=False)
    signing_key = models.ForeignKey(
        SigningKey, on_delete=models.PROTECT, null=True, blank=True, db_index=False, db_constraint=False
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # Database defaults too, so that set-based inserts that do not name these columns work.
    signed = models.BooleanField(
        default=True, db_default=True, help_text="False for a compatibility facade's unsigned submission."
    )
    envelope = models.JSONField(null=True, blank=True, help_text="The DSSE envelope as received (payload verbatim).")
    payload_sha256 = models.CharField(max_length=64, null=True, blank=True)  # unique: Meta
    nonce = models.CharField(max_length=128, null=True, blank=True)
    signed_at = models.DateTimeField(null=True, blank=True, help_text="created_at from the signed payload.")
    source = models.CharField(
        max_length=64, blank=True, default="", db_default="", help_text="For unsigned ones: which facade."
    )
    labels = models.JSONField(default=list, blank=True)
    case_ref = models.CharField(max_length=64, blank=True, default="", help_text="Intake's case id, if any.")
    quality = models.PositiveSmallIntegerField(null=True, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawal = models.ForeignKey(
        "Withdrawal", on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    held_batch = models.ForeignKey(
        "HeldBatch",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        db_index=False,
        related_name="submissions",
        help_text="Set when the submission was held for review; kept after the decision.",
    )
    relayed_in = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="The seq of the `hashes.relayed` event that listed this peer's entry (docs/federation.md).",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["submitter", "program", "hash"],
                condition=Q(status__in=["active", "held"]),
                name="submission_one_active_per_submitter",
            ),
            models.UniqueConstraint(fields=["signing_key", "nonce"], name="submission_unique_nonce"),
            # A constraint rather than unique=True: on PostgreSQL the field would also get a
            # second index for LIKE queries, which nothing runs.
            models.UniqueConstraint(fields=["payload_sha256"], name="submission_unique_payload"),
        ]
        indexes = [
            models.Index(fields=["hash", "program", "status"]),
            # Most rows have neither: only the rows that do are indexed.
            models.Index(
                fields=["withdrawal"], condition=Q(withdrawal__isnull=False), name="submission_withdrawal_idx"
            ),
            models.Index(
                fields=["held_batch"], condition=Q(held_batch__isnull=False), name="submission_held_batch_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hash} by {self.submitter.slug}"


class Withdrawal(models.Model):
    """A submitter's signed request to stop distributing its submission of a hash."""

    hash = models.ForeignKey(Hash, on_delete=models.PROTECT, related_name="withdrawals")
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="withdrawals")
    submitter = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="withdrawals")
    signing_key = models.ForeignKey(SigningKey, on_delete=models.PROTECT)
    envelope = models.JSONField()
    payload_sha256 = models.CharField(max_length=64, unique=True)
    nonce = models.CharField(max_length=128)
    signed_at = models.DateTimeField()
    case_ref = models.CharField(max_length=64, blank=True, default="")
    reason = models.CharField(max_length=500, blank=True, default="")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["signing_key", "nonce"], name="withdrawal_unique_nonce")]

    def __str__(self) -> str:
        return f"withdrawal of {self.hash} by {self.submitter.slug}"


class MatchCount(models.Model):
    """How many of a member's match queries found a hash, per day. No query value is kept.

    Flood detection reads these: a hash that suddenly matches far more uploads than usual
    is either viral or a false positive hitting innocent images, and either way someone
    should look. One row per hash, member and day, incremented with an upsert.
    """

    hash = models.ForeignKey(Hash, on_delete=models.PROTECT, related_name="match_counts")
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="+")
    day = models.DateField()
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hash", "member", "day"], name="matchcount_unique_hash_member_day")
        ]
        indexes = [models.Index(fields=["day", "hash"])]

    def __str__(self) -> str:
        return f"{self.hash} matched {self.count}x for {self.member.slug} on {self.day}"


class HashBody(models.Model):
    """The whole value of a hash too long to key by: a vPDQ frame list, TMK+PDQF features.

    The Hash row of such a value keys it by its SHA-256 (`SignalType.storage_key`), so the
    (signal type, value) index stays small on every database; this row keeps the value
    itself, which the feed, webhooks, match answers and the index read.
    """

    hash = models.OneToOneField(Hash, on_delete=models.PROTECT, primary_key=True, related_name="body")
    value = models.TextField(help_text="The normalised value (for vPDQ, python-threatexchange's serialisation).")
    frames = models.PositiveIntegerField(default=0, help_text="vPDQ: how many frames the value lists.")
    match_frames = models.PositiveIntegerField(
        default=0, help_text="vPDQ: how many of them take part in matching (distinct, quality 50 or more)."
    )

    class Meta:
        verbose_name_plural = "hash bodies"

    def __str__(self) -> str:
        return f"body of {self.hash}"


class BenignHash(models.Model):
    """A value a program's admins (or a decided dispute) say is not violating: a common image,
    a meme, a logo. Submissions within the program's threshold of it are refused, so the
    mistake is not distributed again (docs/floods.md)."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active (submissions near it are refused)"
        REMOVED = "removed", "Removed by an admin"

    class Source(models.TextChoices):
        ADMIN = "admin", "Added by an admin"
        DISPUTE = "dispute", "A dispute decided as not violating"

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="benign_hashes")
    signal_type = models.CharField(max_length=16)
    value = models.CharField(max_length=64, help_text="Normalised hex (a long value's SHA-256).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.ADMIN)
    reason = models.CharField(max_length=500)
    added_by = models.CharField(max_length=150)
    added_at = models.DateTimeField(default=timezone.now)
    removed_by = models.CharField(max_length=150, blank=True, default="")
    removed_at = models.DateTimeField(null=True, blank=True)
    removal_reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["program", "signal_type", "value"],
                condition=Q(status="active"),
                name="benign_one_active_per_program_value",
            )
        ]
        indexes = [models.Index(fields=["program", "signal_type", "status"])]

    def __str__(self) -> str:
        return f"benign {self.signal_type}:{self.value[:16]}… in {self.program.slug}"


class MatchAnomaly(models.Model):
    """A hash quarantined because members matched it far more than the program's usual rate.

    Either it went viral or it hits innocent images; an admin looks and restores or retires it.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open (hash quarantined)"
        RESTORED = "restored", "Restored by an admin"
        RETIRED = "retired", "Retired by an admin"

    hash = models.ForeignKey(Hash, on_delete=models.PROTECT, related_name="match_anomalies")
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="match_anomalies")
    day = models.DateField(help_text="The day whose matches were counted.")
    matches = models.PositiveBigIntegerField(help_text="Matches that day (match API and matched outcomes).")
    baseline = models.FloatField(help_text="The program's median daily matches per matched hash over the window.")
    limit = models.FloatField(help_text="The count that quarantines: the larger of multiple x baseline and the floor.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    opened_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True, default="")
    decision_reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        verbose_name_plural = "match anomalies"
        constraints = [
            models.UniqueConstraint(fields=["hash"], condition=Q(status="open"), name="anomaly_one_open_per_hash")
        ]

    def __str__(self) -> str:
        return f"match anomaly on hash {self.hash_id} ({self.status})"


class HeldBatch(models.Model):
    """Submissions held for review instead of distributed: stored, sent to nobody until an
    admin releases them (then they flow as new) or retires them (docs/floods.md).

    One open batch per submitter and program: a submitter whose hashes are too often
    disputed (`trust`), or a burst of submissions above the program's size (`burst`).
    The submitter is the member, or for an intake member the case's own signing key.
    """

    class Reason(models.TextChoices):
        TRUST = "trust", "Submitter's hashes disputed above the program's rate"
        BURST = "burst", "A burst of submissions above the program's size"

    class Status(models.TextChoices):
        OPEN = "open", "Open (held: distributed to nobody)"
        RELEASED = "released", "Released by an admin"
        RETIRED = "retired", "Retired by an admin"

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="held_batches")
    submitter = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="held_batches")
    signing_key = models.ForeignKey(
        SigningKey,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="For an intake member: the case's key, which the submitter is judged by.",
    )
    reason = models.CharField(max_length=16, choices=Reason.choices)
    evidence = models.JSONField(default=dict, help_text="The figures that held it (rate or burst size).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    opened_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True, default="")
    decision_reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        verbose_name_plural = "held batches"
        indexes = [models.Index(fields=["program", "submitter", "status"])]

    def __str__(self) -> str:
        return f"held batch {self.pk} of {self.submitter.slug} in {self.program.slug} ({self.status})"
