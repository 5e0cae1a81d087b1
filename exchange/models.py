"""Models of the exchange app. The ledger's Event lives in ledger.py (it imports nothing of ours)."""

from __future__ import annotations

from .ledger import Event

__all__ = ["Event"]
