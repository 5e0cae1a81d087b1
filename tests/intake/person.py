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
from hashexchange_client import dsse, payloads

from intake.abuse import leading_zero_bits
from intake.words import WORDS

STATUS_TYPE = "application/vnd.hashexchange.intake-status+json"


def key_from_secret(secret: bytes) -> Ed25519PrivateKey:
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"hashexchange intake case key v1", info=b"").derive(secret)
    return Ed25519PrivateKey.from_private_bytes(seed)


def solve(challenge: str, bits: int) -> str:
    n = 0
    while leading_zero_bits(hashlib.sha256(f"{challenge}:{n}".encode()).digest()) < bits:
        n += 1
    return str(n)


@dataclass
class Person:
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    code: str = ""

    @property
    def key(self) -> Ed25519PrivateKey:
        return key_from_secret(self.secret)

    @property
    def words(self) -> str:
        return " ".join(WORDS[b] for b in self.secret)

    @property
    def public_key(self) -> str:
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def submission(self, value: str, *, program: str, signal_type: str = "pdq", **fields: Any) -> dict[str, Any]:
        if signal_type == "pdq":
            fields.setdefault("quality", 90)
        payload = payloads.submission_payload(program=program, signal_type=signal_type, value=value, **fields)
        return dsse.sign_envelope(payloads.SUBMISSION_TYPE, payload, self.key)

    def withdrawal(self, value: str, *, program: str, signal_type: str = "pdq") -> dict[str, Any]:
        payload = payloads.withdrawal_payload(program=program, signal_type=signal_type, value=value)
        return dsse.sign_envelope(payloads.WITHDRAWAL_TYPE, payload, self.key)

    def proof(self, code: str | None = None) -> dict[str, Any]:
        body = {
            "case": code or self.code,
            "created_at": payloads.format_timestamp(),
            "nonce": secrets.token_hex(16),
        }
        return dsse.sign_envelope(STATUS_TYPE, json.dumps(body).encode(), self.key)
