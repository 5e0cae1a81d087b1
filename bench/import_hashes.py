"""Hashes per second through `manage.py import_hashes`, the operators' bulk import.

Why the command and not the function: an operator runs the command, so its start-up,
the file reading and the progress plumbing are part of what they wait for. The figure
is the wall time of the whole command; the command's own figure (it times itself,
without start-up) is shown next to it.

For each size (--sizes, default 1,000,000 and 10,000,000) a file of random PDQ values
(plain `value` lines, lowercase hex; uniformly random bits, so about half are set, as
in real photos' hashes) is written once to a temporary directory; writing it is not
timed. Then, for each database (a fresh SQLite file, and a fresh PostgreSQL database on
the server given by --postgres-url or on one started here with PostgreSQL's durable
defaults, see bench/submissions.py):

1. `manage.py migrate` and `manage.py program_create bench --signal-types pdq`;
2. timed: `manage.py import_hashes FILE --program bench --source bench --signal-type pdq
   --no-progress`, which must list all N hashes;
3. timed: the same import again, which must list nothing new;
4. checked in a separate process: N hashes and N active listings that point to the first
   import, `hashes.imported` events (at most 1,000 ids each) whose ids are exactly the
   listed hashes, digests that match for a sample of events, a gap-free sequence. A
   wrong result fails the bench (exit code 1).

Usage:
    python bench/import_hashes.py                       # 1M and 10M, SQLite and PostgreSQL
    python bench/import_hashes.py --sizes 1000000 --database postgres
    python bench/import_hashes.py --quick               # 100,000 on SQLite, for CI
    python bench/import_hashes.py --profile --sizes 1000000 --database postgres   # where the time goes

Results are printed as a table and written as JSON to bench/results/. Reference figures:
docs/benchmarks/import.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import functools
import hashlib
import io
import json
import os
import pstats
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    RESULTS_DIR,
    ROOT,
    BenchError,
    CpuMeter,
    PostgresServer,
    django_env,
    log,
    machine_info,
    parse_settings,
    postgres_server,
    print_machine,
    private_redis,
    run_python,
    stop_on_signals,
    write_results,
)

PROGRAM = "bench"
SOURCE = "bench"
DEFAULT_SIZES = (1_000_000, 10_000_000)
QUICK_SIZE = 100_000
GENERATE_CHUNK = 1_000_000
DIGEST_SAMPLE = 200
MANAGE = str(ROOT / "manage.py")
_REPORTED = re.compile(r"read (\d+) hashes \((\d+) invalid\), newly listed (\d+) in \S+ in ([\d.]+) s")


def hash_file(directory: Path, size: int) -> Path:
    """A file of `size` random PDQ values, one per line; reused if it is already there."""
    path = directory / f"pdq-{size}.txt"
    if path.exists() and path.stat().st_size == size * 65:
        return path
    started = time.monotonic()
    with path.open("w") as handle:
        for start in range(0, size, GENERATE_CHUNK):
            count = min(GENERATE_CHUNK, size - start)
            digits = os.urandom(32 * count).hex()
            handle.write("\n".join(digits[i : i + 64] for i in range(0, len(digits), 64)))
            handle.write("\n")
    log(f"wrote {size:,} hashes to {path} in {time.monotonic() - started:.1f} s (not timed)")
    return path


@dataclass
class Import:
    """One timed run of the command."""

    seconds: float
    per_second: float
    command_seconds: float
    lines_read: int
    listed: int
    cores: dict[str, float] = field(default_factory=dict)
    wal: dict[str, int] = field(default_factory=dict)


@dataclass
class Run:
    database: str
    size: int
    references: list[dict[str, Any]] = field(default_factory=list)
    first: Import | None = None
    second: Import | None = None
    database_bytes: int = 0
    verified: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def timed_import(path: Path, db: Database, chunk_size: int | None) -> Import:
    """Run the import command once; its wall time, its own figures, where the cores went and
    (PostgreSQL) how much WAL it wrote."""
    command = [
        sys.executable, MANAGE, "import_hashes", str(path),
        "--program", PROGRAM, "--source", SOURCE, "--signal-type", "pdq", "--no-progress",
    ]  # fmt: skip
    if chunk_size:
        command += ["--chunk-size", str(chunk_size)]
    env, postmaster = db.env, db.postmaster
    wal_before = db.wal_counters()
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The command is reaped by communicate(), so its CPU time is in "children".
        with CpuMeter({"postgres": postmaster}) as meter:
            out, err = proc.communicate()
    except BaseException:
        proc.kill()  # interrupted: do not leave the import writing to a database about to be dropped
        proc.wait()
        raise
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchError(f"import_hashes failed with code {proc.returncode}:\n{out[-2000:]}{err[-2000:]}")
    found = _REPORTED.search(out)
    if not found:
        raise BenchError(f"unexpected import_hashes output: {out!r} {err[-2000:]!r}")
    lines_read, _invalid, listed, command_seconds = found.groups()
    wal_after = db.wal_counters()
    return Import(
        wal={name: wal_after[name] - wal_before[name] for name in wal_after},
        seconds=round(seconds, 2),
        per_second=round(int(lines_read) / seconds),
        command_seconds=float(command_seconds),
        lines_read=int(lines_read),
        listed=int(listed),
        cores=meter.cores,
    )


class Database:
    """A fresh, migrated database with the bench's program; dropped afterwards."""

    def __init__(self, kind: str, workdir: Path, pg: PostgresServer | None, redis_url: str, tag: str) -> None:
        self.kind, self.pg = kind, pg
        self.secrets = ("bench-" + os.urandom(16).hex(), "bench-" + os.urandom(16).hex())
        if kind == "sqlite":
            self.name = str(workdir / f"import-{tag}.sqlite3")
            self.url = f"sqlite:///{self.name}"
        else:
            assert pg is not None
            self.name = f"hxbench_import_{os.getpid()}_{tag}"
            self.url = pg.create_database(self.name)
        self.env = django_env(self.url, redis_url, self.secrets)
        self.postmaster = pg.postmaster_pid() if pg is not None and kind == "postgres" else None

    def prepare(self) -> None:
        run_python([MANAGE, "migrate", "--verbosity", "0"], self.env, what="migrate")
        run_python([MANAGE, "program_create", PROGRAM, "--signal-types", "pdq"], self.env, what="program_create")

    def wal_counters(self) -> dict[str, int]:
        """WAL written and checkpoints so far (PostgreSQL; empty elsewhere).

        Unlike times, these do not depend on what else the machine is doing: full-page
        images (the first change of a page after a checkpoint) are what random inserts
        into a large index cost in WAL.
        """
        if self.pg is None or self.kind != "postgres":
            return {}
        import psycopg

        with psycopg.connect(self.pg.admin_url, autocommit=True) as conn:
            records, fpi, size = conn.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()  # type: ignore[misc]
            try:
                row = conn.execute("SELECT num_timed + num_requested FROM pg_stat_checkpointer").fetchone()
            except psycopg.Error:  # before PostgreSQL 17
                row = conn.execute("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter").fetchone()
        return {"records": int(records), "full_page_images": int(fpi), "bytes": int(size), "checkpoints": int(row[0])}  # type: ignore[index]

    def size_bytes(self) -> int:
        if self.kind == "sqlite":
            return sum(
                Path(self.name + suffix).stat().st_size for suffix in ("", "-wal") if Path(self.name + suffix).exists()
            )
        assert self.pg is not None
        import psycopg

        with psycopg.connect(self.pg.admin_url) as conn:
            return int(conn.execute("SELECT pg_database_size(%s)", [self.name]).fetchone()[0])  # type: ignore[index]

    def drop(self) -> None:
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(self.name + suffix).unlink(missing_ok=True)
        elif self.pg is not None:
            self.pg.drop_database(self.name)


