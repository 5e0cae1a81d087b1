"""The NCMEC hash-sharing API v2 shape: vocabulary, XML in and out, paging parameters. No ORM.

What python-threatexchange's NCMEC client (`exchanges/clients/ncmec/hash_api.py`) reads
and writes, and so what this facade emits and accepts:

- `GET v2/status` → `<status><member id="N">name</member></status>`: who you are;
- `GET v2/members` → `<members><member id="N">name</member>…</members>`;
- `GET v2/feedback/{PDQ|MD5}/reasons` → `<feedbackReasons><availableFeedbackReasons>
  <reason guid="…" name="…" type="…"/>…`;
- `GET v2/entries?from=&to=` → `<queryResult><images maxTimestamp="…"><image>|<deletedImage>
  …</images><videos …>…</videos><paging><next>/v2/entries?…&start=&size=&max=</next></paging>`;
  the client appends `next` to its base URL as it is;
- `PUT v2/entries/{esp id}/{entry id}/{PDQ|MD5}/feedback` with `<feedbackSubmission>
  <affirmative/>` or `<negative><reasonIds><guid>…</guid></reasonIds></negative>`.

How our data maps (docs/platforms.md has the long form): an ESP ("member" in NCMEC's
words, the uploader of an entry) is one of our **programs**; an entry is one hash in
one program, its id the hash id; an entry is deleted (`deletedImage`, `deletedVideo`)
when the hash is no longer active in that program (withdrawn, quarantined, retired).
So the client's `only_esp_ids` chooses programs, and a hash withdrawn from one program
stays listed through another. `status` names the calling member.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from core.problems import Problem

NAMESPACE = "https://hashsharing.ncmec.org/hashsharing/v2"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
PAGE_SIZE = 1000  # what NCMEC's `next` links carry
MAX_BODY = 64 * 1024

# Our signal type → (entry type, fingerprint tag, fingerprint type of the feedback URLs).
FINGERPRINTS: dict[str, tuple[str, str, str]] = {
    "pdq": ("image", "pdq", "PDQ"),
    "md5": ("image", "md5", "MD5"),
    "video_md5": ("video", "md5", "MD5"),
}
FINGERPRINT_TYPES = ("PDQ", "MD5")

# Feedback: an upvote is a removal; a downvote gives one of these reasons.
AFFIRMATIVE_OUTCOME = "removed"
AFFIRMATIVE_KINDS = ("removed", "blocked_at_upload", "restricted")


@dataclass(frozen=True)
class Reason:
    kind: str  # the outcome kind it records
    name: str

    @property
    def guid(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{NAMESPACE}/reasons/{self.kind}"))


NEGATIVE_REASONS = (
    Reason("not_violating", "Not the content the program is for (disputes the hash)"),
    Reason("unable_to_action", "Unable to action (quality, legal hold or other)"),
)
REASON_BY_GUID = {reason.guid: reason for reason in NEGATIVE_REASONS}
REASON_BY_KIND = {reason.kind: reason for reason in NEGATIVE_REASONS}

_INTEGER = re.compile(r"[0-9]{1,18}")


# Parsing requests ---------------------------------------------------------------------------


def parse_time(raw: str | None, *, name: str, default: dt.datetime) -> dt.datetime:
    """`from` / `to`: `yyyy-MM-ddTHH:mm:ssZ` (milliseconds allowed), UTC."""
    if raw is None or raw == "":
        return default
    text = raw.strip()
    for pattern in (DATE_FORMAT, "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return dt.datetime.strptime(text, pattern).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    raise Problem("invalid_parameter", f"{name} must be a time like 2026-01-31T23:59:59Z, got {raw[:40]!r}")


def parse_count(raw: str | None, *, name: str, default: int, maximum: int = 10**18) -> int:
    if raw is None or raw == "":
        return default
    if not _INTEGER.fullmatch(raw.strip()):
        raise Problem("invalid_parameter", f"{name} must be a whole number, got {raw[:40]!r}")
    value = int(raw.strip())
    if value > maximum:
        raise Problem("invalid_parameter", f"{name} must be at most {maximum}, got {value}")
    return value


def parse_fingerprint_type(raw: str) -> str:
    if raw not in FINGERPRINT_TYPES:
        raise Problem(
            "unknown_fingerprint_type",
            f"fingerprint type must be one of {', '.join(FINGERPRINT_TYPES)} (the types this exchange carries)",
            status=404,
        )
    return raw


@dataclass(frozen=True)
class Vote:
    kind: str  # the outcome kind
    affirmative: bool


def parse_feedback(body: bytes) -> Vote:
    """A `<feedbackSubmission>`: an upvote, or a downvote with one known reason."""
    if not body:
        raise Problem("malformed", "send a <feedbackSubmission> XML document")
    if len(body) > MAX_BODY:
        raise Problem("malformed", f"a feedback document is at most {MAX_BODY} bytes")
    try:
        root = SafeET.fromstring(body)
    except (ET.ParseError, DefusedXmlException) as exc:
        raise Problem("malformed", f"the body is not well-formed XML without entities: {exc}") from None
    if _local(root.tag) != "feedbackSubmission":
        raise Problem("malformed", "the root element must be <feedbackSubmission>")
    votes = [child for child in root if _local(child.tag) in ("affirmative", "negative")]
    if len(votes) != 1:
        raise Problem("malformed", "give exactly one <affirmative/> or <negative> element")
    vote = votes[0]
    if _local(vote.tag) == "affirmative":
        return Vote(AFFIRMATIVE_OUTCOME, True)
    guids = [(g.text or "").strip() for g in vote.iter() if _local(g.tag) == "guid"]
    if len(guids) != 1:
        raise Problem("malformed", "a <negative> vote gives one reason: <reasonIds><guid>…</guid></reasonIds>")
    reason = REASON_BY_GUID.get(guids[0])
    if reason is None:
        raise Problem("unknown_reason", "unknown reason guid; GET v2/feedback/{type}/reasons lists them")
    return Vote(reason.kind, False)


def _local(tag: Any) -> str:
    return str(tag).rpartition("}")[2]


# Building answers ---------------------------------------------------------------------------


def _root(tag: str) -> ET.Element:
    root = ET.Element(tag)
    root.set("xmlns", NAMESPACE)
    return root


def to_bytes(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def member_element(parent: ET.Element, *, esp_id: int, name: str) -> ET.Element:
    element = ET.SubElement(parent, "member", id=str(esp_id))
    element.text = name
    return element


def status_document(*, esp_id: int, name: str) -> bytes:
    root = _root("status")
    member_element(root, esp_id=esp_id, name=name)
    return to_bytes(root)


def members_document(members: list[tuple[int, str]]) -> bytes:
    root = _root("members")
    for esp_id, name in members:
        member_element(root, esp_id=esp_id, name=name)
    return to_bytes(root)


def reasons_document(fingerprint_type: str) -> bytes:
    root = _root("feedbackReasons")
    available = ET.SubElement(root, "availableFeedbackReasons")
    for reason in NEGATIVE_REASONS:
        ET.SubElement(available, "reason", guid=reason.guid, name=reason.name, type=fingerprint_type)
    return to_bytes(root)


def feedback_result_document(*, status: str) -> bytes:
    root = _root("feedbackSubmissionResult")
    root.set("status", status)
    return to_bytes(root)


@dataclass
class Entry:
    """One hash in one program, as an NCMEC entry."""

    hash_id: int
    esp_id: int
    esp_name: str
    signal_type: str
    value: str
    deleted: bool
    classification: str | None = None
    # The caller's own latest vote: (affirmative, reason kind or None)
    own_vote: tuple[bool, str | None] | None = None


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(DATE_FORMAT)


def entries_document(
    *,
    entries: list[Entry],
    max_time: dt.datetime | None,
    caller: tuple[int, str],
    next_query: dict[str, Any] | None,
) -> bytes:
    root = _root("queryResult")
    groups = {"image": ET.SubElement(root, "images"), "video": ET.SubElement(root, "videos")}
    counts = dict.fromkeys(groups, 0)
    for entry in entries:
        entry_type, tag, fingerprint_type = FINGERPRINTS[entry.signal_type]
        element = ET.SubElement(groups[entry_type], f"deleted{entry_type.title()}" if entry.deleted else entry_type)
        ET.SubElement(element, "id").text = str(entry.hash_id)
        member_element(element, esp_id=entry.esp_id, name=entry.esp_name)
        counts[entry_type] += 1
        if entry.deleted:
            continue
        if entry.classification:
            ET.SubElement(element, "classification").text = entry.classification
        fingerprints = ET.SubElement(element, "fingerprints")
        ET.SubElement(fingerprints, tag).text = entry.value
        if entry.own_vote is not None:
            affirmative, reason_kind = entry.own_vote
            feedback = ET.SubElement(element, "feedback")
            if affirmative:
                vote = ET.SubElement(feedback, "affirmativeFeedback", type=fingerprint_type)
                member_element(ET.SubElement(vote, "members"), esp_id=caller[0], name=caller[1])
            else:
                reason = REASON_BY_KIND[reason_kind or "not_violating"]
                vote = ET.SubElement(feedback, "negativeFeedback", type=fingerprint_type)
                reasons = ET.SubElement(vote, "reasons")
                ET.SubElement(reasons, "reason", guid=reason.guid, name=reason.name)
                member_element(ET.SubElement(reasons, "members"), esp_id=caller[0], name=caller[1])
    for entry_type, group in groups.items():
        group.set("count", str(counts[entry_type]))
        if counts[entry_type] and max_time is not None:
            group.set("maxTimestamp", format_time(max_time))
    if next_query is not None:
        paging = ET.SubElement(root, "paging")
        ET.SubElement(paging, "next").text = "/v2/entries?" + urlencode(next_query)
    return to_bytes(root)
