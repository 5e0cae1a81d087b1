"""Outbound HTTP to members' webhook URLs: address checks and one POST, no redirects."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings


class UnsafeUrl(ValueError):
    """A webhook URL the clearinghouse will not call; the message says why."""


def check_url(url: str, *, resolve: bool = True) -> None:
    """Refuse non-HTTP URLs and, unless WEBHOOKS_ALLOW_PRIVATE, hosts that resolve to
    loopback, private, link-local, multicast or reserved addresses (SSRF protection).

    Checked when an endpoint is saved and again before every POST, since DNS can change.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("the URL must start with https:// (or http://)")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL must not contain credentials; the signature authenticates us")
    if settings.WEBHOOKS_ALLOW_PRIVATE or not resolve:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"the host {parts.hostname!r} does not resolve ({exc})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            raise UnsafeUrl(f"the host {parts.hostname!r} resolves to a non-public address ({address})")


@dataclass
class PostResult:
    status_code: int | None
    error: str
    duration_ms: int
    excerpt: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_local = threading.local()


def _session() -> requests.Session:
    # One connection pool per thread: deliveries run in a thread pool.
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def post(url: str, body: bytes, headers: dict[str, str]) -> PostResult:
    """POST once; never follow redirects; never raise for network errors."""
    started = time.monotonic()
    try:
        check_url(url)
        response = _session().post(
            url,
            data=body,
            headers={**headers, "content-type": "application/json", "user-agent": "hashexchange-webhooks/1"},
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
            allow_redirects=False,
        )
        excerpt = response.text[:1000] if response.content else ""
        return PostResult(response.status_code, "", int((time.monotonic() - started) * 1000), excerpt)
    except UnsafeUrl as exc:
        return PostResult(None, f"refused: {exc}", 0, "")
    except requests.RequestException as exc:
        return PostResult(None, f"{exc.__class__.__name__}: {exc}"[:500], int((time.monotonic() - started) * 1000), "")
