"""Submission and withdrawal payloads: exact bytes, and field checks before signing."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from hashexchange_client import payloads
from hashexchange_client.payloads import PayloadError

PDQ = "fa56b62d6a3db6b4912d5a5a7fd2d925b6856483c92625d24b684921642eb66d"
WHEN = dt.datetime(2026, 11, 21, 6, 0, 0, 123456, tzinfo=dt.UTC)
NONCE = "00112233445566778899aabbccddeeff"


def test_submission_bytes_are_compact_utf8_json() -> None:
    payload = payloads.submission_payload(
        program="ncii",
        signal_type="pdq",
        value=PDQ.upper(),
        labels=["nudity", "source:report/web"],
        quality=87,
        case="case-1",
        created_at=WHEN,
        nonce=NONCE,
    )
    assert b" " not in payload
    assert json.loads(payload) == {
        "program": "ncii",
        "signal_type": "pdq",
        "value": PDQ,
        "labels": ["nudity", "source:report/web"],
        "quality": 87,
        "case": "case-1",
        "created_at": "2026-11-21T06:00:00Z",
        "nonce": NONCE,
    }


def test_optional_fields_are_omitted_and_defaults_fresh() -> None:
    payload = json.loads(payloads.submission_payload(program="ncii", signal_type="md5", value="a" * 32))
    assert set(payload) == {"program", "signal_type", "value", "labels", "created_at", "nonce"}
    assert payload["labels"] == []
    assert re.fullmatch(r"[0-9a-f]{32}", payload["nonce"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", payload["created_at"])
    other = json.loads(payloads.submission_payload(program="ncii", signal_type="md5", value="a" * 32))
    assert other["nonce"] != payload["nonce"]


def test_created_at_is_converted_to_utc() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    stamp = payloads.format_timestamp(dt.datetime(2026, 11, 21, 7, 0, 59, tzinfo=paris))
    assert stamp == "2026-11-21T06:00:59Z"
    with pytest.raises(PayloadError, match="timezone"):
        payloads.format_timestamp(dt.datetime(2026, 11, 21))


def test_withdrawal_payload() -> None:
    payload = payloads.withdrawal_payload(
        program="take-it-down",
        signal_type="video_md5",
        value="0" * 32,
        reason="soumis par erreur, désolé",
        created_at=WHEN,
        nonce=NONCE,
    )
    assert "désolé".encode() in payload  # UTF-8, not \u escapes
    assert json.loads(payload) == {
        "program": "take-it-down",
        "signal_type": "video_md5",
        "value": "0" * 32,
        "reason": "soumis par erreur, désolé",
        "created_at": "2026-11-21T06:00:00Z",
        "nonce": NONCE,
    }
    assert (
        payload == json.dumps(json.loads(payload), separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    )


@pytest.mark.parametrize(
    ("signal_type", "length"),
    [("pdq", 64), ("md5", 32), ("sha256", 64), ("phash", 16), ("dhash", 16), ("video_md5", 32)],
)
def test_value_lengths(signal_type: str, length: int) -> None:
    assert payloads.normalise_value(signal_type, " " + "AB" * (length // 2) + "\n") == "ab" * (length // 2)
    with pytest.raises(PayloadError, match=f"{length} hex digits"):
        payloads.normalise_value(signal_type, "a" * (length - 1))
    with pytest.raises(PayloadError, match=f"{length} hex digits"):
        payloads.normalise_value(signal_type, "g" * length)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"signal_type": "sha1"}, "unknown signal type"),
        ({"program": "no spaces"}, "program"),
        ({"program": ""}, "program"),
        ({"labels": "one-string"}, "labels"),
        ({"program": "p" * 65}, "program"),
        ({"labels": ["ok", ""]}, "label"),
        ({"labels": [3]}, "label"),
        ({"labels": ["two words"]}, "label"),
        ({"labels": ["-leading-dash"]}, "label"),
        ({"labels": ["x" * 65]}, "label"),
        ({"labels": ["café"]}, "label"),
        ({"labels": [f"l{n}" for n in range(33)]}, "at most 32 labels"),
        ({"quality": 101}, "quality"),
        ({"quality": -1}, "quality"),
        ({"quality": True}, "quality"),
        ({"quality": 50, "signal_type": "md5", "value": "a" * 32}, "pdq hashes only"),
        ({"case": ""}, "case"),
        ({"case": "has space"}, "case"),
        ({"case": "c" * 65}, "case"),
        ({"nonce": "ABCDEF" * 5 + "00"}, "nonce"),
        ({"nonce": "abc"}, "nonce"),
    ],
)
def test_invalid_submission_fields(overrides: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"program": "ncii", "signal_type": "pdq", "value": PDQ}
    fields.update(overrides)
    with pytest.raises(PayloadError, match=message):
        payloads.submission_payload(**fields)  # type: ignore[arg-type]


def test_limits_that_pass() -> None:
    payload = payloads.submission_payload(
        program="p" * 64,
        signal_type="md5",
        value="a" * 32,
        labels=[f"l{n}" for n in range(32)],
        case="c" * 64,
    )
    assert len(json.loads(payload)["labels"]) == 32
    payloads.check_options(program="ncii", labels=["a:b.c_d/e-f"], case="TICKET-1_2")
    with pytest.raises(PayloadError, match="reason"):
        payloads.withdrawal_payload(program="ncii", signal_type="md5", value="a" * 32, reason="r" * 501)


def test_parse_payload() -> None:
    assert payloads.parse_payload(b'{"a":1}') == {"a": 1}
    with pytest.raises(PayloadError):
        payloads.parse_payload(b"[1]")
    with pytest.raises(PayloadError):
        payloads.parse_payload(b"\xff")
