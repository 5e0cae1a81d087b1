"""DSSE envelopes: sign payload bytes and verify them without trusting anyone.

The signature covers the exact payload bytes plus their type through DSSE's
pre-authentication encoding (PAE), so no JSON canonicalisation is involved and an
envelope can be relayed byte for byte and checked by any member or peer that holds the
signer's public key. See docs/envelopes.md for the format and a worked example.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .encoding import Base64Error, b64decode_any, b64encode
from .keys import key_id, public_key_bytes

try:  # libsodium verifies Ed25519 about twice as fast as OpenSSL (docs/decisions.md)
    from nacl.bindings import crypto_sign_open as _sodium_open
    from nacl.exceptions import BadSignatureError as _SodiumBadSignature
except ImportError:  # pragma: no cover - PyNaCl is optional for the client library
    _sodium_open = None

SIGNATURE_SIZE = 64
# Members send one signature; the cap bounds the work an envelope can ask of a verifier.
MAX_SIGNATURES = 16

PublicKeyLike = Ed25519PublicKey | bytes


class EnvelopeError(ValueError):
    """An envelope that does not verify; subclasses say why."""


class MalformedEnvelopeError(EnvelopeError):
    """The envelope is not the expected JSON shape, or a field is not canonical base64."""


class PayloadTypeError(EnvelopeError):
    """The envelope is signed, but for a different kind of payload than expected."""


class UnknownKeyError(EnvelopeError):
    """No signature was made by a key the verifier knows."""


class BadSignatureError(EnvelopeError):
    """A signature from a known key does not match the payload and type."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of a payload and its type.

    Length-prefixing both parts makes the encoding unambiguous: no (type, payload)
    pair can be re-split into another that signs to the same bytes.
    """
    type_bytes = payload_type.encode("utf-8")
    return b" ".join(
        (
            b"DSSEv1",
            str(len(type_bytes)).encode("ascii"),
            type_bytes,
            str(len(payload)).encode("ascii"),
            payload,
        )
    )


def sign_envelope(payload_type: str, payload: bytes, private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Sign ``payload`` as ``payload_type`` and return the envelope as a JSON-ready dict."""
    signature = private_key.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": b64encode(payload),
        "signatures": [{"keyid": key_id(private_key), "sig": b64encode(signature)}],
    }


def keyring(keys: Iterable[PublicKeyLike]) -> dict[str, Ed25519PublicKey]:
    """Index public keys by their key id, the mapping :func:`verify_envelope` takes."""
    ring: dict[str, Ed25519PublicKey] = {}
    for key in keys:
        public = _as_public_key(key)
        ring[key_id(public)] = public
    return ring


@dataclass(frozen=True)
class VerifiedEnvelope:
    """What a verified envelope vouches for: its type, payload and signing key."""

    payload_type: str
    payload: bytes
    key_id: str


def verify_envelope(
    envelope: Mapping[str, Any],
    public_keys: Mapping[str, PublicKeyLike],
    payload_type: str | None = None,
) -> bytes:
    """Return the payload bytes if a key in ``public_keys`` signed them; raise otherwise.

    See :func:`open_envelope` for the checks and the errors raised.
    """
    return open_envelope(envelope, public_keys, payload_type).payload


