"""Edge values on every parser of the API: each is a clear 4xx, never a 500, and a refusal changes nothing.

The strategies below draw what parsers get wrong: calendar edges (years 1 and 9999 with
offsets, leap seconds, missing zones), integers beyond 64 bits and beyond Python's
4,300-digit parsing limit, deep nesting, repeated keys, and text with NUL, lone
surrogates and right-to-left marks. They are aimed at request bodies as a whole, outcomes,
cursors and hash ids, report periods, and the StopNCII facade. (Signed envelope payloads
have their own in tests/hashes/test_edge_inputs.py.)

A refusal is 4xx `application/problem+json` with a `detail` that says what to fix; in a
batch, the bad item is refused alone and the others are kept.

FUZZ_EXAMPLES (as for tests/test_fuzz_api.py) sets the examples per property; the normal
suite runs EXAMPLES of each.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.ledger import Event
from members.models import Program
from tests.conftest import Caller
from tests.exchange.test_stopncii import stopncii_client

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 20)
# The tests' callers and database are fixtures: one per test, shared by its examples.
edge_settings = settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])

BIGINT_MAX = 2**63 - 1

# Strategies ----------------------------------------------------------------------------------


def _offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


zones = st.one_of(
    st.just("Z"), st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(_offset), st.sampled_from(["+24:00", "-99:99", "+1"])
)
clock = st.builds(
    lambda h, m, s, frac: f"{h:02d}:{m:02d}:{s:02d}{frac}",
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.sampled_from(["", ".5", ".999999", ".9999999"]),
)
# Times an RFC 3339 parser must refuse or convert without overflowing.
calendar_edges = st.one_of(
    st.builds(lambda day, t, z: f"0001-01-{day:02d}T{t}{z}", st.integers(1, 2), clock, zones),
    st.builds(lambda day, t, z: f"9999-12-{day:02d}T{t}{z}", st.integers(30, 31), clock, zones),
    st.builds(lambda day, z: f"{day}T23:59:60{z}", st.sampled_from(["2016-12-31", "2015-06-30", "1972-06-30"]), zones),
    st.datetimes().map(lambda d: d.isoformat()),  # no zone
    st.dates().map(str),  # a date alone
    st.sampled_from(
        [
            "2021-02-29T00:00:00Z",
            "2020-13-01T00:00:00Z",
            "2020-01-01T24:00:00Z",
            "+10000-01-01T00:00:00Z",
            "-0001-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "2020-01-01T00:00:00Z\x00",
            "",
            " ",
        ]
    ),
    st.datetimes(
        timezones=st.timedeltas(dt.timedelta(hours=-23, minutes=-59), dt.timedelta(hours=23, minutes=59)).map(
            dt.timezone
        )
    ).map(lambda d: d.isoformat()),
)
# Integers no 64-bit column holds, on both sides.
huge_ints = st.one_of(
    st.sampled_from([BIGINT_MAX + 1, 2**64, -(2**63) - 1, 10**30]),
    st.integers(min_value=BIGINT_MAX + 1),
    st.integers(max_value=-(2**63) - 1),
)
# Text a database or an encoder chokes on, among ordinary text.
nasty_text = st.one_of(
    st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff", "\u202e", "\u200f", "\ufeff", "\U0001f600", "\u0665", ""]),
    st.text(st.characters(exclude_categories=()), max_size=20),  # surrogates and controls included
)
# JSON values of any shape, up to a little nesting, with nasty keys and strings.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | nasty_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(nasty_text, inner, max_size=3),
    max_leaves=8,
)


def as_json(value: Any) -> str:
    """JSON text as a client could send it; lone surrogates become `\\ud800` escapes."""
    return json.dumps(value, ensure_ascii=True)


# Checks --------------------------------------------------------------------------------------


def answered(response: Any) -> Any:
    """Not a server error; a refusal is a problem document that says what to fix."""
    assert response.status_code < 500, (response.status_code, response.content[:400])
    if response.status_code >= 400:
        assert response["Content-Type"] == "application/problem+json", response.content[:400]
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail.strip(), response.content[:400]
    return response


def refused(response: Any, status: int = 400) -> dict[str, Any]:
    answered(response)
    assert response.status_code == status, (response.status_code, response.content[:400])
    return response.json()


def log_size() -> int:
    return Event.objects.count()


def post(client: Any, path: str, text: str | bytes, content_type: str = "application/json") -> Any:
    return client.post(path, text, content_type=content_type)


# Request bodies as a whole -------------------------------------------------------------------

BODY_PATHS = [
    "/api/v1/outcomes",
    "/api/v1/match",
    "/api/v1/submissions",
    "/api/v1/withdrawals",
    "/api/v1/keys",
    "/api/v1/enrollments",
    "/api/v1/webhooks",
]
FACADE_PATHS = ["/compat/stopncii/v1/SubmitFeedback", "/compat/stopncii/v1/SubmitHashes"]


@pytest.fixture
def clients(platform_a: Caller, program: Program) -> dict[str, Any]:
    """A client per path: platform A's API key, as a bearer token or in the facade's two headers.
    Platform A may submit unsigned hashes, so the facade's SubmitHashes reads its body."""
    program.unsigned_submitters.add(platform_a.member)
    facade = stopncii_client(platform_a.token)
    return {path: facade if path.startswith("/compat") else platform_a.client for path in BODY_PATHS + FACADE_PATHS}


