"""Who takes part and what they may do.

Every write to these models goes through members/services.py, which records an event.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from hashexchange_client.signal_types import DEFAULT_THRESHOLDS, SIGNAL_TYPE_NAMES


class Scope(models.TextChoices):
    """What an API credential may do. Auditors only ever get `reports`."""

    READ = "read", "Read programs, hashes and the feed"
    KEYS = "keys", "Register and revoke signing keys"
    ENROLLMENTS = "enrollments", "Opt in and out of programs"
    SUBMIT = "submit", "Submit and withdraw hashes"
    WEBHOOKS = "webhooks", "Manage webhook endpoints"
    MATCH = "match", "Ask whether a hash matches"
    OUTCOMES = "outcomes", "Report outcomes"
    REPORTS = "reports", "Read auditors' reports and the event log"


WRITE_SCOPES = frozenset({Scope.KEYS, Scope.ENROLLMENTS, Scope.SUBMIT, Scope.WEBHOOKS, Scope.OUTCOMES})


class Member(models.Model):
    """A participant of the clearinghouse: a platform, an intake service, a peer or an auditor.

    Only active members can call the API; suspending one stops every credential at once.
    """

    class Kind(models.TextChoices):
        PLATFORM = "platform", "Platform"
        INTAKE = "intake", "Intake service"
        PEER = "peer", "Peer clearinghouse"
        AUDITOR = "auditor", "Auditor"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    # Only these receive anything, by any path (API reads, feed, webhooks, match,
    # facades, peers); a suspended or pending member's webhooks wait, and catch up from
    # their cursor if it is activated again.
    RECEIVING_STATUSES = (Status.ACTIVE,)
    # Owe an acknowledgement (deleted_after_withdrawal) for a withdrawn hash they were sent:
    # platforms hold content; peers relay their members' acknowledgements. Intake services
    # and auditors hold none.
    ACKNOWLEDGING_KINDS = (Kind.PLATFORM, Kind.PEER)

    slug = models.SlugField(max_length=64, unique=True, help_text="Stable public name used in the API and events.")
    name = models.CharField(max_length=200, help_text="Display name of the organisation.")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    status_reason = models.CharField(max_length=500, blank=True, default="", help_text="Why the status last changed.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    # DRF treats the authenticated principal as a user; a member is one.
    is_authenticated = True
    is_anonymous = False

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        """Active members call the API and receive hashes; see RECEIVING_STATUSES."""
        return self.status in self.RECEIVING_STATUSES


DEFAULT_SCOPES: dict[str, list[str]] = {
    Member.Kind.PLATFORM: [
        Scope.READ,
        Scope.KEYS,
        Scope.ENROLLMENTS,
        Scope.SUBMIT,
        Scope.WEBHOOKS,
        Scope.MATCH,
        Scope.OUTCOMES,
    ],
    Member.Kind.INTAKE: [Scope.READ, Scope.KEYS, Scope.ENROLLMENTS, Scope.SUBMIT],
    # Peers report their members' outcomes and acknowledgements back to the origin.
    Member.Kind.PEER: [Scope.READ, Scope.KEYS, Scope.ENROLLMENTS, Scope.SUBMIT, Scope.WEBHOOKS, Scope.OUTCOMES],
    Member.Kind.AUDITOR: [Scope.REPORTS],
}


def default_signal_types() -> list[str]:
    return list(SIGNAL_TYPE_NAMES)


def default_thresholds() -> dict[str, int]:
    return dict(DEFAULT_THRESHOLDS)


def default_submitter_kinds() -> list[str]:
    return [Member.Kind.PLATFORM, Member.Kind.INTAKE, Member.Kind.PEER]


class Program(models.Model):
    """A hash list with its own rules, e.g. `take-it-down` (minors) or `ncii` (adults).

    Members opt in per program; thresholds and the removal deadline are per program
    because what counts as a match and what is owed differ between lists.
    """

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    signal_types = models.JSONField(default=default_signal_types, help_text="Signal types this program accepts.")
    thresholds = models.JSONField(
        default=default_thresholds, help_text="Match threshold (Hamming distance) per signal type."
    )
    submitter_kinds = models.JSONField(default=default_submitter_kinds, help_text="Member kinds that may submit.")
    min_pdq_quality = models.PositiveSmallIntegerField(
        default=50, help_text="PDQ hashes whose stated quality is below this are refused."
    )
    removal_deadline_hours = models.PositiveIntegerField(
        default=48, help_text="Hours a member has to act on a hash or a withdrawal (TAKE IT DOWN Act: 48)."
    )
    is_active = models.BooleanField(default=True, help_text="Inactive programs accept no new enrollments.")
    share_feedback = models.BooleanField(
        default=True, help_text="Show members the aggregate of outcomes others reported on a hash (counts only)."
    )
    dispute_threshold = models.PositiveSmallIntegerField(
        default=3, help_text="Distinct members reporting not_violating that quarantine a hash until an admin decides."
    )
    lapse_after_days = models.PositiveSmallIntegerField(
        default=7, help_text="Days without a feed read or acknowledged webhook after which an enrollment lapses."
    )
    # Flood and false-positive protection (docs/floods.md); each decision is an event.
    refuse_benign = models.BooleanField(
        default=True,
        help_text="Refuse submissions within this program's match threshold of a hash on its benign list.",
    )
    anomaly_multiple = models.PositiveSmallIntegerField(
        default=10,
        help_text="Quarantine a hash matched this many times the usual daily rate (0: off).",
    )
    anomaly_window_days = models.PositiveSmallIntegerField(
        default=14, help_text="Days before the day checked that the baseline match rate is taken from."
    )
    anomaly_min_matches = models.PositiveIntegerField(
        default=50, help_text="A hash is never quarantined for its match rate below this many matches in a day."
    )
    # Held for review (docs/floods.md): stored, distributed only when an admin releases them.
    hold_dispute_percent = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(100)],
        help_text="Hold a submitter's submissions when this % of its recent ones were disputed (0: off).",
    )
    hold_dispute_min = models.PositiveIntegerField(
        default=20,
        validators=[MinValueValidator(1)],
        help_text="Judge a submitter's dispute rate only from this many submissions in the window.",
    )
    hold_window_days = models.PositiveSmallIntegerField(
        default=90,
        validators=[MinValueValidator(1), MaxValueValidator(3650)],
        help_text="Days of a submitter's submissions its dispute rate is taken from.",
    )
    hold_burst_size = models.PositiveIntegerField(
        default=0,
        help_text="Hold as one batch a submitter's submissions beyond this many in the burst window (0: off).",
    )
    hold_burst_minutes = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1), MaxValueValidator(10080)],
        help_text="Minutes a burst is counted over (at most a week).",
    )
    unsigned_submitters = models.ManyToManyField(
        "Member",
        blank=True,
        related_name="+",
        help_text="Members whose compatibility clients may submit unsigned hashes here (StopNCII SubmitHashes). "
        "Unsigned submissions are recorded as such; leave empty to accept only signed ones.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        super().clean()
        if self.hold_burst_size is not None and 0 < self.hold_burst_size < 2:
            raise ValidationError(
                {"hold_burst_size": "a burst is more than one submission: set 2 or more, or 0 to turn it off"}
            )

    def threshold(self, signal_type: str) -> int:
        """The match threshold for a signal type: the program's own, else the type's default."""
        return int((self.thresholds or {}).get(signal_type, DEFAULT_THRESHOLDS[signal_type]))


class Enrollment(models.Model):
    """A member's opt-in to a program. Its history is the `enrollment.changed` events."""

    class State(models.TextChoices):
        OPTED_IN = "opted_in", "Opted in"
        OPTED_OUT = "opted_out", "Opted out"
        PAUSED = "paused", "Paused"
        LAPSED = "lapsed", "Lapsed (set by the system)"

    # Which enrollment states get what: the one place these rules are written (the
    # selectors in members/selectors.py apply them).
    # May read a program's hashes (feed, lookups, facades, obligations): a paused or
    # lapsed member still holds what it was sent, and may catch up.
    RECEIVING = (State.OPTED_IN, State.PAUSED, State.LAPSED)
    # Is sent new hashes by webhook: a paused member asked not to be.
    PUSHED = (State.OPTED_IN, State.LAPSED)
    # May submit hashes to the program and match against it.
    SUBMITTING = (State.OPTED_IN,)
    # Watched by the participation check, which lapses and restores these; it never
    # overrides a member's own opt-out or pause.
    PARTICIPATING = (State.OPTED_IN, State.LAPSED)

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="enrollments")
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="enrollments")
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPTED_IN)
    reason = models.CharField(max_length=500, blank=True, default="", help_text="Why the state last changed.")
    sent_through = models.BigIntegerField(
        default=0,
        db_default=0,
        help_text="The last sequence number up to which this program's hashes were sent to the member "
        "(a feed page or an acknowledged webhook). Whoever was sent a hash is told of its withdrawal, "
        "and owes the acknowledgement, whatever its enrollment now.",
    )
    changed_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["member__slug", "program__slug"]
        constraints = [models.UniqueConstraint(fields=["member", "program"], name="enrollment_unique_member_program")]

    def __str__(self) -> str:
        return f"{self.member.slug} in {self.program.slug}: {self.state}"


