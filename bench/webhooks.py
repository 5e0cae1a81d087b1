"""Webhook fan-out: signed POSTs/s and events/s from real Celery workers to real receivers.

Why end to end: a delivery's cost is spread over the Celery thread pool, the claim and
cursor writes, the feed query, building and signing the body, the HTTP round trip and
the receiver's answer time, and a hundred endpoints share two cores with the database.
Timing `webhook_delivery.deliver_endpoint` alone would hide the contention, so this runs the
real workers against real HTTP receivers on 127.0.0.1.

Set-up, once per database (a fresh SQLite file, and a fresh PostgreSQL database on the
server given by --postgres-url or on one started here with dev/services.py):

1. a receivers process listens on one 127.0.0.1 port per endpoint (ThreadingHTTPServer,
   HTTP/1.1 keep-alive); half of them answer at once, half after --slow-ms (50 ms). They
   check every POST's v1 signature with the endpoint's secret and the v1a signature with
   the server's public key, and record each entry (hash id, seq) with its arrival time;
2. a template database is migrated, with one program, one submitting platform with a
   signing key, and --endpoints receiving platforms each with one webhook endpoint.

Each run copies the template, then:

- source `import`: --events hashes imported with `manage.py import_hashes` (one
  `hashes.imported` event per 1,000 hashes, which webhooks expand into 1,000 entries);
  source `submit`: --events signed submissions stored with `hashes.services.submissions_create`
  in batches of --submit-batch (one `hash.added` event per hash), signed before the clock;
- mode `backlog`: the events are made while no worker runs (their wake-ups go to a Redis
  database no worker reads), then the workers start, and the clock starts when
  `exchange.tasks.fanout` is sent; latency is counted from then (or from the event's
  `at` if later). Mode `live`: the workers run first and the events are made while they
  deliver; every commit wakes them through the normal after-commit path, and latency is
  the entry's `at` (the time its event was recorded, a little before commit) to arrival;
- the run ends when every endpoint has every entry (or --timeout), and then checks that
  each endpoint got exactly the produced hash ids, every seq at least once, messages in
  non-decreasing seq order, valid signatures, and that the database agrees (every
  Delivery delivered, every cursor at the last seq).

Usage:
    python bench/webhooks.py --quick                       # 10 endpoints x 500 events, SQLite
    python bench/webhooks.py                               # 100 x 10,000, both databases, both sources
    python bench/webhooks.py --database postgres --source submit --mode live --concurrency 8,16
    python bench/webhooks.py --profile --database sqlite   # cProfile deliver_endpoint in-process

Results are printed as a table and written as JSON to bench/results/; reference
figures and what they led to: docs/benchmarks/webhooks.md.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import cProfile
import datetime as dt
import functools
import hmac
import io
import json
import os
import pstats
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from harness import (
    RESULTS_DIR,
    ROOT,
    BenchError,
    PostgresServer,
    django_env,
    log,
    machine_cpu_times,
    machine_info,
    percentile,
    postgres_server,
    print_machine,
    private_redis,
    process_cpu_seconds,
    random_pdq,
    run_python,
    stop_process,
    tail,
    tree_cpu_seconds,
    with_database,
    write_results,
)
from hashexchange_client import dsse, keys, payloads
from hashexchange_client import webhooks as signing

PROGRAM = "bench"
SUBMITTER = "bench-source"
RECEIVER_PREFIX = "bench-recv-"
DEFAULT_ENDPOINTS = 100
DEFAULT_EVENTS = 10_000
QUICK_ENDPOINTS = 10
QUICK_EVENTS = 500
DEFAULT_TIMEOUT = 600.0
WORKER_START_TIMEOUT = 180.0  # workers start slowly on a loaded machine
POLL_SECONDS = 0.1
# Wake-ups of events made in backlog mode go here: a Redis database no worker reads.
IDLE_BROKER_DB = 15


# Receivers: a separate process with one HTTP server per endpoint --------------------------------


class Hub:
    """What every receiver got: per endpoint, the hash ids and seqs, arrival times, checks."""

    def __init__(self, endpoints: list[dict[str, Any]], public_key: str, slow_seconds: float) -> None:
        self.lock = threading.Lock()
        self.endpoints = endpoints
        self.public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
        self.secret_keys = [base64.b64decode(e["secret"].removeprefix(signing.SECRET_PREFIX)) for e in endpoints]
        self.slow_seconds = slow_seconds
        self.times: dict[str, float] = {}
        self.reset(0, 0.0)

    def reset(self, expected: int, base: float) -> None:
        with self.lock:
            count = len(self.endpoints)
            self.expected, self.base = expected, base
            self.ids: list[set[int]] = [set() for _ in range(count)]
            self.seqs: list[set[int]] = [set() for _ in range(count)]
            self.message_ids: list[set[str]] = [set() for _ in range(count)]
            self.last_first_seq = [0] * count
            self.order_errors: list[str] = []
            self.signature_errors: list[str] = []
            self.posts = [0] * count
            self.entries = [0] * count
            self.completed_at: list[float | None] = [None] * count
            self.latencies: list[float] = []
            self.first_post: float | None = None
            self.last_post = 0.0
            self.cpu_at_reset = time.process_time()

    def at_time(self, text: str) -> float:
        value = self.times.get(text)
        if value is None:
            parsed = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
            value = self.times[text] = parsed.timestamp()
        return value

    def record(self, index: int, headers: dict[str, str], body: bytes, arrived: float) -> None:
        """Check one POST and note what it carried; the parse and checks run outside the lock."""
        problem = ""
        try:
            content = signing.signed_content(headers["webhook-id"], headers["webhook-timestamp"], body)
            signatures = headers["webhook-signature"].split()
            mac = base64.b64encode(hmac.digest(self.secret_keys[index], content, "sha256")).decode()
            if f"v1,{mac}" not in signatures:
                problem = "no v1 signature matches the secret"
            v1a = [s[4:] for s in signatures if s.startswith("v1a,")]
            if not v1a:
                problem = "no v1a signature"
            else:
                self.public_key.verify(base64.b64decode(v1a[0]), content)
        except Exception as exc:  # noqa: BLE001 - any failure is a wrong delivery, reported at the end
            problem = f"{type(exc).__name__}: {exc}"
        message = json.loads(body)
        entries = message["data"]["entries"] if message["type"] == "events.batch" else [message["data"]]
        first_seq = entries[0]["seq"]
        with self.lock:
            self.first_post = arrived if self.first_post is None else self.first_post
            self.last_post = max(self.last_post, arrived)
            self.posts[index] += 1
            self.entries[index] += len(entries)
            if problem and len(self.signature_errors) < 20:
                self.signature_errors.append(f"endpoint {index}: {problem}")
            repeat = headers["webhook-id"] in self.message_ids[index]
            self.message_ids[index].add(headers["webhook-id"])
            if not repeat and first_seq < self.last_first_seq[index] and len(self.order_errors) < 20:
                self.order_errors.append(f"endpoint {index}: seq {first_seq} after {self.last_first_seq[index]}")
            self.last_first_seq[index] = max(self.last_first_seq[index], first_seq)
            ids, seqs = self.ids[index], self.seqs[index]
            for entry in entries:
                hash_id = entry["hash"]["id"]
                if hash_id not in ids:
                    ids.add(hash_id)
                    self.latencies.append(arrived - max(self.at_time(entry["at"]), self.base))
                seqs.add(entry["seq"])
            if self.completed_at[index] is None and len(ids) >= self.expected > 0:
                self.completed_at[index] = arrived

    def stats(self) -> dict[str, Any]:
        with self.lock:
            done = [t for t in self.completed_at if t is not None]
            return {
                "complete": len(done),
                "endpoints": len(self.endpoints),
                "posts": sum(self.posts),
                "entries": sum(self.entries),
                "distinct": sum(len(ids) for ids in self.ids),
                "last_complete": max(done) if done else None,
            }

    def report(self, expected_ids: list[int], expected_seqs: list[int]) -> dict[str, Any]:
        """The run's verdict and figures: missing entries, order, signatures, latency."""
        want_ids, want_seqs = set(expected_ids), set(expected_seqs)
        with self.lock:
            problems: list[str] = []
            for index in range(len(self.endpoints)):
                missing = want_ids - self.ids[index]
                extra = self.ids[index] - want_ids
                missing_seqs = want_seqs - self.seqs[index]
                if missing or extra or missing_seqs:
                    problems.append(
                        f"endpoint {index}: {len(missing)} hashes missing, {len(extra)} unexpected, "
                        f"{len(missing_seqs)} seqs missing"
                    )
            problems += self.order_errors + self.signature_errors
            latencies = sorted(self.latencies)
            slow = [i for i, e in enumerate(self.endpoints) if e["slow"]]
            fast = [i for i, e in enumerate(self.endpoints) if not e["slow"]]

            def last(indexes: list[int]) -> float | None:
                times = [self.completed_at[i] for i in indexes if self.completed_at[i] is not None]
                return max(times) if times else None

            return {
                "problems": problems[:50],
                "posts": sum(self.posts),
                "entries": sum(self.entries),
                "distinct_entries": sum(len(ids) for ids in self.ids),
                "duplicate_entries": sum(self.entries) - sum(len(ids) for ids in self.ids),
                "latency_ms": {
                    name: round(percentile(latencies, q) * 1000, 1)
                    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
                },
                "first_post": self.first_post,
                "last_post": self.last_post,
                "fast_complete_at": last(fast),
                "slow_complete_at": last(slow),
                "receiver_cpu_seconds": round(time.process_time() - self.cpu_at_reset, 2),
            }


