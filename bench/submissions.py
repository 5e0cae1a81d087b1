"""Verified submissions per second through the real HTTP API (POST /api/v1/submissions).

Why end to end: a submission's cost is spread over the HTTP server, DRF's JSON parsing,
Ed25519 verification, the ORM and the database, and the ledger lock serialises the
writing part of concurrent batches. Timing `submissions_create` alone would hide half
of that, so this starts gunicorn (config.wsgi) on a database of its own and posts real
signed envelopes to it.

For each database (a fresh SQLite file, and a fresh PostgreSQL database on the server
given by --postgres-url or on one started here with dev/services.py), it migrates,
creates a program, an active platform member, an API key and a registered Ed25519
signing key, and copies that database once per run. Each run then:

1. signs --total envelopes with distinct random PDQ values (about half the bits set,
   as real photos give) and encodes the request bodies, BEFORE the clock starts;
2. starts gunicorn (--workers, default 2) on 127.0.0.1 and warms every worker up;
3. posts the batches, one client thread after another or from 2 threads at once,
   timing the whole run and every request;
4. checks every item came back "accepted" with its own ids, and then, in a separate
   process, that the database holds exactly --total submissions, hashes and active
   listings, one `hash.added` event per hash with the right ids, a gap-free sequence
   and leaf hashes that verify. A wrong result fails the bench (exit code 1).

The client runs on the same 2 cores as gunicorn and the database, as it would on the
reference machine; its work per request is small (the bodies are pre-encoded).

Usage:
    python bench/submissions.py                          # SQLite and PostgreSQL, batches 100 and 1000
    python bench/submissions.py --database postgres --postgres-url postgres://postgres@127.0.0.1:5432/postgres
    python bench/submissions.py --quick                  # 1,000 submissions on SQLite, for CI
    python bench/submissions.py --profile --database postgres   # cProfile submissions_create in-process

The PostgreSQL started here keeps PostgreSQL's durable defaults (fsync, synchronous_commit
and full_page_writes on), not the test settings of dev/services.py; --postgres-unsafe
keeps those instead, for comparison. Results are printed as a table and written as JSON to
bench/results/. Reference figures: docs/benchmarks/submissions.md.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import cProfile
import functools
import io
import json
import os
import pstats
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    RESULTS_DIR,
    ROOT,
    BenchError,
    Client,
    CpuMeter,
    PostgresServer,
    django_env,
    gunicorn,
    log,
    machine_info,
    parse_settings,
    percentile,
    postgres_server,
    print_machine,
    private_redis,
    random_pdq,
    run_python,
    stop_on_signals,
    tail,
    with_database,
    write_results,
)
from hashexchange_client import dsse, keys, payloads

PROGRAM = "bench"
MEMBER = "bench-platform"
DEFAULT_TOTAL = 10_000
QUICK_TOTAL = 1_000
DEFAULT_BATCHES = (100, 1000)
DEFAULT_CLIENTS = (1, 2)


# Databases for the runs -----------------------------------------------------------------------


@dataclass
class Setup:
    """A migrated database with the bench's member, API key and signing key, to copy per run."""

    kind: str
    template: str  # SQLite: a file; PostgreSQL: a database name
    token: str
    private_key: Any
    setup_events: int


