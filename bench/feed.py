"""Feed bootstrap: how fast a member reads its whole feed from `after=0` over HTTP.

Why: a member that joins (or lost its state) reads every hash it may see, page by page,
before webhooks are any use to it; the aim is a million entries in under a minute on
two cores. A page's cost is spread over gunicorn, DRF, the feed's queries, building the
entries and encoding the JSON, so this reads through the real API against gunicorn
(--workers, default 2) on a database of its own, one page after another as a client
would, and checks what came back.

Data sets, each in a fresh database (a SQLite file, and/or PostgreSQL on the server given
by --postgres-url or on one started here with dev/services.py) with one program and
one reading platform member opted in to it:

- `import`: --imported hashes (default 1,000,000) imported with `manage.py import_hashes`
  (one `hashes.imported` event per 1,000 hashes; the feed expands each into 1,000
  `hash.added` entries), the fastest honest way to a million feed entries;
- `submit`: --submitted signed submissions (default 200,000) stored with
  `hashes.services.submissions_create` in batches of 1,000 in-process (no HTTP), signed
  by a registered Ed25519 key: one `hash.added` event per hash, each entry carrying its
  DSSE envelope, which is what a log of members' submissions looks like.

Each read starts gunicorn, warms both workers up, then GETs /api/v1/feed?after=N&limit=
--limit (5,000) until has_more is false, timing every page; it checks that the seqs come
out in order and are exactly the visible events' seqs, and that every hash came once.
The queries a page costs are counted in a separate process with Django's test client
(first, middle and last page), since gunicorn cannot report them.

Usage:
    python bench/feed.py                      # 1M imported + 200k submitted, SQLite and PostgreSQL
    python bench/feed.py --quick              # 50,000 imported + 10,000 submitted, SQLite
    python bench/feed.py --database postgres --data import --repeat 3
    python bench/feed.py --profile --data submit   # cProfile feed_page in-process

Results are printed as a table and written as JSON to bench/results/; reference figures:
docs/benchmarks/feed.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import io
import json
import os
import pstats
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import (
    RESULTS_DIR,
    ROOT,
    BenchError,
    Client,
    PostgresServer,
    django_env,
    gunicorn,
    log,
    machine_info,
    percentile,
    postgres_server,
    print_machine,
    private_redis,
    random_pdq,
    run_python,
    write_results,
)
from hashexchange_client import dsse, keys, payloads

PROGRAM = "bench"
READER = "bench-reader"
SUBMITTER = "bench-submitter"
DEFAULT_IMPORTED = 1_000_000
DEFAULT_SUBMITTED = 200_000
QUICK_IMPORTED = 50_000
QUICK_SUBMITTED = 10_000
SUBMIT_BATCH = 1000
AIM_SECONDS_PER_MILLION = 60.0


@dataclass
class Dataset:
    """A database holding one data set, ready to be read."""

    database: str
    data: str
    name: str  # SQLite: a file; PostgreSQL: a database name
    url: str
    token: str
    hashes: int
    build_seconds: float
    events: int


@dataclass
class Read:
    database: str
    data: str
    hashes: int
    limit: int
    workers: int
    pages: int = 0
    entries: int = 0
    seconds: float = 0.0
    entries_per_second: float = 0.0
    seconds_per_million: float = 0.0
    page_ms: dict[str, float] = field(default_factory=dict)
    bytes_total: int = 0
    queries_per_page: dict[str, int] = field(default_factory=dict)
    build_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def make_dataset(
    kind: str, data: str, count: int, *, workdir: Path, pg: PostgresServer | None, redis_url: str
) -> tuple[Dataset, dict[str, str]]:
    """A fresh database with `count` hashes of data set `data`; returns it and its environment."""
    secrets_ = (secrets.token_urlsafe(32), secrets.token_urlsafe(32))
    if kind == "sqlite":
        name = str(workdir / f"feed-{data}.sqlite3")
        url = f"sqlite:///{name}"
    else:
        assert pg is not None
        name = f"hxfeed_{os.getpid()}_{data}"
        url = pg.create_database(name)
    env = django_env(url, redis_url, secrets_)
    # Wake-ups of webhook delivery go to a Redis database nobody reads: no worker runs here.
    env["CELERY_BROKER_URL"] = redis_url.rsplit("/", 1)[0] + "/15"
    started = time.monotonic()
    out = run_python([__file__, "_prepare", data, str(count), str(workdir)], env, what=f"making the {data} data set")
    answer = json.loads(out.strip().splitlines()[-1])
    seconds = time.monotonic() - started
    log(f"{kind}: {data} data set of {count:,} hashes made in {seconds:.1f} s ({answer['how']})")
    return Dataset(kind, data, name, url, answer["token"], count, round(seconds, 1), answer["events"]), env


def drop_dataset(dataset: Dataset, pg: PostgresServer | None) -> None:
    if dataset.database == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(dataset.name + suffix).unlink(missing_ok=True)
    elif pg is not None:
        pg.drop_database(dataset.name)


def read_feed(dataset: Dataset, env: dict[str, str], *, limit: int, workers: int, workdir: Path) -> Read:
    """Read the whole feed from after=0 through gunicorn; time it and check it."""
    run = Read(dataset.database, dataset.data, dataset.hashes, limit, workers, build_seconds=dataset.build_seconds)
    seqs: list[int] = []
    hash_ids: list[int] = []
    latencies: list[float] = []
    with gunicorn(env, workers=workers, logfile=workdir / "gunicorn.log") as (port, _pid):
        clients = [Client(port, dataset.token) for _ in range(workers)]
        for client in clients:  # a page on each worker: imports, connections, first queries
            status, body = client.request("GET", "/api/v1/feed?after=0&limit=10")
            if status != 200:
                raise BenchError(f"warm-up feed read answered {status}: {body[:300]!r}")
        client = clients[0]
        after, pages = 0, 0
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            status, body = client.request("GET", f"/api/v1/feed?after={after}&limit={limit}")
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                raise BenchError(f"feed page after={after} answered {status}: {body[:300]!r}")
            page = json.loads(body)
            run.bytes_total += len(body)
            pages += 1
            for entry in page["entries"]:
                seqs.append(entry["seq"])
                if "hash" in entry:
                    hash_ids.append(entry["hash"]["id"])
            after = page["next"]
            if not page["has_more"]:
                break
        run.seconds = round(time.perf_counter() - started, 3)
        for other in clients:
            other.close()
    run.pages, run.entries = pages, len(seqs)
    run.entries_per_second = round(run.entries / run.seconds, 1)
    run.seconds_per_million = round(run.seconds / run.entries * 1_000_000, 2) if run.entries else 0.0
    run.page_ms = {
        "p50": round(percentile(latencies, 0.5) * 1000, 1),
        "p99": round(percentile(latencies, 0.99) * 1000, 1),
        "max": round(max(latencies) * 1000, 1),
    }
    expected_file = workdir / "expected.json"
    run_python([__file__, "_expected", str(expected_file)], env, what="listing the visible events")
    expected = json.loads(expected_file.read_text())
    if any(b < a for a, b in zip(seqs, seqs[1:], strict=False)):
        run.problems.append("seqs are not in order")
    if sorted(set(seqs)) != expected["seqs"]:
        missing = set(expected["seqs"]) - set(seqs)
        run.problems.append(f"the feed's seqs differ from the visible events: {len(missing)} missing")
    if len(hash_ids) != dataset.hashes or len(set(hash_ids)) != dataset.hashes:
        run.problems.append(f"{len(hash_ids)} hash entries ({len(set(hash_ids))} distinct), expected {dataset.hashes}")
    if run.entries != expected["entries"]:
        run.problems.append(f"{run.entries} entries read, expected {expected['entries']}")
    out = run_python([__file__, "_queries", str(limit), dataset.token], env, what="counting queries")
    run.queries_per_page = json.loads(out.strip().splitlines()[-1])
    return run


# Internal steps: run in a child process with DATABASE_URL set ----------------------------------


def _django() -> None:
    import django

    django.setup()


def step_prepare(data: str, count: int, workdir: str) -> None:
    """Migrate; the program, the reader (API key) and, for `submit`, a signing submitter; then the data."""
    _django()
    from django.core.management import call_command

    from core.ledger import Actor, Event
    from hashes import services as hash_services
    from members import services
    from members.models import Member

    call_command("migrate", verbosity=0, interactive=False)
    actor = Actor.operator("bench")
    program = services.program_create(slug=PROGRAM, name="Benchmark", signal_types_=["pdq"], actor=actor)
    reader = services.member_create(slug=READER, kind=Member.Kind.PLATFORM, status=Member.Status.ACTIVE, actor=actor)
    services.enrollment_set(member=reader, program=program, state="opted_in", actor=actor)
    _credential, token = services.credential_issue(member=reader, name="bench", actor=actor)
    seen: set[str] = set()
    if data == "import":
        path = Path(workdir) / "hashes.txt"
        with path.open("w") as handle:
            for start in range(0, count, 100_000):
                handle.write("".join(f"{random_pdq(seen)}\n" for _ in range(min(100_000, count - start))))
        seen.clear()
        call_command(
            "import_hashes",
            str(path),
            program=PROGRAM,
            source="bench",
            signal_type="pdq",
            no_progress=True,
            stdout=io.StringIO(),
        )
        path.unlink()
        how = "manage.py import_hashes, one hashes.imported event per 1,000 hashes"
    else:
        submitter = services.member_create(
            slug=SUBMITTER, kind=Member.Kind.PLATFORM, status=Member.Status.ACTIVE, actor=actor
        )
        services.enrollment_set(member=submitter, program=program, state="opted_in", actor=actor)
        private_key = keys.generate_private_key()
        services.signing_key_register(
            member=submitter, public_key=base64.b64encode(keys.public_key_bytes(private_key)).decode(), actor=actor
        )
        for start in range(0, count, SUBMIT_BATCH):
            envelopes = [
                dsse.sign_envelope(
                    payloads.SUBMISSION_TYPE,
                    payloads.submission_payload(
                        program=PROGRAM, signal_type="pdq", value=random_pdq(seen), labels=["bench"]
                    ),
                    private_key,
                )
                for _ in range(min(SUBMIT_BATCH, count - start))
            ]
            results = hash_services.submissions_create(member=submitter, items=envelopes)
            if any(r.status != "accepted" for r in results):
                raise BenchError(f"a submission was not accepted: {[r.as_dict() for r in results][:3]}")
        how = f"hashes.services.submissions_create in-process, batches of {SUBMIT_BATCH}, one hash.added per hash"
    print(json.dumps({"token": token, "events": Event.objects.count(), "how": how}))


def step_expected(out_file: str) -> None:
    """The seqs the reader may see and how many entries they expand to (from the database)."""
    _django()
    from exchange.feed import IMPORTED, visible_events
    from members.models import Member
    from members.selectors import receiving_program_slugs

    reader = Member.objects.get(slug=READER)
    seqs, entries = [], 0
    query = visible_events(programs=receiving_program_slugs(member=reader), after=0)
    for seq, kind, data in query.values_list("seq", "kind", "data").iterator(chunk_size=2000):
        seqs.append(seq)
        entries += len(data["hash_ids"]) if kind == IMPORTED else 1
    Path(out_file).write_text(json.dumps({"seqs": seqs, "entries": entries}))


def step_queries(limit: int, token: str) -> None:
    """Queries per page through the whole API stack (auth, throttle, feed, cursor record)."""
    _django()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    from exchange.feed import visible_events
    from members.models import Member
    from members.selectors import receiving_program_slugs

    reader = Member.objects.get(slug=READER)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    counts: dict[str, int] = {}
    seqs = list(visible_events(programs=receiving_program_slugs(member=reader), after=0).values_list("seq", flat=True))
    for name, after in (("first", 0), ("middle", seqs[len(seqs) // 2]), ("last", seqs[max(0, len(seqs) - 2)])):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/api/v1/feed?after={after}&limit={limit}")
        if response.status_code != 200:
            raise BenchError(f"feed answered {response.status_code} in-process")
        counts[name] = len(queries)
    print(json.dumps(counts))


def step_profile(limit: int, pages: int, output: str) -> None:
    """Time feed_page and the JSON rendering in-process, then cProfile one page."""
    _django()
    from rest_framework.renderers import JSONRenderer

    from exchange.feed import feed_page
    from members.models import Member

    reader = Member.objects.get(slug=READER)
    renderer = JSONRenderer()
    after, build, render, entries = 0, 0.0, 0.0, 0
    for _ in range(pages):
        t0 = time.perf_counter()
        page = feed_page(member=reader, after=after, limit=limit)
        t1 = time.perf_counter()
        renderer.render({"entries": page.entries, "next": page.next, "has_more": page.has_more})
        render += time.perf_counter() - t1
        build += t1 - t0
        entries += len(page.entries)
        after = page.next
        if not page.has_more:
            break
    report = io.StringIO()
    report.write(
        f"{entries:,} entries: feed_page {build:.2f} s ({entries / build:,.0f} entries/s), "
        f"JSON rendering {render:.2f} s ({entries / render:,.0f} entries/s)\n"
    )
    profiler = cProfile.Profile()
    profiler.enable()
    page = feed_page(member=reader, after=0, limit=limit)
    renderer.render({"entries": page.entries, "next": page.next, "has_more": page.has_more})
    profiler.disable()
    for order in ("cumulative", "tottime"):
        report.write(f"\n--- cProfile, one page of {len(page.entries)} entries and its rendering, by {order} ---\n")
        pstats.Stats(profiler, stream=report).strip_dirs().sort_stats(order).print_stats(30)
    Path(output).write_text(report.getvalue())
    print(report.getvalue())


INTERNAL_STEPS: dict[str, Callable[[list[str]], None]] = {
    "_prepare": lambda argv: step_prepare(argv[0], int(argv[1]), argv[2]),
    "_expected": lambda argv: step_expected(argv[0]),
    "_queries": lambda argv: step_queries(int(argv[0]), argv[1]),
    "_profile": lambda argv: step_profile(int(argv[0]), int(argv[1]), argv[2]),
}


# Command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=None, help="sqlite, postgres or both (comma-separated); default both")
    parser.add_argument("--postgres-url", default=None, help="a PostgreSQL superuser URL; default: start one")
    parser.add_argument("--postgres-unsafe", action="store_true", help="keep the test settings (fsync=off)")
    parser.add_argument("--data", default="import,submit", help="import, submit or both (default both)")
    parser.add_argument("--imported", type=int, default=None, help=f"imported hashes (default {DEFAULT_IMPORTED:,})")
    parser.add_argument("--submitted", type=int, default=None, help=f"submissions (default {DEFAULT_SUBMITTED:,})")
    parser.add_argument("--limit", type=int, default=5000, help="page size asked for (default 5,000, the maximum)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--repeat", type=int, default=2, help="reads of each data set (default 2)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_IMPORTED:,} imported, {QUICK_SUBMITTED:,} submitted"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile feed_page in-process instead")
    parser.add_argument("--profile-pages", type=int, default=20)
    args = parser.parse_args(argv)
    args.databases = [d.strip() for d in (args.database or ("sqlite" if args.quick else "sqlite,postgres")).split(",")]
    if not set(args.databases) <= {"sqlite", "postgres"}:
        parser.error("--database takes sqlite, postgres or sqlite,postgres")
    args.datas = [d.strip() for d in args.data.split(",")]
    if not set(args.datas) <= {"import", "submit"}:
        parser.error("--data takes import, submit or import,submit")
    args.imported = args.imported or (QUICK_IMPORTED if args.quick else DEFAULT_IMPORTED)
    args.submitted = args.submitted or (QUICK_SUBMITTED if args.quick else DEFAULT_SUBMITTED)
    if args.quick:
        args.repeat = 1
    return args


def print_table(reads: list[Read]) -> None:
    header = (
        f"{'database':8} {'data':6} {'entries':>9} {'pages':>5} {'seconds':>8} {'entries/s':>10} {'s per 1M':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'MB':>6} {'queries':>8}  result"
    )
    print(header)
    print("-" * len(header))
    for read in reads:
        queries = "/".join(str(v) for v in read.queries_per_page.values())
        print(
            f"{read.database:8} {read.data:6} {read.entries:>9,} {read.pages:>5} {read.seconds:>8.2f} "
            f"{read.entries_per_second:>10,.0f} {read.seconds_per_million:>8.1f} {read.page_ms['p50']:>7.0f} "
            f"{read.page_ms['p99']:>7.0f} {read.bytes_total / 1e6:>6.0f} {queries:>8}  {'ok' if read.ok else 'WRONG'}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] in INTERNAL_STEPS:
        INTERNAL_STEPS[sys.argv[1]](sys.argv[2:])
        return 0
    args = parse_args(argv)
    print_machine()
    info = machine_info()
    reads: list[Read] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hxbench-feed-")))
        redis_url = stack.enter_context(private_redis(workdir))
        pg = None
        if "postgres" in args.databases:
            pg = stack.enter_context(postgres_server(args.postgres_url, unsafe=args.postgres_unsafe))
            info["postgres"] = pg.settings
            log(f"PostgreSQL settings: {pg.settings}")
        for kind in args.databases:
            for data in args.datas:
                count = args.imported if data == "import" else args.submitted
                dataset, env = make_dataset(kind, data, count, workdir=workdir, pg=pg, redis_url=redis_url)
                try:
                    if args.profile:
                        output = RESULTS_DIR / f"feed-profile-{kind}-{data}.txt"
                        output.parent.mkdir(parents=True, exist_ok=True)
                        run_python(
                            [__file__, "_profile", str(args.limit), str(args.profile_pages), str(output)],
                            env,
                            what="profile",
                        )
                        print(output.read_text())
                        continue
                    for attempt in range(args.repeat):
                        log(f"{kind}: reading the {data} feed ({count:,} hashes), read {attempt + 1}/{args.repeat}")
                        read = read_feed(dataset, env, limit=args.limit, workers=args.workers, workdir=workdir)
                        verdict = "" if read.ok else f" — WRONG: {read.problems[0]}"
                        log(
                            f"{kind}: {read.entries:,} entries in {read.seconds:.1f} s "
                            f"({read.entries_per_second:,.0f}/s), p50 page {read.page_ms['p50']} ms, "
                            f"p99 {read.page_ms['p99']} ms, queries {read.queries_per_page}{verdict}"
                        )
                        reads.append(read)
                finally:
                    drop_dataset(dataset, pg)
    if args.profile:
        return 0
    print_table(reads)
    path = write_results("feed", {"machine": info, "args": vars(args), "reads": [asdict(read) for read in reads]})
    print(f"\nwritten to {path.relative_to(ROOT)}")
    wrong = [read for read in reads if not read.ok]
    for read in wrong:
        print(f"WRONG RESULT ({read.database}, {read.data}): {'; '.join(read.problems)}")
    slow = [r for r in reads if r.data == "import" and r.seconds_per_million > AIM_SECONDS_PER_MILLION]
    if slow:
        print(f"note: {len(slow)} import read(s) above the aim of {AIM_SECONDS_PER_MILLION:.0f} s per million entries")
    return 1 if wrong else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(str(exc))
        sys.exit(1)
