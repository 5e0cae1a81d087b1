"""Strict base64 shared by keys and envelopes.

Python's decoder is lenient by default (it skips garbage and ignores padding bits), so
two different strings could decode to the same bytes. Signed material must have exactly
one spelling, or a verifier could be shown an envelope that differs from the one the
server stored while still checking out; hence the round-trip test below.
"""

from __future__ import annotations

import base64
import binascii


class Base64Error(ValueError):
    """A string is not canonical standard base64."""


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as every field of the wire format uses."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: object, *, what: str = "value") -> bytes:
    """Decode canonical standard base64, refusing anything else.

    Refused: non-strings, characters outside the standard alphabet (including the
    URL-safe ``-`` and ``_`` and white space), wrong padding, and non-zero padding bits.
    """
    if not isinstance(text, str):
        raise Base64Error(f"{what} must be a base64 string")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise Base64Error(f"{what} is not valid standard base64") from exc
    if b64encode(data) != text:
        raise Base64Error(f"{what} is not canonical standard base64")
    return data
