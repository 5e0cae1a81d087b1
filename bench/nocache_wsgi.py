"""config.wsgi with the proofs' node cache switched off (core.tlog.NodeCache holds nothing):
the reference that bench/auditlog.py --large measures the cache against. Every proof then
reads every tile it needs, as before the cache."""

from __future__ import annotations

from config.wsgi import application
from core import tlog

tlog.node_cache.limit = 0

__all__ = ["application"]
