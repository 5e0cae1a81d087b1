"""Server-side reading of signed envelopes: shape, signature, and the payload's fields.

The signature format itself (DSSE's PAE, Ed25519, strict base64) has one
implementation, in the member-side client package, which every member and peer also
uses to verify what we relay; this module adds what only the server decides: which
fields a payload must have and what values they may take. No Django here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hashexchange_client import dsse, signal_types
from hashexchange_client.encoding import StrictJSONError, loads_strict
from hashexchange_client.payloads import (
    CASE_RE,
    LABEL_RE,
    MAX_LABELS,
    MAX_REASON,
    PROGRAM_RE,
    SUBMISSION_TYPE,
    WITHDRAWAL_TYPE,
)

from core.problems import Problem

__all__ = [
    "SUBMISSION_TYPE",
    "WITHDRAWAL_TYPE",
    "Problem",
    "SubmissionPayload",
    "WithdrawalPayload",
    "envelope_key_ids",
    "parse_submission",
    "parse_withdrawal",
    "verify",
]

# The rules members' clients apply before signing are the rules the server applies: one
# definition, in the client package. The server accepts any well-formed nonce, not only
# the 32 hex digits the client makes, so that other signers can use their own.
_NONCE = re.compile(r"[A-Za-z0-9._~-]{16,128}")


# A key id is the hex SHA-256 of the raw public key; anything else names no registered
# key, and is not looked up (PostgreSQL refuses text with NUL in a query: a 500 before).
_KEY_ID = re.compile(r"[0-9a-f]{64}")


def envelope_key_ids(envelope: Any) -> list[str]:
    """The key ids an envelope claims to be signed by (unverified) that could be registered, for looking keys up."""
    if not isinstance(envelope, Mapping) or not isinstance(envelope.get("signatures"), list):
        raise Problem("malformed_envelope", "an envelope is an object with payloadType, payload and signatures")
    ids = [s.get("keyid") for s in envelope["signatures"] if isinstance(s, Mapping)]
    return [kid for kid in ids if isinstance(kid, str) and _KEY_ID.fullmatch(kid)]


def verify(
    envelope: Any,
    public_keys: Mapping[str, bytes],
    payload_type: str,
    *,
    fallback_keys: Mapping[str, bytes] | None = None,
) -> dsse.VerifiedEnvelope:
    """Check shape and signature; translate the client library's errors into rejections."""
    try:
        return dsse.open_envelope(envelope, public_keys, payload_type, fallback_keys=fallback_keys)
    except dsse.PayloadTypeError as exc:
        raise Problem("wrong_payload_type", str(exc)) from None
    except dsse.UnknownKeyError as exc:
        raise Problem(
            "unknown_key", f"{exc}; register the public key with POST /api/v1/keys first", status=403
        ) from None
    except dsse.BadSignatureError as exc:
        raise Problem("bad_signature", str(exc), status=403) from None
    except dsse.EnvelopeError as exc:
        raise Problem("malformed_envelope", str(exc)) from None


