"""Reads, always scoped to the calling member."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import Enrollment, Member, Program, SigningKey


def programs_visible(*, member: Member) -> QuerySet[Program]:
    """Programs a member may see: active ones, and any it is enrolled in."""
    return (Program.objects.filter(is_active=True) | Program.objects.filter(enrollments__member=member)).distinct()


def enrollments_of(*, member: Member) -> QuerySet[Enrollment]:
    return Enrollment.objects.filter(member=member).select_related("program").order_by("program__slug")


def signing_keys_of(*, member: Member) -> QuerySet[SigningKey]:
    return SigningKey.objects.filter(member=member).order_by("-valid_from", "-pk")
