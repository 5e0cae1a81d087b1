"""Server-side envelope checks (no database): any altered byte is refused."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re

import pytest
from hashexchange_client import dsse, keys, payloads
from hypothesis import given, settings
from hypothesis import strategies as st

from core.problems import Problem
from hashes import envelopes

PRIVATE = keys.private_key_from_seed(bytes(range(32)))
RING = {keys.key_id(PRIVATE): keys.public_key_bytes(PRIVATE)}
PAYLOAD = payloads.submission_payload(
    program="take-it-down",
    signal_type="md5",
    value="d41d8cd98f00b204e9800998ecf8427e",
    created_at=dt.datetime(2026, 11, 21, 6, 0, tzinfo=dt.UTC),
    nonce="0" * 32,
)
ENVELOPE = dsse.sign_envelope(payloads.SUBMISSION_TYPE, PAYLOAD, PRIVATE)


def test_the_untouched_envelope_verifies() -> None:
    verified = envelopes.verify(ENVELOPE, RING, envelopes.SUBMISSION_TYPE)
    assert verified.payload == PAYLOAD
    parsed = envelopes.parse_submission(verified.payload)
    assert (parsed.program, parsed.signal_type, parsed.nonce) == ("take-it-down", "md5", "0" * 32)


def flip(data: bytes, index: int, bit: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([data[index] ^ (1 << bit)]) + data[index + 1 :]


@settings(max_examples=300)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_any_flipped_payload_bit_is_refused(index: int, bit: int) -> None:
    altered = dict(ENVELOPE, payload=base64.b64encode(flip(PAYLOAD, index, bit)).decode())
    with pytest.raises(Problem) as caught:
        envelopes.verify(altered, RING, envelopes.SUBMISSION_TYPE)
    assert caught.value.code == "bad_signature"


@settings(max_examples=300)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_any_flipped_signature_bit_is_refused(index: int, bit: int) -> None:
    sig = base64.b64decode(ENVELOPE["signatures"][0]["sig"])
    altered = dict(
        ENVELOPE,
        signatures=[
            {"keyid": ENVELOPE["signatures"][0]["keyid"], "sig": base64.b64encode(flip(sig, index, bit)).decode()}
        ],
    )
    with pytest.raises(Problem) as caught:
        envelopes.verify(altered, RING, envelopes.SUBMISSION_TYPE)
    assert caught.value.code == "bad_signature"


@given(st.text(max_size=40))
def test_a_changed_payload_type_is_refused(payload_type: str) -> None:
    if payload_type == envelopes.SUBMISSION_TYPE:
        return
    with pytest.raises(Problem) as caught:
        envelopes.verify(dict(ENVELOPE, payloadType=payload_type), RING, envelopes.SUBMISSION_TYPE)
    assert caught.value.code in {"wrong_payload_type", "malformed_envelope"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lables": []}, "unknown field(s) lables"),
        ({"created_at": "2026-11-21T06:00:00"}, "RFC 3339 time with a zone"),
        ({"nonce": "short"}, "nonce must be"),
        ({"labels": ["ok", "not ok!"]}, "label 'not ok!'"),
        ({"labels": "ncii"}, "labels must be a list"),
        ({"case": "has space"}, "case must be"),
        ({"quality": 50}, "quality is given only for pdq"),
        ({"program": "Take It Down"}, "program must be a program slug"),
    ],
)
def test_payload_fields_are_checked_with_a_message_that_names_them(change: dict, message: str) -> None:
    fields = {**json.loads(PAYLOAD), **change}
    with pytest.raises(Problem, match=re.escape(message)):
        envelopes.parse_submission(json.dumps(fields).encode())
