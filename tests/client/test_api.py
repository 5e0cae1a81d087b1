"""The HTTP client against a real (fake) server on 127.0.0.1: batching, retries, errors."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from hashexchange_client import __version__, dsse, keys, payloads
from hashexchange_client.api import ApiError, Client

from .conftest import FakeExchange

KEY = keys.private_key_from_seed(bytes(range(32)))


def envelope(value: str, program: str = "ncii") -> dict[str, Any]:
    payload = payloads.submission_payload(program=program, signal_type="md5", value=value)
    return dsse.sign_envelope(payloads.SUBMISSION_TYPE, payload, KEY)


def client(exchange: FakeExchange, sleeps: list[float] | None = None, **options: Any) -> Client:
    record = sleeps if sleeps is not None else []
    return Client(exchange.url, FakeExchange.API_KEY, sleep=record.append, **options)


def test_me_sends_bearer_key_and_user_agent(exchange: FakeExchange) -> None:
    assert client(exchange).me()["slug"] == "platform-a"
    (request,) = exchange.requests
    assert request["headers"]["Authorization"] == f"Bearer {FakeExchange.API_KEY}"
    assert request["headers"]["User-Agent"] == f"hashexchange-client/{__version__}"


def test_api_root_is_accepted_as_base_url(exchange: FakeExchange) -> None:
    api = Client(exchange.url + "/api/v1/", FakeExchange.API_KEY)
    api.me()
    assert exchange.paths() == ["GET /api/v1/me"]


def test_register_key(exchange: FakeExchange) -> None:
    assert client(exchange).register_key(KEY.public_key()) == keys.key_id(KEY)
    body = exchange.requests[0]["body"]
    assert body == {"public_key": keys.public_key_to_b64(KEY), "algorithm": "ed25519"}


def test_submit_in_batches_with_global_indices(exchange: FakeExchange) -> None:
    api = client(exchange)
    api.register_key(KEY.public_key())
    values = [f"{n:032x}" for n in range(5)]
    exchange.reject_values.add(values[3])
    summary = api.submit([envelope(v) for v in values], batch_size=2)

    submissions = [r for r in exchange.requests if r["path"] == "/api/v1/submissions"]
    assert [len(r["body"]["envelopes"]) for r in submissions] == [2, 2, 1]
    assert [r.index for r in summary.results] == [0, 1, 2, 3, 4]
    assert [r.status for r in summary.results] == ["accepted", "accepted", "accepted", "rejected", "accepted"]
    assert (summary.accepted, summary.duplicates, summary.rejected) == (4, 0, 1)
    rejected = summary.results[3]
    assert (rejected.error_code, rejected.error_detail) == ("degenerate", "pdq value is degenerate")
    assert summary.results[0].hash_id == "h1"

    again = api.submit([envelope(values[0])])
    assert again.results[0].status == "duplicate"
    assert again.results[0].hash_id == "h1"


def test_iter_submit_yields_per_batch(exchange: FakeExchange) -> None:
    api = client(exchange)
    api.register_key(KEY.public_key())
    batches = list(api.iter_submit((envelope(f"{n:032x}") for n in range(3)), batch_size=2))
    assert [[r.index for r in batch] for batch in batches] == [[0, 1], [2]]


def test_batch_size_limits(exchange: FakeExchange) -> None:
    for size in (0, 1001):
        with pytest.raises(ValueError, match="batch_size"):
            client(exchange).submit([], batch_size=size)


def test_retries_5xx_with_exponential_backoff(exchange: FakeExchange) -> None:
    sleeps: list[float] = []
    api = client(exchange, sleeps)
    exchange.fail_next = [(503, {}), (502, {})]
    assert api.me()["slug"] == "platform-a"
    assert sleeps == [0.5, 1.0]
    assert len(exchange.requests) == 3


def test_honours_retry_after(exchange: FakeExchange) -> None:
    sleeps: list[float] = []
    exchange.fail_next = [(429, {"Retry-After": "3"})]
    client(exchange, sleeps).me()
    assert sleeps == [3.0]


def test_retries_dropped_connections(exchange: FakeExchange) -> None:
    sleeps: list[float] = []
    api = client(exchange, sleeps)
    api.register_key(KEY.public_key())
    exchange.drop_next = 1
    summary = api.submit([envelope("a" * 32)])
    assert summary.accepted == 1
    assert len(sleeps) == 1


def test_gives_up_after_retries_with_the_server_detail(exchange: FakeExchange) -> None:
    exchange.fail_next = [(503, {})] * 3
    with pytest.raises(ApiError) as caught:
        client(exchange, retries=2).me()
    assert caught.value.status == 503
    assert caught.value.detail == "simulated failure 503"
    assert str(caught.value) == "HTTP 503: simulated failure 503"
    assert len(exchange.requests) == 3


def test_client_errors_are_not_retried(exchange: FakeExchange) -> None:
    sleeps: list[float] = []
    with pytest.raises(ApiError) as caught:
        Client(exchange.url, "wrong", sleep=sleeps.append).me()
    assert caught.value.status == 401
    assert caught.value.detail == "Invalid API key."
    assert caught.value.code == "authentication_failed"
    assert sleeps == [] and len(exchange.requests) == 1


def test_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    api = Client(f"http://127.0.0.1:{port}", "k", retries=2, sleep=sleeps.append, timeout=2)
    with pytest.raises(ApiError, match="cannot reach") as caught:
        api.me()
    assert caught.value.status is None
    assert sleeps == [0.5, 1.0]


def test_withdraw(exchange: FakeExchange) -> None:
    api = client(exchange)
    api.register_key(KEY.public_key())
    api.submit([envelope("b" * 32)])
    payload = payloads.withdrawal_payload(program="ncii", signal_type="md5", value="b" * 32, reason="mistake")
    answer = api.withdraw(dsse.sign_envelope(payloads.WITHDRAWAL_TYPE, payload, KEY))
    assert answer == {"hash_id": "h1", "status": "withdrawn"}
    with pytest.raises(ApiError, match="no active submission"):
        api.withdraw(dsse.sign_envelope(payloads.WITHDRAWAL_TYPE, payload, KEY))


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"results": "nope"},
        {"results": [{"index": 0, "status": "accepted"}, {"index": 1, "status": "accepted"}]},
        {"results": ["accepted"]},
        {"results": [{"index": 5, "status": "accepted"}]},
    ],
)
def test_unexpected_submission_answers_are_api_errors(answer: Any) -> None:
    class Canned(Client):
        def _request(self, method: str, path: str, payload: Any = None) -> Any:
            return answer

    with pytest.raises(ApiError, match=r"the server('s)? answer"):
        Canned("http://127.0.0.1:9", "k").submit([envelope("e" * 32)])
