"""The client's audit log checks that need no server (hashexchange_client.auditlog)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hashexchange_client import merkle, note
from hashexchange_client.auditlog import (
    LogVerificationError,
    Policy,
    State,
    check_extends,
    check_leaf,
    load_state,
    parse_log_key,
    report_digest,
    report_text,
    save_state,
    split_bundle,
    verify_report,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

LEAF = (
    b'{"actor":{"id":"member_create","type":"operator"},"at":"2026-11-21T06:00:00.123456Z",'
    b'"data":{"kind":"platform","slug":"acme","status":"active"},"kind":"member.created","program":"","seq":1,'
    b'"subject":{"id":"acme","type":"member"},"v":1}'
)


def test_the_ledger_docs_worked_example_is_a_canonical_leaf() -> None:
    assert check_leaf(LEAF, 0)["kind"] == "member.created"
    assert merkle.leaf_hash(LEAF).hex() == "7af40282b2200f349084ba7840afb5ef80da7843e62eb4f4d940586b1edf4679"


@pytest.mark.parametrize(
    ("data", "index", "reason"),
    [
        (LEAF, 1, "holds event seq 1, not 2"),
        (LEAF.replace(b'"v":1', b'"v":2'), 0, "version 1"),
        (LEAF.replace(b",", b", ", 1), 0, "canonical"),
        (LEAF.replace(b'"program":""', b'"program":"","program":""'), 0, "not an event"),
        (LEAF.replace(b'"slug":"acme"', b'"slug":1.5'), 0, "canonical"),
        (b"\xff", 0, "not an event"),
        (b"[]", 0, "version 1"),
        (LEAF.replace(b'"acme"', b'"\\ud800"', 1), 0, "not an event"),
        (LEAF.replace(b'"v":1', b'"v":1,"w":12345678901234567890'), 0, "not an event"),
        (LEAF.replace(b'"v":1', b'"v":1,"w":' + b"[" * 40 + b"]" * 40), 0, "not an event"),
        (LEAF.replace(b'"v":1', b'"v":1,"w":NaN'), 0, "not an event"),
    ],
)
def test_a_leaf_that_is_not_a_canonical_event_is_refused(data: bytes, index: int, reason: str) -> None:
    with pytest.raises(LogVerificationError, match=reason):
        check_leaf(data, index)


def test_entry_bundles_split_and_truncated_ones_are_refused() -> None:
    assert split_bundle(b"\x00\x01a\x00\x00\x00\x02bc") == [b"a", b"", b"bc"]
    for broken in (b"\x00", b"\x00\x05abc"):
        with pytest.raises(LogVerificationError):
            split_bundle(broken)


def test_log_keys_are_vkeys_or_a_key_with_its_origin() -> None:
    signer = note.Signer("example.org/log", Ed25519PrivateKey.generate())
    assert parse_log_key(signer.verifier.vkey()) == signer.verifier
    raw = base64.b64encode(signer.verifier.public_key).decode()
    assert parse_log_key(raw, "example.org/log") == signer.verifier
    with pytest.raises(ValueError, match="origin"):
        parse_log_key(raw)
    cosigner = note.Cosigner("w", Ed25519PrivateKey.generate())
    with pytest.raises(ValueError, match="0x01"):
        parse_log_key(cosigner.verifier.vkey())


def test_state_files_round_trip_and_belong_to_one_log(tmp_path: Path) -> None:
    compact = merkle.CompactRange()
    for i in range(5):
        compact.append(merkle.leaf_hash(bytes([i])))
    state = State("example.org/log", 5, compact.root(), "note", compact)
    path = tmp_path / "s" / "state.json"
    save_state(path, state)
    loaded = load_state(path, "example.org/log")
    assert loaded.to_json() == state.to_json()
    with pytest.raises(ValueError, match="another|not"):
        load_state(path, "example.org/other")
    assert load_state(tmp_path / "none.json", "x").size == 0


def test_a_checkpoint_that_does_not_extend_the_state_is_a_fork() -> None:
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(9)]
    state = State("o", 5, merkle.root_of(hashes[:5]))
    good = note.Checkpoint("o", 9, merkle.root_of(hashes))
    check_extends(state, good, merkle.consistency_proof(5, 9, merkle.memory_source(hashes)))
    other = [*hashes[:4], merkle.leaf_hash(b"x"), *hashes[5:]]
    forked = note.Checkpoint("o", 9, merkle.root_of(other))
    with pytest.raises(LogVerificationError, match="fork"):
        check_extends(state, forked, merkle.consistency_proof(5, 9, merkle.memory_source(other)))


def test_a_report_verifies_only_as_signed() -> None:
    log = note.Signer("example.org/log", Ed25519PrivateKey.generate())
    head = note.Checkpoint("example.org/log", 3, merkle.leaf_hash(b"r"))
    report = {"program": "ncii", "members": [{"member": "acme", "rate": 0.25}]}
    report["log"] = {"checkpoint": note.sign_note(head.text(), [log])}
    report["attestation"] = note.sign_note(report_text(report_digest(report), head), [log])
    report = json.loads(json.dumps(report))  # as saved and read back
    policy = Policy(log.verifier)
    assert verify_report(report, policy)[0] == head
    report["members"][0]["rate"] = 0.26
    with pytest.raises(LogVerificationError, match="changed"):
        verify_report(report, policy)
    with pytest.raises(LogVerificationError, match="no checkpoint"):
        verify_report({"program": "ncii"}, policy)


# Audits: any change to the served log is caught, however it is read ----------------------


def _event_leaf(seq: int, kind: str = "t.e") -> bytes:
    return (
        '{"actor":{"id":"t","type":"system"},"at":"2026-11-21T06:00:00.000000Z","data":{"n":' + str(seq) + '},'
        '"kind":"' + kind + '","program":"","seq":' + str(seq)
        + ',"subject":{"id":"' + str(seq) + '","type":"t"},"v":1}'
    ).encode()  # fmt: skip


def _served(leaves: list[bytes]) -> tuple[object, object]:
    """read_entries and read_tile over `leaves` as a server would serve them."""

    def entries(start: int, end: int) -> bytes:
        return b"".join(len(leaf).to_bytes(2, "big") + leaf for leaf in leaves[start:end])

    def tile(path: str) -> bytes:
        wanted = merkle.parse_tile_path(path)
        start = wanted.index * merkle.TILE_WIDTH
        return entries(start, start + wanted.width)

    return entries, tile


def _audit(leaves: list[bytes], checkpoint: note.Checkpoint, how: str, resume: int, page: int) -> None:
    from hashexchange_client.auditlog import audit

    entries, tile = _served(leaves)
    state = State(checkpoint.origin)
    if resume:  # a state audited up to `resume` before (from the original log)
        state.audited = merkle.CompactRange()
        for index in range(resume):
            state.audited.append(merkle.leaf_hash(_event_leaf(index + 1)))
    audit(
        tile,  # type: ignore[arg-type]
        checkpoint,
        state,
        read_entries=entries if how == "entries" else None,  # type: ignore[arg-type]
        page=page,
        read_ahead=1 if how == "entries" else 0,
    )


@given(
    size=st.integers(1, 700),
    change=st.sampled_from(["none", "modified", "removed", "inserted", "reordered", "byte", "respaced", "moved"]),
    how=st.sampled_from(["entries", "tiles"]),
    data=st.data(),
)
@settings(max_examples=150, deadline=None)
def test_an_audit_catches_any_modified_removed_inserted_or_reordered_event(
    size: int, change: str, how: str, data: st.DataObject
) -> None:
    from tests.rfc6962 import Rfc6962

    leaves = [_event_leaf(seq) for seq in range(1, size + 1)]
    checkpoint = note.Checkpoint("example.org/log", size, Rfc6962.mth(leaves))  # the reference's root
    served = list(leaves)
    at = data.draw(st.integers(0, size - 1), label="at")
    if change == "modified":
        served[at] = _event_leaf(at + 1, kind="t.forged")
    elif change == "removed":
        del served[at]
    elif change == "inserted":
        served.insert(at, _event_leaf(at + 1, kind="t.inserted"))
    elif change == "reordered":
        assume(size > 1)
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != at), label="other")
        served[at], served[other] = served[other], served[at]
    elif change == "respaced":  # the same event, not its canonical encoding
        served[at] = served[at].replace(b":", b": ", 1)
    elif change == "moved":  # bytes moved across the boundary of two leaves
        assume(at + 1 < size)
        served[at], served[at + 1] = served[at][:-1], served[at][-1:] + served[at + 1]
    elif change == "byte":
        position = data.draw(st.integers(0, len(served[at]) - 1), label="byte")
        served[at] = served[at][:position] + bytes([served[at][position] ^ 1]) + served[at][position + 1 :]
    # Resume from a state that audited a prefix before the change: the rest must still be caught.
    resume = data.draw(st.integers(0, at), label="resume")
    page = data.draw(st.sampled_from([256, 512, 16_384]), label="page")
    if change == "none":
        _audit(served, checkpoint, how, resume, page)
        return
    with pytest.raises(LogVerificationError):
        _audit(served, checkpoint, how, resume, page)


@given(st.integers(0, 5000), st.integers(0, 4))
def test_appending_a_subtree_is_appending_its_leaves(size: int, height: int) -> None:
    count = 1 << height
    size -= size % count
    leaves = [bytes([i % 256, i // 256]) * 16 for i in range(size + count)]
    one_by_one, by_subtree = merkle.CompactRange(), merkle.CompactRange()
    for leaf in leaves:
        one_by_one.append(leaf)
    for leaf in leaves[:size]:
        by_subtree.append(leaf)
    by_subtree.append_subtree(merkle.perfect_root(leaves[size:]), count)
    assert (by_subtree.size, by_subtree.hashes) == (one_by_one.size, one_by_one.hashes)
    with pytest.raises(ValueError):
        merkle.CompactRange(1, [leaves[0]]).append_subtree(merkle.perfect_root(leaves[:2]), 2)
