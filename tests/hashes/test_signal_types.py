"""Signal types: normalisation, validation and distance (no database)."""

from __future__ import annotations

import pytest
from hashexchange_client import signal_types
from hashexchange_client.signal_types import SignalValueError
from hypothesis import given
from hypothesis import strategies as st


def hex_of(bits: int) -> st.SearchStrategy[str]:
    return st.integers(min_value=0, max_value=2**bits - 1).map(lambda n: format(n, f"0{bits // 4}x"))


# XOR with a balanced pattern, so that hypothesis's favourite extremes (all zeros, all
# ones) become realistic hashes instead of being filtered out as degenerate.
balanced_pdq = (
    hex_of(256)
    .map(lambda h: format(int(h, 16) ^ int("5a" * 32, 16), "064x"))
    .filter(lambda h: 32 <= int(h, 16).bit_count() <= 224)
)


@given(
    st.sampled_from(["phash", "dhash", "md5", "sha256", "video_md5"]).flatmap(
        lambda name: st.tuples(st.just(name), hex_of(signal_types.SIGNAL_TYPES[name].bits))
    )
)
def test_case_and_white_space_do_not_matter(case: tuple[str, str]) -> None:
    name, value = case
    messy = "  " + " ".join(value[i : i + 8].upper() for i in range(0, len(value), 8)) + "\n"
    assert signal_types.validate(name, messy) == value
    assert signal_types.validate(name, signal_types.validate(name, messy)) == value


@given(balanced_pdq)
def test_pdq_normalisation_is_idempotent(value: str) -> None:
    assert signal_types.validate("pdq", value.upper()) == value


@given(st.text(max_size=80))
def test_any_string_is_either_valid_normalised_hex_or_a_clear_error(text: str) -> None:
    for name in signal_types.SIGNAL_TYPE_NAMES:
        try:
            value = signal_types.validate(name, text)
        except SignalValueError as exc:
            assert name in str(exc)
        else:
            kind = signal_types.SIGNAL_TYPES[name]
            if kind.layout == "hex":
                assert len(value) == kind.hex_length
                assert set(value) <= set("0123456789abcdef")
            elif kind.layout == "blob":  # TMK+PDQF: an even number of hex digits, within the limit
                assert 2 <= len(value) <= kind.max_length and len(value) % 2 == 0
                assert set(value) <= set("0123456789abcdef")
            # whatever the layout, a valid value is already in its normal form
            assert signal_types.validate(name, value) == value


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("pdq", "ab" * 31, "64 hex digits"),
        ("md5", "zz" * 16, "only hex digits"),
        ("phash", "0" * 17, "16 hex digits"),
        ("pdq", "0" * 64, "degenerate"),
        ("pdq", "f" * 64, "degenerate"),
        ("pdq", "f" * 7 + "0" * 57, "degenerate"),
        ("nope", "00", "unknown signal type 'nope'; known types: pdq"),
    ],
)
def test_invalid_values_say_what_to_fix(name: str, value: str, message: str) -> None:
    with pytest.raises(SignalValueError, match=message):
        signal_types.validate(name, value)


@given(balanced_pdq, balanced_pdq)
def test_hamming_distance_is_a_metric(a: str, b: str) -> None:
    pdq = signal_types.get("pdq")
    assert pdq.distance(a, a) == 0
    assert (
        pdq.distance(a, b)
        == pdq.distance(b, a)
        == sum(bin(int(x, 16) ^ int(y, 16)).count("1") for x, y in zip(a, b, strict=True))
    )


def test_exact_types_compare_by_equality() -> None:
    md5 = signal_types.get("md5")
    assert md5.distance("a" * 32, "a" * 32) == 0
    assert md5.distance("a" * 32, "a" * 31 + "b") == 128


def test_quality_floor() -> None:
    signal_types.check_pdq_quality(None, 50)
    signal_types.check_pdq_quality(50, 50)
    with pytest.raises(SignalValueError, match="below this program's floor of 50"):
        signal_types.check_pdq_quality(49, 50)
    with pytest.raises(SignalValueError, match="0 to 100"):
        signal_types.check_pdq_quality(101, 50)
