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
import itertools
import json
import os
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.api import MAX_REQUEST_JSON_DEPTH
from core.ledger import Event
from core.sql import BIGINT_MAX
from exchange.compat import stopncii
from exchange.models import Outcome
from hashes.models import Hash
from members.models import Program
from tests.conftest import Caller
from tests.exchange.test_stopncii import stopncii_client
from tests.signing import Signer, random_pdq

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 20)
# The tests' callers and database are fixtures: one per test, shared by its examples.
edge_settings = settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Strategies ----------------------------------------------------------------------------------


def _offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


zones = st.one_of(
    st.sampled_from(["Z", "+00:00", "+01:00", "-01:00", "+14:00", "-12:00", "+23:59", "-23:59"]),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(_offset),
    st.sampled_from(["", "+24:00", "-99:99", "+1", "UTC", "z"]),  # no zone, or none that RFC 3339 allows
)
clock = st.one_of(
    st.sampled_from(["00:00:00", "00:59:59.999999", "23:59:59", "23:59:59.999999"]),
    st.builds(
        lambda h, m, s, frac: f"{h:02d}:{m:02d}:{s:02d}{frac}",
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        st.sampled_from(["", ".5", ".999999", ".9999999"]),
    ),
)
# Times an RFC 3339 parser must refuse, or convert and shift without overflowing.
calendar_edges = st.one_of(
    st.builds(lambda day, t, z: f"0001-01-{day:02d}T{t}{z}", st.integers(1, 31), clock, zones),
    st.builds(lambda day, t, z: f"9999-12-{day:02d}T{t}{z}", st.integers(1, 31), clock, zones),
    st.builds(lambda day: f"0001-01-{day:02d}", st.integers(1, 31)),  # a date alone, early in the year 1
    st.sampled_from(["9999-12-31", "9999-12-01"]),
    st.builds(lambda day, z: f"{day}T23:59:60{z}", st.sampled_from(["2016-12-31", "2015-06-30", "1972-06-30"]), zones),
    st.datetimes().map(lambda d: d.isoformat()),  # no zone
    st.dates().map(str),
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
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | nasty_text,
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


@edge_settings
@given(depth=st.integers(1, 3000), path=st.sampled_from(BODY_PATHS + FACADE_PATHS))
def test_any_nesting_is_answered_and_too_deep_is_400(clients: dict[str, Any], path: str, depth: int) -> None:
    text = '{"outcomes": ' + "[" * depth + "]" * depth + "}"
    response = answered(post(clients[path], path, text))
    if depth > MAX_REQUEST_JSON_DEPTH:
        assert response.status_code == 400 and "nested deeper" in response.json()["detail"]


@edge_settings
@given(
    key=st.sampled_from(["outcomes", "queries", "envelopes", "hashFeedbacks", "hashRecords", "program", "url"]),
    first=json_values,
    second=json_values,
    path=st.sampled_from(BODY_PATHS + FACADE_PATHS),
)
def test_a_key_repeated_in_a_body_is_answered_like_any_other_body(
    clients: dict[str, Any], key: str, first: Any, second: Any, path: str
) -> None:
    text = "{" + f"{json.dumps(key)}: {as_json(first)}, {json.dumps(key)}: {as_json(second)}" + "}"
    answered(post(clients[path], path, text))


@edge_settings
@given(digits=st.integers(4301, 20000), path=st.sampled_from(BODY_PATHS + FACADE_PATHS))
def test_a_number_past_pythons_digit_limit_is_400_wherever_it_is(
    clients: dict[str, Any], path: str, digits: int
) -> None:
    text = '{"outcomes": [{"count": ' + "7" * digits + '}], "hashRecords": [], "program": 1}'
    problem = refused(post(clients[path], path, text))
    assert "JSON parse error" in problem["detail"]


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


# Cursors and ids -----------------------------------------------------------------------------

# Integers as query text: beyond 64 bits, beyond Python's 4,300-digit int() limit, signed, spaced.
integer_text = st.one_of(
    huge_ints.map(str),
    st.integers(4301, 6000).map(lambda n: "9" * n),
    st.sampled_from(["-1", "+1", " 1", "1 ", "1.0", "1e3", "0x10", "\u0661", "", "%00", "%ED%A0%80", "%FF"]),
)


@edge_settings
@given(after=integer_text, path=st.sampled_from(["/api/v1/feed", "/api/v1/events"]))
def test_a_cursor_no_sequence_number_can_reach_is_refused(
    auditor: Caller, platform_a: Caller, after: str, path: str
) -> None:
    client = auditor.client if path == "/api/v1/events" else platform_a.client
    response = answered(client.get(f"{path}?after={after}"))
    if response.status_code == 400:
        assert "after" in response.json()["errors"]


@pytest.mark.parametrize("after", [str(BIGINT_MAX + 1), str(2**64), "9" * 30])
def test_a_cursor_past_the_largest_sequence_number_is_400_naming_the_bound(platform_a: Caller, after: str) -> None:
    problem = refused(platform_a.client.get(f"/api/v1/feed?after={after}"))
    assert str(BIGINT_MAX) in problem["errors"]["after"][0]


def test_the_largest_cursor_is_an_empty_page(platform_a: Caller) -> None:
    response = platform_a.client.get(f"/api/v1/feed?after={BIGINT_MAX}")
    assert response.status_code == 200, response.content
    assert (response.json()["entries"], response.json()["has_more"]) == ([], False)


@edge_settings
@given(limit=integer_text)
def test_a_page_size_out_of_range_is_refused(platform_a: Caller, limit: str) -> None:
    response = answered(platform_a.client.get(f"/api/v1/feed?limit={limit}"))
    if response.status_code == 400:
        assert "limit" in response.json()["errors"]


@edge_settings
@given(value=integer_text, path=st.sampled_from(["/api/v1/hashes/{}", "/api/v1/webhooks/{}", "/api/v1/keys/{}"]))
def test_an_id_no_row_can_have_is_not_found(platform_a: Caller, value: str, path: str) -> None:
    response = answered(platform_a.client.get(path.format(value)))
    assert response.status_code == 404, response.content[:300]


@edge_settings
@given(offset=integer_text, limit=integer_text, path=st.sampled_from(["/api/v1/keys", "/api/v1/obligations"]))
def test_list_offsets_of_any_size_are_answered(platform_a: Caller, offset: str, limit: str, path: str) -> None:
    answered(platform_a.client.get(f"{path}?offset={offset}&limit={limit}"))


# Outcomes ------------------------------------------------------------------------------------

_refs = iter(range(10**9))


@pytest.fixture
def reporter(signer_a: Signer, platform_b: Caller) -> tuple[Caller, int]:
    """Platform B and a hash it was sent (platform A submitted it; B read its feed)."""
    hash_id = signer_a.submit(signer_a.submission(random_pdq())).json()["results"][0]["hash_id"]
    assert platform_b.client.get("/api/v1/feed?after=0").status_code == 200
    return platform_b, hash_id


def good_outcome(hash_id: int, **fields: Any) -> dict[str, Any]:
    return {
        "hash_id": hash_id,
        "program": "take-it-down",
        "kind": "removed",
        "occurred_at": "2020-01-01T00:00:00Z",
        "count": 1,
        "tags": ["auto"],
        "client_ref": f"edge-{next(_refs)}",
        **fields,
    }


def report_with_a_good_one(reporter: tuple[Caller, int], bad: dict[str, Any]) -> dict[str, Any]:
    """Post [bad, good]: the bad item is refused alone, with a detail; the good one is kept."""
    caller, hash_id = reporter
    good = good_outcome(hash_id)
    before = Outcome.objects.count()
    response = answered(post(caller.client, "/api/v1/outcomes", as_json({"outcomes": [bad, good]})))
    assert response.status_code == 200, response.content[:400]
    first, second = response.json()["results"]
    assert second["status"] == "accepted", second
    if first["status"] == "rejected":
        assert first["error"]["detail"], first
    assert Outcome.objects.count() == before + 1 + (first["status"] == "accepted")
    return first


@edge_settings
@given(hash_id=huge_ints | st.integers(max_value=0))
def test_an_outcome_for_a_hash_id_no_row_can_have_is_refused_alone(reporter: tuple[Caller, int], hash_id: int) -> None:
    result = report_with_a_good_one(reporter, good_outcome(hash_id))
    assert result["status"] == "rejected" and result["error"]["code"] == "malformed", result
    assert "hash_id" in result["error"]["detail"] and str(BIGINT_MAX) in result["error"]["detail"]


@edge_settings
@given(count=huge_ints | st.integers(max_value=0) | st.integers(min_value=10**9 + 1))
def test_an_outcome_count_out_of_range_is_refused_alone(reporter: tuple[Caller, int], count: int) -> None:
    result = report_with_a_good_one(reporter, good_outcome(reporter[1], count=count))
    assert result["status"] == "rejected" and "count" in result["error"]["detail"], result


@pytest.mark.parametrize("digits", [30, 4301, 6000])
def test_a_number_too_long_to_parse_fails_the_body_not_the_server(reporter: tuple[Caller, int], digits: int) -> None:
    caller, hash_id = reporter
    text = as_json({"outcomes": [good_outcome(hash_id)]}).replace('"count": 1', f'"count": {"9" * digits}')
    response = answered(post(caller.client, "/api/v1/outcomes", text))
    assert response.status_code in (200, 400)
    assert Outcome.objects.filter(count__gt=10**9).count() == 0


@edge_settings
@given(occurred_at=calendar_edges)
def test_an_outcome_time_at_the_edges_of_the_calendar_is_refused_alone(
    reporter: tuple[Caller, int], occurred_at: str
) -> None:
    result = report_with_a_good_one(reporter, good_outcome(reporter[1], occurred_at=occurred_at))
    if result["status"] == "rejected":
        assert "occurred_at" in result["error"]["detail"], result


@pytest.mark.parametrize(
    "occurred_at", ["0001-01-01T00:00:00+01:00", "0001-01-01T00:59:59.999999+01:00", "0001-01-01T05:00:00+14:00"]
)
def test_an_outcome_time_before_the_year_1_in_utc_is_malformed(reporter: tuple[Caller, int], occurred_at: str) -> None:
    result = report_with_a_good_one(reporter, good_outcome(reporter[1], occurred_at=occurred_at))
    assert (result["status"], result["error"]["code"]) == ("rejected", "malformed"), result
    assert "occurred_at" in result["error"]["detail"]


def test_the_first_moment_of_the_year_1_is_a_time_like_any_other(reporter: tuple[Caller, int]) -> None:
    result = report_with_a_good_one(reporter, good_outcome(reporter[1], occurred_at="0001-01-01T00:00:00Z"))
    assert result["status"] == "accepted", result


# Report periods ------------------------------------------------------------------------------

REPORT_PATHS = ["/api/v1/reports/programs/take-it-down", "/api/v1/reports/members/platform-a"]


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Absent half the time (`st.none() | strategy` would flatten into one choice among many)."""
    return st.booleans().flatmap(lambda present: strategy if present else st.none())


@edge_settings
@given(
    start=optional(calendar_edges),
    end=optional(calendar_edges),
    format_=st.sampled_from([None, "json", "csv", "xml", "\x00"]),
    path=st.sampled_from(REPORT_PATHS),
)
def test_any_report_period_is_answered_or_refused_naming_the_parameter(
    auditor: Caller, platform_a: Caller, start: str | None, end: str | None, format_: str | None, path: str
) -> None:
    query = {k: v for k, v in {"from": start, "to": end, "format": format_}.items() if v is not None}
    response = answered(auditor.client.get(f"{path}?{urlencode(query)}"))
    if response.status_code == 400:
        assert set(response.json()["errors"]) <= {"from", "to", "format"}, response.json()


@pytest.mark.parametrize("end", ["0001-01-01", "0001-01-30", "0001-01-05T00:00:00Z", "0001-01-01T00:00:00+00:00"])
def test_a_period_ending_too_early_for_the_default_start_is_400_asking_for_from(
    auditor: Caller, platform_a: Caller, end: str
) -> None:
    for path in REPORT_PATHS:
        for format_ in ("json", "csv"):
            problem = refused(auditor.client.get(f"{path}?{urlencode({'to': end, 'format': format_})}"))
            assert "from" in problem["errors"], problem


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01", "0001-01-02"),
        ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"),
        ("9999-12-30", "9999-12-31"),
    ],
)
def test_periods_at_the_edges_of_the_calendar_are_reported(
    auditor: Caller, platform_a: Caller, start: str, end: str
) -> None:
    for path in REPORT_PATHS:
        response = auditor.client.get(f"{path}?{urlencode({'from': start, 'to': end})}")
        assert response.status_code == 200, response.content[:300]


# Text in every field -------------------------------------------------------------------------

# A valid-looking body per path, with one field (or a list element, or a key) replaced.
TEMPLATES: dict[str, dict[str, Any]] = {
    "/api/v1/outcomes": {
        "outcomes": [
            {
                "hash_id": 1,
                "program": "take-it-down",
                "kind": "removed",
                "occurred_at": "2020-01-01T00:00:00Z",
                "count": 1,
                "tags": ["auto"],
                "client_ref": "r-1",
            }
        ]
    },
    "/api/v1/match": {"queries": [{"signal_type": "pdq", "value": "f" * 64}]},
    "/api/v1/submissions": {
        "envelopes": [{"payloadType": "x", "payload": "e30=", "signatures": [{"keyid": "k", "sig": "c2ln"}]}]
    },
    "/api/v1/withdrawals": {"payloadType": "x", "payload": "e30=", "signatures": [{"keyid": "k", "sig": "c2ln"}]},
    "/api/v1/keys": {"public_key": "A" * 43 + "=", "algorithm": "ed25519"},
    "/api/v1/enrollments": {"program": "take-it-down", "state": "opted_in"},
    "/api/v1/webhooks": {"url": "https://hooks.example.org/x", "description": "d", "events": ["hash.added"]},
    "/compat/stopncii/v1/SubmitFeedback": {
        "hashFeedbacks": [{"hashValue": "f" * 64, "feedbackValue": "Blocked", "tags": ["Nude"]}]
    },
    "/compat/stopncii/v1/SubmitHashes": {
        "hashRecords": [{"hashValue": "f" * 64, "signalType": "ImagePDQ", "CSPFeedbacks": [{"tags": ["Nude"]}]}]
    },
}


def _slots(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value that holds a string or a number, as a path of keys and indexes."""
    if isinstance(value, dict):
        return [slot for key, inner in value.items() for slot in _slots(inner, (*path, key))]
    if isinstance(value, list):
        return [slot for index, inner in enumerate(value) for slot in _slots(inner, (*path, index))]
    return [path]


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


@st.composite
def bodies_with_one_bad_field(draw: st.DrawFn) -> tuple[str, str]:
    path = draw(st.sampled_from(sorted(TEMPLATES)))
    template = TEMPLATES[path]
    slot = draw(st.sampled_from(_slots(template)))
    bad = draw(nasty_text | huge_ints | st.sampled_from([None, True, [], {}, -1, 0.5]))
    return path, as_json(_replaced(template, slot, bad))


@edge_settings
@given(case=bodies_with_one_bad_field())
def test_any_value_in_any_field_is_answered_without_a_server_error(
    clients: dict[str, Any], case: tuple[str, str]
) -> None:
    path, text = case
    answered(post(clients[path], path, text))


@pytest.mark.parametrize("path", sorted(TEMPLATES))
@pytest.mark.parametrize("text", ["\x00", "take-it-down\x00", "\x00" * 64, "f" * 63 + "\x00"], ids=ascii)
def test_nul_in_any_field_is_refused_never_sent_to_the_database(clients: dict[str, Any], path: str, text: str) -> None:
    before = log_size()
    for slot in _slots(TEMPLATES[path]):
        answered(post(clients[path], path, as_json(_replaced(TEMPLATES[path], slot, text))))
    assert log_size() == before


URL_TEMPLATES = [
    "/api/v1/enrollments/{}",
    "/api/v1/keys/{}",
    "/api/v1/hashes/{}",
    "/api/v1/webhooks/{}",
    "/api/v1/obligations?program={}",
    "/api/v1/obligations?status={}",
    "/api/v1/feed?after={}",
    "/api/v1/reports/programs/{}",
    "/api/v1/reports/members/{}",
    "/compat/stopncii/programs/{}/v1/FetchHashes",
    "/compat/stopncii/v1/{}",
    "/compat/stopncii/v1/FetchHashes?startTimestamp={}",
    "/compat/stopncii/v1/FetchHashes?pageSize={}",
    "/compat/stopncii/v1/FetchHashes?nextPageToken={}",
]


def url_text(text: str) -> str:
    """Text as a client would put it in a URL: UTF-8, percent-encoded (a lone surrogate as its
    three raw bytes, which are no UTF-8)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@edge_settings
@given(template=st.sampled_from(URL_TEMPLATES), text=nasty_text | huge_ints.map(str))
def test_any_text_in_any_url_is_answered_without_a_server_error(
    platform_a: Caller, auditor: Caller, template: str, text: str
) -> None:
    if template.startswith("/compat"):
        client = stopncii_client(platform_a.token)
    else:
        client = auditor.client if "/reports/" in template else platform_a.client
    answered(client.get(template.format(url_text(text))))


@pytest.mark.parametrize("template", URL_TEMPLATES)
@pytest.mark.parametrize("text", ["\x00", "take-it-down\x00", "a\x00b"], ids=ascii)
def test_nul_in_any_url_is_refused_never_sent_to_the_database(
    platform_a: Caller, auditor: Caller, template: str, text: str
) -> None:
    if template.startswith("/compat"):
        client = stopncii_client(platform_a.token)
    else:
        client = auditor.client if "/reports/" in template else platform_a.client
    response = answered(client.get(template.format(url_text(text))))
    assert response.status_code >= 400


# The StopNCII facade -------------------------------------------------------------------------

FETCH = "/compat/stopncii/v1/FetchHashes"
tokens = st.one_of(
    nasty_text,
    st.builds(lambda a, b: f"{a}.{b}", st.text("ABCDEFabcdef0123456789-_=", max_size=60), st.text(max_size=30)),
    st.sampled_from([".", "..", "a.b.c", "====.====", "e30.AAAAAAAAAAAAAAAAAAAAAA", "W10.AAAA", "x" * 5000 + ".y"]),
)


@edge_settings
@given(
    start=optional(integer_text | huge_ints.map(str)),
    size=optional(integer_text | huge_ints.map(str)),
    token=optional(tokens),
)
def test_any_fetch_parameters_are_answered_as_a_page_or_a_problem(
    platform_a: Caller, start: str | None, size: str | None, token: str | None
) -> None:
    query = {k: v for k, v in {"startTimestamp": start, "pageSize": size, "nextPageToken": token}.items() if v}
    encoded = "&".join(f"{k}={url_text(v)}" for k, v in query.items())
    response = answered(stopncii_client(platform_a.token).get(f"{FETCH}?{encoded}"))
    if response.status_code == 200:
        assert set(response.json()) == {"count", "nextPageToken", "nextSetTimestamp", "hasMoreRecords", "hashRecords"}
    else:
        assert response.json()["code"] in ("invalid_parameter", "invalid_page_token"), response.json()


@pytest.mark.parametrize(
    ("query", "named"),
    [
        (f"startTimestamp={stopncii.MAX_TIMESTAMP + 1}", "startTimestamp"),
        (f"startTimestamp={BIGINT_MAX + 1}", "startTimestamp"),
        ("startTimestamp=" + "9" * 5000, "startTimestamp"),
        ("pageSize=0", "pageSize"),
        ("pageSize=" + "9" * 30, "pageSize"),
        ("nextPageToken=" + "x" * 5000, "nextPageToken"),
        ("nextPageToken=%00.%00", "nextPageToken"),
    ],
)
def test_fetch_parameters_out_of_range_are_400_naming_them(platform_a: Caller, query: str, named: str) -> None:
    problem = refused(stopncii_client(platform_a.token).get(f"{FETCH}?{query}"))
    assert named in problem["detail"], problem


def test_the_last_second_of_the_year_9999_is_a_start_like_any_other(platform_a: Caller) -> None:
    response = stopncii_client(platform_a.token).get(f"{FETCH}?startTimestamp={stopncii.MAX_TIMESTAMP}")
    assert response.status_code == 200, response.content
    assert response.json()["nextSetTimestamp"] == stopncii.MAX_TIMESTAMP


@edge_settings
@given(record=st.dictionaries(st.sampled_from(["hashValue", "signalType", "CSPFeedbacks", "x"]), json_values))
def test_a_bad_submitted_record_is_refused_alone(clients: dict[str, Any], record: dict[str, Any]) -> None:
    path = "/compat/stopncii/v1/SubmitHashes"
    good = {"hashValue": random_pdq(), "signalType": "ImagePDQ", "CSPFeedbacks": [{"tags": ["Nude"]}]}
    response = answered(post(clients[path], path, as_json({"hashRecords": [record, good]})))
    if response.status_code == 400:  # the whole body was no text (a lone surrogate)
        assert "surrogate" in response.json()["detail"]
        return
    first, second = response.json()["results"]
    assert second["status"] == "accepted", second
    assert first["status"] in ("accepted", "duplicate") or first["error"]["detail"], first


@edge_settings
@given(feedback=st.dictionaries(st.sampled_from(["hashValue", "feedbackValue", "tags", "x"]), json_values))
def test_a_bad_feedback_is_refused_alone(
    clients: dict[str, Any], reporter: tuple[Caller, int], feedback: dict[str, Any]
) -> None:
    caller, hash_id = reporter
    value = Hash.objects.get(pk=hash_id).value
    good = {"hashValue": value, "feedbackValue": next(_feedback_values), "tags": []}
    response = answered(
        post(
            stopncii_client(caller.token),
            "/compat/stopncii/v1/SubmitFeedback",
            as_json({"hashFeedbacks": [feedback, good]}),
        )
    )
    if response.status_code == 400:
        assert "surrogate" in response.json()["detail"]
        return
    first, second = response.json()["results"]
    assert second["status"] in ("accepted", "duplicate"), second
    assert first["status"] in ("accepted", "duplicate") or first["error"]["detail"], first


_feedback_values = itertools.cycle(["Blocked", "PendingReview", "QualityUnknown"])
