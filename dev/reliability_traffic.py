"""Traffic of the reliability suite (dev/reliability.py): the load client and the webhook receivers.

The load client runs as threads of the suite's process and talks to the exchange's API
on 127.0.0.1 only, like members would: signed submissions in batches, feed readers,
match queries and outcome reports. Every HTTP attempt is recorded with its start, end
and status; 5xx answers, 429s and transport errors are retried with backoff and counted
separately, so the suite can tell what a member saw during each fault.

The receivers run in a child process (`python -m dev.reliability_traffic receivers
CONFIG`), one HTTP server on 127.0.0.1 per webhook endpoint, commanded over stdin with
one JSON answer per line on stdout. Each checks both signatures (v1 with the endpoint's
secret, v1a with the server's key), records what it accepted (entries by seq, messages
by webhook-id, arrival times) and can be switched between answering at once, answering
slowly, answering 500, and being down (its port closed, its open connections cut).

Nothing here imports Django or the apps: only the standard library and the client package.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import random
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from hashexchange_client import dsse, payloads
from hashexchange_client.webhooks import WebhookVerificationError, verify_webhook

REQUEST_TIMEOUT = 60.0
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 2.0
FEED_PAGE = 500
OUTCOMES_PER_REPORT = 10
OUTCOMES_EVERY = 2.0  # seconds
MATCH_KNOWN = 5
MATCH_RANDOM = 5
# A receiver that answers slowly takes this long (seconds, uniform) per POST.
SLOW_SECONDS = (0.2, 0.8)


def now() -> float:
    """Wall-clock seconds: the receivers run in another process, so both sides use this clock."""
    return time.time()


def random_pdq(rng: random.Random) -> str:
    """A PDQ value like a real photo's (96..160 of 256 bits set); unique with overwhelming odds."""
    while True:
        value = rng.getrandbits(256)
        if 96 <= value.bit_count() <= 160:
            return f"{value:064x}"


# The load client ------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Everything the load client saw, shared by its threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # (operation, start, end, status or 0 for no answer, error text); one row per HTTP attempt.
    attempts: list[tuple[str, float, float, int, str]] = field(default_factory=list)
    # (operation, start, end, final status or 0, tries); one row per logical request.
    calls: list[tuple[str, float, float, int, int]] = field(default_factory=list)
    # Accepted submissions: hash id -> (value, time the answer came back).
    accepted: dict[int, tuple[str, float]] = field(default_factory=dict)
    accepted_values: list[tuple[str, int, float]] = field(default_factory=list)
    envelopes_sent: int = 0
    duplicates_after_retry: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    # Batches given up on (no answer before the load's deadline): their outcome is unknown.
    unknown_batches: int = 0
    unknown_envelopes: int = 0
    feed_entries: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    outcome_rejections: list[dict[str, Any]] = field(default_factory=list)
    match_known: int = 0
    match_misses: list[dict[str, Any]] = field(default_factory=list)
    unexpected: list[dict[str, Any]] = field(default_factory=list)

    def attempt(self, op: str, start: float, end: float, status: int, error: str = "") -> None:
        with self.lock:
            self.attempts.append((op, start, end, status, error))

    def call(self, op: str, start: float, end: float, status: int, tries: int) -> None:
        with self.lock:
            self.calls.append((op, start, end, status, tries))

    def note(self, what: str, **details: Any) -> None:
        with self.lock:
            if len(self.unexpected) < 200:
                self.unexpected.append({"what": what, "at": now(), **details})

    def count(self, table: dict[str, int], key: str, n: int = 1) -> None:
        with self.lock:
            table[key] = table.get(key, 0) + n