def open_envelope(
    envelope: Mapping[str, Any],
    public_keys: Mapping[str, PublicKeyLike],
    payload_type: str | None = None,
    *,
    fallback_keys: Mapping[str, PublicKeyLike] | None = None,
) -> VerifiedEnvelope:
    """Verify an envelope and say which key signed it.

    Steps:
    1. Check the shape: ``payloadType`` and ``payload`` strings, a list of 1 to
       :data:`MAX_SIGNATURES` ``{"keyid", "sig"}`` objects, canonical base64, 64-byte
       signatures.
    2. If ``payload_type`` is given, the envelope must declare exactly that type.
    3. Keep the signatures whose key id is in ``public_keys``. If none is, and
       ``fallback_keys`` are given, try every signature against each of those (DSSE's
       ``keyid`` is an optional hint: an envelope may carry none, or another tool's
       name for the key); with neither, :class:`UnknownKeyError`.
    4. Accept if one of them verifies over PAE(type, payload); otherwise
       :class:`BadSignatureError`.

    Only ``payloadType`` and ``payload`` are authenticated; other fields an envelope
    may carry are ignored, never trusted.
    """
    declared_type, payload, signatures = _parse(envelope)
    if payload_type is not None and declared_type != payload_type:
        raise PayloadTypeError(f"envelope payloadType is {declared_type!r}, expected {payload_type!r}")
    candidates = [(kid, sig, public_keys[kid]) for kid, sig in signatures if kid in public_keys]
    if not candidates and fallback_keys:
        candidates = [(kid, sig, key) for _, sig in signatures for kid, key in fallback_keys.items()]
    if not candidates:
        ids = ", ".join(kid[:64] or "(none)" for kid, _ in signatures)
        raise UnknownKeyError(f"envelope is signed only by unknown key id(s): {ids}")
    message = pae(declared_type, payload)
    for kid, sig, key in candidates:
        if verify_signature(key, sig, message):
            return VerifiedEnvelope(declared_type, payload, kid)
    raise BadSignatureError("signature does not match the payload (the envelope was altered or signed by another key)")


def verify_signature(key: PublicKeyLike, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is `key`'s Ed25519 signature of `message`.

    With PyNaCl installed (the server always has it) libsodium checks it, else OpenSSL
    through `cryptography`. libsodium is the stricter of the two (it also refuses
    small-order and non-canonical points), so what it accepts, OpenSSL accepts too: a
    member or peer verifying with either library agrees with the server on every
    envelope an honest signer made.
    """
    if _sodium_open is not None:
        raw = key.public_bytes_raw() if isinstance(key, Ed25519PublicKey) else public_key_bytes(key)
        if len(signature) != SIGNATURE_SIZE:
            return False
        try:  # (PyNaCl binds no detached verify: the signed message is the signature, then the message)
            _sodium_open(signature + message, raw)
        except (_SodiumBadSignature, ValueError, TypeError):
            return False
        return True
    try:
        _as_public_key(key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _as_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    return Ed25519PublicKey.from_public_bytes(public_key_bytes(key))


def _parse(envelope: Mapping[str, Any]) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    if not isinstance(envelope, Mapping):
        raise MalformedEnvelopeError("envelope must be a JSON object")
    declared_type = envelope.get("payloadType")
    if not isinstance(declared_type, str) or not declared_type:
        raise MalformedEnvelopeError("envelope payloadType must be a non-empty string")
    try:
        payload = b64decode_any(envelope.get("payload"), what="envelope payload")
    except Base64Error as exc:
        raise MalformedEnvelopeError(str(exc)) from exc
    raw_signatures = envelope.get("signatures")
    if not isinstance(raw_signatures, list) or not raw_signatures:
        raise MalformedEnvelopeError("envelope signatures must be a non-empty list")
    if len(raw_signatures) > MAX_SIGNATURES:
        raise MalformedEnvelopeError(f"envelope has more than {MAX_SIGNATURES} signatures")
    signatures: list[tuple[str, bytes]] = []
    for index, entry in enumerate(raw_signatures):
        if not isinstance(entry, Mapping):
            raise MalformedEnvelopeError(f"signatures[{index}] must be an object")
        # keyid is an optional, unauthenticated hint (DSSE): absent or empty means "try the keys".
        kid = entry.get("keyid", "")
        if not isinstance(kid, str):
            raise MalformedEnvelopeError(f"signatures[{index}].keyid must be a string when present")
        try:
            sig = b64decode_any(entry.get("sig"), what=f"signatures[{index}].sig")
        except Base64Error as exc:
            raise MalformedEnvelopeError(str(exc)) from exc
        if len(sig) != SIGNATURE_SIZE:
            raise MalformedEnvelopeError(
                f"signatures[{index}].sig must decode to {SIGNATURE_SIZE} bytes, got {len(sig)}"
            )
        signatures.append((kid, sig))
    return declared_type, payload, signatures
