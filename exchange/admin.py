"""Read-only admin over the ledger: events can be browsed, never edited or deleted."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from members.admin import NoAddDeleteAdmin, ReadOnlyAdmin, admin_actor

from . import services
from .ledger import Event
from .models import Delivery, DeliveryAttempt, FeedCursor, WebhookEndpoint


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["seq", "kind", "program", "subject_type", "subject_id", "actor_type", "actor_id", "created_at"]
    list_filter = ["kind", "program", "actor_type", "subject_type"]
    search_fields = ["subject_id", "actor_id", "kind"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Event._meta.fields]
    show_full_result_count = False  # counting a large log on every page view is slow


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ["attempted_at", "status_code", "error", "duration_ms", "response_excerpt"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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
        count = services.deliveries_redeliver(deliveries=queryset, actor=admin_actor(request))
        self.message_user(request, f"{count} delivery(ies) queued again; receivers deduplicate on webhook-id.")


@admin.register(FeedCursor)
class FeedCursorAdmin(NoAddDeleteAdmin):
    list_display = ["member", "last_seq", "last_after", "last_read_at", "reads"]
    search_fields = ["member__slug"]
    readonly_fields = ["member", "last_seq", "last_after", "last_read_at", "reads"]
