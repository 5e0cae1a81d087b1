"""The StopNCII API shape: vocabulary, mappings, page cursors and case pseudonyms. No ORM.

Meta's `threatexchange` client (`exchanges/clients/stopncii/api.py`) parses every record
with strict enums: one value outside its sets and it drops the whole record. So
everything this facade emits comes from the tables below, and everything it accepts is
mapped through them. The client's own spellings are kept as they are (`CSPFeedbacks`,
`lastModtimestamp`), because they are the wire format.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from hashexchange_client import signal_types

from core.problems import Problem

# Signal types ------------------------------------------------------------------------------

# Ours → theirs. Only these two have a StopNCII name that the client maps to a pytx signal
# type (ImagePDQ → pdq, VideoMD5 → video_md5); our other types are not served here.
SIGNAL_TYPES: dict[str, str] = {"pdq": "ImagePDQ", "video_md5": "VideoMD5"}
FROM_SIGNAL_TYPE: dict[str, str] = {theirs: ours for ours, theirs in SIGNAL_TYPES.items()}
# What the client's enum holds; SubmitHashes names the others in its error messages.
CLIENT_SIGNAL_TYPES = ("Unknown", "ImagePDQ", "VideoMD5", "VideoTMK", "Text", "URL")
# The client sends `str(enum)` instead of its value: "StopNCIISignalType.ImagePDQ".
_ENUM_PREFIX = "StopNCIISignalType."
_HEX = re.compile(r"[0-9a-f]+")


def parse_hash_value(value: str) -> str:
    """A `hashValue` to look up (lowercase, stripped): it must be hex of the length of a type served here."""
    lengths = sorted({signal_types.get(name).hex_length for name in SIGNAL_TYPES})
    if len(value) not in lengths or not _HEX.fullmatch(value):
        digits = " or ".join(map(str, lengths))
        raise Problem("malformed", f"hashValue must be {digits} hex digits ({', '.join(FROM_SIGNAL_TYPE)})")
    return value


def parse_signal_type(raw: Any) -> str:
    """Our signal type for a StopNCII `signalType`, accepting `ImagePDQ` and `StopNCIISignalType.ImagePDQ`."""
    if not isinstance(raw, str):
        raise Problem("unknown_signal_type", "signalType must be a string such as ImagePDQ")
    name = raw.strip().removeprefix(_ENUM_PREFIX)
    if name in FROM_SIGNAL_TYPE:
        return FROM_SIGNAL_TYPE[name]
    if name in CLIENT_SIGNAL_TYPES:
        raise Problem(
            "signal_type_not_supported",
            f"{name} is not exchanged here; send {' or '.join(FROM_SIGNAL_TYPE)}",
        )
    raise Problem("unknown_signal_type", f"unknown signalType {raw!r}; send {' or '.join(FROM_SIGNAL_TYPE)}")


# Statuses ----------------------------------------------------------------------------------

# StopNCIICaseStatus: Unknown | Received | Active | Withdrawn | Deleted.
ACTIVE, WITHDRAWN, DELETED = "Active", "Withdrawn", "Deleted"


def hash_status(*, status: str, listed: bool) -> str:
    """A record's `hashStatus` from our Hash.status and whether it is listed in a program the caller sees.

    `retired` is final: Deleted. `withdrawn`, `quarantined` (a tombstone until an admin
    decides) and a hash no longer listed in any of the caller's programs: Withdrawn.
    """
    if status == "retired":
        return DELETED
    if status == "active" and listed:
        return ACTIVE
    return WITHDRAWN


def case_status(*, submission_active: bool, hash_retired: bool) -> str:
    """The status of one case behind a record: the submission's own, Deleted once the hash is retired."""
    if hash_retired:
        return DELETED
    return ACTIVE if submission_active else WITHDRAWN


# Feedback ----------------------------------------------------------------------------------

# StopNCIICSPFeedbackValue, in the client's order.
FEEDBACK_VALUES = (
    "Unknown",
    "None",
    "QualityUnknown",
    "PendingReview",
    "Blocked",
    "NotBlocked",
    "Withdrawn",
    "Deleted",
)
# Our outcome kinds → feedbackValue (what CSPFeedbacks shows).
OUTCOME_TO_FEEDBACK: dict[str, str] = {
    "matched": "PendingReview",
    "removed": "Blocked",
    "blocked_at_upload": "Blocked",
    "restricted": "Blocked",
    "not_violating": "NotBlocked",
    "unable_to_action": "QualityUnknown",
    "deleted_after_withdrawal": "Deleted",
}
# feedbackValue → our outcome kind (what SubmitFeedback records). `None` (a tag with no
# state) and `Unknown` say nothing happened, so they record nothing.
FEEDBACK_TO_OUTCOME: dict[str, str] = {
    "PendingReview": "matched",
    "Blocked": "removed",
    "NotBlocked": "not_violating",
    "QualityUnknown": "unable_to_action",
    "Withdrawn": "deleted_after_withdrawal",
    "Deleted": "deleted_after_withdrawal",
}
_OUTCOME_TAG_JUNK = re.compile(r"[^a-z0-9_.:-]+")
_LABEL_JUNK = re.compile(r"[^A-Za-z0-9:._/-]+")


def parse_feedback_value(raw: Any) -> str:
    """Our outcome kind for a `feedbackValue`, or a Problem saying why none is recorded."""
    if raw not in FEEDBACK_VALUES:
        raise Problem("unknown_feedback_value", f"feedbackValue must be one of {', '.join(FEEDBACK_VALUES)}")
    if raw not in FEEDBACK_TO_OUTCOME:
        raise Problem(
            "no_outcome",
            f"feedbackValue {raw} records nothing; send one of {', '.join(FEEDBACK_TO_OUTCOME)}",
        )
    return FEEDBACK_TO_OUTCOME[raw]


