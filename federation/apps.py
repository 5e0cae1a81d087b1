from __future__ import annotations

from django.apps import AppConfig


class FederationConfig(AppConfig):
    """Peers: other clearinghouses whose feeds we pull, keeping every origin signature."""

    name = "federation"
    verbose_name = "Federation"
