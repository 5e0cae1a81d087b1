"""Celery tasks of the hashes app: thin wrappers that keep the matching index's snapshots fresh.

Each keeps the name it was first registered under (`name=`), which the beat schedule uses.
"""

from __future__ import annotations

from celery import shared_task

from . import matching


@shared_task(name="hashes.tasks.match_index_compact", ignore_result=True)
def match_index_compact_task() -> list[str]:
    """Merge the hashes added since the last snapshot into a new one, when enough were."""
    return [f"{r.signal_type}: {r.reason}" for r in (matching.index_build(signal_type=t) for t in matching.INDEXED)]


@shared_task(name="hashes.tasks.match_index_rebuild", ignore_result=True)
def match_index_rebuild_task() -> list[str]:
    """Rebuild every snapshot from the database (drops retired hashes, repairs anything)."""
    return [
        f"{r.signal_type}: {r.reason}"
        for r in (matching.index_build(signal_type=t, full=True) for t in matching.INDEXED)
    ]
