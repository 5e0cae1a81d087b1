"""Signal types: how each kind of hash is normalised, validated and compared.

The one table of them, for the server (validation, the index, imports, program
thresholds) and for members (this client checks values before it signs them). A plain
module with no Django and no third-party import, so both sides can use it. Values travel
as lowercase hex.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

_HEX = re.compile(r"[0-9a-f]*")
_WHITESPACE = re.compile(r"\s+")


class SignalValueError(ValueError):
    """A value that is not valid for its signal type; the message says what to fix."""


@dataclass(frozen=True)
class SignalType:
    """One kind of hash. `hamming` types match within a distance, the others by equality.

    `layout` says what a value is: "hex" (a fixed number of hex digits, `bits` of them),
    "frames" (vPDQ: a list of PDQ frames, `bits` per frame, see `parse_vpdq`) or "blob"
    (an opaque hex string of variable length, matched by equality: TMK+PDQF). Values of
    the last two are longer than a database key should be: the server stores them under
    `storage_key` (their SHA-256) and keeps the value itself beside it.
    """

    name: str
    bits: int
    hamming: bool
    default_threshold: int
    description: str
    layout: str = "hex"
    max_length: int = 0  # for "blob": the most hex digits a value may have

    @property
    def hex_length(self) -> int:
        return self.bits // 4

    @property
    def long_values(self) -> bool:
        """True when values are stored by their digest (frames and blobs)."""
        return self.layout != "hex"

    def storage_key(self, value: str) -> str:
        """What the server's hash table keys a normalised value by: itself, or its SHA-256."""
        if self.layout == "hex":
            return value
        return hashlib.sha256(value.encode("ascii")).hexdigest()

    def normalise(self, value: str) -> str:
        """Lowercase, strip white space (including inside, as hashes are often wrapped)."""
        if not isinstance(value, str):
            raise SignalValueError(f"{self.name} value must be a string of hex digits")
        return _WHITESPACE.sub("", value).lower()

    def validate(self, value: str) -> str:
        """Normalise and check length and alphabet; return the normalised value."""
        if self.layout == "frames":
            return serialise_vpdq(parse_vpdq(value))
        if self.layout == "blob":
            return _validate_blob(self, value)
        normalised = self.normalise(value)
        if len(normalised) != self.hex_length:
            raise SignalValueError(
                f"{self.name} value must be {self.hex_length} hex digits ({self.bits} bits), got {len(normalised)}"
            )
        if not _HEX.fullmatch(normalised):
            raise SignalValueError(f"{self.name} value must contain only hex digits 0-9 and a-f")
        if self.name == "pdq":
            check_pdq_not_degenerate(normalised)
        return normalised

    def distance(self, a: str, b: str) -> int:
        """Hamming distance for perceptual types; 0 or `bits` (equal or not) for exact ones."""
        if self.hamming:
            return (int(a, 16) ^ int(b, 16)).bit_count()
        return 0 if a == b else self.bits


# A real photo's PDQ hash has about half its bits set; a hash with fewer than this many
# set or clear bits comes from a blank or near-constant image and would match everything
# that is blank, so it is refused.
PDQ_MIN_MINORITY_BITS = 32

SIGNAL_TYPES: dict[str, SignalType] = {
    t.name: t
    for t in (
        SignalType("pdq", 256, True, 31, "Meta's PDQ perceptual image hash"),
        SignalType("phash", 64, True, 10, "imagehash perceptual hash (DCT)"),
        SignalType("dhash", 64, True, 10, "imagehash difference hash"),
        SignalType("md5", 128, False, 0, "MD5 of the file's bytes"),
        SignalType("sha256", 256, False, 0, "SHA-256 of the file's bytes"),
        SignalType("video_md5", 128, False, 0, "MD5 of a video file's bytes"),
        SignalType(
            "vpdq",
            256,
            False,
            31,
            "Meta's vPDQ video hash: a PDQ hash per sampled frame (threshold: PDQ distance per frame)",
            layout="frames",
        ),
        SignalType(
            "tmk_pdqf",
            0,
            False,
            0,
            "TMK+PDQF video features (exchange only: relayed as sent, matched by equality)",
            layout="blob",
            max_length=600_000,
        ),
    )
}
SIGNAL_TYPE_NAMES: tuple[str, ...] = tuple(SIGNAL_TYPES)
DEFAULT_THRESHOLDS: dict[str, int] = {name: t.default_threshold for name, t in SIGNAL_TYPES.items()}


