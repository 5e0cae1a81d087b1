"""GET /metrics: Prometheus metrics, for the operator's scraper only.

What it answers:
- django-prometheus's HTTP and database figures, and the exchange's own counters
  (core/metrics.py: events, submissions, deliveries, match queries and latency), from
  every process. With PROMETHEUS_MULTIPROC_DIR set, each process (gunicorn worker,
  Celery pool process) writes its values to files there; this view adds up the files of
  that directory and of its sibling directories, so that web and workers on a host,
  each service with its own directory (`/run/hashexchange/metrics/web`, `…/worker`),
  are one scrape. Without it (development, tests) the process's own registry.
- Figures read from the database, Redis and the matching index at scrape time:
  feed lag per member and program, webhook lag and failure age per endpoint, overdue
  withdrawal acknowledgements, pending deliveries, Celery queue depth, the beat
  heartbeat's age, the ledger's last sequence number, the index's size and lag. A part
  that fails (the database down) is left out and counted in
  `hashexchange_metrics_collect_errors`, so the rest still arrives.

Who may read it: a request with `Authorization: Bearer <METRICS_TOKEN>`, or from an
address in METRICS_ALLOWED_NETWORKS (CIDRs; REMOTE_ADDR, never X-Forwarded-For), or,
with DEBUG on, from loopback. Nothing else: with neither set, production answers 403
to everyone. nginx does not pass /metrics from outside either (deploy/nginx).

No label carries a hash value, an API key, a secret or a case reference: member and
program slugs, endpoint ids, signal types, event kinds, result and reason codes.
"""

from __future__ import annotations

import glob
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from core.redis import HEARTBEAT_KEY, redis_client

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CELERY_QUEUES = ("celery", "webhooks")
# kombu's Redis transport keeps a queue's priorities in lists named queue + "\x06\x16" + priority.
_PRIORITY_SEPARATOR = "\x06\x16"


def allowed(request: HttpRequest) -> tuple[bool, int]:
    """Whether this request may read the metrics, and the status to refuse it with."""
    token = settings.METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True, 200
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False, 403
    if any(address in network for network in settings.METRICS_ALLOWED_NETWORKS):
        return True, 200
    if settings.DEBUG and address.is_loopback:
        return True, 200
    return False, 401 if token and header else 403


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    ok, status = allowed(request)
    if not ok:
        response = HttpResponse(
            "Metrics are for the operator's scraper: send Authorization: Bearer <METRICS_TOKEN>, or scrape from "
            "an address in METRICS_ALLOWED_NETWORKS.\n",
            status=status,
            content_type="text/plain; charset=utf-8",
        )
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExchangeCollector())
    body = generate_latest(registry)
    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc:
        process_registry = CollectorRegistry(auto_describe=False)
        process_registry.register(SiblingDirectoriesCollector(Path(multiproc)))
        body = generate_latest(process_registry) + body
    else:
        body = generate_latest(REGISTRY) + body
    return HttpResponse(body, content_type=CONTENT_TYPE)


