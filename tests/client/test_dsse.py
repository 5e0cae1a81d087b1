"""DSSE signing and verification: properties, and every way an envelope can be wrong."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hashexchange_client import dsse, keys
from hashexchange_client.dsse import (
    BadSignatureError,
    MalformedEnvelopeError,
    PayloadTypeError,
    UnknownKeyError,
)
from hypothesis import given
from hypothesis import strategies as st

KEY = keys.private_key_from_seed(bytes(range(32)))
OTHER = keys.private_key_from_seed(bytes(range(1, 33)))
RING = dsse.keyring([KEY.public_key()])
TYPE = "application/vnd.hashexchange.submission+json"

payload_types = st.text(min_size=1, max_size=60)
payload_bytes = st.binary(max_size=512)


def flip(data: bytes, bit: int) -> bytes:
    index, offset = divmod(bit, 8)
    return data[:index] + bytes([data[index] ^ (1 << offset)]) + data[index + 1 :]


@given(payload_types, payload_bytes)
def test_round_trip(payload_type: str, payload: bytes) -> None:
    envelope = dsse.sign_envelope(payload_type, payload, KEY)
    assert dsse.verify_envelope(envelope, RING, payload_type) == payload
    assert dsse.verify_envelope(envelope, RING) == payload


@given(payload_bytes.filter(bool), st.data())
def test_any_flipped_payload_bit_fails(payload: bytes, data: st.DataObject) -> None:
    envelope = dsse.sign_envelope(TYPE, payload, KEY)
    bit = data.draw(st.integers(0, len(payload) * 8 - 1))
    envelope["payload"] = base64.b64encode(flip(payload, bit)).decode()
    with pytest.raises(BadSignatureError):
        dsse.verify_envelope(envelope, RING, TYPE)


@given(payload_bytes, st.integers(0, 511))
def test_any_flipped_signature_bit_fails(payload: bytes, bit: int) -> None:
    envelope = dsse.sign_envelope(TYPE, payload, KEY)
    sig = base64.b64decode(envelope["signatures"][0]["sig"])
    envelope["signatures"][0]["sig"] = base64.b64encode(flip(sig, bit)).decode()
    with pytest.raises(BadSignatureError):
        dsse.verify_envelope(envelope, RING, TYPE)


@given(payload_types, payload_bytes, payload_types, payload_bytes)
def test_pae_is_injective(type_a: str, payload_a: bytes, type_b: str, payload_b: bytes) -> None:
    if (type_a, payload_a) != (type_b, payload_b):
        assert dsse.pae(type_a, payload_a) != dsse.pae(type_b, payload_b)


@given(st.text(min_size=2, max_size=40))
def test_pae_distinguishes_every_split_of_the_same_bytes(text: str) -> None:
    # Naive concatenation could not tell "ab" + "c" from "a" + "bc"; PAE must.
    encodings = {dsse.pae(text[:i], text[i:].encode()) for i in range(1, len(text))}
    assert len(encodings) == len(text) - 1


def test_signature_over_another_type_does_not_transfer() -> None:
    envelope = dsse.sign_envelope(TYPE, b"{}", KEY)
    envelope["payloadType"] = "application/vnd.hashexchange.withdrawal+json"
    with pytest.raises(BadSignatureError):
        dsse.verify_envelope(envelope, RING)


def test_wrong_expected_type() -> None:
    envelope = dsse.sign_envelope(TYPE, b"{}", KEY)
    with pytest.raises(PayloadTypeError, match="withdrawal"):
        dsse.verify_envelope(envelope, RING, "application/vnd.hashexchange.withdrawal+json")


def test_unknown_key() -> None:
    envelope = dsse.sign_envelope(TYPE, b"{}", OTHER)
    with pytest.raises(UnknownKeyError, match=keys.key_id(OTHER)):
        dsse.verify_envelope(envelope, RING)


def test_known_key_id_with_other_keys_signature_fails() -> None:
    envelope = dsse.sign_envelope(TYPE, b"{}", OTHER)
    envelope["signatures"][0]["keyid"] = keys.key_id(KEY)
    with pytest.raises(BadSignatureError):
        dsse.verify_envelope(envelope, RING)


def test_one_good_signature_among_unknown_ones_is_enough() -> None:
    envelope = dsse.sign_envelope(TYPE, b"{}", KEY)
    stranger = dsse.sign_envelope(TYPE, b"{}", OTHER)["signatures"][0]
    envelope["signatures"].insert(0, stranger)
    assert dsse.verify_envelope(envelope, RING) == b"{}"
    verified = dsse.open_envelope(envelope, RING)
    assert verified.key_id == keys.key_id(KEY)
    assert verified.payload_type == TYPE


def test_keyring_accepts_raw_bytes() -> None:
    raw = keys.public_key_bytes(KEY)
    envelope = dsse.sign_envelope(TYPE, b"x", KEY)
    assert dsse.verify_envelope(envelope, {keys.key_id(raw): raw}) == b"x"
    assert dsse.verify_envelope(envelope, dsse.keyring([raw])) == b"x"


def _good() -> dict[str, Any]:
    return dsse.sign_envelope(TYPE, b'{"a":1}', KEY)


def _set(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    envelope = copy.deepcopy(_good())
    target: Any = envelope
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return envelope


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("payloadType",), _DELETE, "payloadType"),
        (("payloadType",), 7, "payloadType"),
        (("payloadType",), "", "payloadType"),
        (("payload",), _DELETE, "payload"),
        (("payload",), "eyJhIjoxfQ=", "padding"),  # padding that does not fill the last group
        (("payload",), "eyJh-_oxfQ+/", "base64"),  # the two alphabets mixed
        (("payload",), "eyJhIjoxfQ==\n", "base64"),  # trailing newline
        (("payload",), "eyJh IjoxfQ==", "base64"),  # white space
        (("payload",), "eyJhIjoxfR==", "canonical"),  # non-zero padding bits
        (("payload",), "e!JhIjoxfQ==", "base64"),  # garbage
        (("payload",), ["eyJhIjoxfQ=="], "base64"),
        (("signatures",), _DELETE, "signatures"),
        (("signatures",), [], "signatures"),
        (("signatures",), {"keyid": "x", "sig": "y"}, "signatures"),
        (("signatures",), [{"keyid": "k", "sig": "x"}] * 17, "more than 16 signatures"),
        (("signatures", 0), "sig", r"signatures\[0\]"),
        (("signatures", 0, "keyid"), 5, "keyid"),
        (("signatures", 0, "sig"), _DELETE, "sig"),
        (("signatures", 0, "sig"), base64.b64encode(bytes(63)).decode(), "64 bytes"),
        (("signatures", 0, "sig"), base64.b64encode(bytes(65)).decode(), "64 bytes"),
    ],
)
def test_malformed_envelopes(path: tuple[Any, ...], value: Any, message: str) -> None:
    with pytest.raises(MalformedEnvelopeError, match=message):
        dsse.verify_envelope(_set(path, value), RING)


def test_url_safe_and_unpadded_base64_are_accepted_as_dsse_asks() -> None:
    # Find a payload whose signature has "+" or "/", where the alphabets differ.
    for n in range(100):
        envelope = dsse.sign_envelope(TYPE, b'{"n":%d}' % n, KEY)
        sig = envelope["signatures"][0]["sig"]
        if "+" in sig or "/" in sig:
            break
    envelope["signatures"][0]["sig"] = sig.replace("+", "-").replace("/", "_").rstrip("=")
    envelope["payload"] = envelope["payload"].rstrip("=")
    assert dsse.verify_envelope(envelope, RING) == b'{"n":%d}' % n


def test_an_envelope_without_keyid_is_tried_against_the_fallback_keys() -> None:
    envelope = dsse.sign_envelope(TYPE, b'{"a":1}', KEY)
    del envelope["signatures"][0]["keyid"]
    with pytest.raises(dsse.UnknownKeyError):
        dsse.verify_envelope(envelope, RING)
    verified = dsse.open_envelope(envelope, {}, fallback_keys=RING)
    assert verified.payload == b'{"a":1}' and verified.key_id == keys.key_id(KEY)


def test_envelope_must_be_an_object() -> None:
    with pytest.raises(MalformedEnvelopeError):
        dsse.verify_envelope(["not", "an", "object"], RING)  # type: ignore[arg-type]


def test_all_errors_are_envelope_errors() -> None:
    for error in (MalformedEnvelopeError, PayloadTypeError, UnknownKeyError, BadSignatureError):
        assert issubclass(error, dsse.EnvelopeError)
        assert issubclass(error, ValueError)


@pytest.fixture(params=["libsodium", "openssl"])
def verifier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test using it runs with each of the two Ed25519 verifiers dsse can use."""
    if request.param == "openssl":
        monkeypatch.setattr(dsse, "_sodium_open", None)
    else:
        assert dsse._sodium_open is not None, "the server's requirements install PyNaCl"
    return str(request.param)


