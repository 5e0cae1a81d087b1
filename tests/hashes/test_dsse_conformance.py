"""DSSE as specified, checked both ways against securesystemslib's implementation.

Envelopes securesystemslib signs (its own key ids, which are not ours) are accepted from
the member whose key signed them; the envelopes we relay to members verify with
securesystemslib given only the submitter's public key.
"""

from __future__ import annotations

import copy

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hashexchange_client import keys, payloads
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from tests.conftest import Caller
from tests.signing import Signer, random_pdq


def sslib_envelope(private_key: Ed25519PrivateKey, payload: bytes, *, keyid: str | None = None) -> dict:
    public = SSlibKey.from_crypto(private_key.public_key(), keyid=keyid)
    envelope = Envelope(payload=payload, payload_type=payloads.SUBMISSION_TYPE, signatures={})
    envelope.sign(CryptoSigner(private_key, public))
    return envelope.to_dict()


def test_an_envelope_signed_by_securesystemslib_is_accepted(signer_a: Signer) -> None:
    value = random_pdq()
    payload = payloads.submission_payload(program="take-it-down", signal_type="pdq", value=value)
    envelope = sslib_envelope(signer_a.private_key, payload)  # securesystemslib's own key id
    assert envelope["signatures"][0]["keyid"] != keys.key_id(signer_a.private_key)
    response = signer_a.submit(envelope)
    assert response.status_code == 200, response.json()
    assert response.json()["results"][0]["status"] == "accepted"


def test_an_envelope_without_keyid_or_padding_in_url_safe_base64_is_accepted_and_relayed_as_sent(
    signer_a: Signer, platform_b: Caller
) -> None:
    value = random_pdq()
    payload = payloads.submission_payload(program="take-it-down", signal_type="pdq", value=value)
    envelope = sslib_envelope(signer_a.private_key, payload)
    envelope["payload"] = envelope["payload"].replace("+", "-").replace("/", "_").rstrip("=")
    envelope["signatures"] = [{"sig": envelope["signatures"][0]["sig"].rstrip("=")}]
    response = signer_a.submit(envelope)
    assert response.json()["accepted"] == 1, response.json()
    entries = platform_b.client.get("/api/v1/feed?after=0").json()["entries"]
    [relayed] = [e["envelopes"][0] for e in entries if e.get("hash", {}).get("value") == value]
    assert relayed == envelope  # the spelling the submitter chose travels unchanged


def test_what_we_relay_verifies_with_securesystemslib_given_the_submitters_key(
    signer_a: Signer, platform_b: Caller
) -> None:
    value = random_pdq()
    assert signer_a.submit(signer_a.submission(value)).json()["accepted"] == 1
    entries = platform_b.client.get("/api/v1/feed?after=0").json()["entries"]
    [relayed] = [e["envelopes"][0] for e in entries if e.get("hash", {}).get("value") == value]
    key = SSlibKey.from_crypto(signer_a.private_key.public_key(), keyid=keys.key_id(signer_a.private_key))
    verified = Envelope.from_dict(copy.deepcopy(relayed)).verify([key], threshold=1)  # from_dict consumes
    assert list(verified) == [key.keyid]
    tampered = dict(copy.deepcopy(relayed), payload=relayed["payload"][:-4] + "AAAA")
    try:
        Envelope.from_dict(tampered).verify([key], threshold=1)
    except Exception as exc:  # noqa: BLE001 - securesystemslib raises its own VerificationError
        assert "threshold" in str(exc).lower() or "verif" in str(exc).lower()
    else:
        raise AssertionError("a tampered envelope verified")
