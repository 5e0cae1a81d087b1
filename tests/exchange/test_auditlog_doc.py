"""docs/auditlog.md's worked example, recomputed: every hash, key, note, proof and command
output it shows must appear in it byte for byte."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hashexchange_client import cli, keys, merkle, note

from core.ledger import leaf_bytes

DOC = Path(__file__).resolve().parents[2] / "docs" / "auditlog.md"
ORIGIN = "exchange.example.org/api/v1/log"


def at(second: int) -> dt.datetime:
    return dt.datetime(2026, 11, 21, 6, 0, second, 123456, tzinfo=dt.UTC)


EVENTS = [
    dict(seq=1, kind="member.created", program="", subject_type="member", subject_id="acme", actor_type="operator",
         actor_id="member_create", data={"slug": "acme", "kind": "platform", "status": "active"}, created_at=at(0)),
    dict(seq=2, kind="enrollment.changed", program="ncii", subject_type="enrollment", subject_id="acme:ncii",
         actor_type="operator", actor_id="member_create",
         data={"member": "acme", "from": None, "to": "opted_in", "reason": ""}, created_at=at(0)),
    dict(seq=3, kind="credential.issued", program="", subject_type="credential", subject_id="hxk_3f2a9c1e",
         actor_type="operator", actor_id="credential_issue",
         data={"member": "acme", "prefix": "hxk_3f2a9c1e", "scopes": ["read", "submit"], "expires_at": None},
         created_at=at(1)),
]  # fmt: skip


def example() -> dict[str, object]:
    leaves = [leaf_bytes(**fields) for fields in EVENTS]
    hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
    key = keys.private_key_from_seed(hashlib.sha256(b"hashexchange example log key").digest())
    signer = note.Signer(ORIGIN, key)
    root = merkle.root_of(hashes)
    checkpoint = note.sign_note(note.Checkpoint(ORIGIN, 3, root).text(), [signer])
    proof = merkle.inclusion_proof(1, 3, merkle.memory_source(hashes))
    return {
        "leaves": leaves,
        "hashes": hashes,
        "root": root,
        "first_two": merkle.node_hash(hashes[0], hashes[1]),
        "vkey": signer.verifier.vkey(),
        "checkpoint": checkpoint,
        "proof": proof,
        "tlog_proof": str(note.TlogProof(1, tuple(proof), checkpoint, leaves[1])),
        "consistency": merkle.consistency_proof(2, 3, merkle.memory_source(hashes)),
    }


def test_the_worked_example_in_docs_auditlog_is_true(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = DOC.read_text()
    ex = example()
    for leaf, leaf_hash in zip(ex["leaves"], ex["hashes"], strict=True):
        assert f"{leaf.decode()}\n{leaf_hash.hex()}\n" in doc
    assert ex["leaves"][0].decode() in (DOC.parent / "ledger.md").read_text()
    first_two, root = ex["first_two"].hex(), ex["root"].hex()
    assert f"{ex['hashes'][0].hex()}{ex['hashes'][1].hex()} | xxd -r -p" in doc
    assert f"# {first_two}: the root of the first two events" in doc
    assert f"{first_two}{ex['hashes'][2].hex()} | xxd -r -p" in doc
    assert f"# {root}: the root of all three" in doc
    assert root == merkle.node_hash(ex["first_two"], ex["hashes"][2]).hex()
    assert f"\n{ex['vkey']}\n" in doc
    assert f"```\n{ex['checkpoint']}```" in doc
    assert f"```\n{ex['tlog_proof']}```" in doc
    assert ex["proof"] == [ex["hashes"][0], ex["hashes"][2]]
    assert ex["consistency"] == [ex["hashes"][2]]
    merkle.verify_consistency(2, 3, ex["first_two"], ex["root"], ex["consistency"])
    # The command and its output, as shown.
    command = re.search(r"\$ (hashexchange log verify --proof example.tlog-proof [^\n]+)\n((?:[^\n]+\n){2})", doc)
    assert command, "the doc shows the command and its two lines of output"
    (tmp_path / "example.tlog-proof").write_text(ex["tlog_proof"])
    args = command.group(1).split()[1:]
    args[args.index("example.tlog-proof")] = str(tmp_path / "example.tlog-proof")
    assert cli.main(args) == 0
    assert capsys.readouterr().out == command.group(2)


@pytest.mark.skipif(shutil.which("xxd") is None or shutil.which("sha256sum") is None, reason="needs xxd and sha256sum")
def test_the_shell_lines_of_the_worked_example_give_what_they_say() -> None:
    ex = example()
    for left, right, expected in (
        (ex["hashes"][0], ex["hashes"][1], ex["first_two"]),
        (ex["first_two"], ex["hashes"][2], ex["root"]),
    ):
        line = f"{{ printf '\\x01'; printf '%s' {left.hex()}{right.hex()} | xxd -r -p; }} | sha256sum"
        out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, check=True).stdout
        assert out.split()[0] == expected.hex()
    leaf = ex["leaves"][1].decode()
    out = subprocess.run(
        ["bash", "-c", f"printf '\\x00%s' '{leaf}' | sha256sum"], capture_output=True, text=True, check=True
    ).stdout
    assert out.split()[0] == ex["hashes"][1].hex()
    assert base64.b64encode(ex["root"]).decode() in DOC.read_text()
