from __future__ import annotations

from django.apps import AppConfig


class HashesConfig(AppConfig):
    """What is exchanged: signal types, signed envelopes, hashes, submissions, the index."""

    name = "hashes"
    verbose_name = "Hashes"