class Api:
    """One member's calls to the exchange, with retries of 5xx, 429 and transport errors.

    A new connection per request: gunicorn's sync workers close it after each response.
    """

    def __init__(self, port: int, token: str, recorder: Recorder, stop: threading.Event) -> None:
        self.port, self.recorder, self.stop = port, recorder, stop
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def _once(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=self.headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def call(self, op: str, method: str, path: str, payload: Any = None, *, give_up_at: float) -> tuple[int, Any]:
        """The final (status, decoded body); (0, None) if no answer other than a retryable
        one came before `give_up_at` (or the run was stopped)."""
        body = json.dumps(payload).encode() if payload is not None else None
        first = now()
        delay = BACKOFF_FIRST
        tries = 0
        while True:
            tries += 1
            start = now()
            try:
                status, raw = self._once(method, path, body)
            except (OSError, http.client.HTTPException) as exc:
                status, raw = 0, f"{type(exc).__name__}: {exc}".encode()
            end = now()
            retryable = status == 0 or status == 429 or status >= 500
            self.recorder.attempt(op, start, end, status, raw[:300].decode(errors="replace") if retryable else "")
            if not retryable:
                self.recorder.call(op, first, end, status, tries)
                try:
                    return status, json.loads(raw) if raw else None
                except ValueError:
                    return status, raw.decode(errors="replace")
            if end + delay > give_up_at or self.stop.wait(delay):
                self.recorder.call(op, first, end, 0, tries)
                return 0, None
            delay = min(delay * 2, BACKOFF_MAX)


@dataclass
class Member:
    slug: str
    token: str
    private_key: Any = None  # an Ed25519 private key, for submitters


@dataclass
class LoadPlan:
    port: int
    program: str
    start: float
    end: float
    # A logical request still failing this long after the load's end is given up on.
    grace: float
    rate: float
    batch: int
    submitters: list[Member]
    submit_threads: int
    readers: list[Member]
    matchers: list[Member]
    match_rate: float


class Load:
    """The load threads; `run()` starts them, `join()` waits for them after `plan.end`."""

    def __init__(self, plan: LoadPlan, recorder: Recorder, stop: threading.Event) -> None:
        self.plan, self.recorder, self.stop = plan, recorder, stop
        self.threads: list[threading.Thread] = []
        self.sent_to: dict[str, list[int]] = {m.slug: [] for m in plan.readers}
        self.sent_lock = threading.Lock()

    def api(self, member: Member) -> Api:
        return Api(self.plan.port, member.token, self.recorder, self.stop)

    def _thread(self, name: str, target: Callable[..., None], *args: Any) -> None:
        def guarded() -> None:
            try:
                target(*args)
            except Exception as exc:  # noqa: BLE001 - a crashed load thread is a finding, not a hang
                self.recorder.note("load thread crashed", thread=name, error=f"{type(exc).__name__}: {exc}")

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def run(self) -> None:
        plan = self.plan
        count = plan.submit_threads
        for number in range(count):
            member = plan.submitters[number % len(plan.submitters)]
            self._thread(f"submit-{number}", self.submitter, member, number, count)
        for member in plan.readers:
            self._thread(f"feed-{member.slug}", self.feed_reader, member)
            self._thread(f"outcomes-{member.slug}", self.outcome_reporter, member)
        for number, member in enumerate(plan.matchers):
            self._thread(f"match-{member.slug}", self.matcher, member, number, len(plan.matchers))

    def join(self, timeout: float) -> list[str]:
        """Wait for the threads; the names of those still running after `timeout`."""
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in self.threads if thread.is_alive()]

    def _wait_until(self, moment: float) -> bool:
        """Sleep until `moment`; False if the run was stopped meanwhile."""
        return not self.stop.wait(max(0.0, moment - now()))

    def submitter(self, member: Member, number: int, count: int) -> None:
        """Batches of signed submissions at `rate / count` per second; a thread that fell
        behind (an outage) sends its late batches back to back, so the total is fixed."""
        plan, rec = self.plan, self.recorder
        rng = random.Random(secrets.randbits(64))
        interval = plan.batch * count / plan.rate
        api = self.api(member)
        k = 0
        while True:
            due = plan.start + (k + number / count) * interval
            if due >= plan.end or not self._wait_until(due):
                return
            k += 1
            values = [random_pdq(rng) for _ in range(plan.batch)]
            envelopes = [
                dsse.sign_envelope(
                    payloads.SUBMISSION_TYPE,
                    payloads.submission_payload(program=plan.program, signal_type="pdq", value=value, labels=["rel"]),
                    member.private_key,
                )
                for value in values
            ]
            with rec.lock:
                rec.envelopes_sent += len(envelopes)
            status, body = api.call(
                "submit", "POST", "/api/v1/submissions", {"envelopes": envelopes}, give_up_at=plan.end + plan.grace
            )
            answered = now()
            if status != 200 or not isinstance(body, dict):
                with rec.lock:
                    rec.unknown_batches += 1
                    rec.unknown_envelopes += len(envelopes)
                if status:
                    rec.note("submission batch refused", status=status, body=str(body)[:300])
                continue
            results = body.get("results") or []
            with rec.lock:
                for result in results:
                    value = values[result["index"]]
                    if result["status"] in ("accepted", "duplicate") and result.get("hash_id") is not None:
                        if result["status"] == "duplicate":
                            rec.duplicates_after_retry += 1
                        rec.accepted[int(result["hash_id"])] = (value, answered)
                        rec.accepted_values.append((value, int(result["hash_id"]), answered))
                    elif len(rec.rejected) < 100:
                        rec.rejected.append({"at": answered, "value": value, "error": result.get("error")})
                    else:
                        rec.rejected.append({})

    def feed_reader(self, member: Member) -> None:
        """Page the member's feed from 0, then follow it; hashes read may be reported on."""
        plan = self.plan
        api = self.api(member)
        cursor = 0
        while now() < plan.end:
            status, body = api.call(
                "feed", "GET", f"/api/v1/feed?after={cursor}&limit={FEED_PAGE}", give_up_at=plan.end + plan.grace
            )
            if status != 200 or not isinstance(body, dict):
                if status:
                    self.recorder.note("feed page refused", member=member.slug, status=status, body=str(body)[:300])
                if not self._wait_until(now() + 1.0):
                    return
                continue
            added = [e["hash"]["id"] for e in body["entries"] if e["kind"] == "hash.added"]
            self.recorder.count(self.recorder.feed_entries, member.slug, len(body["entries"]))
            with self.sent_lock:
                self.sent_to[member.slug].extend(added)
            cursor = body["next"]
            if not body["has_more"] and not self._wait_until(now() + 1.0):
                return

    def outcome_reporter(self, member: Member) -> None:
        """Every OUTCOMES_EVERY seconds, outcomes on hashes this member has read in its feed."""
        plan, rec = self.plan, self.recorder
        api = self.api(member)
        reported = 0
        number = 0
        while self._wait_until(now() + OUTCOMES_EVERY) and now() < plan.end:
            with self.sent_lock:
                hash_ids = self.sent_to[member.slug][reported : reported + OUTCOMES_PER_REPORT]
            if not hash_ids:
                continue
            reported += len(hash_ids)
            occurred = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            items = []
            for hash_id in hash_ids:
                number += 1
                items.append(
                    {
                        "hash_id": hash_id,
                        "program": plan.program,
                        "kind": "matched" if number % 2 else "removed",
                        "occurred_at": occurred,
                        "count": 1,
                        "tags": ["reliability"],
                        "client_ref": f"rel-{member.slug}-{number}",
                    }
                )
            status, body = api.call(
                "outcomes", "POST", "/api/v1/outcomes", {"outcomes": items}, give_up_at=plan.end + plan.grace
            )
            if status != 200 or not isinstance(body, dict):
                if status:
                    rec.note("outcomes refused", member=member.slug, status=status, body=str(body)[:300])
                continue
            for result in body.get("results") or []:
                rec.count(rec.outcomes, result["status"])
                if result["status"] == "rejected" and len(rec.outcome_rejections) < 50:
                    with rec.lock:
                        rec.outcome_rejections.append({"at": now(), "member": member.slug, **result})

    def matcher(self, member: Member, number: int, count: int) -> None:
        """Match queries: hashes accepted before the request (each must come back at
        distance 0) and random ones."""
        plan, rec = self.plan, self.recorder
        rng = random.Random(secrets.randbits(64))
        api = self.api(member)
        interval = count / plan.match_rate
        k = 0
        while True:
            due = plan.start + (k + number / count) * interval
            if due >= plan.end or not self._wait_until(max(due, now())):
                return
            k += 1
            asked_at = now()
            with rec.lock:
                known = rec.accepted_values[-2000:]
            sample = rng.sample(known, min(MATCH_KNOWN, len(known)))
            queries = [{"signal_type": "pdq", "value": value} for value, _, _ in sample]
            queries += [{"signal_type": "pdq", "value": random_pdq(rng)} for _ in range(MATCH_RANDOM)]
            status, body = api.call(
                "match", "POST", "/api/v1/match", {"queries": queries}, give_up_at=plan.end + plan.grace
            )
            if status != 200 or not isinstance(body, dict):
                if status:
                    rec.note("match refused", member=member.slug, status=status, body=str(body)[:300])
                continue
            results = {r["index"]: r for r in body.get("results") or []}
            with rec.lock:
                for index, (_value, hash_id, accepted_at) in enumerate(sample):
                    rec.match_known += 1
                    found = [m for m in results.get(index, {}).get("matches", []) if m.get("hash_id") == hash_id]
                    if not found or found[0].get("distance") != 0:
                        if len(rec.match_misses) < 100:
                            rec.match_misses.append(
                                {"asked_at": asked_at, "hash_id": hash_id, "accepted_at": accepted_at}
                            )


