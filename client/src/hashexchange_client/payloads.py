"""Build the JSON payloads that go inside submission and withdrawal envelopes.

The server verifies the exact bytes and never re-serialises them, so whatever this module
emits is what every member and peer will later read. It therefore validates each field
the way the server does, so that a mistake is reported on the member's machine before
anything is signed, rather than as a rejection after upload.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Iterable
from typing import Any

from . import signal_types
from .encoding import StrictJSONError, loads_strict

SUBMISSION_TYPE = "application/vnd.hashexchange.submission+json"
WITHDRAWAL_TYPE = "application/vnd.hashexchange.withdrawal+json"

# Hex digits of each fixed-length signal type's value (from the one table); the server refuses
# any other length. vPDQ (a frame list) and TMK+PDQF (variable length) are checked by the table.
HEX_LENGTHS: dict[str, int] = {
    name: kind.hex_length for name, kind in signal_types.SIGNAL_TYPES.items() if not kind.long_values
}
SIGNAL_TYPES: tuple[str, ...] = signal_types.SIGNAL_TYPE_NAMES

# The limits the server enforces (hashes/envelopes.py), public so that one definition
# can serve both sides; checked here too so that mistakes surface on the member's machine.
MAX_LABELS = 32
MAX_REASON = 500
PROGRAM_RE = re.compile(r"[-a-zA-Z0-9_]{1,64}")
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/-]{0,63}")
CASE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEX = re.compile(r"[0-9a-f]+")
_NONCE = re.compile(r"[0-9a-f]{32}")


class PayloadError(ValueError):
    """A field that the server would refuse; the message names it."""


def normalise_value(signal_type: str, value: str) -> str:
    """Lowercase hex of the right length for ``signal_type``, or :class:`PayloadError`.

    Upper case and surrounding white space are forgiven because people paste hashes
    from other tools; anything else is an error, not a guess.
    """
    if signal_type not in SIGNAL_TYPES:
        raise PayloadError(f"unknown signal type {signal_type!r}; known: {', '.join(SIGNAL_TYPES)}")
    if signal_type not in HEX_LENGTHS:
        try:
            return signal_types.validate(signal_type, value)
        except signal_types.SignalValueError as exc:
            raise PayloadError(str(exc)) from None
    if not isinstance(value, str):
        raise PayloadError("value must be a string of hex digits")
    value = value.strip().lower()
    expected = HEX_LENGTHS[signal_type]
    if len(value) != expected or not _HEX.fullmatch(value):
        raise PayloadError(f"{signal_type} value must be {expected} hex digits, got {value[:80]!r}")
    return value


def format_timestamp(moment: dt.datetime | None = None) -> str:
    """RFC 3339 UTC with seconds precision and a ``Z``: ``2026-11-21T06:00:00Z``."""
    if moment is None:
        moment = dt.datetime.now(dt.UTC)
    elif moment.tzinfo is None or moment.utcoffset() is None:
        raise PayloadError("created_at must be timezone-aware")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_nonce() -> str:
    """32 lowercase hex digits from 16 random bytes; the server refuses reuse."""
    return secrets.token_hex(16)


def submission_payload(
    *,
    program: str,
    signal_type: str,
    value: str,
    labels: Iterable[str] = (),
    quality: int | None = None,
    case: str | None = None,
    created_at: dt.datetime | None = None,
    nonce: str | None = None,
) -> bytes:
    """The bytes to sign for submitting one hash to one program.

    ``created_at`` and ``nonce`` are fresh unless given; give them only for
    reproducible examples and tests, since the server refuses a reused nonce.
    """
    fields = _common(
        program=program,
        signal_type=signal_type,
        value=value,
        created_at=created_at,
        nonce=nonce,
        case=case,
    )
    fields["labels"] = _check_labels(labels)
    if quality is not None:
        if signal_type != "pdq":
            raise PayloadError("quality applies to pdq hashes only")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
            raise PayloadError("quality must be an integer from 0 to 100")
        fields["quality"] = quality
    return _encode(fields)


def withdrawal_payload(
    *,
    program: str,
    signal_type: str,
    value: str,
    case: str | None = None,
    reason: str | None = None,
    created_at: dt.datetime | None = None,
    nonce: str | None = None,
) -> bytes:
    """The bytes to sign for withdrawing this member's support of one hash."""
    fields = _common(
        program=program,
        signal_type=signal_type,
        value=value,
        created_at=created_at,
        nonce=nonce,
        case=case,
    )
    if reason is not None:
        if not isinstance(reason, str) or len(reason) > MAX_REASON or "\x00" in reason:
            raise PayloadError(f"reason must be a string of at most {MAX_REASON} characters, without NUL")
        fields["reason"] = reason
    return _encode(fields)


def check_options(*, program: str, labels: Iterable[str] = (), case: str | None = None) -> None:
    """Check the fields that are the same for a whole run, before any work is done.

    ``hashexchange submit`` calls this first, so a mistyped label is reported at once
    rather than after hashing a folder and having every envelope rejected.
    """
    _check_program(program)
    _check_labels(labels)
    if case is not None:
        _check_case(case)


def parse_payload(payload: bytes) -> dict[str, Any]:
    """Decode verified payload bytes as a JSON object (for display and checks)."""
    try:
        decoded = loads_strict(payload)
    except StrictJSONError as exc:
        raise PayloadError(f"payload is not one unambiguous UTF-8 JSON document: {exc}") from exc
    if not isinstance(decoded, dict):
        raise PayloadError("payload must be a JSON object")
    return decoded


def _common(
    *,
    program: str,
    signal_type: str,
    value: str,
    created_at: dt.datetime | None,
    nonce: str | None,
    case: str | None,
) -> dict[str, Any]:
    _check_program(program)
    if nonce is None:
        nonce = new_nonce()
    elif not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise PayloadError("nonce must be 32 lowercase hex digits")
    fields: dict[str, Any] = {
        "program": program,
        "signal_type": signal_type,
        "value": normalise_value(signal_type, value),
        "created_at": format_timestamp(created_at),
        "nonce": nonce,
    }
    if case is not None:
        fields["case"] = _check_case(case)
    return fields


def _check_program(program: str) -> str:
    if not isinstance(program, str) or not PROGRAM_RE.fullmatch(program):
        raise PayloadError(f"program must be a slug of 1-64 letters, digits, - and _, got {program!r}")
    return program


def _check_labels(labels: Iterable[str]) -> list[str]:
    if isinstance(labels, str):
        # A bare string would otherwise become a list of its characters.
        raise PayloadError("labels must be a list of strings, not one string")
    checked = list(labels)
    if len(checked) > MAX_LABELS:
        raise PayloadError(f"at most {MAX_LABELS} labels, got {len(checked)}")
    for label in checked:
        if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
            raise PayloadError(
                f"label {label!r} must be 1-64 characters of A-Z, a-z, 0-9, ':', '.', '_', '/', '-', "
                "starting with a letter or digit"
            )
    return checked


def _check_case(case: str) -> str:
    if not isinstance(case, str) or not CASE_RE.fullmatch(case):
        raise PayloadError(f"case must be 1-64 characters of A-Z, a-z, 0-9, '_', '-', got {case!r}")
    return case


def _encode(fields: dict[str, Any]) -> bytes:
    # Compact and sorted: the server checks these bytes as they are, so a stable,
    # minimal encoding keeps envelopes small and examples reproducible.
    return json.dumps(fields, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")
