"""Admin of the exchange: webhooks, deliveries, outcomes, disputes (read-only or through
services), and the audit log: its checkpoints (read-only) and its witnesses."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from core.admin import NoAddDeleteAdmin, ReadOnlyAdmin, ReadOnlyInline, admin_actor, decide_each

from . import auditlog, outcomes, services
from . import delivery as webhook_delivery
from .models import (
    Checkpoint,
    Cosignature,
    Delivery,
    DeliveryAttempt,
    Dispute,
    FeedCursor,
    Obligation,
    Outcome,
    WebhookEndpoint,
    Witness,
)


class DeliveryAttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fields = ["attempted_at", "status_code", "error", "duration_ms", "response_excerpt"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(NoAddDeleteAdmin):
    list_display = [
        "id",
        "member",
        "url",
        "is_active",
        "cursor_seq",
        "last_success_at",
        "last_failure_at",
        "disabled_reason",
    ]
    list_filter = ["is_active", "member"]
    search_fields = ["url", "member__slug", "description"]
    list_select_related = ["member"]
    readonly_fields = [
        "member",
        "url",
        "description",
        "event_kinds",
        "is_active",
        "disabled_reason",
        "disabled_at",
        "cursor_seq",
        "claimed_until",
        "last_success_at",
        "last_failure_at",
        "created_at",
    ]
    exclude = ["secret_encrypted", "previous_secret_encrypted", "previous_secret_expires_at", "wake_requested"]
    actions = ["enable", "disable"]

    # No add or delete: members manage their endpoints through the API (which records events).

    @admin.action(description="Enable (resumes from the endpoint's cursor; nothing is skipped)")
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            services.webhook_update(endpoint=endpoint, is_active=True, actor=admin_actor(request))
        self.message_user(request, f"Enabled {queryset.count()} endpoint(s).")

    @admin.action(description="Disable")
    def disable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            services.webhook_disable(endpoint_id=endpoint.pk, reason="disabled by an admin", actor=admin_actor(request))
        self.message_user(request, f"Disabled {queryset.count()} endpoint(s).")


@admin.register(Delivery)
class DeliveryAdmin(NoAddDeleteAdmin):
    list_display = ["message_id", "endpoint", "status", "event_count", "attempts", "next_attempt_at", "delivered_at"]
    list_filter = ["status", "endpoint__member"]
    search_fields = ["message_id", "endpoint__url"]
    list_select_related = ["endpoint__member"]
    readonly_fields = [
        "endpoint",
        "message_id",
        "first_seq",
        "last_seq",
        "event_count",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "delivered_at",
        "body",
    ]
    inlines = [DeliveryAttemptInline]
    actions = ["redeliver"]
    show_full_result_count = False

    @admin.action(description="Redeliver now (same webhook-id, same body)")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = webhook_delivery.deliveries_redeliver(deliveries=queryset, actor=admin_actor(request))
        self.message_user(request, f"{count} delivery(ies) queued again; receivers deduplicate on webhook-id.")


@admin.register(FeedCursor)
class FeedCursorAdmin(NoAddDeleteAdmin):
    list_display = ["member", "last_seq", "last_after", "last_read_at", "reads"]
    search_fields = ["member__slug"]
    readonly_fields = ["member", "last_seq", "last_after", "last_read_at", "reads"]


def _decide_with_reason(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Dispute], decision: str
) -> HttpResponse | None:
    return decide_each(
        modeladmin,
        request,
        queryset,
        decision=decision,
        describe=lambda d: (
            f"{d.hash.signal_type} {d.hash.value} in {d.program.slug}: "
            f"{d.reporters} member(s) reported it not violating"
        ),
        decide=lambda d, **how: outcomes.dispute_decide(dispute=d, **how),
    )


@admin.register(Dispute)
class DisputeAdmin(NoAddDeleteAdmin):
    list_display = ["id", "hash", "program", "status", "reporters", "opened_at", "decided_at", "decided_by"]
    list_filter = ["status", "program"]
    search_fields = ["=hash__value"]
    list_select_related = ["hash", "program"]
    readonly_fields = [
        "hash",
        "program",
        "status",
        "reporters",
        "opened_at",
        "decided_at",
        "decided_by",
        "decision_reason",
    ]
    actions = ["restore", "retire"]

    @admin.action(description="Restore: the hash is distributed again")
    def restore(self, request: HttpRequest, queryset: QuerySet[Dispute]) -> HttpResponse | None:
        return _decide_with_reason(self, request, queryset, Dispute.Status.RESTORED)

    @admin.action(description="Retire: the hash is withdrawn for good")
    def retire(self, request: HttpRequest, queryset: QuerySet[Dispute]) -> HttpResponse | None:
        return _decide_with_reason(self, request, queryset, Dispute.Status.RETIRED)


@admin.register(Outcome)
class OutcomeAdmin(ReadOnlyAdmin):
    list_display = ["id", "member", "hash", "program", "kind", "count", "occurred_at", "received_at"]
    list_filter = ["kind", "program", "member"]
    search_fields = ["=hash__value", "member__slug", "client_ref"]
    list_select_related = ["member", "hash", "program"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False


class ObligationStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Open"), ("overdue", "Overdue"), ("fulfilled", "Fulfilled")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        return {
            "open": queryset.filter(fulfilled_at__isnull=True, due_at__gte=now),
            "overdue": queryset.filter(fulfilled_at__isnull=True, due_at__lt=now),
            "fulfilled": queryset.filter(fulfilled_at__isnull=False),
        }.get(self.value(), queryset)


@admin.register(Obligation)
class ObligationAdmin(ReadOnlyAdmin):
    list_display = ["id", "member", "hash", "program", "status", "created_at", "due_at", "fulfilled_at"]
    list_filter = [ObligationStatusFilter, "program", "member"]
    search_fields = ["=hash__value", "member__slug"]
    list_select_related = ["member", "hash", "program"]


# The audit log -----------------------------------------------------------------------------


class CosignatureInline(ReadOnlyInline):
    model = Cosignature
    fields = ["witness", "signed_at", "received_at", "line"]


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ["size", "origin", "created_at", "cosigned_by"]
    list_filter = ["origin"]
    readonly_fields = ["origin", "size", "created_at", "note"]
    exclude = ["root_hash"]
    inlines = [CosignatureInline]

    @admin.display(description="cosigned by")
    def cosigned_by(self, obj: Checkpoint) -> str:
        return ", ".join(c.witness.name for c in obj.cosignatures.select_related("witness")) or "-"


@admin.register(Witness)
class WitnessAdmin(admin.ModelAdmin):
    """Witnesses cosign our checkpoints. Adding or changing one is recorded in the log; a witness
    that disagrees with our log is an `auditlog.split_view` event (docs/auditlog.md)."""

    list_display = ["name", "url", "is_active", "last_size", "last_success_at", "last_failure_at", "last_error"]
    list_filter = ["is_active"]
    fields = ["name", "public_key", "url", "is_active", "last_size", "last_success_at", "last_failure_at", "last_error"]
    readonly_fields = ["last_size", "last_success_at", "last_failure_at", "last_error"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # its cosignatures refer to it; deactivate it instead

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "url":
            kwargs["assume_scheme"] = "https"  # a URL typed without one
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Witness, form: Any, change: bool) -> None:
        auditlog.witness_save(witness=obj, actor=admin_actor(request))
