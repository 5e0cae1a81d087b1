"""docs/federation.md's worked example, recomputed: every key id, payload and envelope it shows
must appear in it byte for byte, and the origin it shows must pass the checks a server makes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import pytest
from hashexchange_client import dsse, keys, payloads

from core.problems import Problem
from exchange import provenance
from hashes import envelopes

DOC = Path(__file__).resolve().parents[2] / "docs" / "federation.md"


def key(seed: bytes):  # noqa: ANN201 - an Ed25519 private key
    return keys.private_key_from_seed(hashlib.sha256(seed).digest())


SERVER_A = key(b"hashexchange example server key")
SERVER_B = key(b"hashexchange example server B")
SERVER_C = key(b"hashexchange example server C")
MEMBER = key(b"hashexchange example member key")


def example() -> dict[str, object]:
    payload = payloads.submission_payload(
        program="ncii",
        signal_type="pdq",
        value="f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
        created_at=dt.datetime(2026, 11, 21, 6, 0, 0, tzinfo=dt.UTC),
        nonce="0123456789abcdef0123456789abcdef",
    )
    binding_payload = provenance.binding_payload(
        server=keys.key_id(SERVER_A),
        member="acme",
        key_id=keys.key_id(MEMBER),
        public_key_b64=keys.public_key_to_b64(MEMBER),
        valid_from="2026-11-01T00:00:00Z",
    )
    return {
        "payload": payload,
        "envelope": dsse.sign_envelope(payloads.SUBMISSION_TYPE, payload, MEMBER),
        "binding_payload": binding_payload,
        "binding": dsse.sign_envelope(provenance.KEY_BINDING_TYPE, binding_payload, SERVER_A),
    }


def json_blocks(text: str) -> list[object]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def test_the_worked_example_is_shown_byte_for_byte() -> None:
    text = DOC.read_text()
    made = example()
    for shown in (
        keys.key_id(SERVER_A),
        keys.public_key_to_b64(SERVER_A),
        keys.key_id(SERVER_B),
        keys.key_id(SERVER_C),
        made["payload"].decode(),  # type: ignore[union-attr]
        made["binding_payload"].decode(),  # type: ignore[union-attr]
        json.dumps(made["envelope"], indent=2),
        json.dumps(made["binding"], indent=2),
    ):
        assert shown in text, shown


def test_the_origin_shown_passes_a_servers_checks_and_opens_the_envelope() -> None:
    made = example()
    blocks = json_blocks(DOC.read_text())
    [origin] = [b for b in blocks if isinstance(b, dict) and "path" in b]
    origin = {**origin, "key_binding": made["binding"]}
    assert origin["path"] == [keys.key_id(SERVER_A), keys.key_id(SERVER_B), keys.key_id(SERVER_C)]
    checked = provenance.check_origin(origin)
    assert (checked.member, checked.key_id) == ("acme", keys.key_id(MEMBER))
    payload = provenance.open_signed(made["envelope"], checked, envelopes.SUBMISSION_TYPE)
    assert payload == made["payload"]
    # Signed by any other key than A's, the same binding is refused.
    forged = {
        **origin,
        "key_binding": dsse.sign_envelope(provenance.KEY_BINDING_TYPE, made["binding_payload"], SERVER_B),
    }  # type: ignore[arg-type]
    with pytest.raises(Problem) as refused:
        provenance.check_origin(forged)
    assert refused.value.code == "binding_not_attested"


def test_this_server_attests_the_same_bytes(settings) -> None:  # noqa: ANN001 - pytest-django's settings
    import base64

    settings.SERVER_SIGNING_KEY = base64.b64encode(hashlib.sha256(b"hashexchange example server key").digest()).decode()
    made = provenance.attest(
        member="acme",
        key_id=keys.key_id(MEMBER),
        public_key_b64=keys.public_key_to_b64(MEMBER),
        valid_from=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    )
    assert made == example()["binding"]
