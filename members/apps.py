from __future__ import annotations

from django.apps import AppConfig


class MembersConfig(AppConfig):
    """Who may do what: members, programs, enrollments, API credentials, signing keys."""

    name = "members"
    verbose_name = "Members"

    def ready(self) -> None:
        from . import checks, schema  # noqa: F401  (registers system checks and the OpenAPI auth scheme)