@given(payload_bytes, st.integers(min_value=0, max_value=64 * 8 - 1))
def test_both_verifiers_accept_an_honest_signature_and_refuse_it_altered(payload: bytes, bit: int) -> None:
    envelope = dsse.sign_envelope(TYPE, payload, KEY)
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    message = dsse.pae(TYPE, payload)
    for sodium in (dsse._sodium_open, None):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(dsse, "_sodium_open", sodium)
            assert dsse.verify_signature(KEY.public_key(), signature, message)
            assert dsse.verify_signature(keys.public_key_bytes(KEY), signature, message)
            assert not dsse.verify_signature(KEY.public_key(), flip(signature, bit), message)
            assert not dsse.verify_signature(OTHER.public_key(), signature, message)


def test_a_signature_of_the_wrong_length_is_refused_by_either_verifier(verifier: str) -> None:
    envelope = dsse.sign_envelope(TYPE, b"x", KEY)
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    message = dsse.pae(TYPE, b"x")
    assert dsse.verify_signature(KEY.public_key(), signature, message)
    assert not dsse.verify_signature(KEY.public_key(), signature[:63], message)
    assert not dsse.verify_signature(KEY.public_key(), signature + b"\0", message)


def test_libsodium_refuses_a_small_order_key_that_openssl_lets_sign_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    """The identity point as a public key, R the identity and S = 0: a "signature" of every
    message under OpenSSL's check. libsodium refuses small-order points, so the server
    (which always has it) never accepts such an envelope (docs/decisions.md)."""
    identity = bytes([1]) + bytes(31)
    forged = identity + bytes(32)
    message = dsse.pae(TYPE, b'{"anything": "at all"}')
    assert not dsse.verify_signature(identity, forged, message)
    monkeypatch.setattr(dsse, "_sodium_open", None)
    assert dsse.verify_signature(identity, forged, message)
