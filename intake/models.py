"""Anonymous cases opened by the people in the images, from their own browser.

A case holds no name, no e-mail, no address: a random code, the public half of a key
pair made in the person's browser (registered as a signing key of the deployment's
intake member, so its envelopes flow like any member's), and the hashes it submitted.
The secret that makes the key is shown to the person once and never reaches the server.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from hashes.models import Hash, Submission
from members.models import Program, SigningKey


class Case(models.Model):
    """One person's case: a random code, the case's public key, its program."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        WITHDRAWN = "withdrawn", "Withdrawn by the person"

    code = models.CharField(
        max_length=16, unique=True, help_text="Random case code (Crockford base32), the only handle the person has."
    )
    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    signing_key = models.OneToOneField(SigningKey, on_delete=models.PROTECT, related_name="intake_case")
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
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    added_at = models.DateTimeField(default=timezone.now)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["case", "hash"], name="intake_casehash_unique")]
        indexes = [models.Index(fields=["hash", "status"])]

    def __str__(self) -> str:
        return f"hash {self.hash_id} of case {self.case_id}"
