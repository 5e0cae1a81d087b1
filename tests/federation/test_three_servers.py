"""Three clearinghouses on 127.0.0.1, each its own process and database: A -> B -> C (and C -> A).

B pulls A's feed and C pulls B's, with the operators' commands (`peer_add`,
`peer_sync`) or Celery beat; members call the servers' APIs over HTTP. The whole
cycle: a signed submission at A reaches a member of C byte for byte and verifies with
A's published key alone; A's withdrawal reaches C and C's member owes its
acknowledgement; an envelope B altered is refused by C; in a triangle each hash is
listed once on each server; a sync killed mid-way, run again, stores everything once.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hashexchange_client import dsse, keys, payloads

from tests.federation.servers import Server
from tests.signing import random_pdq

pytestmark = pytest.mark.django_db(transaction=True)

BINDING_TYPE = "application/vnd.hashexchange.key-binding+json"


@dataclass
class Alice:
    """A platform at A that signs with its own key."""

    server: Server
    token: str
    key: Any

    def submit(self, *values: str) -> list[dict[str, Any]]:
        envelopes = [
            dsse.sign_envelope(
                payloads.SUBMISSION_TYPE,
                payloads.submission_payload(program="ncii", signal_type="pdq", value=value),
                self.key,
            )
            for value in values
        ]
        status, body = self.server.api("POST", "/api/v1/submissions", self.token, {"envelopes": envelopes})
        assert status in (200, 201, 207), body
        return envelopes

    def withdraw(self, value: str) -> dict[str, Any]:
        envelope = dsse.sign_envelope(
            payloads.WITHDRAWAL_TYPE,
            payloads.withdrawal_payload(program="ncii", signal_type="pdq", value=value),
            self.key,
        )
        status, body = self.server.api("POST", "/api/v1/withdrawals", self.token, envelope)
        assert status in (200, 201), body
        return envelope


@dataclass
class Trio:
    a: Server
    b: Server
    c: Server
    alice: Alice
    carol: str  # a platform's key at C
    auditor: str  # an auditor's key at A

    def feed(self, server: Server, token: str) -> list[dict[str, Any]]:
        status, body = server.api("GET", "/api/v1/feed?after=0&limit=5000", token)
        assert status == 200, body
        return body["entries"]


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: Any) -> Iterator[Trio]:
    tmp: Path = tmp_path_factory.mktemp("federation")
    servers: list[Server] = []
    try:
        with django_db_blocker.unblock():
            for index, name in enumerate("abc"):
                servers.append(Server(name, tmp, redis_db=11 + index))
                servers[-1].manage("program_create", "ncii")
        a, b, c = servers
        alice_token, b_at_a, auditor = a.members(
            ("alice", "platform", "ncii"), ("b", "peer", "ncii"), ("auditor", "auditor", "")
        )
        alice_key = keys.generate_private_key()
        status, body = a.api(
            "POST",
            "/api/v1/keys",
            alice_token,
            {"public_key": keys.public_key_to_b64(alice_key), "algorithm": "ed25519"},
        )
        assert status == 201, body
        # B pulls from A with the key of its peer member at A; C pulls from B likewise.
        [c_at_b] = b.members(("c", "peer", "ncii"))
        [carol] = c.members(("carol", "platform", "ncii"))
        b.manage("peer_add", "a", "--url", a.url, "--key", b_at_a, "--program", "ncii")
        c.manage("peer_add", "b", "--url", b.url, "--key", c_at_b, "--program", "ncii")
        yield Trio(a, b, c, Alice(a, alice_token, alice_key), carol, auditor)
    finally:
        for server in servers:
            server.stop()


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sync(server: Server, peer: str) -> str:
    return server.manage("peer_sync", peer)


def test_a_signed_submission_at_a_reaches_c_byte_for_byte_and_verifies_with_a_key_alone(trio: Trio) -> None:
    value = random_pdq()
    [envelope] = trio.alice.submit(value)
    assert "1 imported" in sync(trio.b, "a")
    assert "1 imported" in sync(trio.c, "b")
    [entry] = [e for e in trio.feed(trio.c, trio.carol) if e["kind"] == "hash.added" and e["hash"]["value"] == value]
    assert entry["envelopes"] == [envelope]  # the strings alice signed and sent, unchanged
    # Carol knows A's published key and nothing else about A or B.
    _status, published = trio.a.api("GET", "/api/v1/server-key")
    a_key = keys.public_key_from_b64(published["public_key"])
    origin = entry["origin"]
    assert origin["server"] == keys.key_id(a_key) and origin["member"] == "alice"
    binding = json.loads(dsse.verify_envelope(origin["key_binding"], {keys.key_id(a_key): a_key}, BINDING_TYPE))
    assert binding["server"] == keys.key_id(a_key) and binding["member"] == "alice"
    alice_key = keys.public_key_from_b64(binding["public_key"])
    signed = json.loads(dsse.verify_envelope(entry["envelopes"][0], {binding["key_id"]: alice_key}))
    assert signed["value"] == value
    b_id = trio.b.api("GET", "/api/v1/server-key")[1]["key_id"]
    c_id = trio.c.api("GET", "/api/v1/server-key")[1]["key_id"]
    assert origin["path"] == [keys.key_id(a_key), b_id, c_id]
    # B and C listed it through a grouped event (docs/federation.md "Grouped relayed events").
    for server in (trio.b, trio.c):
        kinds = server.query("SELECT kind FROM exchange_event WHERE kind IN (?, ?)", "hash.added", "hashes.relayed")
        assert [kind for (kind,) in kinds] == ["hashes.relayed"]

    # The withdrawal alice signs at A reaches C's members, carrying that signed withdrawal.
    withdrawal = trio.alice.withdraw(value)
    assert "1 withdrawn" in sync(trio.b, "a")
    assert "1 withdrawn" in sync(trio.c, "b")
    [tomb] = [e for e in trio.feed(trio.c, trio.carol) if e["kind"] == "hash.withdrawn" and e["hash"]["value"] == value]
    assert tomb["envelopes"] == [withdrawal] and tomb["origin"]["server"] == keys.key_id(a_key)
    trio.c.shell("from exchange.outcomes import obligations_project; obligations_project()")
    status, owed = trio.c.api("GET", "/api/v1/obligations", trio.carol)
    assert status == 200
    rows = owed["results"] if isinstance(owed, dict) else owed
    assert [row["kind"] for row in rows if row["value"] == value] == ["deleted_after_withdrawal"], rows

    # What C's member did comes back to A, counted under A's peer member b.
    trio.a.shell("from exchange.outcomes import obligations_project; obligations_project()")
    removed = random_pdq()
    trio.alice.submit(removed)
    sync(trio.b, "a")
    sync(trio.c, "b")
    trio.feed(trio.c, trio.carol)
    status, body = trio.c.api(
        "POST",
        "/api/v1/outcomes",
        trio.carol,
        {
            "outcomes": [
                {
                    "signal_type": "pdq",
                    "value": v,
                    "program": "ncii",
                    "kind": kind,
                    "occurred_at": now(),
                    "client_ref": ref,
                }
                for v, kind, ref in ((value, "deleted_after_withdrawal", "ack-1"), (removed, "removed", "rm-1"))
            ]
        },
    )
    assert status == 200 and body["accepted"] == 2, body
    assert "2 outcome(s) sent back" in sync(trio.c, "b")
    assert "2 outcome(s) sent back" in sync(trio.b, "a")
    status, report = trio.a.api("GET", "/api/v1/reports/programs/ncii", trio.auditor)
    assert status == 200, report
    [row] = [r for r in report["members"] if r["member"] == "b"]
    assert row["outcomes"]["removed"] == 1 and row["outcomes"]["deleted_after_withdrawal"] == 1, row
    fulfilled = trio.a.query(
        "SELECT o.fulfilled_at FROM exchange_obligation o JOIN members_member m ON m.id = o.member_id "
        "JOIN hashes_hash h ON h.id = o.hash_id WHERE m.slug = 'b' AND h.value = ?",
        value,
    )
    assert len(fulfilled) == 1 and fulfilled[0][0] is not None


def test_an_envelope_b_altered_is_refused_by_c_and_the_rest_still_arrives(trio: Trio) -> None:
    tampered, intact = random_pdq(), random_pdq()
    trio.alice.submit(tampered, intact)
    assert "2 imported" in sync(trio.b, "a")
    rows = trio.b.query("SELECT id, envelope FROM hashes_submission WHERE source = 'peer:a'")
    for pk, stored in rows:
        envelope = stored if isinstance(stored, dict) else json.loads(stored)
        data = json.loads(base64.b64decode(envelope["payload"]))
        if data["value"] == tampered:
            data["labels"] = ["altered-at-b"]
            envelope["payload"] = base64.b64encode(json.dumps(data).encode()).decode()
            cast = "?::jsonb" if trio.b.postgres else "?"
            trio.b.query(f"UPDATE hashes_submission SET envelope = {cast} WHERE id = ?", json.dumps(envelope), pk)
    out = sync(trio.c, "b")
    assert "1 imported" in out and "bad_envelope 1" in out
    values = {e["hash"]["value"] for e in trio.feed(trio.c, trio.carol) if e["kind"] == "hash.added"}
    assert intact in values and tampered not in values
    assert trio.c.query("SELECT reason FROM federation_refusal") == [("bad_envelope",)]


def count_listings(server: Server, value: str) -> int:
    return server.query(
        "SELECT COUNT(*) FROM hashes_listing l JOIN hashes_hash h ON h.id = l.hash_id WHERE h.value = ?", value
    )[0][0]


def test_a_triangle_ends_with_one_listing_of_each_hash_on_each_server(trio: Trio) -> None:
    [a_at_c] = trio.c.members(("a", "peer", "ncii"))
    trio.a.manage("peer_add", "c", "--url", trio.c.url, "--key", a_at_c, "--program", "ncii")
    value = random_pdq()
    trio.alice.submit(value)
    assert "1 imported" in sync(trio.b, "a")
    assert "1 imported" in sync(trio.c, "b")
    assert ": 0 imported" in sync(trio.a, "c")  # back at its origin: refused as a loop
    assert ": 0 imported" in sync(trio.b, "a")  # and nothing comes round again
    for server in (trio.a, trio.b, trio.c):
        assert count_listings(server, value) == 1, server.name
        submissions = server.query(
            "SELECT COUNT(*) FROM hashes_submission s JOIN hashes_hash h ON h.id = s.hash_id WHERE h.value = ?", value
        )
        assert submissions == [(1,)], server.name
    assert ("loop",) in trio.a.query("SELECT DISTINCT reason FROM federation_refusal")


def test_a_sync_killed_mid_way_then_run_again_stores_everything_once(trio: Trio) -> None:
    values = [random_pdq() for _ in range(300)]
    trio.alice.submit(*values)
    before = trio.b.query("SELECT cursor FROM federation_peer WHERE slug = 'a'")[0][0]
    proc = trio.b.manage_popen("peer_sync", "a", env={"PEER_PAGE_SIZE": "3"})
    deadline = time.monotonic() + 120
    while trio.b.query("SELECT cursor FROM federation_peer WHERE slug = 'a'")[0][0] == before:
        assert proc.poll() is None, "the sync finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    held = trio.b.query("SELECT COUNT(*) FROM hashes_submission WHERE source = 'peer:a'")[0][0]
    # The claim of the killed process lapses; release it as an admin would wait for.
    trio.b.query("UPDATE federation_peer SET claimed_until = NULL WHERE slug = 'a'")
    out = sync(trio.b, "a")
    imported_after = int(out.split(" imported")[0].rsplit(" ", 1)[-1])
    total = trio.b.query("SELECT COUNT(*) FROM hashes_submission WHERE source = 'peer:a'")[0][0]
    assert imported_after == total - held and held < total
    for value in values:
        assert count_listings(trio.b, value) == 1


def test_beat_pulls_on_its_own(trio: Trio) -> None:
    trio.b.start_celery()
    trio.c.start_celery()
    value = random_pdq()
    trio.alice.submit(value)
    deadline = time.monotonic() + 90
    while not any(e["hash"]["value"] == value for e in trio.feed(trio.c, trio.carol) if e["kind"] == "hash.added"):
        assert time.monotonic() < deadline, "beat did not bring the hash from A to C"
        time.sleep(0.5)