# The webhook receivers (a child process) ------------------------------------------------------


class Hub:
    """What every receiver accepted, and how each one behaves now."""

    def __init__(self, count: int) -> None:
        self.lock = threading.Lock()
        self.count = count
        self.modes = ["normal"] * count
        self.secrets: list[str] = [""] * count
        self.server_key = ""
        self.posts = [0] * count
        self.statuses: list[dict[str, int]] = [{} for _ in range(count)]
        self.message_ids: list[set[str]] = [set() for _ in range(count)]
        self.duplicate_messages = [0] * count
        self.first_arrival: list[dict[int, float]] = [{} for _ in range(count)]
        self.hash_ids: list[set[int]] = [set() for _ in range(count)]
        self.duplicate_entries = [0] * count
        self.ok_times: list[list[float]] = [[] for _ in range(count)]
        self.latencies: list[list[float]] = [[] for _ in range(count)]
        self.signature_errors: list[str] = []
        self.answers_lost = [0] * count
        self.inflight: dict[tuple[int, int], float] = {}
        self.at_cache: dict[str, float] = {}
        self.connections: list[set[socket.socket]] = [set() for _ in range(count)]

    def at_time(self, text: str) -> float:
        value = self.at_cache.get(text)
        if value is None:
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
            self.at_cache[text] = value
        return value

    def accept(self, index: int, headers: dict[str, str], body: bytes, arrived: float) -> None:
        """Record a POST this receiver answers 2xx: its message and its entries."""
        try:
            verify_webhook(headers, body, secret=self.secrets[index], public_key=self.server_key)
        except (WebhookVerificationError, KeyError, ValueError) as exc:
            with self.lock:
                if len(self.signature_errors) < 50:
                    self.signature_errors.append(f"endpoint {index}: {exc}")
        message = json.loads(body)
        entries = message["data"]["entries"] if message["type"] == "events.batch" else [message["data"]]
        times = [self.at_time(entry["at"]) for entry in entries]
        with self.lock:
            message_id = headers.get("webhook-id", "")
            if message_id in self.message_ids[index]:
                self.duplicate_messages[index] += 1
            self.message_ids[index].add(message_id)
            self.ok_times[index].append(arrived)
            first = self.first_arrival[index]
            for entry, at in zip(entries, times, strict=True):
                seq = entry["seq"]
                if seq in first:
                    self.duplicate_entries[index] += 1
                    continue
                first[seq] = arrived
                if entry.get("kind") == "hash.added":
                    self.hash_ids[index].add(int(entry["hash"]["id"]))
                self.latencies[index].append(arrived - at)


