"""Peers in the Django admin: add (via `manage.py peer_add`), pause, resume, resync, re-pin; lag and errors."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from core.admin import ReadOnlyInline
from core.ledger import Actor
from core.problems import Problem

from . import services
from .models import KeptRevocation, Peer, Refusal


class RefusalInline(ReadOnlyInline):
    model = Refusal
    fields = ("created_at", "seq", "kind", "reason", "detail")
    ordering = ("-pk",)
    max_num = 0


class KeptRevocationInline(ReadOnlyInline):
    """Revocations of keys not held here yet, waiting for a peer to bring the key."""

    model = KeptRevocation
    fields = ("created_at", "key_id", "server", "member", "revoked_at")
    ordering = ("-pk",)
    max_num = 0


@admin.register(Peer)
class PeerAdmin(admin.ModelAdmin):
    list_display = ("slug", "base_url", "status", "cursor", "behind", "lag", "last_sync_at", "failures", "last_error")
    list_filter = ("status",)
    readonly_fields = (
        "slug",
        "member",
        "base_url",
        "server_key_id",
        "server_public_key",
        "status",
        "cursor",
        "behind",
        "lag",
        "last_sync_at",
        "failures",
        "next_sync_at",
        "claimed_until",
        "last_error",
        "created_at",
    )
    fields = (*readonly_fields, "programs")
    inlines = [RefusalInline, KeptRevocationInline]
    actions = ["pause", "resume", "resync", "repin"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # peer_add fetches and pins the key: `manage.py peer_add`

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="lag (s since last complete sync)")
    def lag(self, peer: Peer) -> str:
        seconds = peer.lag_seconds
        return "never synced" if seconds is None else f"{seconds:.0f}"

    def _each(self, request: HttpRequest, queryset: Any, func: Any, done: str, **kwargs: Any) -> None:
        actor = Actor.admin(request.user.get_username())
        for peer in queryset:
            try:
                func(peer=peer, actor=actor, **kwargs)
            except Problem as exc:
                self.message_user(request, f"{peer.slug}: {exc.detail}", messages.ERROR)
            else:
                self.message_user(request, f"{peer.slug}: {done}")

    @admin.action(description="Pause (stop calling them)")
    def pause(self, request: HttpRequest, queryset: Any) -> None:
        self._each(request, queryset, services.peer_set_status, "paused", status=Peer.Status.PAUSED)

    @admin.action(description="Resume")
    def resume(self, request: HttpRequest, queryset: Any) -> None:
        self._each(request, queryset, services.peer_set_status, "resumed", status=Peer.Status.ACTIVE)

    @admin.action(description="Resync from zero")
    def resync(self, request: HttpRequest, queryset: Any) -> None:
        self._each(request, queryset, services.peer_resync, "will read its feed again from the start")

    @admin.action(description="Re-pin the server key it publishes now (after its operator confirmed the change)")
    def repin(self, request: HttpRequest, queryset: Any) -> None:
        self._each(request, queryset, services.peer_repin, "re-pinned and resumed")

    def save_model(self, request: HttpRequest, obj: Peer, form: Any, change: bool) -> None:
        try:
            services.peer_programs_set(peer=obj, programs=obj.programs, actor=Actor.admin(request.user.get_username()))
        except Problem as exc:
            self.message_user(request, exc.detail, messages.ERROR)