def serve_receivers(config_path: str) -> None:
    """The receivers process: serve, then obey one-line commands on stdin (answers on stdout)."""
    config = json.loads(Path(config_path).read_text())
    count, slow_seconds = config["count"], config["slow_ms"] / 1000
    slow = [index % 2 == 1 for index in range(count)]  # every other endpoint answers late
    servers: list[ThreadingHTTPServer] = []
    state: dict[str, Hub | None] = {"hub": None}

    def handler_for(index: int) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the workers' sessions expect
            # The status line and headers go out before the body: without TCP_NODELAY,
            # Nagle holds the body until the client's delayed ACK, 40 ms per POST.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                hub = state["hub"]
                status = 503
                if hub is not None:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    hub.record(index, headers, body, arrived)
                    status = 200
                    if slow[index]:
                        time.sleep(slow_seconds)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    for index in range(count):
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(index))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
        servers.append(server)
    print(json.dumps({"ports": [s.server_address[1] for s in servers], "slow": slow}), flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        answer: Any = "ok"
        if command == "load":
            data = json.loads(Path(argument).read_text())
            for endpoint, is_slow in zip(data["endpoints"], slow, strict=True):
                endpoint["slow"] = is_slow
            state["hub"] = Hub(data["endpoints"], data["server_key"], slow_seconds)
        elif command == "reset":
            expected, base = argument.split()
            assert state["hub"] is not None
            state["hub"].reset(int(expected), float(base))
        elif command == "stats":
            assert state["hub"] is not None
            answer = state["hub"].stats()
        elif command == "report":
            assert state["hub"] is not None
            expected = json.loads(Path(argument).read_text())
            answer = state["hub"].report(expected["hash_ids"], expected["seqs"])
        elif command == "quit":
            break
        print(json.dumps(answer), flush=True)
    for server in servers:
        server.shutdown()


class Receivers:
    """The main process's handle on the receivers process."""

    def __init__(self, count: int, slow_ms: int, workdir: Path) -> None:
        config = workdir / "receivers.json"
        config.write_text(json.dumps({"count": count, "slow_ms": slow_ms}))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "_receivers", str(config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        hello = json.loads(self._line())
        self.ports: list[int] = hello["ports"]
        self.slow: list[bool] = hello["slow"]
        self.lock = threading.Lock()

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"the receivers process exited with code {self.proc.poll()}")
        return line

    def ask(self, command: str) -> Any:
        with self.lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            return json.loads(self._line())

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/hook/{index}" for index, port in enumerate(self.ports)]

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ask("quit")
        stop_process(self.proc)


# Databases, workers and runs -------------------------------------------------------------------


@dataclass
class Template:
    """A migrated database with the members and endpoints, to copy once per run."""

    kind: str
    name: str  # SQLite: a file; PostgreSQL: a database name
    setup_events: int
    key_file: str


class Databases:
    """A template database once, then a fresh copy of it for every run."""

    def __init__(self, kind: str, workdir: Path, pg: PostgresServer | None, redis_url: str) -> None:
        self.kind, self.workdir, self.pg, self.redis_url = kind, workdir, pg, redis_url
        self.secrets = (secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        self.prefix = f"hxwebhooks_{os.getpid()}"
        self.count = 0
        self.created: list[str] = []

    def server_pid(self) -> int | None:
        """The PostgreSQL server's postmaster, when the bench started it (its backends are its
        children): the database's CPU is counted beside the workers'."""
        if self.pg is None or not self.pg.started_here:
            return None
        from urllib.parse import urlsplit

        port = urlsplit(self.pg.admin_url).port
        pidfile = Path(tempfile.gettempdir()) / f"hashexchange-bench-postgres-{port}" / "data" / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def url(self, name: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{name}"
        assert self.pg is not None
        return with_database(self.pg.admin_url, name)

    def env(self, name: str, *, broker_db: int = 0, batch_size: int | None = None) -> dict[str, str]:
        broker = self.redis_url.rsplit("/", 1)[0] + f"/{broker_db}"
        env = {
            **django_env(self.url(name), self.redis_url, self.secrets),
            "CELERY_BROKER_URL": broker,
            "WEBHOOKS_ALLOW_PRIVATE": "1",
        }
        if batch_size:
            env["WEBHOOK_BATCH_SIZE"] = str(batch_size)
        return env

    def prepare(self, urls: list[str], receivers: Receivers) -> Template:
        if self.kind == "sqlite":
            name = str(self.workdir / f"{self.kind}-template.sqlite3")
        else:
            assert self.pg is not None
            name = f"{self.prefix}_template"
            self.pg.create_database(name)
            self.created.append(name)
        urls_file, out_file = self.workdir / "urls.json", self.workdir / f"{self.kind}-endpoints.json"
        urls_file.write_text(json.dumps(urls))
        started = time.monotonic()
        out = run_python(
            [__file__, "_prepare", str(urls_file), str(out_file)], self.env(name), what="preparing the database"
        )
        answer = json.loads(out.strip().splitlines()[-1])
        receivers.ask(f"load {out_file}")
        log(f"{self.kind}: migrated, {len(urls)} members and endpoints in {time.monotonic() - started:.1f} s")
        return Template(self.kind, name, answer["events"], answer["key_file"])

    def fresh_copy(self, template: Template) -> str:
        self.count += 1
        if self.kind == "sqlite":
            name = str(self.workdir / f"run{self.count}.sqlite3")
            for suffix in ("", "-wal", "-shm"):
                if Path(template.name + suffix).exists():
                    shutil.copyfile(template.name + suffix, name + suffix)
            return name
        assert self.pg is not None
        name = f"{self.prefix}_run{self.count}"
        self.pg.create_database(name, template=template.name)
        self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(name + suffix).unlink(missing_ok=True)
        elif self.pg is not None:
            self.pg.drop_database(name)
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            with contextlib.suppress(Exception):
                self.drop(name)


@contextlib.contextmanager
def celery_workers(
    env: dict[str, str], *, processes: int, concurrency: int, logdir: Path, code: Path = ROOT
) -> Iterator[list[int]]:
    """`processes` Celery workers (thread pool of `concurrency`, queues celery and webhooks),
    started and ready; yields their pids; stopped (SIGTERM, then SIGKILL) afterwards.
    `code` is the checkout they run (--reference: another commit's, same database)."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for number in range(processes):
            logfile = logdir / f"worker-{number}-{time.monotonic_ns()}.log"
            logs.append(logfile)
            with logfile.open("ab") as output:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "celery",
                            "-A",
                            "config",
                            "worker",
                            "-l",
                            "info",
                            "-Q",
                            "celery,webhooks",
                            "--pool",
                            "threads",
                            "--concurrency",
                            str(concurrency),
                            "--without-gossip",
                            "--without-mingle",
                            "--without-heartbeat",
                            "-n",
                            f"bench{number}-{os.getpid()}@%h",
                        ],
                        cwd=code,
                        # INFO: the " ready." line this waits for (the harness sets WARNING).
                        env={**env, "PYTHONPATH": str(code), "LOG_LEVEL": "INFO"},
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=output,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        for proc, logfile in zip(procs, logs, strict=True):
            while " ready." not in logfile.read_text(errors="replace"):
                if proc.poll() is not None:
                    raise BenchError(f"a worker exited with code {proc.returncode}:\n{tail(logfile)}")
                if time.monotonic() > deadline:
                    raise BenchError(f"a worker was not ready within {WORKER_START_TIMEOUT:.0f} s")
                time.sleep(0.05)
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            stop_process(proc)
        for logfile in logs:
            errors = [line for line in logfile.read_text(errors="replace").splitlines() if "ERROR" in line]
            if errors:
                log(f"{logfile.name}: {len(errors)} error lines, first: {errors[0][:300]}")


def send_fanout(broker_url: str) -> None:
    """Queue exchange.tasks.fanout as the after-commit hook would (Celery client only)."""
    from celery import Celery

    client = Celery("bench-client", broker=broker_url)
    client.send_task("exchange.tasks.fanout", retry=False, ignore_result=True)
    client.close()


@dataclass
class Run:
    database: str
    source: str
    mode: str
    endpoints: int
    events: int
    entries_per_endpoint: int
    processes: int
    concurrency: int
    batch_size: int
    code: str = "this"
    seconds: float = 0.0
    posts: int = 0
    entries: int = 0
    posts_per_second: float = 0.0
    events_per_second: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    fast_seconds: float | None = None
    slow_seconds: float | None = None
    produce_seconds: float = 0.0
    duplicates: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    database_check: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def worker_ms_per_post(self) -> float:
        """CPU of the worker processes per signed POST: less sensitive to other load than POSTs/s."""
        return self.cpu.get("workers", 0.0) * 1000 / self.posts if self.posts else 0.0


def produce(
    dbs: Databases, name: str, template: Template, *, source: str, events: int, args: Any, broker_db: int
) -> tuple[dict[str, Any], Path]:
    """Make the run's events in a child process; returns its answer (ids, seqs, times) and its file."""
    out_file = dbs.workdir / "produced.json"
    run_python(
        [
            __file__,
            "_produce",
            source,
            str(events),
            str(args.submit_batch),
            template.key_file,
            str(out_file),
            str(args.rate),
        ],
        dbs.env(name, broker_db=broker_db),
        what="making the events",
    )
    return json.loads(out_file.read_text()), out_file


def migrate_back(dbs: Databases, name: str, checkout: Path) -> None:
    """Give a reference checkout's run the schema of its own migrations: the template is
    migrated by this checkout, so each app is migrated back to the reference's last
    migration (with this checkout's code, which knows how to undo its own)."""
    env = dbs.env(name)
    for folder in sorted(ROOT.glob("*/migrations")):
        app = folder.parent.name
        ours = sorted(path.stem for path in folder.glob("[0-9]*.py"))
        theirs = sorted(path.stem for path in (checkout / app / "migrations").glob("[0-9]*.py"))
        if ours and theirs and ours[-1] != theirs[-1] and theirs[-1] in ours:
            run_python(
                ["manage.py", "migrate", app, theirs[-1], "--noinput", "-v", "0"],
                env,
                what=f"migrating {app} back to the reference's {theirs[-1]}",
            )


def run_one(
    dbs: Databases,
    template: Template,
    receivers: Receivers,
    *,
    source: str,
    mode: str,
    processes: int,
    concurrency: int,
    batch_size: int,
    args: Any,
    code: tuple[str, Path] = ("this", ROOT),
) -> Run:
    run = Run(
        code=code[0],
        database=dbs.kind,
        source=source,
        mode=mode,
        endpoints=len(receivers.ports),
        events=args.events,
        entries_per_endpoint=args.events,
        processes=processes,
        concurrency=concurrency,
        batch_size=batch_size,
    )
    name = dbs.fresh_copy(template)
    if code[1].resolve() != ROOT.resolve():
        migrate_back(dbs, name, code[1])
    import redis

    # Tasks a stopped worker left queued name endpoints of the previous run's database.
    redis.Redis.from_url(dbs.redis_url).flushall()
    try:
        env = dbs.env(name, batch_size=batch_size)
        produced: dict[str, Any] = {}
        expected_file = dbs.workdir / "produced.json"
        if mode == "backlog":
            produced, expected_file = produce(
                dbs, name, template, source=source, events=args.events, args=args, broker_db=IDLE_BROKER_DB
            )
        receivers.ask(f"reset {args.events} 0")
        with celery_workers(
            env, processes=processes, concurrency=concurrency, logdir=dbs.workdir, code=code[1]
        ) as pids:
            cpu_before = {pid: process_cpu_seconds(pid) for pid in pids}
            receivers_before = receivers.cpu_seconds()
            server = dbs.server_pid()
            server_before = tree_cpu_seconds(server)
            busy_before, total_before = machine_cpu_times()
            started = time.time()
            if mode == "backlog":
                receivers.ask(f"reset {args.events} {started}")
                send_fanout(env["CELERY_BROKER_URL"])
            else:
                failures: list[BaseException] = []

                def make_events() -> None:
                    try:
                        produced.update(
                            produce(dbs, name, template, source=source, events=args.events, args=args, broker_db=0)[0]
                        )
                    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                        failures.append(exc)

                producer = threading.Thread(target=make_events)
                producer.start()
            deadline = time.monotonic() + args.timeout
            stats = receivers.ask("stats")
            while stats["complete"] < stats["endpoints"] and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
                stats = receivers.ask("stats")
            if mode == "live":
                producer.join()
                if failures:
                    raise BenchError(f"making the events failed: {failures[0]}")
                started = produced["started_at"]  # the clock of a live run starts with the first commit
            busy_after, total_after = machine_cpu_times()
            run.cpu = {
                "workers": round(sum(process_cpu_seconds(pid) - cpu_before[pid] for pid in pids), 2),
                "receivers": round(receivers.cpu_seconds() - receivers_before, 2),
                "database_server": round(tree_cpu_seconds(server) - server_before, 2),
                "machine_busy": round(busy_after - busy_before, 2),
                "machine_capacity": round(total_after - total_before, 2),
            }
        if stats["complete"] < stats["endpoints"]:
            run.problems.append(
                f"timed out after {args.timeout:.0f} s: {stats['complete']} of {stats['endpoints']} endpoints complete"
            )
        report = receivers.ask(f"report {expected_file}")
        run.problems += report["problems"]
        # A run that timed out is measured up to its last POST, so its rates stay honest.
        end = stats["last_complete"] if stats["complete"] == stats["endpoints"] else report["last_post"]
        run.seconds = round(end - started, 3)
        run.posts, run.entries = report["posts"], report["entries"]
        run.duplicates = report["duplicate_entries"]
        run.posts_per_second = round(run.posts / run.seconds, 1) if run.seconds > 0 else 0.0
        run.events_per_second = round(run.entries / run.seconds, 1) if run.seconds > 0 else 0.0
        run.latency_ms = report["latency_ms"]
        run.fast_seconds = round(report["fast_complete_at"] - started, 3) if report["fast_complete_at"] else None
        run.slow_seconds = round(report["slow_complete_at"] - started, 3) if report["slow_complete_at"] else None
        run.produce_seconds = produced.get("seconds", 0.0)
        run.cpu["receivers_self"] = report["receiver_cpu_seconds"]
        out = run_python([__file__, "_check", str(expected_file)], env, what="checking the database")
        run.database_check = json.loads(out.strip().splitlines()[-1])
        run.problems += run.database_check.pop("problems")
    finally:
        dbs.drop(name)
    return run


# Internal steps: run in a child process with DATABASE_URL set ----------------------------------


def _django() -> None:
    import django

    django.setup()


def step_prepare(urls_file: str, out_file: str) -> None:
    """Migrate; create the program, the submitter (with a signing key) and the receivers' endpoints."""
    _django()
    from django.core.management import call_command

    from core.ledger import Actor, Event
    from exchange import crypto
    from exchange import services as exchange_services
    from members import services
    from members.models import Member

    call_command("migrate", verbosity=0, interactive=False)
    actor = Actor.operator("bench")
    program = services.program_create(slug=PROGRAM, name="Benchmark", signal_types_=["pdq"], actor=actor)
    submitter = services.member_create(
        slug=SUBMITTER, kind=Member.Kind.PLATFORM, status=Member.Status.ACTIVE, actor=actor
    )
    services.enrollment_set(member=submitter, program=program, state="opted_in", actor=actor)
    private_key = keys.generate_private_key()
    services.signing_key_register(
        member=submitter, public_key=base64.b64encode(keys.public_key_bytes(private_key)).decode(), actor=actor
    )
    key_file = Path(out_file).with_suffix(".key")
    key_file.write_text(base64.b64encode(private_key.private_bytes_raw()).decode())
    endpoints = []
    for index, url in enumerate(json.loads(Path(urls_file).read_text())):
        member = services.member_create(
            slug=f"{RECEIVER_PREFIX}{index:03d}", kind=Member.Kind.PLATFORM, status=Member.Status.ACTIVE, actor=actor
        )
        services.enrollment_set(member=member, program=program, state="opted_in", actor=actor)
        endpoint, secret = exchange_services.webhook_create(member=member, url=url, actor=Actor.member(member.slug))
        endpoints.append({"id": endpoint.pk, "url": url, "secret": secret})
    Path(out_file).write_text(json.dumps({"endpoints": endpoints, "server_key": crypto.server_public_key_b64()}))
    print(json.dumps({"events": Event.objects.count(), "key_file": str(key_file)}))


def step_produce(source: str, total: int, batch: int, key_file: str, out_file: str, rate: float) -> None:
    """Make `total` hash entries for the receivers; write their hash ids, seqs and timing.

    With a `rate` (entries/s, submissions only), batches are paced to it, so that a live
    run measures the latency of a steady stream rather than of draining a burst.
    """
    _django()
    from django.core.management import call_command

    from core.ledger import Event
    from hashes import services as hash_services
    from members.models import Member

    before = Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    seen: set[str] = set()
    values = [random_pdq(seen) for _ in range(total)]
    if source == "import":
        path = Path(out_file).with_suffix(".txt")
        path.write_text("".join(f"{value}\n" for value in values))
        started = time.monotonic()
        started_at = time.time()
        # Chunks of 1,000 are 1,000-hash events committed one after another, as a live import.
        call_command(
            "import_hashes",
            str(path),
            program=PROGRAM,
            source="bench",
            signal_type="pdq",
            chunk_size=1000,
            no_progress=True,
            stdout=io.StringIO(),
        )
    else:
        private_key = keys.private_key_from_seed(base64.b64decode(Path(key_file).read_text()))
        envelopes = [
            dsse.sign_envelope(
                payloads.SUBMISSION_TYPE,
                payloads.submission_payload(program=PROGRAM, signal_type="pdq", value=value, labels=["bench"]),
                private_key,
            )
            for value in values
        ]
        member = Member.objects.get(slug=SUBMITTER)
        started = time.monotonic()
        started_at = time.time()
        for start in range(0, total, batch):
            if rate > 0:
                time.sleep(max(0.0, started + start / rate - time.monotonic()))
            results = hash_services.submissions_create(member=member, items=envelopes[start : start + batch])
            if any(r.status != "accepted" for r in results):
                raise BenchError(f"a submission was not accepted: {[r.as_dict() for r in results][:3]}")
    seconds = time.monotonic() - started
    added = Event.objects.filter(seq__gt=before, kind__in=["hash.added", "hashes.imported"])
    hash_ids: list[int] = []
    seqs: list[int] = []
    for seq, kind, data in added.values_list("seq", "kind", "data"):
        seqs.append(seq)
        hash_ids += data["hash_ids"] if kind == "hashes.imported" else [data["hash_id"]]
    if len(hash_ids) != total:
        raise BenchError(f"{len(hash_ids)} hash entries made, expected {total}")
    Path(out_file).write_text(
        json.dumps({"hash_ids": hash_ids, "seqs": seqs, "seconds": round(seconds, 3), "started_at": started_at})
    )


def step_check(expected_file: str) -> None:
    """The database's side: every delivery delivered, every cursor at the last seq."""
    _django()
    from django.db.models import Count, Sum

    from exchange.models import Delivery, DeliveryAttempt, WebhookEndpoint

    expected = json.loads(Path(expected_file).read_text())
    last_seq = max(expected["seqs"])
    problems: list[str] = []
    statuses = dict(Delivery.objects.values_list("status").annotate(n=Count("pk")).order_by("status"))
    if set(statuses) - {"delivered"}:
        problems.append(f"deliveries not delivered: {statuses}")
    behind = WebhookEndpoint.objects.filter(cursor_seq__lt=last_seq).count()
    if behind:
        problems.append(f"{behind} endpoints have a cursor before the last seq {last_seq}")
    inactive = WebhookEndpoint.objects.filter(is_active=False).count()
    if inactive:
        problems.append(f"{inactive} endpoints were disabled")
    attempts = DeliveryAttempt.objects.count()
    failed = DeliveryAttempt.objects.exclude(status_code=200).count()
    if failed:
        problems.append(f"{failed} attempts did not get 200")
    print(
        json.dumps(
            {
                "deliveries": statuses,
                "attempts": attempts,
                "entries_in_deliveries": Delivery.objects.aggregate(n=Sum("event_count"))["n"],
                "problems": problems,
            }
        )
    )


def step_profile(endpoints: int, threads: int, output: str) -> None:
    """Drain `endpoints` endpoints in-process from `threads` threads: time per phase, then cProfile.

    Phases are measured by wrapping the delivery engine's functions; the cProfile part
    runs one thread alone, so its numbers are one drain's, without lock contention.
    """
    _django()
    from concurrent.futures import ThreadPoolExecutor

    from django.conf import settings
    from django.db import connection, connections

    from exchange import delivery as webhook_delivery
    from exchange import feed, net, services

    try:
        from exchange import webhook_pages
    except ImportError:  # a checkout from before the pages had their own module
        webhook_pages = webhook_delivery
    from exchange.models import WebhookEndpoint

    timings: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def timed(owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timings[label] += time.perf_counter() - t0
                calls[label] += 1

        setattr(owner, attribute, wrapper)

    for owner, attribute, label in (
        (webhook_delivery, "deliver_endpoint", "deliver_endpoint (whole drain)"),
        (webhook_delivery, "_next_delivery", "  _next_delivery: latest seq, programs, page, store"),
        (webhook_delivery, "deliver_group", "deliver_group (whole drain)"),
        (webhook_delivery, "_round", "  _round: one POST per endpoint of the group"),
        (webhook_delivery, "_group_state", "    _group_state"),
        (webhook_delivery, "_build", "    _build: rule, pages, bodies, insert"),
        (webhook_delivery, "_store", "      _store (multi-row insert)"),
        (webhook_delivery, "_post_all", "    _post_all"),
        (webhook_delivery, "_record", "    _record: attempts, cursors, marks, commit"),
        (webhook_pages, "webhook_page", "    webhook_page"),
        (webhook_pages, "feed_page", "    feed_page"),
        (feed, "build_entries", "      build_entries"),
        (webhook_pages, "message_body", "    message_body (JSON)"),
        (webhook_delivery, "_attempt", "  _attempt: sign, POST, record"),
        (webhook_delivery, "signed_post", "    signed_post"),
        (services, "signed_post", "    signed_post"),
        (signing, "sign", "      sign (HMAC + Ed25519)"),
        (net, "post", "      net.post (HTTP round trip)"),
    ):
        # Only what the profiled checkout has (--reference runs an older delivery engine).
        if hasattr(owner, attribute):
            timed(owner, attribute, label)
    query_count = {"n": 0}

    def count_queries(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        query_count["n"] += 1
        return execute(sql, params, many, context)

    ids = list(WebhookEndpoint.objects.order_by("pk").values_list("pk", flat=True))[:endpoints]

    def drain(endpoint_id: int) -> int:
        with connection.execute_wrapper(count_queries):
            sent = 0
            while True:
                result = webhook_delivery.deliver_endpoint(endpoint_id)
                sent += result.sent
                if not result.more:
                    break
        connections.close_all()
        return sent

    def drain_group(group: list[int]) -> int:
        with connection.execute_wrapper(count_queries):
            sent = 0
            while group:
                result = webhook_delivery.deliver_group(group)
                sent += result.sent
                group = result.remaining if result.more else []
        return sent

    report = io.StringIO()
    # Timed by CPU, not wall clock: what a drain costs the worker, not what it waits for.
    profiler = cProfile.Profile(time.process_time)
    if hasattr(webhook_delivery, "deliver_group"):
        # Groups (exchange/delivery.py): the first half of the endpoints drained as one group
        # with the POSTs in threads (it fills the worker's caches), then the other half as
        # one group under cProfile, its POSTs sent one after another in this thread so that
        # the profile sees all of the drain's CPU.
        half = len(ids) // 2
        t0, cpu0 = time.perf_counter(), time.process_time()
        sent = drain_group(ids[:half])
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        warm_queries = query_count["n"]
        settings.WEBHOOK_POST_THREADS = 1
        profiler.enable()
        t0, cpu0 = time.perf_counter(), time.process_time()
        profiled_sent = drain_group(ids[half:])
        single, single_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        profiler.disable()
        profiled_queries = query_count["n"] - warm_queries
        report.write(
            f"deliver_group on {connection.vendor}, batch {settings.WEBHOOK_BATCH_SIZE}:\n"
            f"a group of {half} endpoints, POSTs from {webhook_delivery._post_pool()._max_workers} threads: "
            f"{sent} POSTs in {wall:.2f} s ({sent / wall:,.0f} POSTs/s), "
            f"{cpu / max(sent, 1) * 1000:.2f} ms of this process's CPU and "
            f"{warm_queries / max(sent, 1):.2f} queries per POST;\n"
            f"a group of {len(ids) - half} under cProfile, POSTs one after another: {profiled_sent} POSTs in "
            f"{single:.2f} s, {single_cpu / max(profiled_sent, 1) * 1000:.2f} ms of CPU per POST with the "
            f"profiler's overhead ({profiled_queries / max(profiled_sent, 1):.2f} queries per POST)\n\n"
        )
        what = "a group drained after another had filled the caches"
    else:
        # The threaded part first (its first drains fill the worker's entry cache), then one
        # endpoint alone under cProfile, as a drain runs once the entries are built.
        profiled, rest = ids[0], ids[1:]
        t0, cpu0 = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(threads) as pool:
            sent = sum(pool.map(drain, rest))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        threaded_queries = query_count["n"]
        profiler.enable()
        t0, cpu0 = time.perf_counter(), time.process_time()
        first_sent = drain(profiled)
        single, single_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        profiler.disable()
        single_queries = query_count["n"] - threaded_queries
        report.write(
            f"deliver_endpoint on {connection.vendor}, batch {settings.WEBHOOK_BATCH_SIZE}:\n"
            f"{len(rest)} endpoints from {threads} threads: {sent} POSTs in {wall:.2f} s "
            f"({sent / wall:,.0f} POSTs/s), {cpu / max(sent, 1) * 1000:.2f} ms of this process's CPU and "
            f"{threaded_queries / max(sent, 1):.1f} queries per POST;\n"
            f"1 endpoint alone under cProfile: {first_sent} POSTs in {single:.2f} s, "
            f"{single_cpu / max(first_sent, 1) * 1000:.2f} ms of CPU per POST with the profiler's overhead "
            f"({single_queries / max(first_sent, 1):.1f} queries per POST)\n\n"
        )
        what = "one endpoint drained alone after the others"
    report.write("Time per phase, summed over threads (wall time, so it includes waiting for the GIL):\n")
    for label, seconds in timings.items():
        report.write(
            f"{label:55s} {seconds:8.2f} s  {calls[label]:7d} calls  {seconds / calls[label] * 1000:7.2f} ms\n"
        )
    for order in ("cumulative", "tottime"):
        report.write(f"\n--- cProfile (CPU time), {what}, by {order} ---\n")
        stats = pstats.Stats(profiler, stream=report)
        stats.strip_dirs().sort_stats(order).print_stats(45)
    Path(output).write_text(report.getvalue())
    print(report.getvalue())


INTERNAL_STEPS: dict[str, Callable[[list[str]], None]] = {
    "_receivers": lambda argv: serve_receivers(argv[0]),
    "_prepare": lambda argv: step_prepare(argv[0], argv[1]),
    "_produce": lambda argv: step_produce(argv[0], int(argv[1]), int(argv[2]), argv[3], argv[4], float(argv[5])),
    "_check": lambda argv: step_check(argv[0]),
    "_profile": lambda argv: step_profile(int(argv[0]), int(argv[1]), argv[2]),
}


# Command line ---------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=None, help="sqlite, postgres or both (comma-separated); default both")
    parser.add_argument("--postgres-url", default=None, help="a PostgreSQL superuser URL; default: start one")
    parser.add_argument("--postgres-unsafe", action="store_true", help="keep the test settings (fsync=off)")
    parser.add_argument("--endpoints", type=int, default=None, help=f"endpoints (default {DEFAULT_ENDPOINTS})")
    parser.add_argument("--events", type=int, default=None, help=f"hash entries per run (default {DEFAULT_EVENTS:,})")
    parser.add_argument("--source", default="import,submit", help="import, submit or both (default both)")
    parser.add_argument("--mode", default="backlog,live", help="backlog, live or both (default both)")
    parser.add_argument("--processes", default="1", help="worker processes, comma-separated values (default 1)")
    parser.add_argument("--concurrency", default="16", help="threads per worker, comma-separated (default 16)")
    parser.add_argument("--batch-size", default="100", help="WEBHOOK_BATCH_SIZE values, comma-separated")
    parser.add_argument("--submit-batch", type=int, default=100, help="submissions per transaction (default 100)")
    parser.add_argument("--rate", type=float, default=0.0, help="live submissions per second (default: flat out)")
    parser.add_argument("--slow-ms", type=int, default=50, help="answer time of the slow half of receivers")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds a run may take")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ENDPOINTS} endpoints x {QUICK_EVENTS} events")
    parser.add_argument("--profile", action="store_true", help="cProfile deliver_endpoint in-process instead")
    parser.add_argument("--profile-threads", type=int, default=8)
    parser.add_argument(
        "--reference",
        default=None,
        help="another checkout (e.g. `git archive` of an older commit) whose workers run each configuration "
        "too, right after this checkout's, on a copy of the same database: a before/after ratio in one run",
    )
    args = parser.parse_args(argv)
    args.databases = [d.strip() for d in (args.database or ("sqlite" if args.quick else "sqlite,postgres")).split(",")]
    if not set(args.databases) <= {"sqlite", "postgres"}:
        parser.error("--database takes sqlite, postgres or sqlite,postgres")
    args.sources = [s.strip() for s in args.source.split(",")]
    args.modes = [m.strip() for m in args.mode.split(",")]
    if not set(args.sources) <= {"import", "submit"} or not set(args.modes) <= {"backlog", "live"}:
        parser.error("--source takes import and/or submit; --mode takes backlog and/or live")
    args.endpoints = args.endpoints or (QUICK_ENDPOINTS if args.quick else DEFAULT_ENDPOINTS)
    args.events = args.events or (QUICK_EVENTS if args.quick else DEFAULT_EVENTS)
    args.process_counts = _ints(args.processes)
    args.concurrencies = _ints(args.concurrency)
    args.batch_sizes = _ints(args.batch_size)
    return args


def print_table(runs: list[Run]) -> None:
    header = (
        f"{'code':9} {'database':8} {'source':6} {'mode':7} {'procs':>5} {'thr':>4} {'batch':>5} {'seconds':>8} "
        f"{'POSTs/s':>8} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'fast s':>7} {'slow s':>7} {'cpu':>6} "
        f"{'wrk ms/POST':>11} {'rcv ms/POST':>11} {'db ms/POST':>10}  result"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        cpu = run.cpu.get("machine_busy", 0) / max(run.cpu.get("machine_capacity", 1), 1e-9)

        def per_post(part: str, run: Run = run) -> float:
            return run.cpu.get(part, 0.0) * 1000 / run.posts if run.posts else 0.0

        print(
            f"{run.code:9} {run.database:8} {run.source:6} {run.mode:7} {run.processes:>5} {run.concurrency:>4} "
            f"{run.batch_size:>5} {run.seconds:>8.2f} {run.posts_per_second:>8,.0f} {run.events_per_second:>9,.0f} "
            f"{run.latency_ms.get('p50', 0):>8,.0f} {run.latency_ms.get('p99', 0):>8,.0f} "
            f"{run.fast_seconds or 0:>7.1f} {run.slow_seconds or 0:>7.1f} {cpu:>6.0%} "
            f"{run.worker_ms_per_post:>11.2f} {per_post('receivers'):>11.2f} {per_post('database_server'):>10.2f}  "
            f"{'ok' if run.ok else 'WRONG'}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] in INTERNAL_STEPS:
        INTERNAL_STEPS[sys.argv[1]](sys.argv[2:])
        return 0
    args = parse_args(argv)
    print_machine()
    info = machine_info()
    codes: list[tuple[str, Path]] = [("this", ROOT)]
    if args.reference:
        reference = Path(args.reference).resolve()
        if not (reference / "config" / "celery.py").exists() and not (reference / "manage.py").exists():
            raise BenchError(f"--reference {reference} is not a checkout of the project")
        codes.append(("reference", reference))
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hxbench-webhooks-")))
        redis_url = stack.enter_context(private_redis(workdir))
        receivers = Receivers(args.endpoints, args.slow_ms, workdir)
        stack.callback(receivers.close)
        pg = None
        if "postgres" in args.databases:
            pg = stack.enter_context(postgres_server(args.postgres_url, unsafe=args.postgres_unsafe))
            info["postgres"] = pg.settings
            log(f"PostgreSQL settings: {pg.settings}")
        for kind in args.databases:
            dbs = Databases(kind, workdir, pg, redis_url)
            stack.callback(dbs.drop_all)
            template = dbs.prepare(receivers.urls(), receivers)
            if args.profile:
                name = dbs.fresh_copy(template)
                produce(dbs, name, template, source=args.sources[0], events=args.events, args=args, broker_db=15)
                receivers.ask(f"reset {args.events} 0")
                output = RESULTS_DIR / f"webhooks-profile-{kind}-{args.sources[0]}.txt"
                output.parent.mkdir(parents=True, exist_ok=True)
                env = dbs.env(name, batch_size=args.batch_sizes[0], broker_db=IDLE_BROKER_DB)
                run_python(
                    [__file__, "_profile", str(args.endpoints), str(args.profile_threads), str(output)],
                    env,
                    what="profile",
                )
                print(output.read_text())
                log(f"profile written to {output}")
                continue
            for source in args.sources:
                for mode in args.modes:
                    for processes in args.process_counts:
                        for concurrency in args.concurrencies:
                            for batch_size in args.batch_sizes:
                                for code in codes:
                                    log(
                                        f"{kind}: {code[0]} code, {source}/{mode}, {args.endpoints} endpoints x "
                                        f"{args.events:,} entries, {processes} worker(s) x {concurrency} threads, "
                                        f"batch {batch_size}"
                                    )
                                    run = run_one(
                                        dbs,
                                        template,
                                        receivers,
                                        source=source,
                                        mode=mode,
                                        processes=processes,
                                        concurrency=concurrency,
                                        batch_size=batch_size,
                                        args=args,
                                        code=code,
                                    )
                                    verdict = "" if run.ok else f" — WRONG: {run.problems[0]}"
                                    log(
                                        f"{kind}: {run.seconds:.1f} s, {run.posts_per_second:,.0f} POSTs/s, "
                                        f"{run.events_per_second:,.0f} events/s, "
                                        f"{run.worker_ms_per_post:.2f} ms of worker CPU per POST, "
                                        f"p50 {run.latency_ms.get('p50')} ms, "
                                        f"p99 {run.latency_ms.get('p99')} ms{verdict}"
                                    )
                                    runs.append(run)
    if args.profile:
        return 0
    print_machine("at the end: ")
    print_table(runs)
    args_out = {k: v for k, v in vars(args).items()}
    path = write_results("webhooks", {"machine": info, "args": args_out, "runs": [asdict(run) for run in runs]})
    print(f"\nwritten to {path.relative_to(ROOT)}")
    wrong = [run for run in runs if not run.ok]
    for run in wrong:
        print(f"WRONG RESULT ({run.database} {run.source}/{run.mode}): {'; '.join(run.problems[:5])}")
    return 1 if wrong else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(str(exc))
        sys.exit(1)
