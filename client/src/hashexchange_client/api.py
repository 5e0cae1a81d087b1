"""A small HTTP client for the exchange's member API (``/api/v1/``).

It covers what a member does: who am I, register my key, submit signed envelopes in
batches, withdraw; read the feed (with a cursor kept in a file), match, report
outcomes, see obligations, manage webhooks; and fetch what auditors check. Transient
failures (the connection dropping, 5xx, 429) are retried with exponential backoff,
which is safe because the server treats a re-submitted hash from the same member and
program, or an outcome with the same ``client_ref``, as a duplicate; everything else
surfaces as :class:`ApiError` carrying the server's ``detail``, which is written for
the person at the keyboard.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import __version__
from .keys import public_key_to_b64

MAX_BATCH = 1000
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_PROBLEM = "application/problem+json"
_TEXT = "text/plain, " + _PROBLEM
_MAX_DELAY = 60.0


class ApiError(Exception):
    """The server refused a request, or could not be reached after retrying.

    ``status`` is the HTTP status, or None when no response arrived; ``detail`` is the
    problem document's explanation (the server folds per-field messages into it, so it
    is what to show a person); ``code`` and ``errors`` are there for programs.
    """

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        errors: Any = None,
    ) -> None:
        self.detail = detail
        self.status = status
        self.code = code
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        prefix = f"HTTP {self.status}: " if self.status is not None else ""
        return prefix + self.detail


@dataclass(frozen=True)
class SubmissionResult:
    """What the server decided about one envelope; ``index`` is its input position."""

    index: int
    status: str
    hash_id: str | None = None
    submission_id: str | None = None
    error_code: str | None = None
    error_detail: str | None = None


@dataclass
class SubmitSummary:
    """All results of one :meth:`Client.submit` call, in input order."""

    results: list[SubmissionResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for result in self.results if result.status == status)

    @property
    def accepted(self) -> int:
        return self.count("accepted")

    @property
    def duplicates(self) -> int:
        return self.count("duplicate")

    @property
    def rejected(self) -> int:
        return self.count("rejected")


class Client:
    """Talks to one exchange server on behalf of one member credential."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        base = base_url.rstrip("/")
        # Accept the API root as well as the server root, since both get pasted.
        self.base_url = base.removesuffix("/api/v1")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        self.session = session or requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json, application/problem+json",
                "User-Agent": f"hashexchange-client/{__version__}",
            }
        )

    def me(self) -> dict[str, Any]:
        """The calling member, its enrollments and keys: a cheap credentials check."""
        return _object(self._request("GET", "/api/v1/me"), "GET /api/v1/me")

    def programs(self) -> list[dict[str, Any]]:
        """The programs this member may see, with the signal types each accepts."""
        body = self._request("GET", "/api/v1/programs?limit=1000")
        found = body.get("results") if isinstance(body, dict) else body
        if not isinstance(found, list):
            raise ApiError("the server's answer to GET /api/v1/programs is not a list of programs")
        return [_object(item, "GET /api/v1/programs (a program)") for item in found]

    def register_key(self, public_key: Ed25519PublicKey | bytes | str) -> str:
        """Register an Ed25519 public key for this member; returns the server's key id."""
        encoded = public_key if isinstance(public_key, str) else public_key_to_b64(public_key)
        body = _object(
            self._request("POST", "/api/v1/keys", {"public_key": encoded, "algorithm": "ed25519"}),
            "POST /api/v1/keys",
        )
        registered = body.get("key_id")
        if not isinstance(registered, str):
            raise ApiError("the server registered the key but did not say its key_id")
        return registered

    def submit(self, envelopes: Iterable[Mapping[str, Any]], *, batch_size: int = MAX_BATCH) -> SubmitSummary:
        """Submit envelopes in batches and collect every result."""
        summary = SubmitSummary()
        for batch in self.iter_submit(envelopes, batch_size=batch_size):
            summary.results.extend(batch)
        return summary

    def iter_submit(
        self, envelopes: Iterable[Mapping[str, Any]], *, batch_size: int = MAX_BATCH
    ) -> Iterator[list[SubmissionResult]]:
        """Submit in batches of at most ``batch_size``, yielding each batch's results.

        Yielding per batch lets a caller show progress and record accepted items as
        they are confirmed, so an interrupted run loses at most one batch of work.
        """
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
        offset = 0
        batch: list[Mapping[str, Any]] = []
        for envelope in envelopes:
            batch.append(envelope)
            if len(batch) == batch_size:
                yield self._submit_batch(batch, offset)
                offset += len(batch)
                batch = []
        if batch:
            yield self._submit_batch(batch, offset)

    def withdraw(self, envelope: Mapping[str, Any]) -> dict[str, Any]:
        """Send one signed withdrawal; returns ``{"hash_id", "status"}``."""
        return _object(self._request("POST", "/api/v1/withdrawals", envelope), "POST /api/v1/withdrawals")

    def _submit_batch(self, batch: list[Mapping[str, Any]], offset: int) -> list[SubmissionResult]:
        body = _object(self._request("POST", "/api/v1/submissions", {"envelopes": batch}), "POST /api/v1/submissions")
        raw_results = body.get("results")
        if not isinstance(raw_results, list) or len(raw_results) != len(batch):
            raise ApiError(f"the server answered a batch of {len(batch)} envelopes with an unexpected body")
        results: list[SubmissionResult] = []
        for position, raw in enumerate(raw_results):
            raw = _object(raw, "POST /api/v1/submissions (a result)")
            index = raw.get("index", position)
            if not isinstance(index, int) or not 0 <= index < len(batch):
                raise ApiError(f"the server answered with a result for envelope {index!r} of a batch of {len(batch)}")
            error = raw.get("error")
            if not isinstance(error, dict):
                error = {}
            results.append(
                SubmissionResult(
                    index=offset + index,
                    status=str(raw.get("status")),
                    hash_id=raw.get("hash_id"),
                    submission_id=raw.get("submission_id"),
                    error_code=error.get("code"),
                    error_detail=error.get("detail"),
                )
            )
        return results

    # Receiving: the feed, matching and outcomes (what a platform does with what it is sent).

    def feed_page(self, after: int = 0, limit: int = 1000) -> dict[str, Any]:
        """One page of ``GET /api/v1/feed``: ``{"entries", "next", "has_more"}``.

        ``after`` is a sequence number: store ``next`` once the page is processed and pass
        it back; it never expires and never skips.
        """
        body = _object(
            self._request("GET", "/api/v1/feed", params={"after": after, "limit": limit}), "GET /api/v1/feed"
        )
        if not isinstance(body.get("entries"), list) or not isinstance(body.get("next"), int):
            raise ApiError("the server's answer to GET /api/v1/feed has no entries list or no next cursor")
        return body

    def iter_feed(self, after: int = 0, *, limit: int = 1000) -> Iterator[tuple[list[dict[str, Any]], int]]:
        """Every page from ``after`` to the end, as ``(entries, next)``; persist ``next`` after each."""
        while True:
            page = self.feed_page(after, limit)
            yield page["entries"], page["next"]
            after = page["next"]
            if not page.get("has_more"):
                return

    def follow_feed(self, cursor_file: str | os.PathLike[str], *, limit: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """Every feed page from the position kept in ``cursor_file`` (0 when it does not exist yet).

        The position is written (atomically) only when you ask for the next page, or the
        loop ends, i.e. after you processed a page: stop or crash in the middle of one and
        the next run gets that page again. Feed entries are safe to process twice.
        """
        path = Path(cursor_file)
        after = int(path.read_text().strip() or 0) if path.exists() else 0
        while True:
            page = self.feed_page(after, limit)
            yield page["entries"]
            _write_atomically(path, f"{page['next']}\n")
            after = page["next"]
            if not page.get("has_more"):
                return

    def snapshot(self, program: str) -> dict[str, Any] | None:
        """The newest snapshot of a program you receive (``GET /api/v1/programs/{slug}/snapshot``):
        ``{"seq", "entries", "bytes", "sha256", "url", "manifest", ...}``; None when the server
        has none built yet (it queues one): read the feed from 0 instead. Check it with
        :mod:`hashexchange_client.snapshot` before use."""
        try:
            return _object(self._request("GET", f"/api/v1/programs/{program}/snapshot"), "GET snapshot")
        except ApiError as exc:
            if exc.code == "snapshot_not_ready":
                return None
            raise

    def download(
        self, path: str, dest: str | os.PathLike[str], *, progress: Callable[[int], None] | None = None
    ) -> int:
        """Stream ``GET path`` (under the server's base URL) into the file ``dest``; returns its size.

        ``progress`` is called with the number of bytes of each chunk written.
        """
        response = self._send_stream(path)
        size = 0
        with response, open(dest, "wb") as handle:
            for chunk in response.iter_content(chunk_size=1 << 20):
                handle.write(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(len(chunk))
        return size

    def _send_stream(self, path: str) -> requests.Response:
        """A GET whose body is read as it comes (a snapshot's file), with the same retries."""
        return self._send("GET", path, accept="application/gzip, " + _PROBLEM, stream=True)

    def hash_detail(self, hash_id: int) -> dict[str, Any]:
        """A hash you were sent: where it is listed, its supporting envelopes, feedback."""
        return _object(self._request("GET", f"/api/v1/hashes/{int(hash_id)}"), "GET /api/v1/hashes/{id}")

    def match(self, queries: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
        """Match ``{"signal_type", "value"}`` queries against the hashes you receive; one result per query."""
        body = _object(self._request("POST", "/api/v1/match", {"queries": list(queries)}), "POST /api/v1/match")
        results = body.get("results")
        if not isinstance(results, list):
            raise ApiError("the server's answer to POST /api/v1/match has no results list")
        return [_object(item, "POST /api/v1/match (a result)") for item in results]

    def report_outcomes(self, outcomes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Report what you did with hashes you were sent (``POST /api/v1/outcomes``); per-item results."""
        return _object(self._request("POST", "/api/v1/outcomes", {"outcomes": list(outcomes)}), "POST /api/v1/outcomes")

    def obligations(self) -> list[dict[str, Any]]:
        """Withdrawn hashes you were sent and have not yet reported deleting."""
        body = self._request("GET", "/api/v1/obligations", params={"limit": 1000})
        found = body.get("results") if isinstance(body, dict) else body
        if not isinstance(found, list):
            raise ApiError("the server's answer to GET /api/v1/obligations is not a list")
        return [_object(item, "GET /api/v1/obligations (an obligation)") for item in found]

    # Webhooks (docs/webhooks.md): the secret is shown once, on create and on rotate.

    def webhooks(self) -> list[dict[str, Any]]:
        body = self._request("GET", "/api/v1/webhooks", params={"limit": 1000})
        found = body.get("results") if isinstance(body, dict) else body
        if not isinstance(found, list):
            raise ApiError("the server's answer to GET /api/v1/webhooks is not a list")
        return [_object(item, "GET /api/v1/webhooks (an endpoint)") for item in found]

    def create_webhook(
        self, url: str, *, events: Iterable[str] = (), description: str = "", after: int | None = None
    ) -> dict[str, Any]:
        """Register an endpoint; the answer holds its ``secret`` (keep it: it is not shown again)."""
        payload: dict[str, Any] = {"url": url, "events": list(events), "description": description}
        if after is not None:
            payload["after"] = after
        return _object(self._request("POST", "/api/v1/webhooks", payload), "POST /api/v1/webhooks")

    def update_webhook(self, webhook_id: int, **fields: Any) -> dict[str, Any]:
        path = f"/api/v1/webhooks/{int(webhook_id)}"
        return _object(self._request("PATCH", path, fields), f"PATCH {path}")

    def rotate_webhook_secret(self, webhook_id: int) -> dict[str, Any]:
        path = f"/api/v1/webhooks/{int(webhook_id)}/rotate-secret"
        return _object(self._request("POST", path, {}), f"POST {path}")

    def test_webhook(self, webhook_id: int) -> dict[str, Any]:
        """Send the endpoint a test message now; the answer says what the receiver did."""
        path = f"/api/v1/webhooks/{int(webhook_id)}/test"
        return _object(self._request("POST", path), f"POST {path}")

    def delete_webhook(self, webhook_id: int) -> None:
        self._send("DELETE", f"/api/v1/webhooks/{int(webhook_id)}")

    # The audit log (docs/auditlog.md): what `hashexchange log` and `report verify` fetch.

    def server_key(self) -> dict[str, Any]:
        """The server's public key and the audit log's origin and verifier key."""
        return _object(self._request("GET", "/api/v1/server-key"), "GET /api/v1/server-key")

    def log_checkpoint(self) -> str:
        """The audit log's latest checkpoint, a signed note (not yet verified)."""
        return self._send("GET", "/api/v1/log/checkpoint", accept=_TEXT).content.decode("utf-8")

    def log_inclusion_proof(self, leaf_index: int, tree_size: int | None = None) -> str:
        """An event's inclusion proof as a C2SP tlog-proof file (not yet verified)."""
        params: dict[str, Any] = {"leaf_index": leaf_index, "format": "tlog-proof"}
        if tree_size is not None:
            params["tree_size"] = tree_size
        response = self._send("GET", "/api/v1/log/proof/inclusion", params=params, accept=_TEXT)
        return response.content.decode("utf-8")

    def log_consistency_proof(self, first: int, second: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"first": first} if second is None else {"first": first, "second": second}
        return _object(
            self._request("GET", "/api/v1/log/proof/consistency", params=params), "GET /api/v1/log/proof/consistency"
        )

    def log_tile(self, path: str) -> bytes:
        """A tile or entry bundle by its tlog-tiles path, e.g. ``tile/entries/x001/234`` (auditors)."""
        return self._send("GET", f"/api/v1/log/{path}", accept="application/octet-stream, " + _PROBLEM).content

    def log_entries(self, start: int, end: int) -> bytes:
        """Leaves [start, end) as entry-bundle entries (uint16 length, leaf data), at most 65,536
        per call (auditors); the server compresses them for the transfer."""
        return self._send(
            "GET",
            "/api/v1/log/entries",
            params={"start": start, "end": end},
            accept="application/octet-stream, " + _PROBLEM,
        ).content

    def _request(self, method: str, path: str, payload: Any = None, params: Any = None) -> Any:
        """One API call with retries; returns the decoded JSON body."""
        response = self._send(method, path, payload, params=params)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                f"the server's answer to {method} {path} is not JSON",
                status=response.status_code,
            ) from exc

    def _send(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        params: Any = None,
        accept: str | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """One API call with retries; returns the successful response (its body not yet read
        when `stream`)."""
        url = self.base_url + path
        headers = {"Accept": accept} if accept else None
        attempt = 0
        while True:
            try:
                response = self.session.request(
                    method, url, json=payload, params=params, headers=headers, timeout=self.timeout, stream=stream
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt >= self.retries:
                    raise ApiError(f"cannot reach {url}: {exc}") from exc
                self._sleep(self._delay(attempt, None))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                response.close()
                self._sleep(self._delay(attempt, response.headers.get("Retry-After")))
                attempt += 1
                continue
            if response.status_code >= 400:
                response.content  # noqa: B018 - a streamed problem document is read before it is closed
                raise _problem(response)
            return response

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), _MAX_DELAY)
        return min(self.backoff * 2.0**attempt, _MAX_DELAY)


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old or the new content, never half."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _object(body: Any, what: str) -> dict[str, Any]:
    """The body if it is a JSON object; anything else means a server we do not understand."""
    if not isinstance(body, dict):
        raise ApiError(f"the server's answer to {what} is not a JSON object")
    return body


def _problem(response: requests.Response) -> ApiError:
    """Turn an error response into an ApiError, preferring the problem ``detail``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title") or response.reason
        return ApiError(
            str(detail),
            status=response.status_code,
            code=body.get("code"),
            errors=body.get("errors"),
        )
    text = response.text.strip()[:200] or response.reason or "no detail"
    return ApiError(text, status=response.status_code)