def copy_reference(path: Path, db: Database, *, foreign_keys: bool) -> dict[str, float]:
    """The reference for PostgreSQL: a bare COPY of the same rows into equivalent tables.

    Tables made `LIKE hashes_hash INCLUDING ALL` and `LIKE hashes_listing INCLUDING ALL`
    (same columns, defaults, unique and other indexes; no events, no lock), filled by
    psycopg's COPY from this process reading the same file, in one transaction: the hash
    rows the import would write, then a listing row per hash. With `foreign_keys`, the
    listing table gets the real one's foreign keys too (to the reference hash table, the
    program and an import batch), deferred to the commit as Django declares them: what
    the import's listings cost PostgreSQL at its commits. Timed like the import (wall,
    and the CPU of this process and of PostgreSQL); dropped afterwards.
    """
    import psycopg

    now = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime())
    assert db.pg is not None
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_ref_listing, bench_ref_hash")
        conn.execute("CREATE TABLE bench_ref_hash (LIKE hashes_hash INCLUDING ALL)")
        conn.execute("CREATE TABLE bench_ref_listing (LIKE hashes_listing INCLUDING ALL)")
        program = conn.execute("SELECT id FROM members_program WHERE slug = %s", [PROGRAM]).fetchone()[0]  # type: ignore[index]
        batch = None
        if foreign_keys:
            batch = conn.execute(
                "INSERT INTO hashes_importbatch (program_id, source, file_name, started_at, lines_read, "
                "lines_invalid, hashes_listed) VALUES (%s, 'reference', '', now(), 0, 0, 0) RETURNING id",
                [program],
            ).fetchone()[0]  # type: ignore[index]
            definitions = conn.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'hashes_listing'::regclass "
                "AND contype = 'f'"
            ).fetchall()
            for (definition,) in definitions:
                conn.execute(
                    "ALTER TABLE bench_ref_listing ADD "
                    + definition.replace("REFERENCES hashes_hash(", "REFERENCES bench_ref_hash(")
                )
        wal_before = db.wal_counters()
        cpu0 = time.process_time()
        started = time.perf_counter()
        with CpuMeter({"postgres": db.postmaster}) as meter:
            with conn.transaction(), conn.cursor() as cursor:
                columns = "signal_type, value, status, status_reason, created_at, status_changed_at"
                with cursor.copy(f"COPY bench_ref_hash ({columns}) FROM STDIN") as copy, path.open() as handle:
                    count = 0
                    while True:
                        lines = handle.readlines(1 << 22)
                        if not lines:
                            break
                        count += len(lines)
                        copy.write("".join(f"pdq\t{line[:64]}\tactive\t\t{now}\t{now}\n" for line in lines))
                columns = "hash_id, program_id, status, import_batch_id, created_at, changed_at"
                batch_text = str(batch) if batch is not None else "\\N"
                with cursor.copy(f"COPY bench_ref_listing ({columns}) FROM STDIN") as copy:
                    for start in range(1, count + 1, 500_000):
                        stop = min(count + 1, start + 500_000)
                        copy.write(
                            "".join(f"{i}\t{program}\tactive\t{batch_text}\t{now}\t{now}\n" for i in range(start, stop))
                        )
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        wal_after = db.wal_counters()
        conn.execute("DROP TABLE bench_ref_listing, bench_ref_hash")
        if batch is not None:
            conn.execute("DELETE FROM hashes_importbatch WHERE id = %s", [batch])
        conn.execute("CHECKPOINT")
    return {
        "foreign_keys": foreign_keys,
        "seconds": round(seconds, 2),
        "per_second": round(count / seconds),
        "client_cpu_seconds": round(cpu, 2),
        "postgres_cores": meter.cores.get("postgres", 0.0),
        "other_cores": meter.cores.get("other", 0.0),
        "wal_bytes": wal_after.get("bytes", 0) - wal_before.get("bytes", 0),
    }