def get(name: str) -> SignalType:
    """The signal type called `name`, or a SignalValueError listing the known ones."""
    try:
        return SIGNAL_TYPES[name]
    except (KeyError, TypeError):
        raise SignalValueError(f"unknown signal type {name!r}; known types: {', '.join(SIGNAL_TYPE_NAMES)}") from None


def validate(name: str, value: str) -> str:
    """Check `value` for signal type `name`; return it normalised."""
    return get(name).validate(value)


def check_pdq_not_degenerate(value: str) -> None:
    ones = int(value, 16).bit_count()
    if min(ones, 256 - ones) < PDQ_MIN_MINORITY_BITS:
        raise SignalValueError(
            f"pdq value is degenerate ({ones} of 256 bits set): it comes from a blank or "
            "near-constant image and would match unrelated content"
        )


def check_pdq_quality(quality: int | None, floor: int) -> None:
    """Refuse a PDQ hash whose submitter-stated quality is under the program's floor."""
    if quality is None:
        return
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
        raise SignalValueError("quality must be an integer from 0 to 100")
    if quality < floor:
        raise SignalValueError(f"pdq quality {quality} is below this program's floor of {floor}")


# vPDQ ------------------------------------------------------------------------------------------
#
# A value is python-threatexchange's serialisation of a vPDQ hash (its vPDQ extension's
# `vpdq_to_json`): a JSON list of strings "<pdq hex>,<quality>,<timestamp>", one per
# sampled frame, in frame order. Its users can send us their values and read ours.

# The rule python-threatexchange matches videos by: frames of quality under 50 are ignored,
# a frame matches within PDQ distance 31, and a video matches when at least 80 % of the
# query's (distinct, good-quality) frames match one of the indexed video's; a full match
# when at least 80 % of the indexed video's frames match one of the query's as well.
VPDQ_QUALITY_THRESHOLD = 50
VPDQ_QUERY_MATCH_PERCENT = 80.0
VPDQ_FULL_MATCH_PERCENT = 80.0
# One frame a second for an hour; a value this long is about 290 kB.
VPDQ_MAX_FRAMES = 3600
VPDQ_TIMESTAMP_PRECISION = 3
_VPDQ_MAX_TIMESTAMP = 7 * 24 * 3600.0
_QUALITY = re.compile(r"[0-9]{1,3}")  # ASCII only: str.isdigit() takes "²", which int() refuses


@dataclass(frozen=True)
class VpdqFrame:
    """One sampled frame of a video: its PDQ hash, its quality (0-100), its time in seconds."""

    pdq: str
    quality: int
    timestamp: float

    def __str__(self) -> str:
        # python-threatexchange's format: three significant digits of the timestamp.
        return f"{self.pdq},{self.quality},{self.timestamp:.{VPDQ_TIMESTAMP_PRECISION}}"


