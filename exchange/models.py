"""Models of the exchange app: the ledger's Event (in ledger.py), feed cursors, webhooks.

Webhook delivery keeps its state in the database, not in Celery: each endpoint has a
cursor into the event log (the last sequence number it acknowledged), and each POST is
a Delivery row covering a fixed range of events, retried on a schedule kept in the
row. Redis only carries wake-up calls; losing them delays delivery until the periodic
sweep, and loses nothing.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from members.models import Member

from .ledger import Event

__all__ = ["Delivery", "DeliveryAttempt", "Event", "FeedCursor", "WebhookEndpoint"]


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
