"""Celery tasks of federation: thin wrappers around services, named `*_task`.

Beat sends `peers_sync` every PEER_SYNC_SECONDS; it queues one `peer_sync` per due
peer. Each peer is claimed in the database before it is synced, so however many
workers and duplicate messages there are, one sync runs at a time per peer.
"""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="federation.tasks.peers_sync", ignore_result=True)
def peers_sync_task() -> int:
    due = services.peers_due()
    for peer_id in due:
        peer_sync_task.delay(peer_id)
    return len(due)


@shared_task(name="federation.tasks.peer_sync", ignore_result=True)
def peer_sync_task(peer_id: int) -> None:
    services.peer_sync_claimed(peer_id)
