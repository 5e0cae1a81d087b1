"""A member that retries a batch of outcomes while the first try is still running gets `duplicate` items.

Clients retry on timeouts, and a retry can arrive while the first request is still in
flight. Both then find no stored report for their `client_ref`s; the one that stores
second must answer its items as duplicates of the first's, not fail the whole request.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from core.ledger import Event
from exchange import outcomes
from exchange.models import Outcome
from tests.conftest import Caller
from tests.signing import Signer, random_pdq


def items(hash_id: int, *refs: str, kind: str = "removed") -> list[dict[str, Any]]:
    return [
        {
            "hash_id": hash_id,
            "program": "take-it-down",
            "kind": kind,
            "occurred_at": "2020-01-01T00:00:00Z",
            "count": 1,
            "client_ref": ref,
        }
        for ref in refs
    ]


def post_at_once(monkeypatch: pytest.MonkeyPatch, token: str, *batches: list[dict[str, Any]]) -> list[Any]:
    """Post each batch from its own thread and connection, all of them past the check for
    stored client_refs before any of them stores (a barrier in front of the store)."""
    barrier = threading.Barrier(len(batches))
    store = outcomes._store

    def store_together(*args: Any, **kwargs: Any) -> None:
        barrier.wait(timeout=20)
        store(*args, **kwargs)

    monkeypatch.setattr(outcomes, "_store", store_together)
    answers: list[Any] = [None] * len(batches)

    def post(index: int) -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
            answers[index] = client.post("/api/v1/outcomes", {"outcomes": batches[index]}, format="json")
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(not thread.is_alive() for thread in threads)
    return answers


@pytest.fixture
def sent_hash(signer_a: Signer, platform_b: Caller) -> int:
    """A hash platform A submitted and platform B was sent."""
    hash_id = signer_a.submit(signer_a.submission(random_pdq())).json()["results"][0]["hash_id"]
    assert platform_b.client.get("/api/v1/feed?after=0").status_code == 200
    return hash_id


@pytest.mark.django_db(transaction=True)
def test_a_batch_retried_while_the_first_try_runs_is_stored_once_and_answered_as_duplicates(
    monkeypatch: pytest.MonkeyPatch, platform_b: Caller, sent_hash: int
) -> None:
    batch = items(sent_hash, "retry-1", "retry-2")
    answers = post_at_once(monkeypatch, platform_b.token, batch, batch)
    assert [a.status_code for a in answers] == [200, 200], [a.content for a in answers]
    statuses = sorted(tuple(r["status"] for r in a.json()["results"]) for a in answers)
    assert statuses == [("accepted", "accepted"), ("duplicate", "duplicate")]
    stored = dict(Outcome.objects.values_list("client_ref", "pk"))
    assert len(stored) == 2
    for answer in answers:
        assert {r["outcome_id"] for r in answer.json()["results"]} == set(stored.values())
    assert Event.objects.filter(kind="outcome.reported").count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_concurrent_different_report_under_the_same_client_ref_is_refused_alone(
    monkeypatch: pytest.MonkeyPatch, platform_b: Caller, sent_hash: int
) -> None:
    """Same client_ref, different report: the one stored second refuses that item (409 in the
    item) and keeps the rest of its batch."""
    first = items(sent_hash, "clash", kind="removed")
    second = items(sent_hash, "clash", kind="matched") + items(sent_hash, "own")
    answers = post_at_once(monkeypatch, platform_b.token, first, second)
    assert [a.status_code for a in answers] == [200, 200], [a.content for a in answers]
    stored = {row.client_ref: row.kind for row in Outcome.objects.all()}
    assert stored["own"] == "removed"
    [(_, clash_kind)] = [(ref, kind) for ref, kind in stored.items() if ref == "clash"]
    loser = answers[1] if clash_kind == "removed" else answers[0]
    [refused] = [r for r in loser.json()["results"] if r["status"] == "rejected"]
    assert refused["error"]["code"] == "client_ref_conflict"
    assert Outcome.objects.count() == 2
