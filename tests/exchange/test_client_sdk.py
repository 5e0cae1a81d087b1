"""The client package as an SDK, against a live server: feed with a cursor file, match,
outcomes, obligations and webhook management, through `hashexchange_client.api.Client`."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from hashexchange_client.api import ApiError, Client

from exchange.models import Outcome
from exchange.outcomes import obligations_project
from tests.conftest import Caller, Receiver
from tests.signing import Signer, random_pdq

pytestmark = pytest.mark.slow


def test_feed_match_outcomes_and_obligations(
    tmp_path: Path, live_server: Any, signer_a: Signer, platform_b: Caller
) -> None:
    values = [random_pdq() for _ in range(5)]
    signer_a.submit(*(signer_a.submission(v) for v in values))
    client = Client(live_server.url, platform_b.token)
    cursor = tmp_path / "feed.cursor"

    def added(pages: list[list[dict[str, Any]]]) -> list[str]:
        return [e["hash"]["value"] for page in pages for e in page if e["kind"] == "hash.added"]

    pages = client.follow_feed(cursor, limit=2)
    first = next(pages)
    assert not cursor.exists()  # handed over, not yet processed
    second = next(pages)  # asking for the next page confirms the first
    assert int(cursor.read_text()) == first[-1]["seq"]
    pages.close()  # a crash while processing the second page: it comes again
    rest = list(client.follow_feed(cursor, limit=2))
    assert rest[0] == second
    assert added([first, *rest]) == values
    position = int(cursor.read_text())
    assert list(client.follow_feed(cursor)) == [[]]  # nothing new: one empty page, the cursor stays
    assert int(cursor.read_text()) == position

    [result] = client.match([{"signal_type": "pdq", "value": values[0]}])
    [found] = [m for m in result["matches"] if m["distance"] == 0]
    now = dt.datetime.now(dt.UTC).isoformat()
    outcome = {"hash_id": found["hash_id"], "program": "take-it-down", "kind": "removed", "occurred_at": now}
    answer = client.report_outcomes([{**outcome, "client_ref": "sdk-1"}, {**outcome, "client_ref": "sdk-1"}])
    assert [r["status"] for r in answer["results"]] == ["accepted", "duplicate"]

    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(values[1]), format="json")
    obligations_project()  # what beat does every few seconds
    [owed] = client.obligations()
    assert (owed["value"], owed["kind"], owed["status"]) == (values[1], "deleted_after_withdrawal", "open")


def test_webhook_management(live_server: Any, receiver: Receiver, platform_b: Caller) -> None:
    client = Client(live_server.url, platform_b.token)
    created = client.create_webhook(receiver.url, events=["hash.added"], description="ours")
    assert created["secret"] and [w["id"] for w in client.webhooks()] == [created["id"]]
    assert client.update_webhook(created["id"], description="renamed")["description"] == "renamed"
    rotated = client.rotate_webhook_secret(created["id"])
    assert rotated["secret"] != created["secret"]
    tested = client.test_webhook(created["id"])
    assert receiver.received and tested
    client.delete_webhook(created["id"])
    assert client.webhooks() == []
    with pytest.raises(ApiError) as refused:
        client.create_webhook("not a url")
    assert refused.value.status == 400 and refused.value.detail


def test_the_receiving_example_runs_as_written(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    live_server: Any,
    receiver: Receiver,
    signer_a: Signer,
    platform_b: Caller,
) -> None:
    """docs/client.md's receiving example, with only its placeholders filled in."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "client.md").read_text()
    section = text.split("### Receiving: the feed, matching, outcomes, obligations, webhooks", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    for placeholder, value in (
        ("https://exchange.example.org", live_server.url),
        ("hxk_...", platform_b.token),
        ("https://platform.example.org/hooks/exchange", receiver.url),
    ):
        assert placeholder in code
        code = code.replace(placeholder, value)
    kept, withdrawn = random_pdq(), random_pdq()
    signer_a.submit(signer_a.submission(kept), signer_a.submission(withdrawn))
    Client(live_server.url, platform_b.token).feed_page(0)  # sent to platform-b before the withdrawal
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(withdrawn), format="json")
    obligations_project()
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(code, "docs/client.md", "exec"), scope)  # noqa: S102 - the documented example itself
    assert set(scope["blocklist"]) == {("pdq", kept)}
    assert (tmp_path / "feed.cursor").exists()
    kinds = set(Outcome.objects.filter(member=platform_b.member).values_list("kind", flat=True))
    assert kinds == {"removed", "deleted_after_withdrawal"}
    assert receiver.received
