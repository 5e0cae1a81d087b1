"""`hashexchange log verify|prove|audit` and `hashexchange report verify` against a real
server (pytest-django's live server), as a member or an auditor would run them: with the
log key only, and exit codes a script acts on (0 verified, 1 failed, 2 usage, 3 unchecked)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import transaction
from hashexchange_client import cli, note

from core.ledger import Actor, Event, NewEvent, record_many
from exchange import auditlog
from tests.conftest import Caller
from tests.exchange.rewrite import rewrite
from tests.signing import make_signer


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def grow(count: int = 300) -> None:
    with transaction.atomic():
        record_many([NewEvent("t.e", "t", str(i)) for i in range(count)], actor=Actor.system("t"))
    auditlog.checkpoint_create()


@pytest.fixture
def env(live_server: Any, platform_a: Caller, auditor: Caller, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    signer = make_signer(platform_a)
    hash_id = signer.submit(signer.submission()).json()["results"][0]["hash_id"]
    auditlog.checkpoint_create()
    monkeypatch.setenv("HASHEXCHANGE_SERVER", live_server.url)
    monkeypatch.setenv("HASHEXCHANGE_API_KEY", platform_a.token)
    monkeypatch.setenv("HASHEXCHANGE_LOG_KEY", platform_a.client.get("/api/v1/server-key").json()["log_vkey"])
    return {
        "url": live_server.url,
        "member": platform_a,
        "auditor": auditor,
        "seq": Event.objects.get(kind="hash.added", subject_id=str(hash_id)).seq,
    }


@pytest.mark.django_db(transaction=True)
def test_log_verify_follows_the_log_and_catches_a_fork_or_a_rollback(
    env: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    code, out, err = run(capsys, "log", "verify", "--state", str(state))
    assert code == 0 and "verified checkpoint" in out, err
    first = json.loads(state.read_text())
    grow()
    code, out, _ = run(capsys, "log", "verify", "--state", str(state))
    assert code == 0 and f"{first['size'] + 300} events" in out
    # The server shows us another log than the one we verified before.
    forked = json.loads(state.read_text())
    forked["root_hash"] = base64.b64encode(b"\x01" * 32).decode()
    state.write_text(json.dumps(forked))
    code, _, err = run(capsys, "log", "verify", "--state", str(state))
    assert code == 1 and "VERIFICATION FAILED" in err and "fork" in err
    # ... or a smaller one.
    shrunk = {**first, "size": first["size"] + 10_000}
    state.write_text(json.dumps(shrunk))
    code, _, err = run(capsys, "log", "verify", "--state", str(state))
    assert code == 1 and "shrank" in err


@pytest.mark.django_db(transaction=True)
def test_log_prove_saves_a_proof_that_verifies_offline(
    env: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    proof = tmp_path / "event.tlog-proof"
    code, _, err = run(capsys, "log", "prove", "--seq", str(env["seq"]), "--out", str(proof))
    assert code == 0 and f"event {env['seq']} (hash.added)" in err
    monkeypatch.delenv("HASHEXCHANGE_SERVER")  # offline from here on
    code, out, _ = run(capsys, "log", "verify", "--proof", str(proof))
    assert code == 0
    assert json.loads(out.splitlines()[1])["seq"] == env["seq"]
    # Another event put in the proof's place does not verify.
    text = proof.read_text()
    parsed = note.parse_tlog_proof(text)
    other = Event.objects.get(seq=1).leaf_data()
    proof.write_text(str(note.TlogProof(env["seq"] - 1, parsed.proof, parsed.checkpoint, other)))
    code, _, err = run(capsys, "log", "verify", "--proof", str(proof))
    assert code == 1 and "VERIFICATION FAILED" in err
    # A proof checked with another log key fails.
    proof.write_text(text)
    other_key = note.Signer(auditlog.origin(), Ed25519PrivateKey.generate()).verifier.vkey()
    code, _, err = run(capsys, "log", "verify", "--proof", str(proof), "--log-key", other_key)
    assert code == 1 and "no signature by a trusted key" in err


@pytest.mark.django_db(transaction=True)
def test_log_prove_of_an_event_not_in_the_members_feed_cannot_be_checked(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    private = Event.objects.filter(kind="credential.issued").exclude(subject_id=env["member"].credential.prefix).first()
    code, _, err = run(capsys, "log", "prove", "--seq", str(private.seq))
    assert code == 3 and "HTTP 404" in err


@pytest.mark.django_db(transaction=True)
def test_log_audit_recomputes_the_root_resumes_and_finds_a_rewritten_event(
    env: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASHEXCHANGE_API_KEY", env["auditor"].token)
    grow(600)
    state, events = tmp_path / "audit.json", tmp_path / "events.jsonl"
    code, out, _ = run(capsys, "log", "audit", "--state", str(state), "--events", str(events), "--no-progress")
    size = Event.objects.count()
    assert code == 0 and f"audited events 1..{size}" in out and "t.e 600" in out
    assert [json.loads(line)["seq"] for line in events.read_text().splitlines()] == list(range(1, size + 1))
    grow(5)  # the first audit downloaded ahead (the default), this one a bundle at a time
    code, out, _ = run(capsys, "log", "audit", "--state", str(state), "--no-progress", "--read-ahead", "0")
    assert code == 0 and f"audited events {size + 1}..{size + 5}" in out
    # An event's data rewritten in the database (its stored leaf hash left alone).
    rewrite(("UPDATE exchange_event SET subject_id = %s WHERE seq = 3", ["forged"]), table="exchange_event")
    code, _, err = run(capsys, "log", "audit", "--no-progress")  # a fresh audit from the first event
    assert code == 1 and "do not hash to the checkpoint's root" in err


@pytest.mark.django_db(transaction=True)
def test_report_verify_checks_the_signature_the_checkpoint_and_today_s_log(
    env: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = env["auditor"].client.get("/api/v1/reports/programs/take-it-down").json()
    assert report["log"]["size"] == Event.objects.count()
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    code, out, _ = run(capsys, "report", "verify", str(path))
    assert code == 0 and "verified report" in out
    grow()
    code, out, _ = run(capsys, "report", "verify", str(path), "--online")
    assert code == 0 and "extends the report's checkpoint" in out
    changed = json.loads(path.read_text())
    changed["program"] = "ncii"
    path.write_text(json.dumps(changed))
    code, _, err = run(capsys, "report", "verify", str(path))
    assert code == 1 and "the report was changed" in err


@pytest.mark.django_db(transaction=True)
def test_exit_codes_for_usage_unreachable_and_witness_policy(
    env: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    witness = note.Cosigner("witness.test/w1", Ed25519PrivateKey.generate()).verifier.vkey()
    code, _, err = run(capsys, "log", "verify", "--witness", witness)
    assert code == 1 and "the policy asks for 1" in err
    assert run(capsys, "log", "verify", "--witness", witness, "--quorum", "0")[0] == 0
    assert run(capsys, "log", "verify", "--quorum", "1")[0] == 2
    monkeypatch.delenv("HASHEXCHANGE_LOG_KEY")
    assert run(capsys, "log", "verify")[0] == 2
    code, _, err = run(capsys, "log", "verify", "--log-key", "not a key")
    assert code == 2
    monkeypatch.setenv("HASHEXCHANGE_SERVER", "http://127.0.0.1:9")
    code, _, err = run(
        capsys, "log", "verify", "--log-key", env["member"].client.get("/api/v1/server-key").json()["log_vkey"]
    )
    assert code == 3 and "could not check" in err
