"""Program snapshots: the feed compacted at a seq, signed, then the feed from there."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from hashexchange_client import dsse, keys, snapshot
from hashexchange_client.api import Client
from hashexchange_client.cli import main

from core.ledger import Actor
from exchange import crypto, snapshots
from hashes.imports import import_hashes
from hashes.models import Hash
from hashes.services.floods import anomaly_decide, anomaly_quarantine
from hashes.services.withdrawals import hash_set_status
from members import services
from members.models import Program
from tests.conftest import SETUP, Caller, make_caller, make_member, start_worker, stop_process, wait_for
from tests.signing import Signer, random_pdq

ADMIN = Actor("admin", "tester")


@pytest.fixture(autouse=True)
def _snapshot_dir(tmp_path: Path, settings: Any) -> None:
    settings.SNAPSHOT_DIR = tmp_path / "snapshots"


def read_feed(caller: Caller, after: int = 0) -> tuple[list[dict[str, Any]], int]:
    entries = []
    while True:
        page = caller.client.get(f"/api/v1/feed?after={after}&limit=7").json()
        entries += page["entries"]
        after = page["next"]
        if not page["has_more"]:
            return entries, after


def apply(entries: list[dict[str, Any]], state: dict[tuple[str, int], str] | None = None) -> dict[tuple[str, int], str]:
    """What a member holds after applying entries in order."""
    state = dict(state or {})
    for entry in entries:
        if entry["kind"] in ("hash.added", "hash.restored"):
            state[(entry["program"], entry["hash"]["id"])] = entry["hash"]["value"]
        elif entry["kind"] in ("hash.withdrawn", "hash.quarantined"):
            state.pop((entry["program"], entry["hash"]["id"]), None)
    return state


def fetch_snapshot(caller: Caller, slug: str = "take-it-down") -> tuple[snapshot.Manifest, list[dict[str, Any]]]:
    """Fetch and check a snapshot as a client does."""
    answer = caller.client.get(f"/api/v1/programs/{slug}/snapshot")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    manifest = snapshot.verify_manifest(body["manifest"], crypto.server_public_key_b64())
    assert (manifest.seq, manifest.sha256, manifest.entries) == (body["seq"], body["sha256"], body["entries"])
    data = caller.client.get(body["url"])
    assert data.status_code == 200 and data["Content-Type"] == "application/gzip"
    path = Path(settings.SNAPSHOT_DIR) / "downloaded.gz"
    path.write_bytes(b"".join(data.streaming_content))
    snapshot.check_file(path, manifest)
    return manifest, list(snapshot.read_entries(path, manifest, checker=snapshot.EntryChecker()))


def test_snapshot_then_feed_is_the_whole_feed_also_with_a_withdrawal_in_between(
    signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    values = [random_pdq() for _ in range(12)]
    signer_a.submit(*(signer_a.submission(v) for v in values[:8]))
    import_hashes(lines=[f"pdq,{random_pdq()}" for _ in range(5)], program=program, source="other", actor=SETUP)
    # Before the snapshot: a withdrawal, an admin withdrawal, a quarantine (and one restored),
    # and a hash withdrawn then submitted again.
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(values[0]), format="json")
    hash_set_status(hash_=Hash.objects.get(value=values[1]), status="withdrawn", reason="admin", actor=ADMIN)
    quarantined = anomaly_quarantine(
        hash_id=Hash.objects.get(value=values[2]).pk,
        program=program,
        day=dt.date.today(),
        matches=100,
        baseline=1.0,
        limit=10.0,
    )
    restored = anomaly_quarantine(
        hash_id=Hash.objects.get(value=values[3]).pk,
        program=program,
        day=dt.date.today(),
        matches=100,
        baseline=1.0,
        limit=10.0,
    )
    anomaly_decide(anomaly=restored, decision="restored", reason="fine", actor=ADMIN)
    assert quarantined is not None
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(values[4]), format="json")
    signer_a.submit(signer_a.submission(values[4]))

    built = snapshots.snapshot_build(program=program)
    # After the snapshot: new hashes, and the withdrawal of one that is in the snapshot.
    signer_a.submit(*(signer_a.submission(v) for v in values[8:]))
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(values[5]), format="json")

    manifest, entries = fetch_snapshot(platform_b)
    assert manifest.seq == built.seq
    listed = {e["hash"]["value"] for e in entries}
    assert values[5] in listed and values[3] in listed and values[4] in listed
    assert not listed & {values[0], values[1], values[2]}
    assert len(entries) == len(listed) == 5 + 5  # one entry per hash: 5 submitted, 5 imported
    assert all(e["kind"] == "hash.added" and e["seq"] <= manifest.seq for e in entries)

    whole, end = read_feed(platform_b)
    continued, continued_end = read_feed(platform_b, after=manifest.seq)
    assert apply(continued, apply(entries)) == apply(whole)
    assert continued_end == end
    # Byte for byte the feed's entries (feedback aside, which the feed adds as it is reported).
    by_seq = {(e["seq"], e["hash"]["id"]): e for e in whole if e["kind"] == "hash.added"}
    for entry in entries:
        assert json.dumps(entry, sort_keys=True) == json.dumps(
            by_seq[(entry["seq"], entry["hash"]["id"])], sort_keys=True
        )


def test_only_members_that_receive_the_program_get_its_snapshot(
    signer_a: Signer, platform_b: Caller, program: Program, other_program: Program
) -> None:
    signer_a.submit(signer_a.submission())
    snapshots.snapshot_build(program=program)
    outsider = make_caller(make_member("outsider", "platform", other_program))
    built = platform_b.client.get("/api/v1/programs/take-it-down/snapshot").json()
    for path in ("/api/v1/programs/take-it-down/snapshot", built["url"]):
        refused = outsider.client.get(path)
        assert refused.status_code == 403 and refused.json()["code"] == "not_receiving"
    assert outsider.client.get("/api/v1/programs/nope/snapshot").status_code == 404
    # A program whose slug extends another's: its file is not reachable through the other.
    longer = services.program_create(slug="take-it-down-adults", name="Adults", actor=SETUP)
    hidden = snapshots.snapshot_build(program=longer)
    reached = platform_b.client.get(f"/api/v1/programs/take-it-down/snapshot/{hidden.name}")
    assert reached.status_code == 404 and reached.json()["code"] == "snapshot_gone"
    # Opted out: refused like the feed stops sending it the program.
    services.enrollment_set(member=platform_b.member, program=program, state="opted_out", actor=SETUP)
    assert platform_b.client.get("/api/v1/programs/take-it-down/snapshot").status_code == 403
    # Suspended: nothing at all.
    services.enrollment_set(member=platform_b.member, program=program, state="opted_in", actor=SETUP)
    assert platform_b.client.get("/api/v1/programs/take-it-down/snapshot").status_code == 200
    services.member_set_status(member=platform_b.member, status="suspended", actor=SETUP)
    assert platform_b.client.get("/api/v1/programs/take-it-down/snapshot").status_code in (401, 403)


def test_the_file_is_cacheable_and_a_client_refuses_a_tampered_one(
    signer_a: Signer, platform_b: Caller, program: Program, tmp_path: Path
) -> None:
    signer_a.submit(*(signer_a.submission() for _ in range(3)))
    built = snapshots.snapshot_build(program=program)
    answer = platform_b.client.get("/api/v1/programs/take-it-down/snapshot")
    assert answer["ETag"] == f'"{built.sha256}"'
    again = platform_b.client.get("/api/v1/programs/take-it-down/snapshot", HTTP_IF_NONE_MATCH=answer["ETag"])
    assert again.status_code == 304
    data = platform_b.client.get(answer.json()["url"])
    assert "immutable" in data["Cache-Control"]
    manifest = snapshot.verify_manifest(answer.json()["manifest"], crypto.server_public_key_b64())
    lines = gzip.decompress(b"".join(data.streaming_content)).splitlines()

    # 1. A byte changed in the file: its digest is not the signed one.
    altered = tmp_path / "altered.gz"
    altered.write_bytes(gzip.compress(b"\n".join([lines[0].replace(b'"seq":', b'"seq": '), *lines[1:]]) + b"\n"))
    with pytest.raises(snapshot.SnapshotError, match="SHA-256"):
        snapshot.check_file(altered, manifest)

    # 2. A manifest signed by another key than the server's.
    other = keys.generate_private_key()
    forged = dsse.sign_envelope(snapshot.SNAPSHOT_TYPE, base64.b64decode(manifest_payload(answer)), other)
    with pytest.raises(snapshot.SnapshotError, match="not signed"):
        snapshot.verify_manifest(forged, crypto.server_public_key_b64())

    # 3. Whoever holds the server key (a compromised cache builder) swaps one envelope for a
    #    validly shaped one signed by another key: the entry's own check refuses it.
    first = json.loads(lines[0])
    first["envelopes"] = [signer_a.raw(b'{"anything": true}')]
    first["envelopes"][0] = dsse.sign_envelope(
        first["envelopes"][0]["payloadType"], base64.b64decode(first["envelopes"][0]["payload"]), other
    )
    swapped = gzip.compress(b"\n".join([json.dumps(first).encode(), *lines[1:]]) + b"\n")
    path = tmp_path / "swapped.gz"
    path.write_bytes(swapped)
    import hashlib

    payload = json.loads(base64.b64decode(manifest_payload(answer)))
    payload.update(sha256=hashlib.sha256(swapped).hexdigest(), bytes=len(swapped))
    resigned = dsse.sign_envelope(snapshot.SNAPSHOT_TYPE, json.dumps(payload).encode(), crypto.server_private_key())
    manifest = snapshot.verify_manifest(resigned, crypto.server_public_key_b64())
    snapshot.check_file(path, manifest)
    with pytest.raises(snapshot.SnapshotError, match="does not verify"):
        list(snapshot.read_entries(path, manifest, checker=snapshot.EntryChecker()))


def manifest_payload(answer: Any) -> str:
    return answer.json()["manifest"]["payload"]


def test_a_pruned_snapshot_is_gone_and_the_newest_is_served(
    signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    signer_a.submit(signer_a.submission())
    first = snapshots.snapshot_build(program=program)
    signer_a.submit(signer_a.submission())
    snapshots.snapshot_build(program=program)
    signer_a.submit(signer_a.submission())
    newest = snapshots.snapshot_build(program=program)
    body = platform_b.client.get("/api/v1/programs/take-it-down/snapshot").json()
    assert (body["seq"], body["entries"]) == (newest.seq, 3)
    gone = platform_b.client.get(f"/api/v1/programs/take-it-down/snapshot/{first.name}")
    assert gone.status_code == 404 and gone.json()["code"] == "snapshot_gone"


@pytest.mark.django_db(transaction=True)
def test_a_worker_builds_the_snapshot_a_reader_asked_for_and_the_cli_bootstraps_from_it(
    live_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    program = services.program_create(slug="take-it-down", name="Take It Down", actor=SETUP)
    from tests.signing import make_signer

    signer = make_signer(make_caller(make_member("platform-a", "platform", program)))
    reader = make_caller(make_member("platform-b", "platform", program))
    values = [random_pdq() for _ in range(6)]
    signer.submit(*(signer.submission(v) for v in values))
    settings.SNAPSHOT_DIR = tmp_path / "shared-snapshots"
    worker = start_worker(extra_env={"SNAPSHOT_DIR": str(settings.SNAPSHOT_DIR)}, log_name="snapshot-worker")
    try:
        first = reader.client.get("/api/v1/programs/take-it-down/snapshot")
        assert first.status_code == 404 and first.json()["code"] == "snapshot_not_ready"
        wait_for(
            lambda: reader.client.get("/api/v1/programs/take-it-down/snapshot").status_code == 200,
            timeout=60,
            what="the worker's snapshot",
        )
    finally:
        stop_process(worker)
    # A withdrawal after the snapshot: the CLI's output, applied in order, has it gone.
    signer.client.post("/api/v1/withdrawals", signer.withdrawal(values[0]), format="json")
    out, cursor = tmp_path / "entries.ndjson", tmp_path / "cursor"
    monkeypatch.setenv("HASHEXCHANGE_API_KEY", reader.token)
    code = main(
        [
            "feed",
            "bootstrap",
            "--server",
            live_server.url,
            "--out",
            str(out),
            "--cursor-file",
            str(cursor),
            "--no-progress",
        ]
    )
    assert code == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    held = apply(written)
    assert sorted(held.values()) == sorted(values[1:])
    whole, end = read_feed(reader)
    assert held == apply(whole) and int(cursor.read_text()) == end
    # The snapshot part came from the snapshot, not from the feed.
    body = Client(live_server.url, reader.token).snapshot("take-it-down")
    assert body is not None and sum(1 for e in written if e["seq"] <= body["seq"]) == 6


def test_the_cli_refuses_a_snapshot_signed_by_another_server(
    live_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signer_a: Signer,
    platform_b: Caller,
    program: Program,
) -> None:
    signer_a.submit(signer_a.submission())
    snapshots.snapshot_build(program=program)
    monkeypatch.setenv("HASHEXCHANGE_API_KEY", platform_b.token)
    out = tmp_path / "entries.ndjson"
    pinned = keys.public_key_to_b64(keys.generate_private_key())
    code = main(
        [
            "feed",
            "bootstrap",
            "--server",
            live_server.url,
            "--out",
            str(out),
            "--cursor-file",
            str(tmp_path / "c"),
            "--server-key",
            pinned,
            "--no-progress",
        ]
    )
    assert code == 1 and not out.exists() and not (tmp_path / "entries.ndjson.partial").exists()


def test_a_snapshot_is_rebuilt_when_enough_came_after_it_or_it_is_old(
    signer_a: Signer, program: Program, other_program: Program, settings: Any
) -> None:
    settings.SNAPSHOT_MIN_NEW_EVENTS, settings.SNAPSHOT_MAX_AGE_SECONDS = 3, 3600
    assert set(snapshots.snapshots_due()) == {program.pk, other_program.pk}  # none built yet
    signer_a.submit(signer_a.submission())
    built = snapshots.snapshot_build(program=program)
    snapshots.snapshot_build(program=other_program)
    assert snapshots.snapshots_due() == []
    signer_a.submit(signer_a.submission(), signer_a.submission())  # two new events: not yet
    assert snapshots.snapshots_due() == []
    later = dt.datetime.fromisoformat(built.created_at.replace("Z", "+00:00")) + dt.timedelta(hours=2)
    assert snapshots.snapshot_is_stale(program=program, snapshot=built, now=later)  # old, and the log grew
    other = snapshots.snapshot_latest(program=other_program)
    assert not snapshots.snapshot_is_stale(program=other_program, snapshot=other, now=later)  # nothing new
    signer_a.submit(signer_a.submission())
    assert snapshots.snapshots_due() == [program.pk]
