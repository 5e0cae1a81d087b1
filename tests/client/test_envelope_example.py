"""The worked example in docs/envelopes.md, recomputed byte for byte.

Other implementations (the server, peers, members' own verifiers) are checked against
that example, so the document must never drift from what the client produces.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hashexchange_client import dsse, keys, payloads

DOC = Path(__file__).resolve().parents[2] / "docs" / "envelopes.md"

SEED = bytes(range(32))
PUBLIC_KEY_B64 = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
KEY_ID = "56475aa75463474c0285df5dbf2bcab73da651358839e9b77481b2eab107708c"
SIGNATURE_B64 = "2fOitaBIq3ilBmIeLBXe4ItQpe32R+motTmHYTJEU0m7V4UBHCYmwgHmhr/QLNxXaoV2wgqFhJO7zxdixb27Dg=="


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def field(doc: str, name: str) -> str:
    """The value of a ``- **Name**: `value``` line of the example."""
    match = re.search(rf"^- \*\*{re.escape(name)}\*\*: `([^`]+)`", doc, re.MULTILINE)
    assert match, f"docs/envelopes.md has no example field {name!r}"
    return match.group(1)


def block(doc: str, marker: str) -> str:
    """The fenced block right after ``<!-- example:marker -->``, without the fences."""
    match = re.search(rf"<!-- example:{re.escape(marker)} -->\n```[a-z]*\n(.*?)\n```", doc, re.DOTALL)
    assert match, f"docs/envelopes.md has no example block {marker!r}"
    return match.group(1)


def example_payload() -> bytes:
    return payloads.submission_payload(
        program="ncii",
        signal_type="pdq",
        value="fa56b62d6a3db6b4912d5a5a7fd2d925b6856483c92625d24b684921642eb66d",
        labels=["example"],
        quality=100,
        created_at=dt.datetime(2026, 11, 21, 6, 0, tzinfo=dt.UTC),
        nonce="00112233445566778899aabbccddeeff",
    )


def test_doc_holds_the_constants(doc: str) -> None:
    assert field(doc, "Seed (hex)") == SEED.hex()
    assert field(doc, "Public key (base64)") == PUBLIC_KEY_B64
    assert field(doc, "Key id") == KEY_ID
    assert field(doc, "Signature (base64)") == SIGNATURE_B64
    assert field(doc, "Payload type") == payloads.SUBMISSION_TYPE


def test_key_and_key_id(doc: str) -> None:
    key = keys.private_key_from_seed(bytes.fromhex(field(doc, "Seed (hex)")))
    assert keys.public_key_to_b64(key) == field(doc, "Public key (base64)")
    assert keys.key_id(key) == field(doc, "Key id")
    raw = base64.b64decode(PUBLIC_KEY_B64)
    assert hashlib.sha256(raw).hexdigest() == KEY_ID


def test_payload_and_pae(doc: str) -> None:
    payload = example_payload()
    assert payload == block(doc, "payload").encode("utf-8")
    assert field(doc, "Payload length") == str(len(payload))
    pae = dsse.pae(payloads.SUBMISSION_TYPE, payload)
    assert pae == block(doc, "pae").encode("utf-8")
    # The formula exactly as the wire format states it, written out independently.
    type_bytes = payloads.SUBMISSION_TYPE.encode()
    assert pae == (
        b"DSSEv1"
        + b" "
        + str(len(type_bytes)).encode()
        + b" "
        + type_bytes
        + b" "
        + str(len(payload)).encode()
        + b" "
        + payload
    )


def test_signature_and_envelope(doc: str) -> None:
    key = keys.private_key_from_seed(SEED)
    envelope = dsse.sign_envelope(payloads.SUBMISSION_TYPE, example_payload(), key)
    assert envelope["signatures"][0]["sig"] == field(doc, "Signature (base64)")
    assert envelope == json.loads(block(doc, "envelope"))
    # The signature verifies with nothing but the published public key.
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(PUBLIC_KEY_B64))
    public.verify(
        base64.b64decode(SIGNATURE_B64),
        dsse.pae(payloads.SUBMISSION_TYPE, example_payload()),
    )
    assert dsse.verify_envelope(envelope, dsse.keyring([public]), payloads.SUBMISSION_TYPE) == example_payload()


def test_standalone_verifier_in_doc_accepts_example_and_refuses_tampering(doc: str) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(block(doc, "standalone-verifier"), "envelopes.md", "exec"), namespace)  # noqa: S102
    verify = namespace["verify"]
    envelope = json.loads(block(doc, "envelope"))
    fields = verify(envelope, PUBLIC_KEY_B64, payloads.SUBMISSION_TYPE)
    assert fields["value"].startswith("fa56b62d")

    tampered = dict(envelope, payload=base64.b64encode(example_payload().replace(b"ncii", b"ncij")).decode())
    with pytest.raises(ValueError, match="bad signature"):
        verify(tampered, PUBLIC_KEY_B64, payloads.SUBMISSION_TYPE)
    with pytest.raises(ValueError, match="wrong payload type"):
        verify(envelope, PUBLIC_KEY_B64, payloads.WITHDRAWAL_TYPE)


def test_cli_example_command_in_doc_names_the_example_key(doc: str) -> None:
    assert f"--public-key {PUBLIC_KEY_B64}" in doc
