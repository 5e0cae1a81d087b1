"""config.wsgi with the audit log's tree and stored leaves switched off: the reference that bench/auditlog.py
measures the tree's cost against. Never serve with it: the log it writes has no tree."""

from __future__ import annotations

from config.wsgi import application
from core import ledger, tlog

tlog.extend = lambda rows: 0  # record_many looks both up on every call
ledger._store_leaves = lambda leaves: None

__all__ = ["application"]
