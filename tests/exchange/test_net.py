"""Outbound webhook addresses: which are refused, and that a POST goes where the check said."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from exchange import net


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "::127.0.0.1",  # IPv4-compatible form of loopback
        "::a00:1",  # IPv4-compatible form of 10.0.0.1
        "::ffff:127.0.0.1",  # IPv4-mapped
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b:1::a00:1",
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "fe80::1",
        "fc00::1",
        "224.0.0.1",
        "ff02::1",
    ],
)
def test_non_public_and_embedding_addresses_are_refused(address: str) -> None:
    assert net.address_refused(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:80e::200e"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert net.address_refused(ipaddress.ip_address(address)) is None


@pytest.fixture
def no_private(settings) -> None:  # noqa: ANN001 - pytest-django's settings fixture
    settings.WEBHOOKS_ALLOW_PRIVATE = False


@pytest.mark.parametrize("url", ["https://example.org:22/hook", "http://example.org:25/", "https://example.org:0/"])
def test_privileged_ports_other_than_80_and_443_are_refused(no_private: None, url: str) -> None:
    with pytest.raises(net.UnsafeUrl, match="port"):
        net.check_url(url, resolve=False)


@pytest.mark.parametrize("url", ["https://example.org/hook", "http://example.org:80/", "https://example.org:8443/h"])
def test_web_ports_and_unprivileged_ports_are_allowed(no_private: None, url: str) -> None:
    net.check_url(url, resolve=False)


def test_the_refusal_names_the_setting_for_local_development(no_private: None) -> None:
    with pytest.raises(net.UnsafeUrl, match="WEBHOOKS_ALLOW_PRIVATE=1"):
        net.check_url("http://127.0.0.1:8080/hook")


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - the handler API
        self.rfile.read(int(self.headers.get("content-length") or 0))
        _Recorder.seen.append({"host": self.headers.get("host", ""), "to": self.server.server_address[0]})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[int]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_post_connects_to_the_address_that_was_checked_not_a_second_dns_answer(
    no_private: None, receiver: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the first answer is checked and allowed, a second answer would point
    elsewhere. The POST must reach the first address, with the name in its Host header,
    and the name must be resolved once."""
    real_getaddrinfo = socket.getaddrinfo
    answers = iter(["127.0.0.1"] + ["127.0.0.2"] * 10)
    looked_up: list[str] = []

    def fake_getaddrinfo(host, port, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if host == "receiver.test":
            looked_up.append(host)
            return real_getaddrinfo(next(answers), port, *args, **kwargs)
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    # This test's stand-in for a public receiver: 127.0.0.1 passes, anything else does not.
    monkeypatch.setattr(net, "address_refused", lambda a: None if str(a) == "127.0.0.1" else "a non-public address")
    monkeypatch.setattr(net, "_local", threading.local())
    result = net.post(f"http://receiver.test:{receiver}/hook", b"{}", {})
    assert result.status_code == 204, result.error
    assert _Recorder.seen == [{"host": f"receiver.test:{receiver}", "to": "127.0.0.1"}]
    assert looked_up == ["receiver.test"]


def test_a_post_to_a_host_that_now_resolves_to_a_refused_address_is_not_sent(
    no_private: None, receiver: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(net, "_local", threading.local())
    result = net.post(f"http://127.0.0.1:{receiver}/hook", b"{}", {})
    assert result.status_code is None and result.error.startswith("refused:")
    assert _Recorder.seen == []