def run_one(
    kind: str, size: int, path: Path, workdir: Path, pg: PostgresServer | None, redis_url: str, chunk_size: int | None
) -> Run:
    run = Run(database=kind, size=size)
    db = Database(kind, workdir, pg, redis_url, tag=str(size))
    try:
        db.prepare()
        if kind == "postgres":
            log(f"{kind}: reference, a bare COPY of the same {size:,} rows into equivalent tables")
            for foreign_keys in (False, True):
                run.references.append(copy_reference(path, db, foreign_keys=foreign_keys))
                log(f"{kind}: reference {run.references[-1]}")
        log(f"{kind}: importing {size:,} hashes")
        run.first = timed_import(path, db, chunk_size)
        log(f"{kind}: {run.first.per_second:,} hashes/s ({run.first.seconds:.1f} s), cores {run.first.cores}")
        log(f"{kind}: importing the same file again")
        run.second = timed_import(path, db, chunk_size)
        log(f"{kind}: {run.second.per_second:,} hashes/s ({run.second.seconds:.1f} s), nothing new expected")
        run.database_bytes = db.size_bytes()
        if run.first.lines_read != size or run.first.listed != size:
            run.problems.append(f"first import read {run.first.lines_read} and listed {run.first.listed}, not {size}")
        if run.second.listed != 0:
            run.problems.append(f"the second import listed {run.second.listed} hashes, expected none")
        out = run_python([__file__, "_verify", str(size)], db.env, what="verify")
        run.verified = json.loads(out.strip().splitlines()[-1])
        run.problems += run.verified.pop("problems")
    finally:
        db.drop()
    return run


