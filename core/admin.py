"""Admin helpers every app's admin uses, and the admin of the event log itself.

Records that only services write are read-only here; actions that change state go
through services with the admin user as the actor, so the log names who did it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.html import format_html

from .ledger import Actor, Event
from .problems import Problem


def admin_actor(request: HttpRequest) -> Actor:
    return Actor.admin(request.user.get_username())


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records that only services write (events, envelopes): view, never add, edit or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    """Rows shown under their parent record, read-only: set `model` and `fields` (all shown read-only)."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields or ()

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class NoAddDeleteAdmin(admin.ModelAdmin):
    """For records created through the API or services, changed only by actions."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def ask_reason(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    summary: str,
    lines: list[str],
    selected: list[int],
    button: str,
) -> HttpResponse:
    """The intermediate page of an admin action that needs a reason (it is recorded in the log)."""
    return render(
        request,
        "admin/reason_form.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": summary,
            "summary": summary,
            "lines": lines,
            "selected": selected,
            "action": request.POST["action"],
            "button": button,
            "opts": modeladmin.model._meta,
        },
    )


def act_with_reason(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: Iterable[Any],
    *,
    summary: str,
    describe: Callable[[Any], str],
    button: str,
    act: Callable[[Any, str], Any],
    done: str,
) -> HttpResponse | None:
    """An admin action that needs a reason: first the page asking for it (each selected row
    described), then `act(row, reason)` on each row. A row a service refuses is named with
    its reasons and the others go on; `done` is the message after (`{n}`: the rows done,
    `{of}`: the rows selected), shown when any was done."""
    reason = request.POST.get("reason", "").strip()
    rows = list(queryset)
    if "apply" not in request.POST or not reason:
        if "apply" in request.POST:
            modeladmin.message_user(request, "Give a reason: it is recorded in the log.", level=messages.ERROR)
        return ask_reason(
            modeladmin,
            request,
            summary=summary,
            lines=[describe(row) for row in rows],
            selected=[row.pk for row in rows],
            button=button,
        )
    n = 0
    for row in rows:
        try:
            act(row, reason)
        except Problem as exc:
            modeladmin.message_user(request, f"{row}: {'; '.join(exc.messages)}", level=messages.ERROR)
        else:
            n += 1
    if n:
        modeladmin.message_user(request, done.format(n=n, of=len(rows)))
    return None


def decide_each(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: Iterable[Any],
    *,
    decision: str,
    describe: Callable[[Any], str],
    decide: Callable[..., Any],
    done: str = "Members are told through the feed and webhooks.",
) -> HttpResponse | None:
    """An admin action that decides each selected row one way, with one reason for all:
    `decide(row, decision=..., reason=..., actor=...)` (disputes, match anomalies, held batches)."""
    return act_with_reason(
        modeladmin,
        request,
        queryset,
        summary=f"Decision: {decision}.",
        describe=describe,
        button=str(decision).capitalize(),
        act=lambda row, reason: decide(row, decision=decision, reason=reason, actor=admin_actor(request)),
        done=f"Decided {decision}: {{n}} of {{of}}. " + done.replace("{", "{{").replace("}", "}}"),
    )


def report_problem(modeladmin: admin.ModelAdmin, request: HttpRequest, exc: Problem) -> None:
    """Show a refused action's reasons on the admin page instead of an error page."""
    modeladmin.message_user(request, "; ".join(exc.messages), level=messages.ERROR)


def _short(value: str, keep: int = 12) -> str:
    """A long identifier (a 64-hex key id) cut to fit a list column; the whole is its title."""
    if len(value) <= keep:
        return value
    return format_html('<span title="{}">{}…</span>', value, value[:keep])


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    # Type and id in one column each, times to the second, long ids cut (whole in the title):
    # at 1400 px, beside the admin's menu and filters, the list fits without scrolling sideways.
    list_display = ["seq", "kind", "program", "subject", "actor", "at"]
    list_filter = ["kind", "program", "actor_type", "subject_type"]
    search_fields = ["subject_id", "actor_id", "kind"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Event._meta.fields]
    show_full_result_count = False  # counting a large log on every page view is slow

    @admin.display(description="subject", ordering="subject_id")
    def subject(self, event: Event) -> str:
        return format_html("{} {}", event.subject_type, _short(event.subject_id))

    @admin.display(description="actor", ordering="actor_id")
    def actor(self, event: Event) -> str:
        return format_html("{} {}", event.actor_type, _short(event.actor_id))

    @admin.display(description="recorded (UTC)", ordering="created_at")
    def at(self, event: Event) -> str:
        # "Dec. 1, 2026, 10:11 p.m." took the width the list needs at 1400 px.
        return event.created_at.strftime("%Y-%m-%d %H:%M:%S")
