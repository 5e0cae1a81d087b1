"""Signal types: how each kind of hash is normalised, validated and compared.

The one table of them, for the server (validation, the index, imports, program
thresholds) and for members (this client checks values before it signs them). A plain
module with no Django and no third-party import, so both sides can use it. Values travel
as lowercase hex.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEX = re.compile(r"[0-9a-f]*")
_WHITESPACE = re.compile(r"\s+")


class SignalValueError(ValueError):
    """A value that is not valid for its signal type; the message says what to fix."""


@dataclass(frozen=True)
class SignalType:
    """One kind of hash. `hamming` types match within a distance, the others by equality."""

    name: str
    bits: int
    hamming: bool
    default_threshold: int
    description: str

    @property
    def hex_length(self) -> int:
        return self.bits // 4

    def normalise(self, value: str) -> str:
        """Lowercase, strip white space (including inside, as hashes are often wrapped)."""
        if not isinstance(value, str):
            raise SignalValueError(f"{self.name} value must be a string of hex digits")
        return _WHITESPACE.sub("", value).lower()

    def validate(self, value: str) -> str:
        """Normalise and check length and alphabet; return the normalised value."""
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