def parse_vpdq(value: object) -> list[VpdqFrame]:
    """Read and check a vPDQ value; the message of the SignalValueError names the bad frame.

    Checks: a JSON list of 1 to VPDQ_MAX_FRAMES strings; each "hex,quality,timestamp" with
    64 hex digits, an integer quality 0-100 and a finite timestamp from 0; timestamps never
    decrease (python-threatexchange rounds them to three significant digits, so two frames
    of a long video can carry the same one); at least one frame of quality 50 or more that is
    not degenerate (a blank frame's PDQ matches every blank frame).
    """
    if not isinstance(value, str):
        raise SignalValueError("vpdq value must be a string: a JSON list of 'pdq_hex,quality,timestamp' frames")
    try:
        items = json.loads(value)
    except (ValueError, RecursionError):
        raise SignalValueError("vpdq value must be a JSON list of 'pdq_hex,quality,timestamp' strings") from None
    if not isinstance(items, list) or not items:
        raise SignalValueError("vpdq value must be a non-empty JSON list of 'pdq_hex,quality,timestamp' strings")
    if len(items) > VPDQ_MAX_FRAMES:
        raise SignalValueError(f"vpdq value has {len(items)} frames; at most {VPDQ_MAX_FRAMES} are accepted")
    frames: list[VpdqFrame] = []
    previous = 0.0
    usable = 0
    for position, item in enumerate(items):
        where = f"vpdq frame {position}"
        if not isinstance(item, str):
            raise SignalValueError(f"{where} must be a string 'pdq_hex,quality,timestamp'")
        parts = item.split(",")
        if len(parts) != 3:
            raise SignalValueError(f"{where} must have three comma-separated fields: pdq_hex,quality,timestamp")
        pdq, quality_text, time_text = (part.strip() for part in parts)
        pdq = pdq.lower()
        if len(pdq) != 64 or not _HEX.fullmatch(pdq):
            raise SignalValueError(f"{where}: the PDQ hash must be 64 hex digits, got {len(pdq)} characters")
        if not _QUALITY.fullmatch(quality_text) or not 0 <= int(quality_text) <= 100:
            raise SignalValueError(f"{where}: quality must be an integer from 0 to 100")
        try:
            timestamp = float(time_text)
        except ValueError:
            timestamp = math.nan
        if not math.isfinite(timestamp) or not 0 <= timestamp <= _VPDQ_MAX_TIMESTAMP:
            raise SignalValueError(f"{where}: the timestamp must be a number of seconds from 0")
        if timestamp < previous:
            raise SignalValueError(f"{where}: timestamps must not decrease ({timestamp} after {previous})")
        previous = timestamp
        quality = int(quality_text)
        if quality >= VPDQ_QUALITY_THRESHOLD and _pdq_minority_bits(pdq) >= PDQ_MIN_MINORITY_BITS:
            usable += 1
        frames.append(VpdqFrame(pdq, quality, timestamp))
    if not usable:
        raise SignalValueError(
            f"vpdq value has no frame of quality {VPDQ_QUALITY_THRESHOLD} or more that is not blank: "
            "it could match nothing, or everything"
        )
    return frames


def serialise_vpdq(frames: list[VpdqFrame]) -> str:
    """The canonical value: python-threatexchange's `vpdq_to_json` of the same frames."""
    return json.dumps([str(frame) for frame in frames])


def vpdq_match_frames(frames: list[VpdqFrame]) -> list[str]:
    """The frames that take part in matching, as python-threatexchange picks them: duplicates
    dropped (the first kept), then frames of quality under 50; in order."""
    first: dict[str, int] = {}
    for frame in frames:
        first.setdefault(frame.pdq, frame.quality)
    return [pdq for pdq, quality in first.items() if quality >= VPDQ_QUALITY_THRESHOLD]


def _pdq_minority_bits(value: str) -> int:
    ones = int(value, 16).bit_count()
    return min(ones, 256 - ones)


def _validate_blob(kind: SignalType, value: object) -> str:
    if not isinstance(value, str):
        raise SignalValueError(f"{kind.name} value must be a string of hex digits")
    normalised = _WHITESPACE.sub("", value).lower()
    if not normalised or len(normalised) % 2 or len(normalised) > kind.max_length:
        raise SignalValueError(
            f"{kind.name} value must be an even number of hex digits, from 2 to {kind.max_length}, "
            f"got {len(normalised)}"
        )
    if not _HEX.fullmatch(normalised):
        raise SignalValueError(f"{kind.name} value must contain only hex digits 0-9 and a-f")
    return normalised
