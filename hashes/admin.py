"""Admin for hashes, submissions and withdrawals.

Envelopes are shown read-only: they are what members signed. Withdrawing or retiring a
hash asks for a reason and goes through hashes/services.py, which records the events
that tell members.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from core.admin import ReadOnlyAdmin, admin_actor, ask_reason
from core.problems import Problem

from . import services
from .models import Hash, Listing, Submission, Withdrawal


def pretty_envelope(envelope: dict[str, Any]) -> str:
    return format_html("<pre>{}</pre>", json.dumps(envelope, indent=2))


class ListingInline(admin.TabularInline):
    model = Listing
    extra = 0
    can_delete = False
    fields = ["program", "status", "import_batch", "created_at", "changed_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Hash)
class HashAdmin(ReadOnlyAdmin):
    list_display = ["id", "signal_type", "value", "status", "created_at", "status_changed_at"]
    list_filter = ["status", "signal_type", "listings__program"]
    search_fields = ["=value", "=id"]
    readonly_fields = ["signal_type", "value", "status", "status_reason", "created_at", "status_changed_at"]
    inlines = [ListingInline]
    actions = ["withdraw", "retire"]
    show_full_result_count = False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # needed for actions; every field is read-only

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Hash], status: str) -> HttpResponse | None:
        reason = request.POST.get("reason", "").strip()
        if "apply" not in request.POST or not reason:
            if "apply" in request.POST:
                self.message_user(request, "Give a reason: it is recorded in the log.", level=messages.ERROR)
            return ask_reason(
                self,
                request,
                summary=f"These hashes will be {status}.",
                lines=[f"{h.signal_type} {h.value} ({h.status})" for h in queryset],
                selected=[h.pk for h in queryset],
                button=str(status).capitalize(),
            )
        done = 0
        for row in queryset:
            try:
                services.hash_set_status(hash_=row, status=status, reason=reason, actor=admin_actor(request))
                done += 1
            except Problem as exc:
                self.message_user(request, f"{row}: {'; '.join(exc.messages)}", level=messages.ERROR)
        self.message_user(request, f"{done} hash(es) {status}; members are told through the feed and webhooks.")
        return None

    @admin.action(description="Withdraw (members stop matching it; a new submission can bring it back)")
    def withdraw(self, request: HttpRequest, queryset: QuerySet[Hash]) -> HttpResponse | None:
        return self._set_status(request, queryset, Hash.Status.WITHDRAWN)

    @admin.action(description="Retire for good (false positive, abuse)")
    def retire(self, request: HttpRequest, queryset: QuerySet[Hash]) -> HttpResponse | None:
        return self._set_status(request, queryset, Hash.Status.RETIRED)


@admin.register(Submission)
class SubmissionAdmin(ReadOnlyAdmin):
    list_display = ["id", "hash", "program", "submitter", "status", "received_at"]
    list_filter = ["status", "program", "hash__signal_type", "submitter__kind", "submitter"]
    search_fields = ["=hash__value", "submitter__slug", "=payload_sha256"]
    list_select_related = ["hash", "program", "submitter"]
    readonly_fields = [
        "hash",
        "program",
        "submitter",
        "signing_key",
        "status",
        "envelope_pretty",
        "nonce",
        "signed_at",
        "labels",
        "case_ref",
        "quality",
        "received_at",
        "withdrawn_at",
        "withdrawal",
    ]
    exclude = ["envelope", "payload_sha256"]
    show_full_result_count = False

    @admin.display(description="envelope (as signed)")
    def envelope_pretty(self, obj: Submission) -> str:
        return pretty_envelope(obj.envelope)


@admin.register(Withdrawal)
class WithdrawalAdmin(ReadOnlyAdmin):
    list_display = ["id", "hash", "program", "submitter", "reason", "received_at"]
    list_filter = ["program", "submitter"]
    search_fields = ["=hash__value", "submitter__slug"]
    list_select_related = ["hash", "program", "submitter"]
    readonly_fields = [
        "hash",
        "program",
        "submitter",
        "signing_key",
        "envelope_pretty",
        "nonce",
        "signed_at",
        "case_ref",
        "reason",
        "received_at",
    ]
    exclude = ["envelope", "payload_sha256"]

    @admin.display(description="envelope (as signed)")
    def envelope_pretty(self, obj: Withdrawal) -> str:
        return pretty_envelope(obj.envelope)
