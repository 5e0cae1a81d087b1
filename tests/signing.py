"""Signers: members with registered Ed25519 keys that sign with the client package's code."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hashexchange_client import dsse, keys, payloads

from members import services
from members.models import SigningKey
from tests.conftest import SETUP, Caller


def random_pdq() -> str:
    """A realistic PDQ value: random bits, about half of them set."""
    while True:
        value = secrets.token_hex(32)
        if 96 <= int(value, 16).bit_count() <= 160:
            return value


def near(value: str, bits: int) -> str:
    """`value` with its lowest `bits` bits flipped: at Hamming distance `bits`."""
    return f"{int(value, 16) ^ ((1 << bits) - 1):064x}"


@dataclass
class Signer:
    caller: Caller
    private_key: Ed25519PrivateKey
    key: SigningKey

    @property
    def client(self) -> Any:
        return self.caller.client

    def submission(
        self, value: str | None = None, *, program: str = "take-it-down", signal_type: str = "pdq", **fields: Any
    ) -> dict[str, Any]:
        payload = payloads.submission_payload(
            program=program, signal_type=signal_type, value=value or random_pdq(), **fields
        )
        return dsse.sign_envelope(payloads.SUBMISSION_TYPE, payload, self.private_key)

    def raw(self, payload: bytes, payload_type: str = payloads.SUBMISSION_TYPE) -> dict[str, Any]:
        """Sign arbitrary bytes, for payloads the client library would refuse to build."""
        return dsse.sign_envelope(payload_type, payload, self.private_key)

    def withdrawal(
        self, value: str, *, program: str = "take-it-down", signal_type: str = "pdq", **fields: Any
    ) -> dict[str, Any]:
        payload = payloads.withdrawal_payload(program=program, signal_type=signal_type, value=value, **fields)
        return dsse.sign_envelope(payloads.WITHDRAWAL_TYPE, payload, self.private_key)

    def submit(self, *envelopes: dict[str, Any]) -> Any:
        return self.client.post("/api/v1/submissions", {"envelopes": list(envelopes)}, format="json")


def make_signer(caller: Caller) -> Signer:
    private_key = keys.generate_private_key()
    public = base64.b64encode(keys.public_key_bytes(private_key)).decode()
    key = services.signing_key_register(member=caller.member, public_key=public, actor=SETUP)
    return Signer(caller=caller, private_key=private_key, key=key)


@pytest.fixture
def signer_a(platform_a: Caller) -> Signer:
    return make_signer(platform_a)


@pytest.fixture
def signer_b(platform_b: Caller) -> Signer:
    return make_signer(platform_b)


@pytest.fixture
def signer_intake(intake: Caller) -> Signer:
    return make_signer(intake)


def minutes_ago(minutes: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)
