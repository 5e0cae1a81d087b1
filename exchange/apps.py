from __future__ import annotations

from django.apps import AppConfig


class ExchangeConfig(AppConfig):
    """How hashes move and how that is checked: the ledger, feed, webhooks, reports."""

    name = "exchange"
    verbose_name = "Exchange"

    def ready(self) -> None:
        from core import ledger

        from . import tasks

        if tasks.wake_delivery not in ledger.after_commit_hooks:
            ledger.after_commit_hooks.append(tasks.wake_delivery)
