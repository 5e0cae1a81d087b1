"""Celery tasks of the hashes app: thin wrappers that keep the matching index's snapshots fresh."""

from __future__ import annotations

from celery import shared_task

from . import matching


@shared_task(ignore_result=True)
def match_index_compact() -> list[str]:
    """Merge the hashes added since the last snapshot into a new one, when enough were."""
    return [
        f"{r.signal_type}: {r.reason}" for r in (matching.index_build(signal_type=t) for t in matching.HAMMING_TYPES)
    ]


@shared_task(ignore_result=True)
def match_index_rebuild() -> list[str]:
    """Rebuild every snapshot from the database (drops retired hashes, repairs anything)."""
    return [
        f"{r.signal_type}: {r.reason}"
        for r in (matching.index_build(signal_type=t, full=True) for t in matching.HAMMING_TYPES)
    ]
