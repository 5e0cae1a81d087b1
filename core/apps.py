from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The floor every app stands on (installed so that its admin of the event log is found)."""

    name = "core"
    verbose_name = "Event log"
