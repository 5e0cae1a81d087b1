"""Cases in the admin: counts and status only. No secret exists on the server to show,
and the case's key is shown by its id alone."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin

from . import selectors
from .models import Case


@admin.register(Case)
class CaseAdmin(ReadOnlyAdmin):
    list_display = ("id", "program", "status", "created_at", "active_hashes", "withdrawn_hashes")
    list_filter = ("program", "status")
    fields = ("program", "status", "created_at", "withdrawn_at", "active_hashes", "withdrawn_hashes")
    readonly_fields = fields
    ordering = ("-created_at",)
    change_list_template = "admin/intake/case/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Case]:
        return (
            super()
            .get_queryset(request)
            .select_related("program")
            .annotate(
                n_active=Count("hashes", filter=Q(hashes__status="active")),
                n_withdrawn=Count("hashes", filter=Q(hashes__status="withdrawn")),
            )
        )

    @admin.display(description="active hashes")
    def active_hashes(self, obj: Any) -> int:
        return obj.n_active

    @admin.display(description="withdrawn hashes")
    def withdrawn_hashes(self, obj: Any) -> int:
        return obj.n_withdrawn

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # The intake's figures above the list: cases and hashes, active and withdrawn.
        return super().changelist_view(request, {**(extra_context or {}), "intake": selectors.intake_figures()})
