"""Outbound HTTP to members' webhook URLs (and to witnesses): address checks and one POST, no redirects."""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.utils import DEFAULT_CA_BUNDLE_PATH


class UnsafeUrl(ValueError):
    """A webhook URL the clearinghouse will not call; the message says why."""


# IPv6 ranges that carry an IPv4 address inside them (or route to one): an address there
# is refused when the IPv4 address it embeds would be, and the translation prefixes are
# refused outright, since the relay they name decides where the packet goes.
_EMBEDDING_V6 = (
    ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated): ::127.0.0.1
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64
    ipaddress.ip_network("2002::/16"),  # 6to4
    ipaddress.ip_network("2001::/32"),  # Teredo
)
# Public, but not what a webhook receiver is: shared address space behind carrier NAT.
_REFUSED_EXTRA = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("192.88.99.0/24"))
# Ports a webhook may use: the web's two, and any unprivileged one (no SSH, SMTP, ...).
_ALLOWED_LOW_PORTS = (80, 443)


def address_refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why the clearinghouse will not connect to this address, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address_refused(address.ipv4_mapped)
    if not address.is_global or address.is_multicast:
        return "a non-public address"
    if isinstance(address, ipaddress.IPv6Address) and any(address in network for network in _EMBEDDING_V6):
        return "an IPv6 address that embeds or translates to an IPv4 address"
    if any(address in network for network in _REFUSED_EXTRA):
        return "a shared or relay address"
    return None


def _port(parts: SplitResult) -> int:
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise UnsafeUrl("the URL's port is not a number from 1 to 65535")
    return port or (443 if parts.scheme == "https" else 80)


def check_url(url: str, *, resolve: bool = True) -> None:
    """Refuse URLs the clearinghouse will not call; the message says why and what to change.

    Refused: schemes other than http(s), credentials in the URL, and, unless
    WEBHOOKS_ALLOW_PRIVATE, privileged ports other than 80 and 443 and hosts with any
    address that `address_refused` refuses (loopback, private, link-local, multicast,
    reserved, and IPv6 forms that embed one). Checked when an endpoint is saved; before
    every POST the connection itself is made to an address checked at that moment
    (`PinnedAdapter`), so a DNS answer that changes in between cannot redirect it.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("the URL must start with https:// (or http://)")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL must not contain credentials; the signature authenticates us")
    port = _port(parts)
    if settings.WEBHOOKS_ALLOW_PRIVATE:
        return
    if resolve:
        resolve_checked(parts.hostname, port)
    if port < 1024 and port not in _ALLOWED_LOW_PORTS:
        raise UnsafeUrl(f"port {port} is refused: use 443, 80 or a port from 1024 up")


def resolve_checked(host: str, port: int) -> str:
    """Resolve `host` once and return the address to connect to, if every address is allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"the host {host!r} does not resolve ({exc})") from None
    if not infos:
        raise UnsafeUrl(f"the host {host!r} does not resolve")
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        reason = address_refused(address)
        if reason is not None:
            raise UnsafeUrl(
                f"the host {host!r} resolves to {reason} ({address}); webhooks go to public receivers "
                "(for a receiver on this machine in development, set WEBHOOKS_ALLOW_PRIVATE=1)"
            )
    return str(infos[0][4][0])


