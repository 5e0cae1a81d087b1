"""Admin for hashes, submissions and withdrawals.

Envelopes are shown read-only: they are what members signed. Withdrawing or retiring a
hash asks for a reason and goes through hashes/services.py, which records the events
that tell members.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from hashexchange_client import signal_types

from core.admin import (
    NoAddDeleteAdmin,
    ReadOnlyAdmin,
    ReadOnlyInline,
    act_with_reason,
    admin_actor,
    decide_each,
)

from . import services
from .models import BenignHash, Hash, HashBody, HeldBatch, Listing, MatchAnomaly, Submission, Withdrawal


def pretty_envelope(envelope: dict[str, Any]) -> str:
    return format_html("<pre>{}</pre>", json.dumps(envelope, indent=2))


class ListingInline(ReadOnlyInline):
    model = Listing
    fields = ["program", "status", "import_batch", "created_at", "changed_at"]


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
        return act_with_reason(
            self,
            request,
            queryset,
            summary=f"These hashes will be {status}.",
            describe=lambda h: f"{h.signal_type} {h.value} ({h.status})",
            button=str(status).capitalize(),
            act=lambda h, reason: services.hash_set_status(
                hash_=h, status=status, reason=reason, actor=admin_actor(request)
            ),
            done=f"{{n}} hash(es) {status}; members are told through the feed and webhooks.",
        )

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


@admin.register(HashBody)
class HashBodyAdmin(ReadOnlyAdmin):
    list_display = ["hash", "frames", "match_frames"]
    search_fields = ["=hash__id"]


class BenignHashForm(forms.ModelForm):
    """Adding an entry: program, signal type, value (any spelling the API takes) and why."""

    signal_type = forms.ChoiceField(choices=[(n, n) for n in signal_types.SIGNAL_TYPE_NAMES])
    value = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), help_text="The value as members submit it.")

    class Meta:
        model = BenignHash
        fields = ["program", "signal_type", "value", "reason"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            signal_types.validate(data.get("signal_type", ""), data.get("value", ""))
        except signal_types.SignalValueError as exc:
            self.add_error("value", str(exc))
        return data


@admin.register(BenignHash)
class BenignHashAdmin(admin.ModelAdmin):
    """The benign list: added by hand or by a dispute decided as not violating; removal is
    the reversal. Both go through hashes/services/floods.py, which records the event."""

    form = BenignHashForm
    list_display = ["id", "program", "signal_type", "value", "status", "source", "reason", "added_by", "added_at"]
    list_filter = ["status", "source", "program", "signal_type"]
    search_fields = ["=value"]
    list_select_related = ["program"]
    actions = ["remove"]

    def get_readonly_fields(self, request: HttpRequest, obj: BenignHash | None = None) -> list[str]:
        if obj is None:
            return []
        return [f.name for f in BenignHash._meta.fields]

    def get_fields(self, request: HttpRequest, obj: BenignHash | None = None) -> list[str]:
        return ["program", "signal_type", "value", "reason"] if obj is None else super().get_fields(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: BenignHash, form: Any, change: bool) -> None:
        if change:
            return
        created = services.benign_add(
            program=form.cleaned_data["program"],
            signal_type=form.cleaned_data["signal_type"],
            value=form.cleaned_data["value"],
            reason=form.cleaned_data["reason"],
            actor=admin_actor(request),
        )
        obj.pk = created.pk

    @admin.action(description="Remove from the benign list (submissions near it are taken again)")
    def remove(self, request: HttpRequest, queryset: QuerySet[BenignHash]) -> HttpResponse | None:
        return act_with_reason(
            self,
            request,
            queryset,
            summary="These entries will be removed from the benign list.",
            describe=lambda b: f"{b.signal_type} {b.value} in {b.program.slug}: {b.reason}",
            button="Remove",
            act=lambda b, reason: services.benign_remove(benign=b, reason=reason, actor=admin_actor(request)),
            done="Removed from the benign list; the removal is recorded in the log.",
        )


@admin.register(MatchAnomaly)
class MatchAnomalyAdmin(NoAddDeleteAdmin):
    """Hashes quarantined for their match rate, waiting for a decision."""

    list_display = ["id", "hash", "program", "status", "day", "matches", "limit", "baseline", "opened_at"]
    list_filter = ["status", "program"]
    list_select_related = ["hash", "program"]
    readonly_fields = [f.name for f in MatchAnomaly._meta.fields]
    actions = ["restore", "retire"]

    def _decide(self, request: HttpRequest, queryset: QuerySet[MatchAnomaly], decision: str) -> HttpResponse | None:
        return decide_each(
            self,
            request,
            queryset,
            decision=decision,
            describe=lambda a: (
                f"hash {a.hash_id} in {a.program.slug}: {a.matches} matches on {a.day} (limit {a.limit:g})"
            ),
            decide=lambda a, **how: services.anomaly_decide(anomaly=a, **how),
        )

    @admin.action(description="Restore: the hash is distributed again")
    def restore(self, request: HttpRequest, queryset: QuerySet[MatchAnomaly]) -> HttpResponse | None:
        return self._decide(request, queryset, MatchAnomaly.Status.RESTORED)

    @admin.action(description="Retire: the hash is withdrawn for good")
    def retire(self, request: HttpRequest, queryset: QuerySet[MatchAnomaly]) -> HttpResponse | None:
        return self._decide(request, queryset, MatchAnomaly.Status.RETIRED)


class HeldSubmissionInline(admin.TabularInline):
    model = Submission
    fk_name = "held_batch"
    extra = 0
    can_delete = False
    fields = ["hash", "status", "case_ref", "received_at"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(HeldBatch)
class HeldBatchAdmin(NoAddDeleteAdmin):
    """Submissions held for review (a distrusted submitter, a burst): distributed to nobody
    until an admin releases the batch (they flow as new) or retires it (docs/floods.md)."""

    list_display = ["id", "program", "submitter", "reason", "status", "held", "evidence", "opened_at", "decided_by"]
    list_filter = ["status", "reason", "program", "submitter"]
    list_select_related = ["program", "submitter"]
    readonly_fields = [f.name for f in HeldBatch._meta.fields]
    inlines = [HeldSubmissionInline]
    actions = ["release", "retire"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[HeldBatch]:
        held = Count("submissions", filter=Q(submissions__status=Submission.Status.HELD))
        return super().get_queryset(request).annotate(held_count=held)

    @admin.display(description="held now", ordering="held_count")
    def held(self, obj: HeldBatch) -> int:
        return obj.held_count  # type: ignore[attr-defined]

    def _decide(self, request: HttpRequest, queryset: QuerySet[HeldBatch], decision: str) -> HttpResponse | None:
        return decide_each(
            self,
            request,
            queryset,
            decision=decision,
            describe=lambda b: (
                f"batch {b.pk}: {b.held_count} submission(s) of {b.submitter.slug} in {b.program.slug} "
                f"held for {b.get_reason_display().lower()} {b.evidence}"
            ),
            decide=lambda b, **how: services.held_batch_decide(batch=b, **how),
            done="Released submissions reach members through the feed, webhooks and match; retired ones never do.",
        )

    @admin.action(description="Release: distribute the held submissions as new")
    def release(self, request: HttpRequest, queryset: QuerySet[HeldBatch]) -> HttpResponse | None:
        return self._decide(request, queryset, HeldBatch.Status.RELEASED)

    @admin.action(description="Retire: never distribute them (a hash nothing else supports is retired)")
    def retire(self, request: HttpRequest, queryset: QuerySet[HeldBatch]) -> HttpResponse | None:
        return self._decide(request, queryset, HeldBatch.Status.RETIRED)
