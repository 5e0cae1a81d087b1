"""Signed notes, checkpoints, cosignatures and offline proofs (hashexchange_client.note).

Anchored to the published example of Go's golang.org/x/mod/sumdb/note (the origin of the
signed-note format): its verifier key, its private key and the exact note it signs, which
Ed25519's determinism lets us reproduce byte for byte.
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hashexchange_client import merkle
from hashexchange_client.note import (
    COSIGNATURE_V1,
    ED25519,
    Checkpoint,
    Cosigner,
    NoteError,
    Signer,
    TlogProof,
    Verifier,
    cosignature_time,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_note,
    parse_tlog_proof,
    parse_vkey,
    sign_note,
)
from hypothesis import given
from hypothesis import strategies as st

GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = (
    GO_TEXT
    + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
# A witness's cosigning key (type 0x04) as published by a running witness.
COSIGNATURE_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"


def go_signer() -> Signer:
    raw = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert raw[0] == ED25519
    return Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(raw[1:]))


def test_the_go_example_note_is_reproduced_and_verifies() -> None:
    signer = go_signer()
    assert signer.verifier.vkey() == GO_VKEY
    assert sign_note(GO_TEXT, [signer]) == GO_NOTE
    note, signed = open_note(GO_NOTE, [parse_vkey(GO_VKEY)])
    assert note.text == GO_TEXT and signed == [parse_vkey(GO_VKEY)]


def test_an_altered_note_fails_and_unknown_keys_are_ignored() -> None:
    verifier = parse_vkey(GO_VKEY)
    with pytest.raises(NoteError, match="does not verify"):
        open_note(GO_NOTE.replace("answer", "Answer"), [verifier])
    stranger = Signer("Stranger", Ed25519PrivateKey.generate())
    both = sign_note(GO_TEXT, [go_signer(), stranger])
    assert open_note(both, [verifier])[1] == [verifier]
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(sign_note(GO_TEXT, [stranger]), [verifier])
    # Same name, another key: its signature is not ours, and is ignored, not an error.
    impostor = Signer("PeterNeumann", Ed25519PrivateKey.generate())
    assert open_note(sign_note(GO_TEXT, [impostor, go_signer()]), [verifier])[1] == [verifier]


def test_cosignature_vkeys_parse_with_their_own_type() -> None:
    verifier = parse_vkey(COSIGNATURE_VKEY)
    assert verifier.signature_type == COSIGNATURE_V1 and verifier.name == "remora.n621.de"
    assert verifier.vkey() == COSIGNATURE_VKEY


@pytest.mark.parametrize(
    "vkey",
    [GO_VKEY.replace("c74f20a3", "c74f20a4"), "PeterNeumann+c74f20a3", "Peter Neumann+c74f20a3+AAAA",
     GO_VKEY[:-4], "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
     "PeterNeumann+c74f20a3+ApRc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"],
)  # fmt: skip
def test_malformed_or_mismatched_vkeys_are_refused(vkey: str) -> None:
    with pytest.raises(NoteError):
        parse_vkey(vkey)


@pytest.mark.parametrize(
    "data",
    ["no signatures\n", "text\n\n", "text\n\n- PeterNeumann AAAAAAA=\n", "text\n\n— PeterNeumann AAAA\n",
     "text\n\n— Peter+Neumann AAAAAAA=\n", "te\x01xt\n\n— PeterNeumann AAAAAAA=\n", "text\n\n— PeterNeumann AAAAAAA=",
     "text\n\n— PeterNeumann AAAA AAA=\n", b"\xff\xfe\n\n\xe2\x80\x94 a AAAAAAA=\n"],
)  # fmt: skip
def test_malformed_notes_are_refused(data: str | bytes) -> None:
    with pytest.raises(NoteError):
        parse_note(data)


def test_a_checkpoint_reads_back_and_names_its_origin() -> None:
    key = Signer("example.org/log", Ed25519PrivateKey.generate())
    checkpoint = Checkpoint("example.org/log", 42, merkle.leaf_hash(b"x"))
    note = sign_note(checkpoint.text(), [key])
    opened, parsed, witnesses = open_checkpoint(note, key.verifier)
    assert opened == checkpoint and parsed.text == checkpoint.text() and witnesses == []
    other = Signer("example.org/other", key.private_key)
    with pytest.raises(NoteError, match="origin"):
        open_checkpoint(sign_note(checkpoint.text(), [other]), Verifier("example.org/other", key.verifier.public_key))


@pytest.mark.parametrize(
    "text",
    ["o\n01\n" + "A" * 43 + "=\n", "o\n-1\n" + "A" * 43 + "=\n", "o\n1\nAAAA\n", "o\n1\n", "\n1\n" + "A" * 43 + "=\n",
     "o\n1\n" + "A" * 43 + "=\n\n", "o\n1\n" + "A" * 43 + "=", "o\n١\n" + "A" * 43 + "=\n",
     "o\n9223372036854775808\n" + "A" * 43 + "=\n"],
)  # fmt: skip
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint(text)


def test_cosignatures_verify_with_their_time_and_fail_when_moved() -> None:
    log = Signer("example.org/log", Ed25519PrivateKey.generate())
    witness = Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    text = Checkpoint("example.org/log", 7, merkle.EMPTY_ROOT).text()
    note = sign_note(text, [log])
    line = witness.sign(text, timestamp=1_700_000_000).line()
    cosigned = note + line
    checkpoint, parsed, witnesses = open_checkpoint(cosigned, log.verifier, [witness.verifier])
    assert witnesses == [witness.verifier]
    assert cosignature_time(parsed.signatures[1]) == 1_700_000_000
    # The same cosignature on another checkpoint fails.
    other = sign_note(Checkpoint("example.org/log", 8, merkle.EMPTY_ROOT).text(), [log])
    with pytest.raises(NoteError, match="witness.example/w1"):
        open_checkpoint(other + line, log.verifier, [witness.verifier])
    # A cosignature is not a log signature: the same key as type 0x01 does not match its id.
    assert not Verifier(witness.name, witness.verifier.public_key, ED25519).matches(parsed.signatures[1])


@given(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.lists(st.binary(min_size=32, max_size=32), max_size=63),
    st.none() | st.binary(max_size=40),
)
def test_tlog_proofs_round_trip(index: int, proof: list[bytes], extra: bytes | None) -> None:
    checkpoint = "example.org/log\n1\n" + "A" * 43 + "=\n\n— example.org/log AAAAAAA=\n"
    text = str(TlogProof(index, tuple(proof), checkpoint, extra))
    assert parse_tlog_proof(text) == TlogProof(index, tuple(proof), checkpoint, extra)


@pytest.mark.parametrize(
    "text",
    ["c2sp.org/tlog-proof@v2\nindex 1\n\nx", "c2sp.org/tlog-proof@v1\nindex 01\n\nx", "c2sp.org/tlog-proof@v1\n\nx",
     "c2sp.org/tlog-proof@v1\nindex 1\nAAAA\n\nx", "c2sp.org/tlog-proof@v1\nindex 1"],
)  # fmt: skip
def test_malformed_tlog_proofs_are_refused(text: str) -> None:
    with pytest.raises(NoteError):
        parse_tlog_proof(text)
