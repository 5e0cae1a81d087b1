"""Anonymous cases opened by the people in the images, from their own browser.

A case holds no name, no e-mail, no address: a random code, the public half of the
case's own key (it proves the person to the status page and signs nothing that members
see), and its hashes, each with the public half of its own key (registered as a signing
key of the deployment's intake member, so its envelopes flow like any member's). All the
keys are derived in the person's browser from a secret that is shown to them once and
never reaches the server. Which keys belong to which case is known here only: no member
can tell that two hashes came from one case (docs/intake.md, "Unlinkability").
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from hashes.models import Hash, Submission
from members.models import Program, SigningKey


class Case(models.Model):
    """One person's case: a random code, the case key's public half, its program."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        WITHDRAWN = "withdrawn", "Withdrawn by the person"

    code = models.CharField(
        max_length=16, unique=True, help_text="Random case code (Crockford base32), the only handle the person has."
    )
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    public_key = models.BinaryField(
        max_length=32, help_text="Case key (raw Ed25519) for status and withdrawal requests; never sent to members."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"case {self.pk} ({self.program.slug}, {self.status})"


class CaseHash(models.Model):
    """A hash a case asked to have distributed, and whether the person still wants it."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        WITHDRAWN = "withdrawn", "Withdrawn by the person"

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="hashes")
    hash = models.ForeignKey(Hash, on_delete=models.PROTECT, related_name="+")
    submission = models.ForeignKey(
        Submission,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="This case's own envelope; empty when another case had submitted the hash first.",
    )
    signing_key = models.ForeignKey(
        SigningKey,
        on_delete=models.PROTECT,
        null=True,
        related_name="+",
        help_text="Its own key, derived from the case secret; the key-to-case link is kept here only.",
    )
    key_index = models.PositiveIntegerField(
        null=True, blank=True, help_text="Which of the case hash keys (re-derived by the browser to withdraw)."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    added_at = models.DateTimeField(default=timezone.now)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["case", "hash"], name="intake_casehash_unique")]
        indexes = [models.Index(fields=["hash", "status"])]

    def __str__(self) -> str:
        return f"hash {self.hash_id} of case {self.case_id}"


class Refusal(models.Model):
    """How many requests of one kind the intake refused on one day: counts only, by reason.

    For the dashboard and the auditors' reports (a flood of junk, a broken page, a
    confusing step show here). Nothing about who was refused is kept.
    """

    day = models.DateField()
    program = models.CharField(
        max_length=64, blank=True, help_text="The program the request was for; empty before it was routed to one."
    )
    reason = models.CharField(max_length=64, help_text="The refusal's problem code, e.g. low_quality, work_missing.")
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "program", "reason"], name="intake_refusal_day_reason")]

    def __str__(self) -> str:
        return f"{self.count} × {self.reason} ({self.program or 'no program'}) on {self.day}"