class SiblingDirectoriesCollector(Collector):
    """prometheus-client's multi-process merge over a directory and its siblings (one per service)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        files = sorted(glob.glob(str(self.directory.parent / "*" / "*.db")))
        return MultiProcessCollector.merge(files, accumulate=True)


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


class ExchangeCollector(Collector):
    """The figures read at scrape time (see the module docstring)."""

    def collect(self) -> Iterator[Metric]:
        errors = _gauge(
            "hashexchange_metrics_collect_errors", "1 for each part of the scrape that failed just now.", ["part"]
        )
        self.latest_seq: int | None = None
        for part, collect in (
            ("database", self._database),
            ("redis", self._redis),
            ("index", self._index),
        ):
            try:
                yield from collect()
                errors.add_metric([part], 0)
            except Exception as exc:  # noqa: BLE001 - a scrape reports what it can
                logger.warning("metrics: %s figures unavailable (%s)", part, type(exc).__name__)
                errors.add_metric([part], 1)
        yield errors

    def _database(self) -> list[Metric]:
        from exchange.selectors import operations_figures

        figures = operations_figures(now=timezone.now())
        self.latest_seq = figures.latest_seq
        last = _gauge("hashexchange_ledger_last_seq", "Sequence number of the newest event in the ledger.")
        last.add_metric([], figures.latest_seq)
        feed = _gauge(
            "hashexchange_feed_lag_seconds",
            "Age of the oldest event of a program that a receiving member has not been sent (feed or webhook); "
            "0 when up to date.",
            ["member", "program"],
        )
        for member, program, seconds in figures.feed_lag_seconds:
            feed.add_metric([member, program], seconds)
        webhook_lag = _gauge(
            "hashexchange_webhook_lag_events",
            "Events in the ledger after an active endpoint's cursor (an upper bound on what it still has to receive).",
            ["endpoint", "member"],
        )
        for endpoint, member, events in figures.webhook_lag_events:
            webhook_lag.add_metric([str(endpoint), member], events)
        failing = _gauge(
            "hashexchange_webhook_failing_seconds",
            "For an endpoint whose last attempt failed: seconds since its last success (or its creation).",
            ["endpoint", "member"],
        )
        for endpoint, member, seconds in figures.webhook_failing_seconds:
            failing.add_metric([str(endpoint), member], seconds)
        disabled = _gauge("hashexchange_webhook_endpoints_disabled", "Webhook endpoints that are disabled.")
        disabled.add_metric([], figures.webhooks_disabled)
        pending = _gauge("hashexchange_webhook_deliveries_pending", "Deliveries stored and not yet acknowledged.")
        pending.add_metric([], figures.deliveries_pending)
        overdue = _gauge(
            "hashexchange_obligations_overdue",
            "Withdrawal acknowledgements past their deadline and still owed.",
            ["member", "program"],
        )
        for member, program, count in figures.obligations_overdue:
            overdue.add_metric([member, program], count)
        return [last, feed, webhook_lag, failing, disabled, pending, overdue]

    def _redis(self) -> list[Metric]:
        client = redis_client()
        pipe = client.pipeline(transaction=False)
        for queue in CELERY_QUEUES:
            pipe.llen(queue)
            for priority in range(1, 10):
                pipe.llen(f"{queue}{_PRIORITY_SEPARATOR}{priority}")
        pipe.get(HEARTBEAT_KEY)
        answers = pipe.execute()
        heartbeat = answers.pop()
        depth = _gauge("hashexchange_celery_queue_length", "Tasks waiting in a Celery queue.", ["queue"])
        for index, queue in enumerate(CELERY_QUEUES):
            depth.add_metric([queue], sum(answers[index * 10 : index * 10 + 10]))
        age = _gauge(
            "hashexchange_beat_heartbeat_age_seconds",
            "Seconds since beat's heartbeat task last ran on a worker (beat and workers both alive); "
            "absent when there has been none for an hour.",
        )
        if heartbeat:
            age.add_metric([], round(time.time() - float(heartbeat), 1))
        return [depth, age]

    def _index(self) -> list[Metric]:
        """The index of the process that answers, as it is: a scrape neither loads nor refreshes
        it (a process that has not loaded its index yet would spend seconds doing so, holding a
        web worker, at every scrape). Its lag is the ledger's head less what the index has read."""
        from hashes.matching import registry

        status: dict[str, Any] = registry.status()
        size = _gauge("hashexchange_index_hashes", "Hashes in this process's matching index.", ["signal_type"])
        tail = _gauge(
            "hashexchange_index_tail_hashes",
            "Hashes in this process's index that are not yet in the shared snapshot (compaction brings it down).",
            ["signal_type"],
        )
        lag = _gauge(
            "hashexchange_index_lag_events", "Ledger events this process's index has not read.", ["signal_type"]
        )
        age = _gauge("hashexchange_index_snapshot_age_seconds", "Age of the mapped snapshot.", ["signal_type"])
        for name, figures in status.items():
            if not isinstance(figures, dict):
                continue
            size.add_metric([name], figures["size"])
            tail.add_metric([name], figures["tail_size"])
            head = self.latest_seq if self.latest_seq is not None else figures["seq"] + figures["lag_events"]
            lag.add_metric([name], max(0, head - figures["seq"]))
            if figures.get("snapshot_age_seconds") is not None:
                age.add_metric([name], figures["snapshot_age_seconds"])
        return [size, tail, lag, age]
