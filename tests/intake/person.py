"""A person's browser, in Python: the same key derivation, envelopes and proof of work
as intake/static/intake/casekey.js, built on `cryptography` and the client package."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.test import Client
from hashexchange_client import dsse, payloads

from intake.abuse import leading_zero_bits
from intake.words import WORDS

STATUS_TYPE = "application/vnd.hashexchange.intake-status+json"


def key_from_secret(secret: bytes) -> Ed25519PrivateKey:
    """The case key: status and withdrawal requests."""
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"hashexchange intake case key v1", info=b"").derive(secret)
    return Ed25519PrivateKey.from_private_bytes(seed)


def hash_key_from_secret(secret: bytes, index: int) -> Ed25519PrivateKey:
    """The key of the case's hash number `index` (0, 1, ...): it signs that hash and its withdrawal."""
    seed = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"hashexchange intake hash key v1", info=str(index).encode()
    ).derive(secret)
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def solve(challenge: str, bits: int) -> str:
    n = 0
    while leading_zero_bits(hashlib.sha256(f"{challenge}:{n}".encode()).digest()) < bits:
        n += 1
    return str(n)


@dataclass
class Person:
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    code: str = ""
    # The index of each value's key, in the order the values were signed (as the page numbers them).
    indexes: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> Ed25519PrivateKey:
        return key_from_secret(self.secret)

    @property
    def words(self) -> str:
        return " ".join(WORDS[b] for b in self.secret)

    @property
    def public_key(self) -> str:
        return public_b64(self.key)

    def hash_key(self, index: int) -> Ed25519PrivateKey:
        return hash_key_from_secret(self.secret, index)

    @property
    def hash_keys(self) -> list[str]:
        """The public hash keys the page sends with its envelopes, key 0 first."""
        return [public_b64(self.hash_key(i)) for i in range(len(self.indexes))]

    def submission(self, value: str, *, program: str, signal_type: str = "pdq", **fields: Any) -> dict[str, Any]:
        """An envelope for `value`, signed by the next hash key."""
        if signal_type == "pdq":
            fields.setdefault("quality", 90)
        index = self.indexes.setdefault(value, len(self.indexes))
        payload = payloads.submission_payload(program=program, signal_type=signal_type, value=value, **fields)
        return dsse.sign_envelope(payloads.SUBMISSION_TYPE, payload, self.hash_key(index))

    def withdrawal(self, value: str, *, program: str, signal_type: str = "pdq") -> dict[str, Any]:
        """A withdrawal of `value`, signed by that hash's key."""
        payload = payloads.withdrawal_payload(program=program, signal_type=signal_type, value=value)
        return dsse.sign_envelope(payloads.WITHDRAWAL_TYPE, payload, self.hash_key(self.indexes[value]))

    def proof(self, code: str | None = None) -> dict[str, Any]:
        body = {
            "case": code or self.code,
            "created_at": payloads.format_timestamp(),
            "nonce": secrets.token_hex(16),
        }
        return dsse.sign_envelope(STATUS_TYPE, json.dumps(body).encode(), self.key)


def post(client: Client, path: str, body: dict[str, Any], **extra: Any) -> Any:
    return client.post(f"/intake/api/{path}", json.dumps(body), content_type="application/json", **extra)


def open_case(client: Client, person: Person, envelopes: list[dict[str, Any]], *, age: str = "minor", **extra: Any):
    challenge = client.get("/intake/api/challenge").json()
    body = {
        "age": age,
        "public_key": person.public_key,
        "hash_keys": person.hash_keys or [Person().public_key],
        "challenge": challenge["challenge"],
        "work": solve(challenge["challenge"], challenge["bits"]),
        "envelopes": envelopes,
    }
    response = post(client, "cases", body, **extra)
    if response.status_code == 200:
        person.code = response.json()["code"]
    return response