@pytest.mark.parametrize("charset", ["rot13", "base64", "zlib", "hex", "uu", "bz2", "punycode", "undefined"])
@pytest.mark.parametrize("path", BODY_PATHS + FACADE_PATHS)
def test_a_body_in_a_charset_that_is_no_text_encoding_is_refused(
    clients: dict[str, Any], path: str, charset: str
) -> None:
    before = log_size()
    body = refused(post(clients[path], path, b'{"outcomes": []}', f"application/json; charset={charset}"))
    assert "JSON parse error" in body["detail"] and charset in body["detail"]
    assert log_size() == before


@edge_settings
@given(value=json_values, path=st.sampled_from(BODY_PATHS + FACADE_PATHS))
def test_any_json_body_is_answered_without_a_server_error(clients: dict[str, Any], value: Any, path: str) -> None:
    answered(post(clients[path], path, as_json(value)))


@edge_settings
@given(
    surrogate=st.integers(0xD800, 0xDFFF).map(chr),
    where=st.sampled_from(["key", "value", "nested", "tag"]),
    path=st.sampled_from(BODY_PATHS + FACADE_PATHS),
)
def test_a_lone_surrogate_anywhere_in_a_body_is_refused_as_no_text(
    clients: dict[str, Any], surrogate: str, where: str, path: str
) -> None:
    item: dict[str, Any] = {"hashValue": "f" * 64, "program": "take-it-down", "kind": "matched"}
    if where == "key":
        item[surrogate] = 1
    elif where == "value":
        item["hashValue"] = "a" + surrogate
    elif where == "nested":
        item["tags"] = [[{"x": surrogate}]]
    else:
        item["tags"] = [surrogate]
    body = {"outcomes": [item], "queries": [item], "hashFeedbacks": [item], "hashRecords": [item], **item}
    before = log_size()
    problem = refused(post(clients[path], path, as_json(body)))
    assert "surrogate" in problem["detail"], problem
    assert log_size() == before


def test_whole_surrogate_pairs_are_characters_like_any_other(platform_a: Caller) -> None:
    """An escaped pair (`\\ud83d\\ude00`) is one character, U+1F600: it is read, not refused."""
    response = post(
        platform_a.client,
        "/api/v1/outcomes",
        '{"outcomes": [{"program": "take-it-down", "kind": "matched", "hash_id": 1, "client_ref": "r",'
        ' "occurred_at": "2020-01-01T00:00:00Z", "tags": ["\\ud83d\\ude00"]}]}',
    )
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    assert result["error"]["code"] == "malformed" and "tag" in result["error"]["detail"]
