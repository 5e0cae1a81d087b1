"""Celery tasks of the exchange: thin wrappers around services, named `*_task`.

Each task keeps the name it was registered under before the suffix (`name=` on the
decorator): messages already queued in Redis, the beat schedule and the task routes in
config/settings.py address tasks by that name.

Nothing here holds state that the database does not: a lost task delays work until the
next sweep, and a task run twice does no harm (deliveries are claimed in the database).
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from celery import current_app, shared_task
from django.conf import settings

from core.redis import HEARTBEAT_KEY, redis_client

from . import auditlog, floods, services
from . import delivery as webhook_delivery
from .outcomes import obligations_project
from .participation import participation_check

logger = logging.getLogger(__name__)

# After a failed publish, wake-ups are skipped for a few seconds so that requests do not
# each wait for a broker timeout while Redis is down; the sweep catches up.
_QUIET_SECONDS = 5.0
_quiet = {"until": 0.0}
_quiet_lock = threading.Lock()


def wake_delivery() -> None:
    """Runs after a commit that recorded events: ask a worker to fan them out.

    One fan-out task queued is enough: it reads the database when it starts, so it sees
    every event committed before then. A mark in Redis says one is queued (set here,
    cleared when the task starts); while it stands, commits queue nothing more. Under a
    stream of submissions this keeps the queue to a task or two instead of one per commit.
    """
    if time.monotonic() < _quiet["until"]:
        return
    try:
        if not _mark_queued(_FANOUT_QUEUED_KEY):
            return
        try:
            current_app.send_task("exchange.tasks.fanout", retry=False, ignore_result=True)
        except Exception:
            _unmark(_FANOUT_QUEUED_KEY)
            raise
    except Exception as exc:  # noqa: BLE001 - the events are committed; the sweep delivers them later
        with _quiet_lock:
            _quiet["until"] = time.monotonic() + _QUIET_SECONDS
        logger.warning("could not queue webhook fan-out (%s); the periodic sweep will deliver", type(exc).__name__)


# Every commit wakes every free endpoint, and an endpoint is free until its queued task
# starts; so during a stream of commits each endpoint had a task queued per commit, each
# of which found the endpoint claimed or up to date, and the useless tasks outnumbered the
# deliveries. A mark in Redis says a task is queued: it is set when one is, and cleared
# when it starts (a task that starts later sees every event committed before it). A mark
# whose task was lost (a publish lost while Redis restarts) lives one sweep interval, so
# such a loss costs at most one more sweep. The fan-out and the obligations projection
# are queued once the same way.
_QUEUED_KEY = "hx:webhooks:queued:{}"
_FANOUT_QUEUED_KEY = "hx:fanout:queued"
_OBLIGATIONS_QUEUED_KEY = "hx:obligations:queued"


def _queued_seconds() -> int:
    return max(1, round(settings.WEBHOOK_SWEEP_SECONDS))


def _mark_queued(key: str) -> bool:
    """Set the mark; False when it was already set (a task is queued). Raises RedisError."""
    return bool(redis_client().set(key, 1, nx=True, ex=_queued_seconds()))


def _unmark(key: str) -> None:
    try:
        redis_client().delete(key)
    except redis.RedisError:
        pass  # the mark expires by itself


def _dispatch(endpoint_ids: list[int]) -> None:
    """Queue delivery for the endpoints that have none queued yet, in groups of
    WEBHOOK_GROUP_SIZE taken in the order given (`endpoints_to_wake` orders them by
    cursor, so a group's endpoints share their pages). Several groups spread a fan-out
    over the worker processes."""
    if not endpoint_ids:
        return
    ttl = _queued_seconds()
    try:
        pipe = redis_client().pipeline(transaction=False)
        for endpoint_id in endpoint_ids:
            pipe.set(_QUEUED_KEY.format(endpoint_id), 1, nx=True, ex=ttl)
        unqueued = [endpoint_id for endpoint_id, marked in zip(endpoint_ids, pipe.execute(), strict=True) if marked]
    except redis.RedisError:
        unqueued = list(endpoint_ids)  # publishing will tell whether Redis is really gone
    size = max(1, settings.WEBHOOK_GROUP_SIZE)
    for start in range(0, len(unqueued), size):
        group = unqueued[start : start + size]
        try:
            deliver_group_task.apply_async(args=[group], retry=False)
        except Exception:
            _unmark_all(unqueued[start:])
            raise


def _unmark_all(endpoint_ids: list[int]) -> None:
    try:
        pipe = redis_client().pipeline(transaction=False)
        for endpoint_id in endpoint_ids:
            pipe.delete(_QUEUED_KEY.format(endpoint_id))
        pipe.execute()
    except redis.RedisError:
        pass  # the marks expire by themselves


@shared_task(name="exchange.tasks.fanout", ignore_result=True)
def fanout_task() -> int:
    """New events committed: project obligations, wake every endpoint that has something to send."""
    _unmark(_FANOUT_QUEUED_KEY)
    try:
        queue_obligations = _mark_queued(_OBLIGATIONS_QUEUED_KEY)
    except redis.RedisError:
        queue_obligations = True  # publishing will tell whether Redis is really gone
    if queue_obligations:
        project_obligations_task.apply_async(retry=False)
    endpoint_ids = webhook_delivery.endpoints_to_wake()
    _dispatch(endpoint_ids)
    return len(endpoint_ids)


@shared_task(name="exchange.tasks.deliver_group", ignore_result=True, acks_late=True)
def deliver_group_task(endpoint_ids: list[int]) -> int:
    """Drain a group of endpoints; requeue those left when its time budget ran out."""
    _unmark_all(endpoint_ids)
    result = webhook_delivery.deliver_group(endpoint_ids)
    if result.more:
        _dispatch(result.remaining)
    return result.sent


@shared_task(name="exchange.tasks.deliver_endpoint", ignore_result=True, acks_late=True)
def deliver_endpoint_task(endpoint_id: int) -> int:
    """Drain one endpoint (tasks queued before groups existed carry this name)."""
    return deliver_group_task(endpoint_ids=[endpoint_id])


@shared_task(name="exchange.tasks.sweep_webhooks", ignore_result=True)
def sweep_webhooks_task() -> int:
    """Periodic: endpoints whose wake-up was lost (Redis was down) and retries that are due."""
    endpoint_ids = webhook_delivery.endpoints_to_wake()
    _dispatch(endpoint_ids)
    return len(endpoint_ids)


@shared_task(name="exchange.tasks.heartbeat", ignore_result=True)
def heartbeat_task() -> float:
    """Beat schedules it, a worker runs it: its age in /readyz shows both are alive."""
    now = time.time()
    redis_client().set(HEARTBEAT_KEY, now, ex=3600)
    return now


@shared_task(name="exchange.tasks.project_obligations", ignore_result=True)
def project_obligations_task() -> int:
    """Create the withdrawal acknowledgements owed for withdrawals recorded since the last run."""
    _unmark(_OBLIGATIONS_QUEUED_KEY)
    created = 0
    while True:
        made = obligations_project()
        created += made
        if not made:
            return created


@shared_task(name="exchange.tasks.check_participation", ignore_result=True)
def check_participation_task() -> int:
    """Periodic: lapse members that stopped taking part, restore those that resumed."""
    return len(participation_check())


@shared_task(name="exchange.tasks.checkpoint", ignore_result=True)
def checkpoint_task() -> int:
    """Periodic: sign a checkpoint of the audit log if it grew; ask the witnesses to cosign
    the latest one (also when a push failed before and nothing new was recorded since)."""
    made = auditlog.checkpoint_create()
    latest = made or auditlog.latest_checkpoint()
    if latest is not None:
        auditlog.witnesses_push(latest)
    return latest.size if latest else 0


@shared_task(name="exchange.tasks.scan_match_anomalies", ignore_result=True)
def scan_match_anomalies_task() -> int:
    """Periodic: quarantine hashes matched far more than their program's usual (docs/floods.md)."""
    return len(floods.match_anomalies_scan())


# A build of a program's snapshot is claimed in Redis for this long, so that beat and a
# reader's request do not build the same one twice at once (losing the claim only costs a
# duplicate build: every build is its own pair of files).
_SNAPSHOT_CLAIM_SECONDS = 3600


@shared_task(name="exchange.tasks.snapshot_build", ignore_result=True)
def snapshot_build_task(program_id: int) -> int:
    """Build a new snapshot of one program (exchange/snapshots.py); returns its seq, or 0 if
    another build of it is running."""
    key = f"hx:snapshot-build:{program_id}"
    client = redis_client()
    if not client.set(key, "1", nx=True, ex=_SNAPSHOT_CLAIM_SECONDS):
        return 0
    try:
        return services.snapshot_build(program_id=program_id).seq
    finally:
        client.delete(key)


@shared_task(name="exchange.tasks.snapshots_refresh", ignore_result=True)
def snapshots_refresh_task() -> int:
    """Periodic: queue a build for each active program whose snapshot is missing or stale."""
    due = services.snapshots_due()
    for program_id in due:
        snapshot_build_task.delay(program_id)
    return len(due)