def canonical_envelope(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope as stored and relayed: its three DSSE fields as received, nothing else.

    The spelling is kept (either base64 alphabet, padded or not; a signature with or
    without a keyid), so what members and peers get is what the submitter signed and sent.
    """
    return {
        "payloadType": envelope["payloadType"],
        "payload": envelope["payload"],
        "signatures": [{k: s[k] for k in ("keyid", "sig") if k in s} for s in envelope["signatures"]],
    }


def payload_digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _load(payload: bytes) -> dict[str, Any]:
    try:
        data = loads_strict(payload)
    except StrictJSONError as exc:
        raise Problem("malformed_payload", f"the payload must be one unambiguous UTF-8 JSON document: {exc}") from None
    if not isinstance(data, dict):
        raise Problem("malformed_payload", "the payload must be a JSON object")
    return data


def _check_fields(data: Mapping[str, Any], required: set[str], optional: set[str]) -> None:
    missing = sorted(required - data.keys())
    if missing:
        raise Problem("malformed_payload", f"the payload lacks {', '.join(missing)}")
    unknown = sorted(data.keys() - required - optional)
    if unknown:
        raise Problem(
            "malformed_payload",
            f"the payload has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(required | optional))}",
        )


def _string(data: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise Problem("malformed_payload", f"{name} must be {what}")
    return value


def _time(data: Mapping[str, Any]) -> dt.datetime:
    raw = data["created_at"]
    try:
        value = dt.datetime.fromisoformat(raw) if isinstance(raw, str) else None
        # A time at the edge of the calendar (year 1 or 9999 with an offset) has no UTC form.
        value = value.astimezone(dt.UTC) if value is not None and value.tzinfo is not None else None
    except (ValueError, OverflowError):
        value = None
    if value is None:
        raise Problem("malformed_payload", "created_at must be an RFC 3339 time with a zone, e.g. 2026-11-21T06:00:00Z")
    return value


def _signal(data: Mapping[str, Any]) -> tuple[str, str]:
    try:
        kind = signal_types.get(data["signal_type"])
        return kind.name, kind.validate(data["value"])
    except signal_types.SignalValueError as exc:
        code = "unknown_signal_type" if "unknown signal type" in str(exc) else "invalid_value"
        raise Problem(code, str(exc)) from None


@dataclass(frozen=True)
class SubmissionPayload:
    program: str
    signal_type: str
    value: str
    created_at: dt.datetime
    nonce: str
    labels: tuple[str, ...] = ()
    quality: int | None = None
    case: str = ""


@dataclass(frozen=True)
class WithdrawalPayload:
    program: str
    signal_type: str
    value: str
    created_at: dt.datetime
    nonce: str
    case: str = ""
    reason: str = ""


def _common(data: Mapping[str, Any]) -> tuple[str, str, str, dt.datetime, str, str]:
    program = _string(data, "program", PROGRAM_RE, "a program slug")
    signal_type, value = _signal(data)
    created_at = _time(data)
    nonce = _string(data, "nonce", _NONCE, "16 to 128 characters of A-Z, a-z, 0-9, '.', '_', '~', '-'")
    case = _string(data, "case", CASE_RE, "up to 64 characters of A-Z, a-z, 0-9, '_', '-'") if "case" in data else ""
    return program, signal_type, value, created_at, nonce, case


def check_labels(labels: Any, *, code: str) -> list[str]:
    """The rule for labels, signed or not: a list of at most MAX_LABELS short tokens."""
    if not isinstance(labels, list) or len(labels) > MAX_LABELS:
        raise Problem(code, f"labels must be a list of at most {MAX_LABELS} strings")
    for label in labels:
        if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
            raise Problem(code, f"label {label!r} must be 1-64 characters of A-Z, a-z, 0-9, ':', '.', '_', '/', '-'")
    return labels


def parse_submission(payload: bytes) -> SubmissionPayload:
    """Read and check a submission payload (docs/envelopes.md)."""
    data = _load(payload)
    _check_fields(data, {"program", "signal_type", "value", "created_at", "nonce"}, {"labels", "quality", "case"})
    program, signal_type, value, created_at, nonce, case = _common(data)
    labels = check_labels(data.get("labels", []), code="malformed_payload")
    quality = data.get("quality")
    if quality is not None:
        if signal_type != "pdq":
            raise Problem("malformed_payload", "quality is given only for pdq hashes")
        try:
            signal_types.check_pdq_quality(quality, 0)
        except signal_types.SignalValueError as exc:
            raise Problem("malformed_payload", str(exc)) from None
    return SubmissionPayload(
        program=program,
        signal_type=signal_type,
        value=value,
        created_at=created_at,
        nonce=nonce,
        labels=tuple(dict.fromkeys(labels)),
        quality=quality,
        case=case,
    )


def parse_withdrawal(payload: bytes) -> WithdrawalPayload:
    """Read and check a withdrawal payload (docs/envelopes.md)."""
    data = _load(payload)
    _check_fields(data, {"program", "signal_type", "value", "created_at", "nonce"}, {"case", "reason"})
    program, signal_type, value, created_at, nonce, case = _common(data)
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON or "\x00" in reason:
        raise Problem("malformed_payload", f"reason must be a string of at most {MAX_REASON} characters, without NUL")
    return WithdrawalPayload(
        program=program,
        signal_type=signal_type,
        value=value,
        created_at=created_at,
        nonce=nonce,
        case=case,
        reason=reason,
    )
