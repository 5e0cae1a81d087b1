"""The exchange's own Prometheus counters and histograms, counted where things happen.

Defined here, at the bottom of the layers, so that every app can count without importing
upwards. prometheus-client makes them multi-process safe by itself: with
PROMETHEUS_MULTIPROC_DIR set (gunicorn's workers, Celery's pool), each process writes its
values to files there and /metrics adds them up (config/metrics.py).

Labels are bounded and never carry a hash value, an API key, a secret or a case
reference: event kinds, result and reason codes, signal types. Figures that the database
already knows (lags, overdue acknowledgements, queue depth) are read at scrape time in
config/metrics.py instead of counted here.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Histogram

EVENTS_RECORDED = Counter(
    "hashexchange_events_recorded",
    "Events committed to the ledger, by kind.",
    ["kind"],
)
SUBMISSIONS = Counter(
    "hashexchange_submissions",
    "Submitted envelopes (signed or through a facade) by result (accepted, duplicate, rejected) and "
    "reason (the rejection's code; empty otherwise).",
    ["result", "reason"],
)
WEBHOOK_DELIVERIES = Counter(
    "hashexchange_webhook_deliveries",
    "Webhook POSTs by result: delivered (2xx), failed (will be retried), gone (410, endpoint disabled).",
    ["result"],
)
MATCH_QUERIES = Counter(
    "hashexchange_match_queries",
    "Hashes asked about through POST /api/v1/match, and whether each matched.",
    ["matched"],
)
MATCH_SECONDS = Histogram(
    "hashexchange_match_request_seconds",
    "Time to answer one POST /api/v1/match request (all its queries).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def events_recorded(kinds: Iterable[str]) -> None:
    """Count committed events (the ledger calls this after commit, so rollbacks count nothing)."""
    for kind in kinds:
        EVENTS_RECORDED.labels(kind=kind).inc()


def submission_results(results: Iterable[tuple[str, str]]) -> None:
    """Count (result, reason) pairs of a submission batch."""
    for result, reason in results:
        SUBMISSIONS.labels(result=result, reason=reason or "").inc()


def webhook_delivery(result: str) -> None:
    WEBHOOK_DELIVERIES.labels(result=result).inc()
