"""TMK+PDQF as an exchange-only type: relayed whole, matched by equality, bad values refused."""

from __future__ import annotations

import secrets

import pytest
from hashexchange_client import signal_types
from hashexchange_client.signal_types import SignalValueError

from hashes.models import Hash, HashBody
from tests.conftest import Caller
from tests.signing import Signer


def tmk_value(size: int = 4096) -> str:
    return (b"TMK1" + secrets.token_bytes(size - 4)).hex()


@pytest.mark.parametrize(
    ("value", "message"),
    [("abc", "even number of hex digits"), ("zz" * 10, "only hex digits"), ("", "even number")],
)
def test_bad_values_are_refused(value: str, message: str) -> None:
    with pytest.raises(SignalValueError, match=message):
        signal_types.validate("tmk_pdqf", value)


def test_a_value_over_the_limit_is_refused() -> None:
    too_long = "ab" * (signal_types.get("tmk_pdqf").max_length // 2 + 1)
    with pytest.raises(SignalValueError, match="from 2 to"):
        signal_types.validate("tmk_pdqf", too_long)


def test_relayed_whole_and_matched_by_equality(signer_a: Signer, platform_b: Caller) -> None:
    value = tmk_value()
    body = signer_a.submit(signer_a.submission(value.upper(), signal_type="tmk_pdqf")).json()
    assert body["accepted"] == 1, body
    hash_id = body["results"][0]["hash_id"]
    assert Hash.objects.get(pk=hash_id).value == signal_types.get("tmk_pdqf").storage_key(value)
    assert HashBody.objects.get(pk=hash_id).value == value
    feed = platform_b.client.get("/api/v1/feed?after=0").json()
    assert [e["hash"]["value"] for e in feed["entries"] if e["kind"] == "hash.added"] == [value]
    queries = [{"signal_type": "tmk_pdqf", "value": v} for v in (value, tmk_value())]
    matched, other = platform_b.client.post("/api/v1/match", {"queries": queries}, format="json").json()["results"]
    assert [(m["hash_id"], m["value"], m["distance"]) for m in matched["matches"]] == [(hash_id, value, 0)]
    assert other["matches"] == []