class Databases:
    """Makes the template database once, then a fresh copy of it for every run."""

    def __init__(self, kind: str, workdir: Path, pg: PostgresServer | None, redis_url: str) -> None:
        self.kind, self.workdir, self.pg, self.redis_url = kind, workdir, pg, redis_url
        self.secrets = (secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        self.prefix = f"hxbench_{os.getpid()}"
        self.count = 0
        self.created: list[str] = []
        self.postmaster = pg.postmaster_pid() if pg is not None and kind == "postgres" else None

    def url(self, name: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{name}"
        assert self.pg is not None
        return with_database(self.pg.admin_url, name)

    def env(self, name: str) -> dict[str, str]:
        return django_env(self.url(name), self.redis_url, self.secrets)

    def prepare(self) -> Setup:
        """Migrate and create the program, member, API key and signing key (in a child process)."""
        if self.kind == "sqlite":
            template = str(self.workdir / "template.sqlite3")
        else:
            assert self.pg is not None
            template = f"{self.prefix}_template"
            self.pg.create_database(template)
            self.created.append(template)
        private_key = keys.generate_private_key()
        public = base64.b64encode(keys.public_key_bytes(private_key)).decode()
        started = time.monotonic()
        out = run_python([__file__, "_prepare", public], self.env(template), what="preparing the database")
        answer = json.loads(out.strip().splitlines()[-1])
        log(f"{self.kind}: migrated and set up in {time.monotonic() - started:.1f} s")
        return Setup(self.kind, template, answer["token"], private_key, answer["events"])

    def fresh_copy(self, setup: Setup) -> str:
        """A new database with the template's contents; returns its name (file or database)."""
        self.count += 1
        if self.kind == "sqlite":
            name = str(self.workdir / f"run{self.count}.sqlite3")
            # The template's writer has exited, so its WAL is checkpointed; copy any leftover too.
            for suffix in ("", "-wal", "-shm"):
                if Path(setup.template + suffix).exists():
                    shutil.copyfile(setup.template + suffix, name + suffix)
            return name
        assert self.pg is not None
        name = f"{self.prefix}_run{self.count}"
        self.pg.create_database(name, template=setup.template)
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
            with contextlib.suppress(Exception):  # cleanup must not hide the real error
                self.drop(name)


# Envelopes and the HTTP client ----------------------------------------------------------------


def signed_bodies(private_key: Any, total: int, batch: int) -> tuple[list[bytes], list[list[str]]]:
    """Request bodies of `batch` envelopes each, and the values in each, signed now."""
    seen: set[str] = set()
    values = [random_pdq(seen) for _ in range(total)]
    envelopes = [
        dsse.sign_envelope(
            payloads.SUBMISSION_TYPE,
            payloads.submission_payload(
                program=PROGRAM,
                signal_type="pdq",
                value=value,
                labels=["bench"],
                quality=60 + secrets.randbelow(41),
            ),
            private_key,
        )
        for value in values
    ]
    bodies, groups = [], []
    for start in range(0, total, batch):
        bodies.append(json.dumps({"envelopes": envelopes[start : start + batch]}).encode())
        groups.append(values[start : start + batch])
    return bodies, groups


def warm_up(port: int, token: str, workers: int) -> None:
    """Authenticated requests on every worker, so imports, URL resolution and database
    connections are not charged to the first timed batch."""

    def hit() -> None:
        client = Client(port, token)
        for _ in range(5):
            status, body = client.request("GET", "/api/v1/me")
            if status != 200:
                raise BenchError(f"warm-up GET /api/v1/me answered {status}: {body[:300]!r}")
        client.close()

    threads = [threading.Thread(target=hit) for _ in range(workers * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@dataclass
class Run:
    database: str
    batch: int
    clients: int
    workers: int
    total: int
    seconds: float = 0.0
    per_second: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cores: dict[str, float] = field(default_factory=dict)
    load_before: float = 0.0
    verified: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def server_cpu_us(self) -> float:
        """CPU time of server and database per submission: what the aim compares with one
        Ed25519 verification."""
        used = sum(self.cores.get(name, 0.0) for name in ("gunicorn", "postgres"))
        return used * self.seconds / self.total * 1e6 if self.total else 0.0

    @property
    def cpu_us(self) -> float:
        """CPU time of server, database and client per submission: unlike the rate, it hardly
        depends on what else the machine is doing."""
        used = sum(self.cores.get(name, 0.0) for name in ("gunicorn", "postgres", "client"))
        return used * self.seconds / self.total * 1e6 if self.total else 0.0


def post_all(
    port: int, token: str, bodies: list[bytes], clients: int
) -> tuple[float, list[tuple[int, float, int, bytes]]]:
    """Post every body from `clients` threads (each takes the next unsent batch).

    Returns the wall time and, per batch, (index, latency s, HTTP status, body).
    """
    pending = iter(range(len(bodies)))
    lock = threading.Lock()
    answers: list[tuple[int, float, int, bytes]] = []
    failures: list[BaseException] = []

    def worker() -> None:
        client = Client(port, token)
        try:
            while True:
                with lock:
                    index = next(pending, None)
                if index is None:
                    return
                t0 = time.perf_counter()
                status, body = client.request("POST", "/api/v1/submissions", bodies[index])
                answers.append((index, time.perf_counter() - t0, status, body))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise BenchError(f"a client thread failed: {failures[0]!r}")
    return seconds, sorted(answers)


def check_answers(answers: list[tuple[int, float, int, bytes]], groups: list[list[str]]) -> tuple[list[str], dict]:
    """Every batch answered 200 and every item 'accepted' with ids of its own."""
    problems: list[str] = []
    hash_ids: set[int] = set()
    submission_ids: set[int] = set()
    accepted = 0
    failed = [(index, status, body) for index, _latency, status, body in answers if status != 200]
    if failed:
        index, status, body = failed[0]
        problems.append(
            f"{len(failed)} of {len(answers)} batches failed, the first (#{index}) with HTTP {status}: {body[:300]!r}"
        )
    for index, _latency, status, body in answers:
        if status != 200:
            continue
        data = json.loads(body)
        results = data.get("results", [])
        if len(results) != len(groups[index]):
            problems.append(f"batch {index}: {len(results)} results for {len(groups[index])} envelopes")
        for item in results:
            if item["status"] != "accepted" or item["error"] is not None:
                if len(problems) < 20:
                    problems.append(f"batch {index} item {item['index']}: {item['status']} {item['error']}")
                continue
            accepted += 1
            hash_ids.add(item["hash_id"])
            submission_ids.add(item["submission_id"])
    expected = sum(len(group) for group in groups)
    if accepted != expected:
        problems.append(f"{accepted} of {expected} envelopes accepted")
    if len(hash_ids) != expected or len(submission_ids) != expected:
        problems.append(f"ids are not distinct: {len(hash_ids)} hash ids, {len(submission_ids)} submission ids")
    return problems, {"hash_ids": sorted(hash_ids), "submission_ids": sorted(submission_ids)}


def run_one(
    dbs: Databases,
    setup: Setup,
    *,
    batch: int,
    clients: int,
    workers: int,
    total: int,
    app: str = "config.wsgi:application",
    after: Any = None,
) -> Run:
    """One timed run on a fresh copy of the template. `app` and `after` (called with the
    run's environment before the copy is dropped) are for benches that compare variants."""
    run = Run(database=dbs.kind, batch=batch, clients=clients, workers=workers, total=total)
    name = dbs.fresh_copy(setup)
    try:
        bodies, groups = signed_bodies(setup.private_key, total, batch)
        env = dbs.env(name)
        with gunicorn(env, workers=workers, logfile=dbs.workdir / "gunicorn.log", app=app) as (port, pid):
            warm_up(port, setup.token, workers)
            run.load_before = os.getloadavg()[0]
            with CpuMeter({"gunicorn": pid, "postgres": dbs.postmaster}) as meter:
                run.seconds, answers = post_all(port, setup.token, bodies, clients)
            run.cores = meter.cores
        run.per_second = total / run.seconds
        run.latency_ms = [round(latency * 1000, 2) for _, latency, _, _ in answers]
        run.p50_ms = percentile(run.latency_ms, 0.50)
        run.p99_ms = percentile(run.latency_ms, 0.99)
        run.problems, ids = check_answers(answers, groups)
        if run.problems:
            run.problems.append(f"end of the gunicorn log:\n{tail(dbs.workdir / 'gunicorn.log', 15)}")
        ids_file = dbs.workdir / "ids.json"
        ids_file.write_text(json.dumps(ids))
        out = run_python([__file__, "_verify", str(total), str(setup.setup_events), str(ids_file)], env, what="verify")
        run.verified = json.loads(out.strip().splitlines()[-1])
        run.problems += run.verified.pop("problems")
        if after is not None:
            after(run, env)
    finally:
        dbs.drop(name)
    return run


# Internal steps: run in a child process with DATABASE_URL set ----------------------------------


def _django() -> None:
    import django

    django.setup()


def step_prepare(public_key: str) -> None:
    """Migrate, then create the program, member, enrollment, API key and signing key."""
    _django()
    from django.core.management import call_command

    from core.ledger import Actor, Event
    from members import services
    from members.models import Member

    call_command("migrate", verbosity=0, interactive=False)
    actor = Actor.operator("bench")
    program = services.program_create(slug=PROGRAM, name="Benchmark", signal_types_=["pdq"], actor=actor)
    member = services.member_create(slug=MEMBER, kind=Member.Kind.PLATFORM, status=Member.Status.ACTIVE, actor=actor)
    services.enrollment_set(member=member, program=program, state="opted_in", actor=actor)
    _credential, token = services.credential_issue(member=member, name="bench", actor=actor)
    services.signing_key_register(member=member, public_key=public_key, label="bench", actor=actor)
    print(json.dumps({"token": token, "events": Event.objects.count()}))


def step_verify(total: int, setup_events: int, ids_file: str) -> None:
    """Check the database after a run; print what was found and what is wrong (JSON)."""
    _django()
    from django.db.models import Count, Max

    from core import ledger
    from core.ledger import Event
    from hashes.models import Hash, Listing, Submission

    ids = json.loads(Path(ids_file).read_text())
    problems: list[str] = []
    counts = {
        "submissions": Submission.objects.filter(status="active", submitter__slug=MEMBER).count(),
        "hashes": Hash.objects.filter(status="active").count(),
        "listings": Listing.objects.filter(status="active", program__slug=PROGRAM).count(),
        "events": Event.objects.count(),
    }
    for name in ("submissions", "hashes", "listings"):
        if counts[name] != total:
            problems.append(f"{counts[name]} {name} in the database, expected {total}")
    kinds = dict(
        Event.objects.filter(seq__gt=setup_events).values_list("kind").annotate(n=Count("seq")).order_by("kind")
    )
    if kinds != {"hash.added": total}:
        problems.append(f"events recorded by the run: {kinds}, expected {{'hash.added': {total}}}")
    added = Event.objects.filter(kind="hash.added")
    announced_hashes = sorted(int(e["data"]["hash_id"]) for e in added.values("data"))
    announced_submissions = sorted(int(e["data"]["submission_id"]) for e in added.values("data"))
    if announced_hashes != ids["hash_ids"] or announced_submissions != ids["submission_ids"]:
        problems.append("hash.added events do not name exactly the hashes and submissions the API returned")
    if set(Submission.objects.values_list("id", flat=True)) != set(ids["submission_ids"]):
        problems.append("the stored submissions are not the ones the API returned")
    if added.exclude(actor_type="member", actor_id=MEMBER, program=PROGRAM).exists():
        problems.append("hash.added events with the wrong actor or program")
    last = Event.objects.aggregate(last=Max("seq"))["last"] or 0
    if last != counts["events"]:
        problems.append(f"the event sequence has gaps: max seq {last}, {counts['events']} events")
    bad = ledger.verify_chain()
    if bad:
        problems.append(f"{len(bad)} events whose leaf hash does not verify, e.g. seq {bad[:5]}")
    print(json.dumps({**counts, "run_events": kinds, "problems": problems}))


def step_profile(batch: int, rounds: int, output: str) -> None:
    """Time the phases of submissions_create in-process, then cProfile one batch."""
    _django()
    from django.db import connection

    from core import ledger
    from core.ledger import Actor
    from hashes import envelopes
    from hashes import services as hash_services
    from hashes.services import store, submissions
    from members import services
    from members.models import Member

    member = Member.objects.get(slug=MEMBER)
    private_key = keys.generate_private_key()
    services.signing_key_register(
        member=member,
        public_key=base64.b64encode(keys.public_key_bytes(private_key)).decode(),
        actor=Actor.operator("bench"),
    )

    def envelopes_for(n: int) -> list[dict[str, Any]]:
        bodies, _ = signed_bodies(private_key, n, n)
        return json.loads(bodies[0])["envelopes"]  # as the API view gets them: parsed JSON

    timings: collections.Counter[str] = collections.Counter()

    def timed(owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timings[label] += time.perf_counter() - t0

        setattr(owner, attribute, wrapper)

    hash_services.submissions_create(member=member, items=envelopes_for(batch))  # warm-up
    timed(envelopes, "verify", "  Ed25519 verification (envelopes.verify)")
    timed(submissions, "_check_submission", "checks: signature, payload, time, program")
    timed(submissions, "_drop_repeats", "repeats: stored digests and nonces (2 queries)")
    timed(submissions, "submissions_store", "store: transaction under the ledger lock")
    timed(ledger, "record_many", "  ledger.record_many")
    timed(store, "hashes_for", "  hashes: look up, create missing")
    timed(store, "insert_rows", "  multi-row INSERTs")
    total = cpu = 0.0
    for _ in range(rounds):
        items = envelopes_for(batch)
        t0, c0 = time.perf_counter(), time.process_time()
        results = hash_services.submissions_create(member=member, items=items)
        total += time.perf_counter() - t0
        cpu += time.process_time() - c0
        if any(r.status != "accepted" for r in results):
            raise BenchError("profile batch not accepted")
    report = io.StringIO()
    per = total / rounds
    report.write(
        f"submissions_create on {connection.vendor}, batch {batch}, mean of {rounds}: {per * 1000:.1f} ms "
        f"({batch / per:,.0f} submissions/s in one process); CPU time of this process "
        f"{cpu / rounds * 1000:.1f} ms (the database server's is not in it)\n\n"
    )
    for label, seconds in sorted(timings.items(), key=lambda kv: kv[0].strip()):
        report.write(f"{label:55s} {seconds / rounds * 1000:8.1f} ms  {seconds / total:6.1%}\n")
    items = envelopes_for(batch)
    profiler = cProfile.Profile()
    profiler.enable()
    hash_services.submissions_create(member=member, items=items)
    profiler.disable()
    for order in ("cumulative", "tottime"):
        report.write(f"\n--- cProfile, one batch, by {order} ---\n")
        stats = pstats.Stats(profiler, stream=report)
        stats.strip_dirs().sort_stats(order).print_stats(30)
    Path(output).write_text(report.getvalue())
    print(report.getvalue())


INTERNAL_STEPS = {
    "_prepare": lambda argv: step_prepare(argv[0]),
    "_verify": lambda argv: step_verify(int(argv[0]), int(argv[1]), argv[2]),
    "_profile": lambda argv: step_profile(int(argv[0]), int(argv[1]), argv[2]),
}


# Command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=None, help="sqlite, postgres or both (comma-separated); default both")
    parser.add_argument("--postgres-url", default=None, help="a PostgreSQL superuser URL; default: start one")
    parser.add_argument("--postgres-unsafe", action="store_true", help="keep the test settings (fsync=off)")
    parser.add_argument(
        "--postgres-setting", action="append", default=[], metavar="NAME=VALUE", help="e.g. shared_buffers=2GB"
    )
    parser.add_argument("--total", type=int, default=None, help=f"submissions per run (default {DEFAULT_TOTAL:,})")
    parser.add_argument("--batch", default=None, help="batch sizes, comma-separated (default 100,1000)")
    parser.add_argument("--clients", default=None, help="client threads, comma-separated (default 1,2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TOTAL:,} submissions, SQLite unless --database")
    parser.add_argument("--profile", action="store_true", help="cProfile submissions_create in-process instead")
    parser.add_argument("--profile-rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each setting (the table adds best and median)")
    args = parser.parse_args(argv)
    args.databases = [d.strip() for d in (args.database or ("sqlite" if args.quick else "sqlite,postgres")).split(",")]
    if not set(args.databases) <= {"sqlite", "postgres"}:
        parser.error("--database takes sqlite, postgres or sqlite,postgres")
    args.total = args.total or (QUICK_TOTAL if args.quick else DEFAULT_TOTAL)
    args.batches = [int(b) for b in args.batch.split(",")] if args.batch else list(DEFAULT_BATCHES)
    args.clients_list = [int(c) for c in args.clients.split(",")] if args.clients else list(DEFAULT_CLIENTS)
    if args.quick and not args.batch:
        args.batches = [100]
    return args


def ed25519_verify_us(rounds: int = 5, per_round: int = 2000) -> float:
    """The reference: CPU µs of one Ed25519 verification (cryptography, the library the
    server verifies with) of a 300-byte message, median of `rounds` rounds, in this process."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    message = os.urandom(300)
    signature, public = key.sign(message), key.public_key()
    figures = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(per_round):
            public.verify(signature, message)
        figures.append((time.process_time() - started) / per_round * 1e6)
    return statistics.median(figures)


def print_table(runs: list[Run], verify_us: float = 0.0) -> None:
    """One line per run, then the best and median of repeated runs of each setting.

    Cores are CPU seconds per second during the timed part: gunicorn (master and
    workers), PostgreSQL (all its processes), the client, and everything else on the
    machine; "other" well above zero means another workload disturbed the run. CPU µs
    is the CPU time of gunicorn, PostgreSQL and the client per submission.
    """
    header = (
        f"{'database':9} {'batch':>5} {'clients':>7} {'subs/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs':>6}"
        f"  cores: {'app':>4} {'db':>4} {'client':>6} {'other':>5}  result"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        cores = run.cores
        print(
            f"{run.database:9} {run.batch:>5} {run.clients:>7} {run.per_second:>7,.0f} {run.p50_ms:>7.1f} "
            f"{run.p99_ms:>7.1f} {run.cpu_us:>6.0f}         {cores.get('gunicorn', 0):>4.2f} "
            f"{cores.get('postgres', 0):>4.2f} {cores.get('client', 0):>6.2f} {cores.get('other', 0):>5.2f}  "
            f"{'ok' if run.ok else 'WRONG'}"
        )
    if verify_us:
        print(f"\nreference: one Ed25519 verification {verify_us:.1f} µs of CPU (same run, before and after)")
        for run in runs:
            print(
                f"{run.database:9} {run.batch:>5} {run.clients:>7}  server + database CPU per submission "
                f"{run.server_cpu_us:>6.0f} µs = {run.server_cpu_us / verify_us:.2f} x one Ed25519 verification"
            )
    settings: dict[tuple[str, int, int], list[Run]] = {}
    for run in runs:
        settings.setdefault((run.database, run.batch, run.clients), []).append(run)
    if any(len(group) > 1 for group in settings.values()):
        print(f"\n{'database':9} {'batch':>5} {'clients':>7} {'runs':>4} {'best/s':>7} {'median/s':>8} {'CPU µs':>6}")
        for (database, batch, clients), group in settings.items():
            good = [run for run in group if run.ok]
            rates = [run.per_second for run in good] or [0.0]
            cpu = statistics.median([run.cpu_us for run in good]) if good else 0.0
            print(
                f"{database:9} {batch:>5} {clients:>7} {len(group):>4} {max(rates):>7,.0f} "
                f"{statistics.median(rates):>8,.0f} {cpu:>6.0f}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] in INTERNAL_STEPS:
        INTERNAL_STEPS[sys.argv[1]](sys.argv[2:])
        return 0
    args = parse_args(argv)
    print_machine()
    stop_on_signals()
    info = machine_info()
    runs: list[Run] = []
    verify_before = ed25519_verify_us()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hxbench-submissions-")))
        redis_url = stack.enter_context(private_redis(workdir))
        pg = None
        if "postgres" in args.databases:
            pg = stack.enter_context(
                postgres_server(
                    args.postgres_url, unsafe=args.postgres_unsafe, settings=parse_settings(args.postgres_setting)
                )
            )
            info["postgres"] = pg.settings
            log(f"PostgreSQL settings: {pg.settings}")
        for kind in args.databases:
            dbs = Databases(kind, workdir, pg, redis_url)
            stack.callback(dbs.drop_all)
            setup = dbs.prepare()
            if args.profile:
                name = dbs.fresh_copy(setup)
                output = RESULTS_DIR / f"submissions-profile-{kind}.txt"
                RESULTS_DIR.mkdir(parents=True, exist_ok=True)
                run_python(
                    [__file__, "_profile", str(args.batches[-1]), str(args.profile_rounds), str(output)],
                    dbs.env(name),
                    what="profile",
                )
                print(output.read_text())
                log(f"profile written to {output}")
                continue
            for _ in range(args.repeat):
                for batch in args.batches:
                    for clients in args.clients_list:
                        log(f"{kind}: {args.total:,} submissions in batches of {batch} from {clients} client(s)")
                        run = run_one(dbs, setup, batch=batch, clients=clients, workers=args.workers, total=args.total)
                        verdict = "" if run.ok else f" — WRONG: {run.problems[0]}"
                        log(f"{kind}: {run.per_second:,.0f} submissions/s, cores {run.cores}{verdict}")
                        runs.append(run)
    if args.profile:
        return 0
    verify_us = statistics.median([verify_before, ed25519_verify_us()])
    print_table(runs, verify_us)
    path = write_results(
        "submissions",
        {
            "machine": info,
            "args": vars(args),
            "ed25519_verify_us": round(verify_us, 2),
            "runs": [
                {**asdict(run), "cpu_us": round(run.cpu_us, 1), "server_cpu_us": round(run.server_cpu_us, 1)}
                for run in runs
            ],
        },
    )
    print(f"\nwritten to {path.relative_to(ROOT)}")
    wrong = [run for run in runs if not run.ok]
    for run in wrong:
        print(f"WRONG RESULT ({run.database}, batch {run.batch}, {run.clients} clients):")
        for problem in run.problems[:10]:
            print(f"  {problem}")
    return 1 if wrong else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(str(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted; servers stopped and databases dropped")
        sys.exit(130)