class PinnedAdapter(HTTPAdapter):
    """Connects to the address `resolve_checked` just approved, not to a second DNS answer.

    The URL's host is replaced by that address; the Host header, TLS SNI and the
    certificate check keep the original name. Redirects are never followed (`post`).
    """

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(request.url or "")
        host = parts.hostname or ""
        port = _port(parts)
        address = resolve_checked(host, port)
        literal = f"[{address}]" if ":" in address else address
        request.headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
        request.url = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path, parts.query, parts.fragment))
        request.hx_tls_host = host  # type: ignore[attr-defined]
        return super().send(request, *args, **kwargs)

    def build_connection_pool_key_attributes(
        self, request: PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        tls_host = getattr(request, "hx_tls_host", None)
        if tls_host and host_params.get("scheme") == "https":
            pool_kwargs["assert_hostname"] = tls_host
            pool_kwargs["server_hostname"] = tls_host
        return host_params, pool_kwargs


@dataclass
class PostResult:
    status_code: int | None
    error: str
    duration_ms: int
    excerpt: str
    # Seconds the receiver asked us to wait (its Retry-After header), if it did.
    retry_after: float | None = None
    content: bytes = b""  # the whole answer (witnesses' cosignatures are read from it)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_local = threading.local()


def _session() -> requests.Session:
    # One connection pool per thread: deliveries run in a thread pool.
    pinned = not settings.WEBHOOKS_ALLOW_PRIVATE
    if getattr(_local, "pinned", None) is not pinned:
        session = requests.Session()
        if pinned:
            session.mount("http://", PinnedAdapter())
            session.mount("https://", PinnedAdapter())
        _local.session, _local.pinned = session, pinned
    return _local.session


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def post(url: str, body: bytes, headers: dict[str, str], *, content_type: str = "application/json") -> PostResult:
    """POST once; never follow redirects; never raise for network errors.

    Through urllib3's connection pools directly, unless the environment names a proxy for
    the URL's host (HTTP_PROXY, HTTPS_PROXY, NO_PROXY): then through requests, which sends
    it by the proxy. requests costs ~1 ms more CPU per POST than urllib3 alone, most of it
    in reading the environment's proxy settings again for every request (docs/benchmarks/
    webhooks.md); here they are read once per host and process.
    """
    started = time.monotonic()
    headers = {**headers, "content-type": content_type, "user-agent": USER_AGENT}
    try:
        check_url(url, resolve=False)  # the address is resolved, checked and pinned below
        if _proxied(url):
            return _post_by_requests(url, body, headers, started)
        return _post_direct(url, body, headers, started)
    except UnsafeUrl as exc:
        return PostResult(None, f"refused: {exc}", 0, "")
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        return PostResult(None, describe_failure(exc, url)[:500], int((time.monotonic() - started) * 1000), "")


USER_AGENT = "hashexchange-webhooks/1"


@functools.lru_cache(maxsize=4096)
def _proxied_host(scheme: str, netloc: str) -> bool:
    return bool(requests.utils.get_environ_proxies(f"{scheme}://{netloc}/"))


def _proxied(url: str) -> bool:
    """Whether the environment names a proxy for this URL (read once per host and process)."""
    parts = urlsplit(url)
    return _proxied_host(parts.scheme, parts.netloc)


# Keep-alive connections per receiver address (up to 1,000 receivers' pools, least recently
# used out first); as many per address as a worker process's POST threads may open at once.
_pools = urllib3.PoolManager(num_pools=1000, maxsize=64, block=False, ca_certs=DEFAULT_CA_BUNDLE_PATH)


def _post_direct(url: str, body: bytes, headers: dict[str, str], started: float) -> PostResult:
    """One POST through a pooled keep-alive connection. Unless WEBHOOKS_ALLOW_PRIVATE, the
    connection is made to the address `resolve_checked` approves now (a second DNS answer
    cannot redirect it); the Host header, TLS SNI and the certificate check keep the name."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", _port(parts)
    pool_kwargs: dict[str, Any] = {}
    if settings.WEBHOOKS_ALLOW_PRIVATE:
        address = host
    else:
        address = resolve_checked(host, port)
        headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
        if parts.scheme == "https":
            pool_kwargs = {"server_hostname": host, "assert_hostname": host}
    pool = _pools.connection_from_host(address, port, parts.scheme, pool_kwargs=pool_kwargs or None)
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    seconds = settings.WEBHOOK_TIMEOUT_SECONDS
    response = pool.urlopen(
        "POST",
        path,
        body=body,
        headers=headers,
        redirect=False,
        retries=False,
        assert_same_host=False,
        timeout=urllib3.Timeout(connect=seconds, read=seconds),
    )
    content = response.data
    return PostResult(
        response.status,
        "",
        int((time.monotonic() - started) * 1000),
        content.decode("utf-8", "replace")[:1000] if content else "",
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        content=content,
    )


def _post_by_requests(url: str, body: bytes, headers: dict[str, str], started: float) -> PostResult:
    response = _session().post(
        url, data=body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT_SECONDS, allow_redirects=False
    )
    excerpt = response.text[:1000] if response.content else ""
    return PostResult(
        response.status_code,
        "",
        int((time.monotonic() - started) * 1000),
        excerpt,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        content=response.content,
    )


def describe_failure(exc: BaseException, url: str) -> str:
    """What went wrong, in words that point at the fix, followed by the library's own message.

    A receiver that fails while handling a message (an exception in its handler) usually
    drops the connection without an answer; "ConnectionError: ('Connection aborted.', …)"
    alone read like a network fault and sent people looking in the wrong place. Takes
    requests' errors and urllib3's alike.
    """
    parts = urlsplit(url)
    where = f"{parts.hostname}:{_port(parts)}"
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = (
            cause.__cause__
            or cause.__context__
            or next((arg for arg in getattr(cause, "args", ()) if isinstance(arg, BaseException)), None)
        )
    names = {type(item).__name__ for item in chain}
    seconds = settings.WEBHOOK_TIMEOUT_SECONDS
    if isinstance(exc, requests.ConnectTimeout | urllib3.exceptions.ConnectTimeoutError) and not isinstance(
        exc, urllib3.exceptions.NewConnectionError
    ):
        hint = f"no answer to the connection attempt at {where} within {seconds:g} s"
    elif isinstance(exc, urllib3.exceptions.NewConnectionError):  # a subclass of urllib3's timeouts
        hint = f"nothing accepts connections at {where}: is the receiver running, on that port?"
    elif isinstance(exc, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError):
        hint = f"the receiver did not answer within {seconds:g} s (WEBHOOK_TIMEOUT_SECONDS)"
    elif names & {"RemoteDisconnected", "ConnectionResetError", "BrokenPipeError", "ProtocolError"} and not (
        names & {"ConnectionRefusedError", "NewConnectionError"}
    ):
        hint = (
            "the receiver accepted the connection but closed it without answering; it probably failed "
            "while handling the message (see the receiver's own log)"
        )
    elif names & {"ConnectionRefusedError", "NewConnectionError"}:
        hint = f"nothing accepts connections at {where}: is the receiver running, on that port?"
    elif isinstance(exc, requests.exceptions.SSLError | urllib3.exceptions.SSLError | ssl.SSLError):
        hint = "the TLS handshake failed (the receiver's certificate is not valid for its name, or expired)"
    else:
        hint = "the request failed"
    return f"{hint} ({exc.__class__.__name__}: {exc})"