class ApiCredential(models.Model):
    """An API key: an identifiable prefix plus a secret kept only as a keyed digest.

    The full key (`hxk_<prefix>_<secret>`) is shown once, when issued.
    """

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="credentials")
    name = models.CharField(max_length=100, blank=True, default="", help_text="What the key is for.")
    prefix = models.CharField(max_length=16, unique=True, help_text="Public part of the key, safe to log.")
    digest = models.CharField(max_length=64, help_text="HMAC-SHA256 of the key with API_KEY_PEPPER.")
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"hxk_{self.prefix}… ({self.member.slug})"

    def is_usable(self, at: dt.datetime | None = None) -> bool:
        at = at or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > at)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class SigningKey(models.Model):
    """A member's Ed25519 public key. Signatures are checked against the key valid when made."""

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="signing_keys")
    key_id = models.CharField(max_length=64, unique=True, help_text="Hex SHA-256 of the raw public key.")
    algorithm = models.CharField(max_length=16, default="ed25519")
    public_key = models.BinaryField(max_length=32)
    label = models.CharField(max_length=100, blank=True, default="")
    valid_from = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-valid_from"]

    def __str__(self) -> str:
        return f"{self.key_id[:16]}… ({self.member.slug})"

    def is_valid_at(self, at: dt.datetime) -> bool:
        return self.valid_from <= at and (self.revoked_at is None or at < self.revoked_at)

    @property
    def public_key_b64(self) -> str:
        import base64

        return base64.b64encode(bytes(self.public_key)).decode()

    def as_event_data(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "algorithm": self.algorithm, "public_key": self.public_key_b64}
