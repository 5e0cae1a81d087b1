"""Admin for members, programs, enrollments, API credentials and signing keys.

Every change goes through members/services.py, so the admin records the same events as
the API and the operator commands, with the admin user as actor.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import NoAddDeleteAdmin, ReadOnlyInline, admin_actor, report_problem
from core.problems import Problem

from . import services
from .models import ApiCredential, Enrollment, Member, Program, SigningKey


class EnrollmentInline(ReadOnlyInline):
    model = Enrollment
    fields = ["program", "state", "reason", "changed_at"]
    show_change_link = True


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "kind", "status", "created_at"]
    list_filter = ["kind", "status"]
    search_fields = ["slug", "name"]
    readonly_fields = ["status", "status_reason", "created_at", "updated_at"]
    inlines = [EnrollmentInline]
    actions = ["activate", "suspend", "issue_credential"]

    def get_readonly_fields(self, request: HttpRequest, obj: Member | None = None) -> list[str]:
        # The slug names the member in events; it does not change once created.
        return [*self.readonly_fields, "slug", "kind"] if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Member | None = None) -> bool:
        # Suspend a member instead: events name it, and its submissions refer to it
        # without a database constraint (docs/decisions.md, "References that Django checks").
        return False

    def save_model(self, request: HttpRequest, obj: Member, form: Any, change: bool) -> None:
        if change:
            obj.save(update_fields=["name", "updated_at"])
            return
        created = services.member_create(slug=obj.slug, name=obj.name, kind=obj.kind, actor=admin_actor(request))
        obj.pk = created.pk
        obj.status = created.status

    @admin.action(description="Activate selected members")
    def activate(self, request: HttpRequest, queryset: QuerySet[Member]) -> None:
        for member in queryset:
            services.member_set_status(member=member, status=Member.Status.ACTIVE, actor=admin_actor(request))
        self.message_user(request, f"Activated {queryset.count()} member(s).")

    @admin.action(description="Suspend selected members (all their API keys stop working)")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Member]) -> None:
        for member in queryset:
            services.member_set_status(
                member=member,
                status=Member.Status.SUSPENDED,
                reason="suspended by an admin",
                actor=admin_actor(request),
            )
        self.message_user(request, f"Suspended {queryset.count()} member(s).")

    @admin.action(description="Issue an API key (shown once)")
    def issue_credential(self, request: HttpRequest, queryset: QuerySet[Member]) -> None:
        for member in queryset:
            try:
                credential, token = services.credential_issue(member=member, name="admin", actor=admin_actor(request))
            except Problem as exc:
                report_problem(self, request, exc)
                continue
            self.message_user(
                request,
                f"New API key for {member.slug} (copy it now, it is not shown again): {token}",
                level=messages.WARNING,
            )


@admin.register(Program)
class ProgramAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "is_active", "removal_deadline_hours", "min_pdq_quality"]
    list_filter = ["is_active"]
    search_fields = ["slug", "name"]

    def get_readonly_fields(self, request: HttpRequest, obj: Program | None = None) -> list[str]:
        return ["slug", "created_at"] if obj else ["created_at"]

    def has_delete_permission(self, request: HttpRequest, obj: Program | None = None) -> bool:
        return False  # deactivate it instead (as a member, above)

    def save_model(self, request: HttpRequest, obj: Program, form: Any, change: bool) -> None:
        if change:
            return  # recorded in save_related, once the unsigned submitters are saved too
        created = services.program_create(
            slug=obj.slug,
            name=obj.name,
            description=obj.description,
            signal_types_=obj.signal_types,
            thresholds=obj.thresholds,
            submitter_kinds=obj.submitter_kinds,
            removal_deadline_hours=obj.removal_deadline_hours,
            protection={field: getattr(obj, field) for field in services.PROTECTION_FIELDS},
            actor=admin_actor(request),
        )
        obj.pk = created.pk

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if change or form.instance.unsigned_submitters.exists():
            services.program_update(program=form.instance, actor=admin_actor(request))


@admin.register(Enrollment)
class EnrollmentAdmin(NoAddDeleteAdmin):
    list_display = ["member", "program", "state", "reason", "changed_at"]
    list_filter = ["state", "program", "member__kind"]
    search_fields = ["member__slug", "program__slug"]
    list_select_related = ["member", "program"]
    readonly_fields = ["member", "program", "state", "reason", "changed_at", "created_at"]
    actions = ["opt_in", "pause", "opt_out"]

    # No add: members opt in through the API; operators use `member_create --program`.

    def _set(self, request: HttpRequest, queryset: QuerySet[Enrollment], state: str) -> None:
        changed = 0
        for enrollment in queryset.select_related("member", "program"):
            try:
                _, did = services.enrollment_set(
                    member=enrollment.member,
                    program=enrollment.program,
                    state=state,
                    reason=f"set to {state} by an admin",
                    actor=admin_actor(request),
                )
            except Problem as exc:
                report_problem(self, request, exc)
                continue
            changed += did
        self.message_user(request, f"{changed} enrollment(s) set to {state}.")

    @admin.action(description="Opt in")
    def opt_in(self, request: HttpRequest, queryset: QuerySet[Enrollment]) -> None:
        self._set(request, queryset, Enrollment.State.OPTED_IN)

    @admin.action(description="Pause")
    def pause(self, request: HttpRequest, queryset: QuerySet[Enrollment]) -> None:
        self._set(request, queryset, Enrollment.State.PAUSED)

    @admin.action(description="Opt out")
    def opt_out(self, request: HttpRequest, queryset: QuerySet[Enrollment]) -> None:
        self._set(request, queryset, Enrollment.State.OPTED_OUT)


class RevokedFilter(admin.SimpleListFilter):
    title = "revoked"
    parameter_name = "revoked"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Revoked"), ("no", "Not revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.exclude(revoked_at=None)
        if self.value() == "no":
            return queryset.filter(revoked_at=None)
        return queryset


@admin.register(ApiCredential)
class ApiCredentialAdmin(NoAddDeleteAdmin):
    list_display = ["prefix", "member", "name", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_filter = [RevokedFilter, "member__kind"]
    search_fields = ["prefix", "member__slug", "name"]
    list_select_related = ["member"]
    readonly_fields = ["member", "name", "prefix", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"]
    exclude = ["digest"]
    actions = ["revoke"]

    # No add: keys are issued with the member action or `manage.py credential_issue`.

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiCredential]) -> None:
        for credential in queryset:
            services.credential_revoke(credential=credential, reason="revoked by an admin", actor=admin_actor(request))
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(SigningKey)
class SigningKeyAdmin(NoAddDeleteAdmin):
    list_display = ["key_id", "member", "algorithm", "label", "valid_from", "revoked_at"]
    list_filter = [RevokedFilter, "algorithm", "member__kind"]
    search_fields = ["key_id", "member__slug", "label"]
    list_select_related = ["member"]
    readonly_fields = [
        "member",
        "key_id",
        "algorithm",
        "public_key_b64",
        "label",
        "valid_from",
        "revoked_at",
        "revocation_reason",
        "created_at",
    ]
    exclude = ["public_key"]
    actions = ["revoke"]

    # No add: members register their own keys through the API.

    @admin.action(description="Revoke selected signing keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[SigningKey]) -> None:
        for key in queryset:
            services.signing_key_revoke(key=key, reason="revoked by an admin", actor=admin_actor(request))
        self.message_user(request, f"Revoked {queryset.count()} signing key(s).")