def serve_receivers(config_path: str) -> None:
    """The receivers process: serve, then obey one-line commands on stdin (answers on stdout)."""
    config = json.loads(Path(config_path).read_text())
    count = config["count"]
    hub = Hub(count)
    servers: list[ThreadingHTTPServer | None] = [None] * count
    ports = [0] * count
    rng = random.Random()

    def handler_for(index: int) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the workers' sessions expect
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with hub.lock:
                    hub.connections[index].add(self.connection)

            def finish(self) -> None:
                with hub.lock:
                    hub.connections[index].discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                arrived = now()
                key = (index, self.client_address[1])
                with hub.lock:
                    hub.inflight[key] = arrived
                try:
                    self._answer(arrived)
                finally:
                    with hub.lock:
                        hub.inflight.pop(key, None)

            def _answer(self, arrived: float) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                mode = hub.modes[index]
                with hub.lock:
                    hub.posts[index] += 1
                if mode == "down":  # cut off mid-request: no answer at all
                    self.close_connection = True
                    return
                status = 500 if mode == "fail500" else 204
                with hub.lock:
                    hub.statuses[index][str(status)] = hub.statuses[index].get(str(status), 0) + 1
                if status == 204:
                    hub.accept(index, {k.lower(): v for k, v in self.headers.items()}, body, arrived)
                    if mode == "slow":
                        time.sleep(rng.uniform(*SLOW_SECONDS))
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self.wfile.flush()
                except OSError:
                    with hub.lock:
                        hub.answers_lost[index] += 1
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def up(index: int) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", ports[index]), handler_for(index))
        server.daemon_threads = True
        ports[index] = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        servers[index] = server

    def down(index: int) -> None:
        server = servers[index]
        servers[index] = None
        if server is not None:
            server.shutdown()
            server.server_close()
        with hub.lock:
            open_connections = list(hub.connections[index])
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    for index in range(count):
        up(index)
        hub.modes[index] = config["modes"][index]
    print(json.dumps({"ports": ports}), flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        answer: Any = "ok"
        if command == "setup":
            data = json.loads(Path(argument).read_text())
            hub.secrets = data["secrets"]
            hub.server_key = data["server_key"]
        elif command == "mode":
            index_text, _, mode = argument.partition(" ")
            index = int(index_text)
            was = hub.modes[index]
            hub.modes[index] = mode
            if mode == "down" and was != "down":
                down(index)
            elif mode != "down" and was == "down":
                up(index)
        elif command == "inflight":
            with hub.lock:
                answer = [[i, port, since] for (i, port), since in hub.inflight.items()]
        elif command == "progress":
            expected = set(json.loads(Path(argument).read_text()))
            with hub.lock:
                answer = [len(expected - ids) for ids in hub.hash_ids]
        elif command == "report":
            answer = receivers_report(hub, json.loads(Path(argument).read_text()))
        elif command == "quit":
            break
        else:
            answer = f"unknown command {command!r}"
        print(json.dumps(answer), flush=True)
    for index in range(count):
        down(index)


def receivers_report(hub: Hub, expected: dict[str, Any]) -> dict[str, Any]:
    """Per endpoint: what was missing, duplicated, how long entries took, when POSTs came."""
    seq_of = {int(hash_id): int(seq) for hash_id, seq in expected["seq_of_hash"].items()}
    want_ids = set(seq_of)
    endpoints = []
    with hub.lock:
        for index in range(hub.count):
            missing_ids = sorted(want_ids - hub.hash_ids[index])
            received_seqs = hub.first_arrival[index]
            missing_seqs = sorted(seq for seq in seq_of.values() if seq not in received_seqs)
            latencies = sorted(hub.latencies[index])
            endpoints.append(
                {
                    "index": index,
                    "posts": hub.posts[index],
                    "statuses": hub.statuses[index],
                    "messages": len(hub.message_ids[index]),
                    "duplicate_messages": hub.duplicate_messages[index],
                    "entries": len(received_seqs),
                    "duplicate_entries": hub.duplicate_entries[index],
                    "answers_lost": hub.answers_lost[index],
                    "missing_hashes": len(missing_ids),
                    "missing_hash_examples": missing_ids[:10],
                    "missing_seqs": len(missing_seqs),
                    "missing_seq_examples": missing_seqs[:10],
                    "latency_seconds": percentiles(latencies),
                    "ok_times": [round(t, 3) for t in hub.ok_times[index]],
                }
            )
        every = sorted(latency for per_endpoint in hub.latencies for latency in per_endpoint)
        return {
            "endpoints": endpoints,
            "latency_seconds": percentiles(every),
            "signature_errors": hub.signature_errors,
        }


def percentiles(ordered: list[float]) -> dict[str, float]:
    """Nearest-rank p50, p95, p99 and the maximum of sorted values (empty: {})."""
    if not ordered:
        return {}
    picks = {"p50": 0.50, "p95": 0.95, "p99": 0.99, "max": 1.0}
    return {name: round(ordered[max(0, -(-int(q * 1000) * len(ordered) // 1000) - 1)], 3) for name, q in picks.items()}


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "receivers":
        serve_receivers(argv[1])
        return 0
    print("usage: python -m dev.reliability_traffic receivers CONFIG (started by dev/reliability.py)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
