from __future__ import annotations

from django.apps import AppConfig


class MembersConfig(AppConfig):
    """Who may do what: members, programs, enrollments, API credentials, signing keys."""

    name = "members"
    verbose_name = "Members"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
