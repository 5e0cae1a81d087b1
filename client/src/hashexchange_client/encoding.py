"""Strict base64 and strict JSON, shared by keys, envelopes and payloads.

Python's decoder is lenient by default (it skips garbage and ignores padding bits), so
two different strings could decode to the same bytes. Signed material must have exactly
one spelling, or a verifier could be shown an envelope that differs from the one the
server stored while still checking out; hence the round-trip test below.
"""

from __future__ import annotations

import base64
import binascii
import json
import re


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


_STANDARD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URL_SAFE = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def b64decode_any(text: object, *, what: str = "value") -> bytes:
    """Decode base64 in either alphabet, padded or not, as DSSE asks verifiers to accept.

    DSSE envelopes are JSON, and its spec lets signers use standard or URL-safe base64,
    with or without padding. Still refused: non-strings, white space and other
    characters, the two alphabets mixed in one string, misplaced padding, and non-zero
    padding bits (no encoder makes them; they would give one byte string two spellings
    in the same alphabet).
    """
    if not isinstance(text, str):
        raise Base64Error(f"{what} must be a base64 string")
    url_safe = "-" in text or "_" in text
    if not (_URL_SAFE if url_safe else _STANDARD).fullmatch(text):
        raise Base64Error(f"{what} is not valid base64 (standard or URL-safe, padded or not)")
    bare = text.rstrip("=")
    if len(bare) % 4 == 1 or (text != bare and len(text) % 4):
        raise Base64Error(f"{what} is not valid base64: wrong length or padding")
    standard = bare.replace("-", "+").replace("_", "/") if url_safe else bare
    padded = standard + "=" * (-len(standard) % 4)
    try:
        data = base64.b64decode(padded.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise Base64Error(f"{what} is not valid base64") from exc
    if b64encode(data) != padded:
        raise Base64Error(f"{what} is not canonical base64: its padding bits are not zero")
    return data


class StrictJSONError(ValueError):
    """Bytes that are not one unambiguous JSON document; the message says why."""


# Signed payloads are flat objects; anything deeper than this is refused before Python's
# parser recurses into it.
MAX_JSON_DEPTH = 32
# Integers longer than this are refused: no field of the wire format needs more, and a
# verifier in another language would read a huge number differently (or not at all).
MAX_INT_DIGITS = 19


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found: dict[str, object] = {}
    for key, value in pairs:
        if key in found:
            raise StrictJSONError(f"the key {key!r} appears twice in one object")
        found[key] = value
    return found


def strict_int(text: str) -> int:
    """An integer of at most MAX_INT_DIGITS digits (json.loads' parse_int)."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise StrictJSONError(f"an integer of {len(text.lstrip('-'))} digits is too large (at most {MAX_INT_DIGITS})")
    return int(text)


def _no_constant(name: str) -> object:
    raise StrictJSONError(f"{name} is not JSON")


def json_depth(text: str, *, limit: int | None = None) -> int:
    """The deepest nesting of arrays and objects, counting brackets outside strings.

    With `limit`, a text with no more opening brackets than that (counted at C speed, in
    strings or not) is answered without the scan: it cannot nest deeper.
    """
    if limit is not None:
        opening = text.count("[") + text.count("{")
        if opening <= limit:
            return opening
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def value_depth(value: object) -> int:
    """The deepest nesting of lists and dicts in a parsed value, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def lone_surrogate(value: object) -> str | None:
    """The first lone UTF-16 surrogate in a parsed JSON value (keys included), as `\\udXXX`, or None.

    JSON can spell half of a surrogate pair on its own (`"\\ud800"`). It is no
    character: it cannot be written as UTF-8, and readers disagree on it (Python keeps it,
    others put U+FFFD in its place or refuse the document).
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    return f"\\u{ord(item[exc.start]):04x}"
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def loads_strict(data: bytes) -> object:
    """Parse signed JSON so that every reader of the same bytes reads the same document.

    Refused: bytes that are not UTF-8; a key repeated in one object (parsers disagree on
    which one wins, so two verifiers could read different payloads under one signature);
    NaN and Infinity; integers of more than MAX_INT_DIGITS digits; nesting deeper than
    MAX_JSON_DEPTH; lone surrogates (`\\ud800`, which readers disagree on too). Raises
    StrictJSONError (a ValueError) with the reason.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictJSONError(f"not UTF-8: {exc}") from None
    if json_depth(text, limit=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise StrictJSONError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_int=strict_int, parse_constant=_no_constant)
    except StrictJSONError:
        raise
    except (ValueError, RecursionError) as exc:
        raise StrictJSONError(str(exc)) from None
    surrogate = lone_surrogate(value) if "\\u" in text else None
    if surrogate is not None:
        raise StrictJSONError(f"{surrogate} is half of a UTF-16 surrogate pair, not a character")
    return value
