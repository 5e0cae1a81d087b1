"""Read-only admin over the ledger: events can be browsed, never edited or deleted."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .ledger import Event


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["seq", "kind", "program", "subject_type", "subject_id", "actor_type", "actor_id", "created_at"]
    list_filter = ["kind", "program", "actor_type", "subject_type"]
    search_fields = ["subject_id", "actor_id", "kind"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Event._meta.fields]
    show_full_result_count = False  # counting a large log on every page view is slow

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
