"""Calls to a peer's API: its server key and its feed. No ORM here.

Every call goes through the same address checks and pinned connections as webhooks
(exchange/net.py), never follows redirects, and turns every failure into PeerError
with a message that says what to fix; `retryable` tells a 5xx or a timeout (try again
later, with backoff) from an answer that will not change by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from django.conf import settings

from exchange import net


class PeerError(Exception):
    """A peer call that failed; the message names the cause."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def check_base_url(url: str) -> str:
    """The base URL without a trailing slash, if we may call it; PeerError otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (settings.DEBUG or settings.PEERS_ALLOW_HTTP):
        raise PeerError(f"the peer URL must be https:// (got {parts.scheme or 'no scheme'}://)", retryable=False)
    if parts.query or parts.fragment:
        raise PeerError("the peer URL must have no query or fragment", retryable=False)
    try:
        net.check_url(url)
    except net.UnsafeUrl as exc:
        raise PeerError(str(exc), retryable=False) from None
    return url.rstrip("/")


def _get(url: str, *, api_key: str | None = None, body: Any = None, missing_ok: bool = False) -> Any:
    """GET (or POST `body` as JSON) and return the JSON answer; PeerError otherwise."""
    headers = {"accept": "application/json", "user-agent": "hashexchange-federation/1"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    try:
        net.check_url(url, resolve=False)
        if body is None:
            answer = net._session().get(
                url, headers=headers, timeout=settings.PEER_TIMEOUT_SECONDS, allow_redirects=False
            )
        else:
            answer = net._session().post(
                url, json=body, headers=headers, timeout=settings.PEER_TIMEOUT_SECONDS, allow_redirects=False
            )
    except net.UnsafeUrl as exc:
        raise PeerError(f"refused: {exc}", retryable=False) from None
    except requests.RequestException as exc:
        raise PeerError(f"the peer is unreachable: {net.describe_failure(exc, url)[:400]}") from None
    if answer.status_code >= 500 or answer.status_code == 429:
        raise PeerError(f"the peer answered {answer.status_code}; retrying later")
    if answer.status_code in (401, 403):
        raise PeerError(
            f"the peer refused our API key ({answer.status_code}): ask its operator for a key of a member of "
            "kind peer, enrolled in the programs that flow",
            retryable=False,
        )
    if missing_ok and answer.status_code == 404:
        return None
    if answer.status_code not in (200, 201, 207):
        method = "GET" if body is None else "POST"
        raise PeerError(f"the peer answered {answer.status_code} to {method} {urlsplit(url).path}", retryable=False)
    try:
        return answer.json()
    except ValueError:
        raise PeerError("the peer's answer is not JSON") from None


def server_key(base_url: str) -> tuple[str, str]:
    """(key id, base64 public key) of the peer's server key, from GET /api/v1/server-key."""
    from hashexchange_client import keys

    data = _get(f"{base_url}/api/v1/server-key")
    try:
        public_key = str(data["public_key"])
        key_id = keys.key_id(keys.public_key_from_b64(public_key))
    except (KeyError, TypeError, ValueError) as exc:
        raise PeerError(f"the peer's server key is malformed: {exc}", retryable=False) from None
    if data.get("key_id") not in (None, key_id):
        raise PeerError("the peer's server key id is not the digest of its key", retryable=False)
    return key_id, public_key


def feed_page(base_url: str, *, api_key: str, after: int, limit: int) -> dict[str, Any]:
    """One page of the peer's feed after `after`: {"entries", "next", "has_more"}."""
    data = _get(f"{base_url}/api/v1/feed?{urlencode({'after': after, 'limit': limit})}", api_key=api_key)
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list) or not isinstance(data.get("next"), int):
        raise PeerError("the peer's feed page is malformed", retryable=False)
    return data


def post_outcomes(base_url: str, *, api_key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """POST outcomes to the peer (as our peer member there); its per-item results."""
    data = _get(f"{base_url}/api/v1/outcomes", api_key=api_key, body={"outcomes": items})
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise PeerError("the peer's answer to our outcomes is malformed", retryable=False)
    return data


def snapshot(base_url: str, *, api_key: str, program: str) -> dict[str, Any] | None:
    """The peer's newest snapshot of one of its programs (its manifest and where its file is);
    None when it has none built yet (it queues one) or serves no snapshots (an older
    version): we read its feed from the start instead."""
    data = _get(f"{base_url}/api/v1/programs/{program}/snapshot", api_key=api_key, missing_ok=True)
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("manifest"), dict) or not isinstance(data.get("url"), str):
        raise PeerError("the peer's snapshot answer is malformed", retryable=False)
    return data


def download(base_url: str, path: str, *, api_key: str, dest: Path, max_bytes: int) -> int:
    """Stream GET base_url + path into `dest` (at most `max_bytes`); returns its size."""
    url = f"{base_url}{path}"
    if not path.startswith("/api/v1/"):
        raise PeerError("the peer's snapshot URL is not under its API", retryable=False)
    headers = {
        "accept": "application/gzip, application/problem+json",
        "user-agent": "hashexchange-federation/1",
        "authorization": f"Bearer {api_key}",
    }
    size = 0
    try:
        net.check_url(url, resolve=False)
        with net._session().get(
            url, headers=headers, timeout=settings.PEER_TIMEOUT_SECONDS, allow_redirects=False, stream=True
        ) as answer:
            if answer.status_code >= 500 or answer.status_code == 429:
                raise PeerError(f"the peer answered {answer.status_code}; retrying later")
            if answer.status_code != 200:
                raise PeerError(f"the peer answered {answer.status_code} to GET {urlsplit(url).path}")
            with open(dest, "wb") as handle:
                for chunk in answer.iter_content(chunk_size=1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PeerError("the peer's snapshot is larger than its manifest says", retryable=False)
                    handle.write(chunk)
    except net.UnsafeUrl as exc:
        raise PeerError(f"refused: {exc}", retryable=False) from None
    except requests.RequestException as exc:
        raise PeerError(f"the peer is unreachable: {net.describe_failure(exc, url)[:400]}") from None
    return size