# Internal steps: run in a child process with DATABASE_URL set ----------------------------------


def _django() -> None:
    import django

    django.setup()


def step_verify(size: int) -> None:
    """Check the database after both imports; print the findings and problems as JSON."""
    _django()
    import numpy as np
    from django.db import connection
    from django.db.models import Count, Max

    from core.ledger import Event
    from hashes.models import Hash, ImportBatch, Listing

    problems: list[str] = []
    batches = list(ImportBatch.objects.order_by("pk"))
    first = batches[0] if batches else None
    counts = {
        "hashes": Hash.objects.count(),
        "listings": Listing.objects.filter(status="active", program__slug=PROGRAM).count(),
        "listed_by_first_import": Listing.objects.filter(import_batch=first).count() if first else 0,
        "imports": len(batches),
        "events": Event.objects.count(),
    }
    for name in ("hashes", "listings", "listed_by_first_import"):
        if counts[name] != size:
            problems.append(f"{counts[name]} {name}, expected {size}")
    if [b.hashes_listed for b in batches] != [size, 0] or any(b.finished_at is None for b in batches):
        problems.append(f"import batches say they listed {[b.hashes_listed for b in batches]}, expected [{size}, 0]")
    kinds = dict(Event.objects.values_list("kind").annotate(n=Count("seq")).order_by("kind"))
    groups = Event.objects.filter(kind="hashes.imported")
    announced: list[Any] = [np.zeros(0, dtype=np.int64)]
    oversized = counted = 0
    for data in groups.values_list("data", flat=True).iterator(chunk_size=500):
        announced.append(np.array(data["hash_ids"], dtype=np.int64))
        oversized += len(data["hash_ids"]) > 1000 or data["count"] != len(data["hash_ids"])
        counted += data["count"]
    if oversized:
        problems.append(f"{oversized} hashes.imported events with more than 1,000 ids or a wrong count")
    ids = np.sort(np.concatenate(announced))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT hash_id FROM {Listing._meta.db_table} WHERE import_batch_id = %s", [first and first.pk])
        listed = np.sort(np.fromiter(_column(cursor), dtype=np.int64))
    if len(ids) != size or counted != size or not np.array_equal(ids, listed):
        problems.append(f"hashes.imported events name {len(ids)} ids (count {counted}); they must be the {size} listed")
    seqs = list(groups.values_list("seq", flat=True))
    sample = list(Event.objects.filter(seq__in=random.sample(seqs, min(DIGEST_SAMPLE, len(seqs)))))
    for event in sample:
        rows = (
            Hash.objects.filter(pk__in=event.data["hash_ids"]).order_by("pk").values_list("pk", "signal_type", "value")
        )
        digest = hashlib.sha256("".join(f"{i}:{t}:{v}\n" for i, t, v in rows).encode()).hexdigest()
        if digest != event.data["digest"]:
            problems.append(f"event {event.seq}: the digest does not match the values of its hashes")
            break
    last = Event.objects.aggregate(last=Max("seq"))["last"] or 0
    if last != counts["events"]:
        problems.append(f"the event sequence has gaps: max seq {last}, {counts['events']} events")
    print(json.dumps({**counts, "event_kinds": kinds, "digests_checked": len(sample), "problems": problems}))


