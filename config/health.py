"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import time

from django.db import connection
from django.http import HttpRequest, JsonResponse

from core.redis import HEARTBEAT_KEY, redis_client


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up. Says nothing about its dependencies (see /readyz)."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: the database and Redis answer and the matching index is loaded.
    503 names what is not.

    The age of the last Celery beat heartbeat is reported for operators but does not
    make the web process unready: the API keeps working while workers are down.
    """
    checks: dict[str, object] = {}
    ready = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a probe reports, it does not raise
        checks["database"] = f"error: {exc.__class__.__name__}"
        ready = False
    try:
        client = redis_client()
        client.ping()
        checks["redis"] = "ok"
        beat = client.get(HEARTBEAT_KEY)
        checks["worker_heartbeat_age_seconds"] = round(time.time() - float(beat), 1) if beat else None
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {exc.__class__.__name__}"
        ready = False
    if checks["database"] == "ok":
        checks["index"], index_ready = _index_status()
        ready = ready and index_ready
    return JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


def _index_status() -> tuple[dict[str, object], bool]:
    """The matching index of this process: loaded (loading it if need be), sizes, lag.

    `lag_events` counts ledger events the index has not read yet (0 right after a
    refresh); `tail_size` counts hashes not yet in the shared snapshot (compaction by
    Celery brings it down). Not ready when it cannot be loaded: matching would fail.
    """
    from hashes.matching import registry

    try:
        registry.refresh()
    except Exception as exc:  # noqa: BLE001 - a probe reports, it does not raise
        return {"loaded": False, "error": exc.__class__.__name__}, False
    return registry.status(), True
