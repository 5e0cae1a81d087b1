from __future__ import annotations

from django.apps import AppConfig


class ExchangeConfig(AppConfig):
    """How hashes move and how that is checked: the ledger, feed, webhooks, reports."""

    name = "exchange"
    verbose_name = "Exchange"