def _column(cursor: Any, size: int = 100_000) -> Iterator[Any]:
    """The first column of a result, without holding every row as a tuple at once."""
    while rows := cursor.fetchmany(size):
        for row in rows:
            yield row[0]


def step_profile(path: str, output: str, cprofile: bool) -> None:
    """Import `path` in-process with each phase timed, then print where the time went."""
    _django()
    from django.db import connection

    from core import ledger
    from core.ledger import Actor
    from hashes import imports
    from members.models import Program

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

    original_chunks = imports._chunks

    def timed_chunks(*args: Any, **kwargs: Any) -> Iterator[Any]:
        chunks = original_chunks(*args, **kwargs)
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)
            timings["read and parse lines (parse_lines)"] += time.perf_counter() - t0
            if chunk is None:
                return
            yield chunk

    imports._chunks = timed_chunks  # type: ignore[assignment]
    timed(imports, "_import_chunk", "write a chunk (one transaction)")
    timed(imports, "_load_temp_table", "  load the chunk (COPY / executemany)")
    timed(imports, "_insert_set_based", "  INSERT ... SELECT hashes and listings")
    timed(ledger, "record_many", "  record hashes.imported events")
    statements: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def time_statement(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            key = " ".join(sql.split())[:90]
            statements[key] += time.perf_counter() - t0
            calls[key] += 1

    program = Program.objects.get(slug=PROGRAM)
    profiler = cProfile.Profile() if cprofile else None
    started = time.perf_counter()
    with open(path) as handle, connection.execute_wrapper(time_statement):
        if profiler:
            profiler.enable()
        report_ = imports.import_hashes(
            lines=handle, program=program, source=SOURCE, actor=Actor.operator("bench"), default_signal_type="pdq"
        )
        if profiler:
            profiler.disable()
    total = time.perf_counter() - started
    lines = report_.batch.lines_read
    report = io.StringIO()
    under = " under cProfile (which slows the Python parts most)" if profiler else ""
    report.write(
        f"import_hashes on {connection.vendor}: {lines:,} lines in {total:.1f} s{under}, "
        f"{lines / total:,.0f} hashes/s\n\n"
    )
    for label, seconds in sorted(timings.items(), key=lambda kv: kv[0].strip()):
        report.write(f"{label:50s} {seconds:8.2f} s  {seconds / total:6.1%}\n")
    report.write("\nSQL statements (Django's cursor; COPY is not among them):\n")
    for key, seconds in statements.most_common(12):
        report.write(f"{seconds:8.2f} s {calls[key]:>6}x  {key}\n")
    if profiler:
        for order in ("cumulative", "tottime"):
            report.write(f"\n--- cProfile by {order} ---\n")
            pstats.Stats(profiler, stream=report).strip_dirs().sort_stats(order).print_stats(30)
    Path(output).write_text(report.getvalue())
    print(report.getvalue())


INTERNAL_STEPS = {
    "_verify": lambda argv: step_verify(int(argv[0])),
    "_profile": lambda argv: step_profile(argv[0], argv[1], argv[2] == "cprofile"),
}


# Command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="hash counts, comma-separated (default 1000000,10000000)")
    parser.add_argument("--database", default=None, help="sqlite, postgres or both (comma-separated); default both")
    parser.add_argument("--postgres-url", default=None, help="a PostgreSQL superuser URL; default: start one")
    parser.add_argument("--postgres-unsafe", action="store_true", help="keep the test settings (fsync=off)")
    parser.add_argument(
        "--postgres-setting", action="append", default=[], metavar="NAME=VALUE", help="e.g. max_wal_size=8GB"
    )
    parser.add_argument("--chunk-size", type=int, default=None, help="passed on to import_hashes")
    parser.add_argument("--files", type=Path, default=None, help="directory for the hash files, kept for reuse")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE:,} hashes, SQLite unless --database")
    parser.add_argument("--profile", action="store_true", help="time the phases and SQL statements in-process instead")
    parser.add_argument("--cprofile", action="store_true", help="with --profile: also run cProfile (slower)")
    args = parser.parse_args(argv)
    default_databases = "sqlite" if args.quick else "sqlite,postgres"
    args.databases = [d.strip() for d in (args.database or default_databases).split(",")]
    if not set(args.databases) <= {"sqlite", "postgres"}:
        parser.error("--database takes sqlite, postgres or sqlite,postgres")
    if args.sizes:
        args.size_list = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    else:
        args.size_list = [QUICK_SIZE] if args.quick else list(DEFAULT_SIZES)
    return args


