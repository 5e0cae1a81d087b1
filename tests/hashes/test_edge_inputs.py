"""Edge inputs in signed payloads and request bodies: each is a clear 4xx, never a 500.

Signed payloads must read the same to every verifier, so ambiguous JSON (a key twice,
NaN, huge integers, deep nesting) is refused; times at the edges of the calendar are
refused as malformed rather than crashing the conversion to UTC. In a batch, the bad
item is refused alone.
"""

from __future__ import annotations

import base64
import json
import string

import pytest
from hashexchange_client import payloads
from hashexchange_client.encoding import MAX_JSON_DEPTH, StrictJSONError, loads_strict
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Caller
from tests.signing import Signer, random_pdq


def payload(signer: Signer) -> dict:
    """A valid submission payload as a dict, to alter before signing."""
    envelope = signer.submission(random_pdq())
    return json.loads(base64.b64decode(envelope["payload"]))


def signed(signer: Signer, text: str) -> dict:
    return signer.raw(text.encode())


def test_a_payload_with_a_key_twice_is_refused_and_the_rest_of_the_batch_is_kept(signer_a: Signer) -> None:
    body = payload(signer_a)
    good = signer_a.submission(random_pdq())
    text = json.dumps(body)[:-1] + ', "value": "' + random_pdq() + '"}'  # `value` twice
    response = signer_a.submit(signed(signer_a, text), good)
    assert response.status_code == 200, response.json()
    first, second = response.json()["results"]
    assert (first["status"], first["error"]["code"]) == ("rejected", "malformed_payload")
    assert "appears twice" in first["error"]["detail"]
    assert second["status"] == "accepted"


@pytest.mark.parametrize(
    "created_at",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"],
)
def test_times_at_the_edges_of_the_calendar_are_refused_as_such(signer_a: Signer, created_at: str) -> None:
    body = payload(signer_a)
    body["created_at"] = created_at
    response = signer_a.submit(signed(signer_a, json.dumps(body)))
    assert response.status_code == 200, response.json()
    [result] = response.json()["results"]
    assert result["status"] == "rejected"
    assert result["error"]["code"] in ("malformed_payload", "stale_timestamp", "future_timestamp")


@pytest.mark.parametrize("value", ["1" * 30, "1" * 5000, "NaN", "Infinity", "-Infinity", "[" * 1000 + "]" * 1000])
def test_numbers_and_nesting_that_readers_disagree_on_are_refused(signer_a: Signer, value: str) -> None:
    body = payload(signer_a)
    text = json.dumps(body)[:-1] + f', "quality": {value}}}'
    response = signer_a.submit(signed(signer_a, text))
    assert response.status_code == 200, response.json()
    [result] = response.json()["results"]
    assert (result["status"], result["error"]["code"]) == ("rejected", "malformed_payload")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"envelopes": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        b'{"envelopes": [' + b"9" * 5000 + b"]}",
        b'{"envelopes": [NaN]}',
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/submissions", "/api/v1/outcomes", "/api/v1/match", "/api/v1/withdrawals"])
def test_request_bodies_nested_too_deep_or_with_unparseable_numbers_are_400(
    platform_a: Caller, path: str, body: bytes
) -> None:
    response = platform_a.client.post(path, body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert response["content-type"] == "application/problem+json"


# The strict parser itself -------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**18), 10**18) | st.text(),  # st.text() draws no surrogates
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(string.printable, max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_the_strict_parser_reads_what_json_writes(value: object) -> None:
    assert loads_strict(json.dumps(value).encode()) == value


@given(st.integers(0xD800, 0xDFFF), st.sampled_from(['{"reason": "%s"}', '{"%s": 1}', '["a%sb"]']))
def test_the_strict_parser_refuses_lone_surrogates(code: int, template: str) -> None:
    with pytest.raises(StrictJSONError, match="surrogate"):
        loads_strict((template % f"\\u{code:04x}").encode())


def test_the_strict_parser_reads_escaped_surrogate_pairs_as_the_one_character_they_are() -> None:
    assert loads_strict(b'["\\ud83d\\ude00"]') == ["\U0001f600"]


@pytest.mark.parametrize("reason", ["\\u0000", "a\\u0000b"])
def test_a_withdrawal_whose_reason_holds_nul_is_refused(signer_a: Signer, reason: str) -> None:
    """PostgreSQL stores no NUL in text (a 500 before); C-string readers stop at it."""
    value = random_pdq()
    assert signer_a.submit(signer_a.submission(value)).status_code == 200
    body = json.loads(payloads.withdrawal_payload(program="take-it-down", signal_type="pdq", value=value))
    text = json.dumps(body)[:-1] + f', "reason": "{reason}"}}'
    response = signer_a.client.post(
        "/api/v1/withdrawals", signer_a.raw(text.encode(), payloads.WITHDRAWAL_TYPE), format="json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "malformed_payload"
    assert "NUL" in response.json()["detail"]


@pytest.mark.parametrize("reason", ["\\ud800", "a\\udc00"])
def test_a_withdrawal_whose_reason_holds_a_lone_surrogate_is_refused(signer_a: Signer, reason: str) -> None:
    value = random_pdq()
    assert signer_a.submit(signer_a.submission(value)).status_code == 200
    body = json.loads(payloads.withdrawal_payload(program="take-it-down", signal_type="pdq", value=value))
    text = json.dumps(body)[:-1] + f', "reason": "{reason}"}}'
    response = signer_a.client.post(
        "/api/v1/withdrawals", signer_a.raw(text.encode(), payloads.WITHDRAWAL_TYPE), format="json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "malformed_payload"
    assert "surrogate" in response.json()["detail"]


@given(st.integers(min_value=MAX_JSON_DEPTH + 1, max_value=5000))
def test_the_strict_parser_refuses_any_nesting_past_its_limit(depth: int) -> None:
    with pytest.raises(StrictJSONError):
        loads_strict(b"[" * depth + b"]" * depth)


@given(st.text(min_size=1, max_size=10), st.integers(), st.integers())
def test_the_strict_parser_refuses_every_repeated_key(key: str, a: int, b: int) -> None:
    text = "{" + json.dumps(key) + ":" + str(a % 1000) + "," + json.dumps(key) + ":" + str(b % 1000) + "}"
    with pytest.raises(StrictJSONError, match="twice"):
        loads_strict(text.encode())


@given(st.binary(max_size=200))
def test_the_strict_parser_raises_only_its_own_error(data: bytes) -> None:
    try:
        loads_strict(data)
    except StrictJSONError:
        pass