def parse_tags(raw: Any) -> list[str]:
    """The client's free-form `tags` (a list of strings), or a Problem."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(tag, str) for tag in raw):
        raise Problem("malformed", "tags must be a list of strings")
    return raw


def outcome_tags(tags: list[str]) -> list[str]:
    """Free-form tags ("Nude", "Sexual Content") as outcome tags: lowercase, 1-40 of a-z 0-9 _ . : -."""
    found = []
    for tag in tags:
        cleaned = _OUTCOME_TAG_JUNK.sub("-", tag.strip().lower()).strip("-_.:")[:40].rstrip("-_.:")
        if cleaned:
            found.append(cleaned)
    return sorted(set(found))


def submission_labels(tags: list[str]) -> list[str]:
    """Free-form tags as submission labels: 1-64 of A-Z a-z 0-9 : . _ / -."""
    found = []
    for tag in tags:
        cleaned = _LABEL_JUNK.sub("-", tag.strip()).strip("-:._/")[:64]
        if cleaned:
            found.append(cleaned)
    return list(dict.fromkeys(found))


# Records -----------------------------------------------------------------------------------


def hash_record(
    *,
    last_modified: int,
    signal_type: str,
    value: str,
    status: str,
    cases: dict[str, str],
    feedbacks: list[dict[str, Any]],
) -> dict[str, Any]:
    """One entry of `hashRecords`, typed as the client's dataclass wants it (ints, an object for cases)."""
    return {
        "lastModtimestamp": int(last_modified),
        "signalType": SIGNAL_TYPES[signal_type],
        "hashValue": value,
        "hashStatus": status,
        "caseNumbers": dict(cases),
        "CSPFeedbacks": feedbacks,
    }


def feedback_entry(*, kind: str, source: str, tags: list[str]) -> dict[str, Any]:
    """One entry of `CSPFeedbacks` for an outcome of `kind`."""
    return {"source": source, "feedbackValue": OUTCOME_TO_FEEDBACK[kind], "tags": list(tags)}


def case_pseudonym(key: bytes, *, member_id: int, case: str) -> str:
    """A case's name for one member: HMAC(key, member id and case) as a UUID (version 8).

    Members never see the real case id, and two members see different names for the
    same case, so they cannot join what they were sent; one member sees the same name
    for every hash of a case, as StopNCII's case numbers allow.
    """
    digest = hmac.new(key, f"{member_id}\x00{case}".encode(), hashlib.sha256).digest()
    number = int.from_bytes(digest[:16], "big")
    number &= ~(0xF000 << 64)  # version 8: "custom", RFC 9562
    number |= 0x8000 << 64
    number &= ~(0xC000 << 48)  # the RFC 4122/9562 variant
    number |= 0x8000 << 48
    return str(uuid.UUID(int=number))


# Page cursors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where a FetchHashes run stands.

    - `start`: the run's `startTimestamp` (the client re-sends it with every page);
    - `seq`, `offset`: the next item to serve — the event at `seq` in the log, after its
      first `offset` hashes (an operator's import names up to 1,000 hashes in one event);
    - `high`: the highest event time (whole seconds) the run has passed, so the
      `nextSetTimestamp` of a later page is never lower than an earlier one's.
    """

    member_id: int
    start: int
    seq: int
    offset: int = 0
    high: int = 0


_TOKEN_VERSION = 1


def encode_cursor(cursor: Cursor, key: bytes) -> str:
    """An opaque `nextPageToken`: the cursor, signed so that a corrupted or forged one is refused."""
    body = json.dumps(
        [_TOKEN_VERSION, cursor.member_id, cursor.start, cursor.seq, cursor.offset, cursor.high],
        separators=(",", ":"),
    ).encode()
    tag = hmac.new(key, body, hashlib.sha256).digest()[:16]
    return _b64(body) + "." + _b64(tag)


def decode_cursor(token: str, key: bytes, *, member_id: int, start: int) -> Cursor:
    """The cursor in a `nextPageToken`, checked against the caller and its `startTimestamp`."""
    try:
        body_part, tag_part = token.split(".", 1)
        body, tag = _unb64(body_part), _unb64(tag_part)
    except (ValueError, binascii.Error):
        raise Problem("invalid_page_token", "nextPageToken is not one this server issued") from None
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest()[:16], tag):
        raise Problem("invalid_page_token", "nextPageToken is not one this server issued")
    try:
        version, owner, token_start, seq, offset, high = json.loads(body)
    except (ValueError, TypeError):
        raise Problem("invalid_page_token", "nextPageToken is not one this server issued") from None
    if version != _TOKEN_VERSION or owner != member_id:
        raise Problem("invalid_page_token", "nextPageToken was issued to another caller")
    if token_start != start:
        raise Problem(
            "invalid_page_token",
            f"nextPageToken belongs to startTimestamp={token_start}; send it with that startTimestamp",
        )
    return Cursor(member_id=member_id, start=start, seq=seq, offset=offset, high=high)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Query parameters --------------------------------------------------------------------------

# Unix seconds up to the end of year 9999: anything larger cannot be a time.
MAX_TIMESTAMP = 253_402_300_799
_INTEGER = re.compile(r"[0-9]{1,20}")


def parse_int(raw: str | None, *, name: str, default: int, minimum: int, maximum: int) -> int:
    """A non-negative integer query parameter within bounds, or a Problem naming it."""
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not _INTEGER.fullmatch(text):
        raise Problem("invalid_parameter", f"{name} must be a whole number, got {raw[:40]!r}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise Problem("invalid_parameter", f"{name} must be from {minimum} to {maximum}, got {value}")
    return value