def print_table(runs: list[Run]) -> None:
    """Wall time of the command (start-up included) and the command's own time; cores as in
    bench/submissions.py ("import" is the command's process, "db" PostgreSQL's, "other"
    the rest of the machine). WAL GB and FPI k (thousands of full-page images) are what
    the import wrote to PostgreSQL's WAL."""
    header = (
        f"{'database':9} {'hashes':>11} {'run':6} {'seconds':>8} {'hashes/s':>9} {'own s':>7} {'listed':>11}"
        f" {'WAL GB':>6} {'FPI k':>6}  cores: {'import':>6} {'db':>4} {'other':>5}  result"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        for label, imp in (("first", run.first), ("again", run.second)):
            if imp is None:
                continue
            print(
                f"{run.database:9} {run.size:>11,} {label:6} {imp.seconds:>8.1f} {imp.per_second:>9,} "
                f"{imp.command_seconds:>7.1f} {imp.listed:>11,} {imp.wal.get('bytes', 0) / 1e9:>6.1f} "
                f"{imp.wal.get('full_page_images', 0) / 1000:>6.0f}         {imp.cores.get('children', 0):>6.2f} "
                f"{imp.cores.get('postgres', 0):>4.2f} {imp.cores.get('other', 0):>5.2f}  "
                f"{'ok' if run.ok else 'WRONG'}"
            )
        for ref in run.references if run.first is not None else []:
            assert run.first is not None
            cores = run.first.cores
            import_cpu = (cores.get("children", 0) + cores.get("postgres", 0)) * run.first.seconds
            ref_cpu = ref["client_cpu_seconds"] + ref["postgres_cores"] * ref["seconds"]
            what = "COPY+FK" if ref["foreign_keys"] else "COPY"
            print(
                f"{run.database:9} {run.size:>11,} {what:7} {ref['seconds']:>7.1f} {ref['per_second']:>9,} "
                f"{'':>7} {'':>11} {ref['wal_bytes'] / 1e9:>6.1f}   reference; import speed / COPY speed = "
                f"{ref['seconds'] / run.first.seconds:.2f}; CPU (client + PostgreSQL) COPY {ref_cpu:.1f} s, "
                f"import {import_cpu:.1f} s: {ref_cpu / import_cpu:.2f}"
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
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hxbench-import-")))
        files = args.files or workdir
        files.mkdir(parents=True, exist_ok=True)
        paths = {size: hash_file(files, size) for size in args.size_list}
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
            for size in args.size_list:
                if args.profile:
                    db = Database(kind, workdir, pg, redis_url, tag=f"profile{size}")
                    try:
                        db.prepare()
                        output = RESULTS_DIR / f"import-profile-{kind}-{size}.txt"
                        output.parent.mkdir(parents=True, exist_ok=True)
                        mode = "cprofile" if args.cprofile else "phases"
                        run_python([__file__, "_profile", str(paths[size]), str(output), mode], db.env, what="profile")
                        print(output.read_text())
                    finally:
                        db.drop()
                    continue
                run = run_one(kind, size, paths[size], workdir, pg, redis_url, args.chunk_size)
                runs.append(run)
                if not run.ok:
                    log(f"{kind}: WRONG RESULT: {'; '.join(run.problems)}")
        if args.files is None:
            for path in paths.values():
                path.unlink(missing_ok=True)
    if args.profile:
        return 0
    print_table(runs)
    path = write_results("import", {"machine": info, "args": vars(args), "runs": [asdict(run) for run in runs]})
    print(f"\nwritten to {path.relative_to(ROOT)}")
    wrong = [run for run in runs if not run.ok]
    for run in wrong:
        print(f"WRONG RESULT ({run.database}, {run.size:,}): {'; '.join(run.problems)}")
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
