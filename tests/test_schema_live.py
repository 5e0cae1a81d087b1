"""Every operation, driven with real data over real HTTP, answers what the published schema says.

The fuzz test (tests/test_fuzz_api.py) mostly meets empty lists and refusals. Here the
database holds what a running exchange holds (keys, signed and withdrawn hashes, an
import, outcomes, a dispute, a webhook), every operation of `GET /api/v1/schema/` is
called against a live server, and each answer is validated by schemathesis (an OpenAPI
response validator from PyPI, not ours): status documented, content type, body schema.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis

from exchange import snapshots
from exchange.models import Dispute
from hashes import imports
from members.models import Member, Program
from tests.conftest import SETUP, Caller, Receiver, make_caller, make_member
from tests.signing import Signer, random_pdq

pytestmark = pytest.mark.slow


class Live:
    def __init__(self, base: str, schema: Any) -> None:
        self.base = base
        self.schema = schema
        self.seen: set[tuple[str, str]] = set()

    def call(self, caller: Caller | None, method: str, template: str, path: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {caller.token}"} if caller else {}
        response = requests.request(method, self.base + (path or template), headers=headers, timeout=30, **kwargs)
        operation = self.schema[template][method]
        operation.validate_response(response)  # raises with every mismatch listed
        self.seen.add((method, template))
        return response


def test_every_operation_answers_as_documented(
    live_server: Any,
    receiver: Receiver,
    signer_a: Signer,
    platform_b: Caller,
    program: Program,
    settings: Any,
    tmp_path: Path,
) -> None:
    settings.SNAPSHOT_DIR = tmp_path / "snapshots"
    raw = requests.get(f"{live_server.url}/api/v1/schema/?format=json", timeout=30).json()
    live = Live(live_server.url, schemathesis.openapi.from_dict(raw))
    auditor = make_caller(make_member("auditor", Member.Kind.AUDITOR))
    program.dispute_threshold = 1
    program.save(update_fields=["dispute_threshold"])
    # What the exchange holds: two signed hashes (one withdrawn later), an import.
    kept, gone = random_pdq(), random_pdq()
    imports.import_hashes(
        lines=[random_pdq()], program=program, source="operator list", actor=SETUP, default_signal_type="pdq"
    )
    b = platform_b

    single = live.call(signer_a.caller, "POST", "/api/v1/submissions", json=signer_a.submission(kept))
    assert single.status_code == 201
    batch = live.call(
        signer_a.caller, "POST", "/api/v1/submissions", json={"envelopes": [signer_a.submission(gone), {"bad": 1}]}
    )
    assert batch.status_code == 200 and batch.json()["rejected"] == 1
    again = live.call(signer_a.caller, "POST", "/api/v1/submissions", json=signer_a.submission(kept))
    assert again.status_code == 200
    assert live.call(signer_a.caller, "POST", "/api/v1/withdrawals", json=signer_a.withdrawal(gone)).ok

    feed = live.call(b, "GET", "/api/v1/feed", params={"after": 0}).json()
    kinds = {e["kind"] for e in feed["entries"]}
    assert {"key.registered", "hash.added", "hash.withdrawn"} <= kinds
    hash_id = next(e["hash"]["id"] for e in feed["entries"] if e.get("hash", {}).get("value") == kept)
    now = dt.datetime.now(dt.UTC).isoformat()
    outcome = {"hash_id": hash_id, "program": "take-it-down", "kind": "not_violating", "occurred_at": now}
    reported = live.call(b, "POST", "/api/v1/outcomes", json={"outcomes": [{**outcome, "client_ref": "r1"}, {}]})
    assert reported.json()["accepted"] == 1 and Dispute.objects.exists()
    feed = live.call(b, "GET", "/api/v1/feed", params={"after": 0}).json()
    assert any("feedback" in e for e in feed["entries"])

    snapshot_path = "/api/v1/programs/{slug}/snapshot"
    missing = live.call(b, "GET", snapshot_path, "/api/v1/programs/take-it-down/snapshot")
    assert missing.status_code == 404 and missing.json()["code"] == "snapshot_not_ready"
    snapshots.snapshot_build(program=program)
    built = live.call(b, "GET", snapshot_path, "/api/v1/programs/take-it-down/snapshot").json()
    data = live.call(b, "GET", "/api/v1/programs/{slug}/snapshot/{name}", built["url"])
    assert data.status_code == 200 and data.headers["Content-Type"] == "application/gzip"
    live.call(b, "GET", "/api/v1/hashes/{hash_id}", f"/api/v1/hashes/{hash_id}")
    live.call(b, "GET", "/api/v1/hashes/{hash_id}", "/api/v1/hashes/999999")
    live.call(b, "POST", "/api/v1/match", json={"queries": [{"signal_type": "pdq", "value": kept}]})
    live.call(b, "GET", "/api/v1/obligations")
    live.call(b, "GET", "/api/v1/me")
    live.call(None, "GET", "/api/v1/me")
    live.call(b, "GET", "/api/v1/programs")
    live.call(b, "GET", "/api/v1/enrollments")
    live.call(b, "GET", "/api/v1/enrollments/{program}", "/api/v1/enrollments/take-it-down")
    live.call(b, "POST", "/api/v1/enrollments", json={"program": "take-it-down", "state": "paused"})
    live.call(None, "GET", "/api/v1/server-key")

    key_id = signer_a.key.key_id
    live.call(signer_a.caller, "GET", "/api/v1/keys")
    live.call(signer_a.caller, "GET", "/api/v1/keys/{key_id}", f"/api/v1/keys/{key_id}")
    new_key = live.call(signer_a.caller, "POST", "/api/v1/keys", json={"public_key": "AAAA"})
    assert new_key.status_code == 400
    live.call(signer_a.caller, "POST", "/api/v1/keys/{key_id}/revoke", f"/api/v1/keys/{key_id}/revoke", json={})

    hook = live.call(b, "POST", "/api/v1/webhooks", json={"url": receiver.url}).json()
    one = f"/api/v1/webhooks/{hook['id']}"
    live.call(b, "GET", "/api/v1/webhooks")
    live.call(b, "GET", "/api/v1/webhooks/{id}", one)
    live.call(b, "PATCH", "/api/v1/webhooks/{id}", one, json={"description": "ours"})
    live.call(b, "POST", "/api/v1/webhooks/{id}/rotate-secret", f"{one}/rotate-secret", json={})
    live.call(b, "POST", "/api/v1/webhooks/{id}/test", f"{one}/test")
    live.call(b, "DELETE", "/api/v1/webhooks/{id}", one)

    live.call(auditor, "GET", "/api/v1/events", params={"after": 0})
    live.call(auditor, "GET", "/api/v1/reports/programs/{slug}", "/api/v1/reports/programs/take-it-down")
    live.call(auditor, "GET", "/api/v1/reports/members/{slug}", "/api/v1/reports/members/platform-b")
    live.call(b, "GET", "/api/v1/reports/members/{slug}", "/api/v1/reports/members/platform-a")
    live.call(None, "GET", "/api/v1/log/checkpoint")
    live.call(b, "GET", "/api/v1/log/proof/consistency", params={"first": 1})
    live.call(b, "GET", "/api/v1/log/proof/inclusion", params={"leaf_index": 0})
    live.call(b, "GET", "/api/v1/log/tile/{path}", "/api/v1/log/tile/0/000")
    live.call(auditor, "GET", "/api/v1/log/entries", params={"start": 0, "end": 2})

    documented = {
        (m.upper(), p)
        for p, item in raw["paths"].items()
        for m in item
        if m in {"get", "post", "patch", "delete", "put"}
    }
    assert documented - live.seen == set(), "operations not driven"
