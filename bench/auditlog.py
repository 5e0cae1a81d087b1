"""What the audit log's tree costs: verified submissions per second with and without it,
and the tree's own figures, measured in one run on one machine.

The tree grows inside `record_many()`, in the transaction of the events (core/tlog.py).
Its price is paid by every write; the aim in the issue is under 5 % of verified
submission throughput. This bench measures it end to end, as bench/submissions.py does
(gunicorn on a fresh copy of a prepared database, real signed envelopes posted through
`POST /api/v1/submissions`, every result checked), serving the same code two ways:

- `tree`: config.wsgi, as deployed, with `core.tlog.extend` timed (bench/timedtree_wsgi.py:
  CPU and wall time of every call, added up per run);
- `no tree`: bench/notree_wsgi.py, config.wsgi with `core.tlog.extend` replaced by a
  no-op: the reference (the log it writes has no tree; it is dropped after the run).

Runs alternate between the two (tree first in even rounds, no tree first in odd ones)
so that a machine growing busier does not favour one; the table gives each one's median
submissions/s and CPU µs per submission, and their ratio. On a machine others are using,
that ratio is within the noise of a few per cent, so the tree runs also time the tree
itself: its CPU per submission as a share of all the CPU the same run spent per
submission (server, database, client), a ratio that load disturbs much less. After every `tree` run the
database's tree is checked against its events (core.tlog_check.check); after every `no tree`
run, that it really has none.

Then, in-process on a fresh copy (`_tree` step): the cost of `tlog.extend` itself per
event for batches of 1, 100 and 1,000 events, as a share of `record_many`; and, once the
log holds --events events, the time and queries of a checkpoint, an inclusion proof, a
consistency proof and a full `auditlog_check`.

With --large SIZES, instead: proofs and audits of large logs. Each log is grown to each
size in turn by bulk insert (events shaped like `hash.added`, their tree hashes, a signed
checkpoint: what the ledger would have written, checked against a compact range over the
leaves), never through the API. At each size: the references (one SHA-256 of a leaf, a
bare SELECT of one tree hash, a SELECT of one tile of leaf hashes) and, in process, the
time, SQL time and queries of the proof services with a profile; then, through the API
(gunicorn, one sync worker, one client, requests interleaved), a bare Django view (the
framework's floor, bench/floor_wsgi.py, the reference), the latest checkpoint, inclusion
and consistency proofs, all from the same server; up to --audit-max events, a timed
`hashexchange log audit` of the whole log. --keep DIR keeps the logs for the next run
(a 10-million-event log takes half an hour to build on a busy 2-core machine).

Usage:
    python bench/auditlog.py                         # SQLite and PostgreSQL, 10,000 submissions, 3 rounds
    python bench/auditlog.py --database postgres --rounds 5
    python bench/auditlog.py --quick                 # SQLite, 1,000 submissions, 1 round (CI)
    python bench/auditlog.py --large 1000000,10000000 --keep /var/tmp/hxlogs --postgres-url postgres://...

Figures: docs/benchmarks/auditlog.md. Results: bench/results/auditlog-*.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness import (
    ROOT,
    BenchError,
    Client,
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
from submissions import Databases, Run, run_one

VARIANTS = {"tree": "timedtree_wsgi:application", "no tree": "notree_wsgi:application"}
DEFAULT_TOTAL, QUICK_TOTAL = 10_000, 1_000
DEFAULT_EVENTS, QUICK_EVENTS = 100_000, 10_000


def _check_tree(variant: str, stats_dir: Path) -> Any:
    def after(run: Run, env: dict[str, str]) -> None:
        out = run_python([__file__, "_check"], env, what="tree check")
        found = json.loads(out.strip().splitlines()[-1])
        run.verified["tree"] = found
        if variant == "tree":
            totals = [json.loads(path.read_text()) for path in stats_dir.glob("*.json")]
            cpu = sum(t["cpu_s"] for t in totals)
            wall = sum(t["wall_s"] for t in totals)
            leaves_cpu = sum(t.get("leaves_cpu_s", 0.0) for t in totals)
            run.verified["extend"] = {
                "calls": sum(t["calls"] for t in totals),
                "events": sum(t["events"] for t in totals),
                "cpu_us_per_submission": round(cpu / run.total * 1e6, 2),
                # of all the CPU the run used (gunicorn, database, client) per submission
                "cpu_share": round(cpu / run.total * 1e6 / run.cpu_us, 4) if run.cpu_us else 0.0,
                # of the time requests were in flight
                "wall_share": round(wall / (sum(run.latency_ms) / 1000), 4) if run.latency_ms else 0.0,
                # the stored leaves (core.ledger._store_leaves), timed the same way
                "leaves_cpu_us_per_submission": round(leaves_cpu / run.total * 1e6, 2),
                "leaves_cpu_share": round(leaves_cpu / run.total * 1e6 / run.cpu_us, 4) if run.cpu_us else 0.0,
            }
            if run.verified["extend"]["events"] != run.total:
                run.problems.append(f"the timed tree saw {run.verified['extend']['events']} events, not {run.total}")
        if variant == "tree" and not (found["ok"] and found["stored"] == found["size"] // 256):
            run.problems.append(f"the tree does not match the events: {found}")
        if variant == "tree" and found["leaves"] < run.total:
            run.problems.append(f"the run's events have no stored leaves: {found}")
        if variant == "no tree" and found["stored"] != 0:
            run.problems.append(f"the reference run stored tree hashes: {found}")

    return after


# Internal steps: run in a child process with DATABASE_URL set ----------------------------------


def step_check() -> None:
    import django

    django.setup()
    from core import tlog_check
    from core.ledger import EventLeaf
    from core.tlog import TreeHash

    result = tlog_check.check()
    leaves = EventLeaf.objects.count()
    wrong = tlog_check.check_leaves()
    print(
        json.dumps(
            {"ok": result.ok and not wrong, "size": result.size, "stored": TreeHash.objects.count(), "leaves": leaves}
        )
    )


def step_tree(events: int) -> None:
    """The tree's own costs, in-process: extend per event, checkpoint, proofs, check."""
    import django

    django.setup()
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from core import ledger, tlog, tlog_check
    from core.ledger import Actor, NewEvent
    from exchange import auditlog

    actor = Actor.system("bench")
    spent = {"extend": 0.0, "leaves": 0.0}
    original = tlog.extend
    original_leaves = ledger._store_leaves

    def timed_leaves(leaves: Any) -> None:
        started = time.perf_counter()
        try:
            original_leaves(leaves)
        finally:
            spent["leaves"] += time.perf_counter() - started

    ledger._store_leaves = timed_leaves

    def timed(rows: Any) -> int:
        started = time.perf_counter()
        try:
            return original(rows)
        finally:
            spent["extend"] += time.perf_counter() - started

    tlog.extend = timed
    n = ledger.Event.objects.count()

    def record(count: int, batch: int) -> float:
        nonlocal n
        started = time.perf_counter()
        for _ in range(0, count, batch):
            with transaction.atomic():
                ledger.record_many(
                    [NewEvent("bench.event", "bench", str(n + i), data={"i": n + i}) for i in range(batch)],
                    actor=actor,
                )
            n += batch
        return time.perf_counter() - started

    per_batch = {}
    for batch, count in ((1, 2048), (100, 10_240), (1000, 20_480)):
        spent["extend"] = spent["leaves"] = 0.0
        seconds = record(count, batch)
        per_batch[str(batch)] = {
            "events": count,
            "record_us_per_event": round(seconds / count * 1e6, 1),
            "extend_us_per_event": round(spent["extend"] / count * 1e6, 2),
            "extend_share_of_record": round(spent["extend"] / seconds, 4),
            "leaves_us_per_event": round(spent["leaves"] / count * 1e6, 2),
            "leaves_share_of_record": round(spent["leaves"] / seconds, 4),
        }
        log(f"tree: batches of {batch}: {per_batch[str(batch)]}")
    remaining = max(0, events - n)
    record(remaining - remaining % 1000, 1000)
    record(remaining % 1000, 1)
    size = tlog.tree_size()

    def measure(what: str, call: Any, repeat: int = 20) -> dict[str, float]:
        times, queries = [], []
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                call()
                times.append(time.perf_counter() - started)
            queries.append(len(captured))
        figures = {"ms_median": round(statistics.median(times) * 1000, 3), "queries_max": max(queries)}
        log(f"tree at {size:,} events: {what}: {figures}")
        return figures

    first = auditlog.checkpoint_create()
    record(777, 1)
    started = time.perf_counter()
    second = auditlog.checkpoint_create()
    checkpoint_ms = (time.perf_counter() - started) * 1000
    assert first is not None and second is not None
    size = second.size
    import random

    rng = random.Random(7)
    figures = {
        "events": size,
        "tree_hashes": tlog.TreeHash.objects.count(),
        "extend_by_batch": per_batch,
        "checkpoint_ms": round(checkpoint_ms, 2),
        "root": measure("root", lambda: tlog.root(size)),
        "inclusion_proof": measure("inclusion proof", lambda: tlog.inclusion_proof(rng.randrange(size), size)),
        "consistency_proof": measure("consistency proof", lambda: tlog.consistency_proof(rng.randrange(1, size), size)),
    }
    started = time.perf_counter()
    result = tlog_check.check()
    figures["check_s"] = round(time.perf_counter() - started, 2)
    if not result.ok:
        raise BenchError(f"the tree does not match the events after the in-process step: {result}")
    print(json.dumps(figures))


# Large logs (--large): proofs through the API and `log audit`, on logs built in bulk ------------

LARGE_CHUNK = 100_000
AUDITOR = "bench-auditor"


def step_large_prepare() -> None:
    """Migrate, then create the program and an auditor's API key (the `reports` scope)."""
    import django

    django.setup()
    from django.core.management import call_command

    from core.ledger import Actor
    from exchange import auditlog
    from members import services
    from members.models import Member, Scope

    call_command("migrate", verbosity=0, interactive=False)
    actor = Actor.operator("bench")
    services.program_create(slug="bench", name="Benchmark", signal_types_=["pdq"], actor=actor)
    member = services.member_create(slug=AUDITOR, kind=Member.Kind.AUDITOR, status=Member.Status.ACTIVE, actor=actor)
    _credential, token = services.credential_issue(member=member, name="bench", scopes=[Scope.REPORTS], actor=actor)
    print(json.dumps({"token": token, "log_vkey": auditlog.verifier().vkey()}))


def _bulk_leaf(seq: int, at: str) -> tuple[bytes, dict[str, Any]]:
    """The leaf data of a bulk event shaped like `hash.added` (about 330 bytes, as real ones)."""
    import hashlib

    value = hashlib.sha256(seq.to_bytes(8, "big")).hexdigest()
    data = {"hash_id": seq, "signal_type": "pdq", "submission_id": seq, "submitter": "bench-platform", "value": value}
    leaf = (
        '{"actor":{"id":"bench-platform","type":"member"},"at":"' + at + '","data":{"hash_id":' + str(seq)
        + ',"signal_type":"pdq","submission_id":' + str(seq) + ',"submitter":"bench-platform","value":"' + value
        + '"},"kind":"hash.added","program":"bench","seq":' + str(seq) + ',"subject":{"id":"' + str(seq)
        + '","type":"hash"},"v":1}'
    ).encode()  # fmt: skip
    return leaf, data


def step_large_grow(target: int) -> None:
    """Grow the log to `target` events by bulk insert (events, then their tree hashes), as the
    ledger would have written them, and sign a checkpoint; print what was built (JSON).

    Every leaf is built from a template; the first of each chunk is compared with
    `core.ledger.leaf_bytes`, so the log is one `log audit` accepts. The stored tree is
    checked against a compact range over every leaf (an independent way to the root)."""
    import datetime as dt

    import django

    django.setup()
    from django.db import connection, transaction
    from hashexchange_client import merkle

    from core import ledger, tlog, tlog_check
    from core.ledger import Event, EventLeaf
    from core.tlog import TreeHash
    from exchange import auditlog

    current = tlog.tree_size()
    started = time.perf_counter()
    if current < target:
        compact = merkle.CompactRange()
        existing = {key: None for key in TreeHash.objects.values_list("level", "position")}
        columns = "seq, kind, program, subject_type, subject_id, actor_type, actor_id, data, created_at, leaf_hash"
        table = Event._meta.db_table
        leaf_table = EventLeaf._meta.db_table  # the stored leaves, as record_many() writes them

        def leaves() -> Any:
            yield from tlog_check._leaf_hashes()
            for first in range(current + 1, target + 1, LARGE_CHUNK):
                last = min(target, first + LARGE_CHUNK - 1)
                when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=first // 100)
                at = ledger.format_time(when)
                rows, hashes, leaf_data = [], [], []
                for seq in range(first, last + 1):
                    leaf, data = _bulk_leaf(seq, at)
                    leaf_data.append(leaf)
                    if seq == first:
                        expected = ledger.leaf_bytes(
                            seq=seq, kind="hash.added", program="bench", subject_type="hash", subject_id=str(seq),
                            actor_type="member", actor_id="bench-platform", data=data, created_at=when,
                        )  # fmt: skip
                        if leaf != expected:
                            raise BenchError(f"bulk leaf template differs from leaf_bytes: {leaf!r} != {expected!r}")
                    digest = merkle.leaf_hash(leaf)
                    hashes.append(digest)
                    rows.append((seq, "hash.added", "bench", "hash", str(seq), "member", "bench-platform",
                                 json.dumps(data), when, digest.hex()))  # fmt: skip
                with transaction.atomic():
                    if connection.vendor == "postgresql":
                        with connection.connection.cursor() as cursor:
                            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                                for row in rows:
                                    copy.write_row(row)
                            with cursor.copy(f"COPY {leaf_table} (seq, data) FROM STDIN") as copy:
                                for seq, leaf in zip(range(first, last + 1), leaf_data, strict=True):
                                    copy.write_row((seq, leaf))
                    else:
                        stored = connection.ops.adapt_datetimefield_value(when)
                        with connection.cursor() as cursor:
                            cursor.executemany(
                                f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                                [(*row[:8], stored, row[9]) for row in rows],
                            )
                            cursor.executemany(
                                f"INSERT INTO {leaf_table} (seq, data) VALUES (%s, %s)",
                                list(zip(range(first, last + 1), leaf_data, strict=True)),
                            )
                log(f"{connection.vendor}: {last:,} events ({time.perf_counter() - started:.0f} s)")
                yield from hashes

        tiles = tlog_check.LeafTiles(repair=True)  # full leaf tiles, stored as extend() stores them

        def counted() -> Any:
            for leaf in leaves():
                compact.append(leaf)
                yield leaf

        created = []
        for level, index, value in merkle.tile_hashes(tiles.watch(counted())):
            if (level, index) not in existing:
                created.append(TreeHash(level=level, position=index, hash=value))
        TreeHash.objects.bulk_create(created, batch_size=5000)
        tiles.flush()
        if compact.root() != tlog.root(target):
            raise BenchError("the stored tree's root differs from the root of the leaves")
    built_s = time.perf_counter() - started
    if connection.vendor == "postgresql":
        # Statistics, as autovacuum gathers them minutes after a table has grown: right after
        # the bulk load the planner had none, and a one-row join took 8 ms instead of 0.2 ms.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    checkpoint = auditlog.checkpoint_create() or auditlog.latest_checkpoint()
    assert checkpoint is not None and checkpoint.size == target, checkpoint
    print(json.dumps({"size": target, "grown_from": current, "build_s": round(built_s, 1),
                      "tree_hashes": TreeHash.objects.count()}))  # fmt: skip


def step_large_refs(size: int, samples: int) -> None:
    """In-process, on the log of `size` events: the references (one SHA-256 of a leaf, a bare
    SELECT of one stored tree hash, a bare SELECT of one tile of leaf hashes) and where a
    proof's time goes (its queries and their time, and a profile of the service calls)."""
    import cProfile
    import hashlib
    import io
    import pstats
    import random

    import django

    django.setup()
    from django.db import connection

    from core.ledger import Event
    from core.tlog import TreeHash
    from exchange import auditlog
    from members.models import ApiCredential

    rng = random.Random(11)
    leaf = _bulk_leaf(size, "2026-01-01T00:00:00.000000Z")[0]

    def median_us(call: Any, repeat: int) -> float:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return round(statistics.median(times) * 1e6, 2)

    def sha() -> None:
        for _ in range(100):
            hashlib.sha256(b"\x00" + leaf).digest()

    positions = TreeHash.objects.filter(level=1).count()

    def one_row() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT hash FROM {TreeHash._meta.db_table} WHERE level = %s AND position = %s",
                [1, rng.randrange(positions)],
            )
            cursor.fetchall()

    def one_tile() -> None:
        start = rng.randrange(size // 256) * 256
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT leaf_hash FROM {Event._meta.db_table} WHERE seq > %s AND seq <= %s", [start, start + 256]
            )
            cursor.fetchall()

    refs = {
        "sha256_leaf_us": round(median_us(sha, 50) / 100, 3),
        "select_tree_hash_row_us": median_us(one_row, samples),
        "select_leaf_tile_us": median_us(one_tile, samples),
    }
    credential = ApiCredential.objects.select_related("member").get(member__slug=AUDITOR)
    member = credential.member

    def inclusion() -> None:
        auditlog.inclusion_proof(member=member, credential=credential, leaf_index=rng.randrange(size))

    def consistency() -> None:
        auditlog.consistency_proof(first=rng.randrange(1, size))

    breakdown = {}
    spent = {"sql": 0.0, "queries": 0}
    for name, call in (("inclusion", inclusion), ("consistency", consistency)):
        total, sql, queries = [], [], []

        def timed_sql(execute: Any, sql_: str, params: Any, many: bool, context: Any) -> Any:
            started = time.perf_counter()
            try:
                return execute(sql_, params, many, context)
            finally:
                spent["sql"] += time.perf_counter() - started
                spent["queries"] += 1

        with connection.execute_wrapper(timed_sql):
            for _ in range(samples):
                spent["sql"], spent["queries"] = 0.0, 0
                started = time.perf_counter()
                call()
                total.append(time.perf_counter() - started)
                queries.append(spent["queries"])
                sql.append(spent["sql"])
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(samples):
            call()
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
        breakdown[name] = {
            "service_ms_median": round(statistics.median(total) * 1000, 3),
            "sql_ms_median": round(statistics.median(sql) * 1000, 3),
            "queries_median": statistics.median(queries),
            "queries_max": max(queries),
            "profile_top": out.getvalue()[-6000:],
        }
        log(f"{connection.vendor} at {size:,}: {name} in process: " + json.dumps(
            {k: v for k, v in breakdown[name].items() if k != "profile_top"}))  # fmt: skip
    print(json.dumps({"refs": refs, "service": breakdown, "audit_paths": _audit_paths(size)}))


def step_large_profile(size: int, token: str, requests: int) -> None:
    """Where a log request's time goes: cProfile over `requests` requests of each kind through
    Django's test client (every middleware, DRF, authentication, the rate limit), the bare
    view of bench/floor_wsgi.py among them; prints each kind's time per request and its
    functions by own time (JSON)."""
    import cProfile
    import io
    import pstats
    import random

    import django

    django.setup()
    import floor_wsgi  # noqa: F401 (adds /bench/floor)
    from django.test import Client as DjangoClient

    client = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {token}")
    rng = random.Random(3)
    paths = {
        "floor": lambda: "/bench/floor",
        "checkpoint": lambda: "/api/v1/log/checkpoint",
        "inclusion": lambda: f"/api/v1/log/proof/inclusion?leaf_index={rng.randrange(size)}",
        "consistency": lambda: f"/api/v1/log/proof/consistency?first={rng.randrange(1, size)}",
    }
    out: dict[str, Any] = {}
    for name, make in paths.items():
        for _ in range(10):
            assert client.get(make()).status_code == 200
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        for _ in range(requests):
            client.get(make())
        profile.disable()
        elapsed = time.perf_counter() - started
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
        cumulative = io.StringIO()
        pstats.Stats(profile, stream=cumulative).sort_stats("cumulative").print_stats(40)
        out[name] = {
            "ms_per_request": round(elapsed / requests * 1000, 3),
            "by_own_time": text.getvalue(),
            "by_cumulative": cumulative.getvalue(),
        }
    print(json.dumps(out))


def _audit_paths(size: int) -> dict[str, float]:
    """The CPU per event of serving an entry bundle and of an auditor's check of a leaf, the
    quick paths against the ones they replaced (kept here as the reference), alternating
    on the same bundles; and of one SHA-256 of a leaf, in the same loop."""
    import hashlib

    from hashexchange_client import auditlog as client_auditlog
    from hashexchange_client.encoding import loads_strict
    from hashexchange_client.merkle import ENTRIES, Tile

    from core import tlog
    from core.ledger import Event

    def bundle_before(tile: Tile) -> bytes:
        start = tile.index * 256
        events = Event.objects.filter(seq__gt=start, seq__lte=start + tile.width).order_by("seq")
        return b"".join(len(data).to_bytes(2, "big") + data for data in (event.leaf_data() for event in events))

    def check_before(data: bytes, index: int) -> None:
        event = loads_strict(data)
        canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if canonical != data or client_auditlog._has_float(event) or event["seq"] != index + 1:
            raise BenchError(f"leaf {index} is not canonical")

    spent: dict[str, list[float]] = {name: [] for name in ("bundle_before", "bundle", "check_before", "check", "sha")}

    def timed(name: str, call: Any, per: int) -> Any:
        started = time.process_time()
        value = call()
        spent[name].append((time.process_time() - started) / per)
        return value

    for number in range(30):
        tile = Tile(ENTRIES, (number * 37) % (size // 256))
        before = timed("bundle_before", lambda: bundle_before(tile), 256)  # noqa: B023
        data = timed("bundle", lambda: tlog.read_entry_bundle(tile), 256)  # noqa: B023
        if data != before:
            raise BenchError(f"entry bundle {tile.index}: the quick path serves other bytes")
        entries = client_auditlog.split_bundle(data)
        first = tile.index * 256
        timed("check_before", lambda: [check_before(e, first + i) for i, e in enumerate(entries)], 256)  # noqa: B023
        timed("check", lambda: [client_auditlog.check_leaf(e, first + i) for i, e in enumerate(entries)], 256)  # noqa: B023
        timed("sha", lambda: [hashlib.sha256(b"\x00" + e).digest() for e in entries], 256)  # noqa: B023
    figures = {f"{name}_us_per_event": round(statistics.median(v) * 1e6, 2) for name, v in spent.items()}
    log(f"entry bundles and leaf checks at {size:,}: {figures}")
    return figures


def _measure_api(ports: dict[str, int], token: str, size: int, samples: int, root_b64: str) -> dict[str, Any]:
    """Proofs through the API, interleaved with the reference request (the latest checkpoint,
    the cheapest authenticated request of the log) and between the servers in `ports` (the
    code as it is, and the same without the node cache); every proof is verified."""
    import base64
    import random

    from harness import percentile
    from hashexchange_client import merkle

    root = base64.b64decode(root_b64)
    rng = random.Random(5)
    clients = {name: Client(port, token) for name, port in ports.items()}
    times: dict[str, dict[str, list[float]]] = {
        name: {"floor": [], "checkpoint": [], "inclusion": [], "consistency": []} for name in ports
    }
    for number in range(samples + 10):
        index, first = rng.randrange(size), rng.randrange(1, size)
        paths = {
            "floor": "/bench/floor",  # bench/floor_wsgi.py: a bare Django view, the framework's floor
            "checkpoint": "/api/v1/log/checkpoint",
            "inclusion": f"/api/v1/log/proof/inclusion?leaf_index={index}",
            "consistency": f"/api/v1/log/proof/consistency?first={first}",
        }
        for kind, path in paths.items():
            for name, client in clients.items():
                started = time.perf_counter()
                status, body = client.request("GET", path)
                elapsed = time.perf_counter() - started
                if status != 200:
                    raise BenchError(f"{name}: GET {path}: HTTP {status}: {body[:300]!r}")
                if kind == "inclusion":
                    answer = json.loads(body)
                    merkle.verify_inclusion(
                        merkle.leaf_hash(answer["leaf_data"].encode()), index, size,
                        [base64.b64decode(item) for item in answer["proof"]], root,
                    )  # fmt: skip
                elif kind == "consistency":
                    answer = json.loads(body)
                    merkle.verify_consistency(
                        first, size, base64.b64decode(answer["first_root_hash"]), root,
                        [base64.b64decode(item) for item in answer["proof"]],
                    )  # fmt: skip
                if number >= 10:  # the first ten warm the workers up
                    times[name][kind].append(elapsed * 1000)
    for client in clients.values():
        client.close()
    return {
        name: {
            kind: {"p50_ms": round(statistics.median(v), 3), "p90_ms": round(percentile(v, 0.9), 3),
                   "p99_ms": round(percentile(v, 0.99), 3), "n": len(v)}
            for kind, v in by_kind.items()
        }
        for name, by_kind in times.items()
    }  # fmt: skip


def _run_audit(port: int, token: str, log_vkey: str, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """`hashexchange log audit` of the whole log, as an auditor runs it, timed."""
    import subprocess

    state = workdir / "audit-state.json"
    state.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "hashexchange_client", "log", "audit", "--server", f"http://127.0.0.1:{port}",
        "--api-key", token, "--log-key", log_vkey, "--state", str(state), "--no-progress",
    ]  # fmt: skip
    before = os.times()
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = os.times()
    if result.returncode != 0:
        raise BenchError(f"log audit failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}")
    return {
        "wall_s": round(wall, 2),
        "client_cpu_s": round(
            after.children_user + after.children_system - before.children_user - before.children_system, 2
        ),
        "output": result.stdout.strip().splitlines(),
    }


def print_large(kind: str, size: int, row: dict[str, Any]) -> None:
    from harness import format_load

    refs, api = row["refs"], row["api"]
    sha, one_row = refs["sha256_leaf_us"], refs["select_tree_hash_row_us"]
    print(f"\n{kind}, {size:,} events ({row['grown']['tree_hashes']:,} tree hashes); CPU {row['cpu']}; load average")
    print(f"  {format_load(row['load_before'])} before, {format_load(row['load_after'])} after")
    print(f"  references: SHA-256 of a leaf {sha} µs; SELECT of one tree hash {one_row} µs;")
    print(f"  SELECT of one tile of leaf hashes {refs['select_leaf_tile_us']} µs")
    floor = api["floor"]["p50_ms"]
    for what in ("floor", "checkpoint", "inclusion", "consistency"):
        figures = api[what]
        print(
            f"  API {what:12} p50 {figures['p50_ms']:7.2f} ms  p90 {figures['p90_ms']:7.2f}  "
            f"p99 {figures['p99_ms']:7.2f}  = {figures['p50_ms'] / floor:5.2f} x the bare view (floor), "
            f"{figures['p50_ms'] * 1000 / one_row:6.1f} x a one-row SELECT"
        )
    for what, figures in row["service"].items():
        print(
            f"  in process, {what}: {figures['service_ms_median']} ms, of which SQL {figures['sql_ms_median']} ms "
            f"in {figures['queries_median']:g} queries"
        )
    paths = row.get("audit_paths")
    if paths:
        bundle, check = paths["bundle_us_per_event"], paths["check_us_per_event"]
        print(
            f"  CPU per event: serving an entry bundle {bundle} µs ({bundle / paths['bundle_before_us_per_event']:.2f}"
            f" x before), an auditor's check {check} µs ({check / paths['check_before_us_per_event']:.2f} x before); "
            f"SHA-256 of a leaf {paths['sha_us_per_event']} µs"
        )
    if "audit" in row:
        audit = row["audit"]
        per_event = audit["wall_s"] / size * 1e6
        print(
            f"  log audit: {audit['wall_s']} s ({per_event:.1f} µs/event = {per_event / sha:.0f} x a leaf's "
            f"SHA-256); CPU: client {audit['client_cpu_s']} s, server {audit['server_cpu_s']} s"
        )


def _postgres(stack: contextlib.ExitStack, args: argparse.Namespace, info: dict[str, Any]) -> Any:
    """The bench's PostgreSQL (started, or --postgres-url) when --databases asks for it, else None."""
    if "postgres" not in args.databases:
        return None
    pg = stack.enter_context(
        postgres_server(args.postgres_url, unsafe=args.postgres_unsafe, settings=parse_settings(args.postgres_setting))
    )
    info["postgres"] = pg.settings
    return pg


def run_large(args: argparse.Namespace, info: dict[str, Any]) -> int:
    """--large: for each database, grow one log through the sizes asked for (each size built
    once, by bulk insert), and at each size measure proofs through the API (gunicorn, one
    sync worker, one client) and, up to --audit-max events, a full `log audit`."""
    from harness import cpu_model, gunicorn, load_average, tree_cpu_seconds

    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hxbench-auditlog-large-")))
        keep = Path(args.keep) if args.keep else None
        if keep:
            keep.mkdir(parents=True, exist_ok=True)
        redis_url = stack.enter_context(private_redis(workdir))
        if "postgres" in args.databases and keep and not args.postgres_url:
            raise BenchError("--keep with PostgreSQL needs --postgres-url (a server that outlives the bench)")
        pg = _postgres(stack, args, info)
        for kind in args.databases:
            dbs = Databases(kind, workdir, pg, redis_url)
            state_file = (keep / f"large-{kind}.json") if keep else None
            if state_file and state_file.exists():
                state = json.loads(state_file.read_text())
                dbs.secrets = tuple(state["secrets"])
                log(f"{kind}: reusing the log kept in {state['db']}")
            else:
                name = str((keep or workdir) / "large.sqlite3") if kind == "sqlite" else "hxbench_large"
                if kind == "postgres":
                    assert pg is not None
                    pg.create_database(name)
                    if not keep:
                        dbs.created.append(name)
                out = run_python([__file__, "_large_prepare"], dbs.env(name), what="preparing the large log")
                state = {"db": name, "secrets": list(dbs.secrets), **json.loads(out.strip().splitlines()[-1])}
                if state_file:
                    state_file.write_text(json.dumps(state))
            if not keep:
                stack.callback(dbs.drop_all)
            env = dbs.env(state["db"])
            results[kind] = {}
            for size in args.large:
                log(f"{kind}: the log at {size:,} events")
                grown = json.loads(
                    run_python([__file__, "_large_grow", str(size)], env, what="growing the log")
                    .strip()
                    .splitlines()[-1]
                )
                log(f"{kind}: {grown}")
                refs = json.loads(
                    run_python([__file__, "_large_refs", str(size), str(args.samples)], env, what="references")
                    .strip().splitlines()[-1]
                )  # fmt: skip
                row: dict[str, Any] = {"grown": grown, **refs, "load_before": load_average(), "cpu": cpu_model()}
                with gunicorn(env, workers=1, logfile=workdir / "gunicorn.log", app="floor_wsgi:application") as (
                    port,
                    pid,
                ):
                    checkpoint = Client(port, state["token"]).request("GET", "/api/v1/log/checkpoint")[1].decode()
                    root_b64 = checkpoint.split("\n")[2]
                    measured = _measure_api({"api": port}, state["token"], size, args.samples, root_b64)
                    row.update(measured)
                    log(f"{kind} at {size:,}: through the API: {measured}")
                    if size <= args.audit_max:
                        server_before = tree_cpu_seconds(pid)
                        row["audit"] = _run_audit(port, state["token"], state["log_vkey"], env, workdir)
                        row["audit"]["server_cpu_s"] = round(tree_cpu_seconds(pid) - server_before, 2)
                        log(f"{kind} at {size:,}: log audit: {row['audit']}")
                row["load_after"] = load_average()
                results[kind][str(size)] = row
    print()
    print_machine()
    for kind, by_size in results.items():
        for size, row in by_size.items():
            print_large(kind, int(size), row)
    path = write_results("auditlog-large", {"machine": info, "args": vars(args), "results": results})
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return 0


INTERNAL_STEPS = {
    "_check": lambda argv: step_check(),
    "_tree": lambda argv: step_tree(int(argv[0])),
    "_large_prepare": lambda argv: step_large_prepare(),
    "_large_grow": lambda argv: step_large_grow(int(argv[0])),
    "_large_refs": lambda argv: step_large_refs(int(argv[0]), int(argv[1])),
    "_large_profile": lambda argv: step_large_profile(int(argv[0]), argv[1], int(argv[2])),
}


# The run -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=None, help="sqlite, postgres or both (comma-separated); default both")
    parser.add_argument("--postgres-url", default=None, help="a PostgreSQL superuser URL; default: start one")
    parser.add_argument("--postgres-unsafe", action="store_true", help="keep the test settings (fsync=off)")
    parser.add_argument("--postgres-setting", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--total", type=int, default=None, help=f"submissions per run (default {DEFAULT_TOTAL:,})")
    parser.add_argument("--batch", type=int, default=1000, help="envelopes per request (default 1,000)")
    parser.add_argument("--clients", type=int, default=2, help="client threads (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help="runs of each variant (default 3)")
    parser.add_argument("--events", type=int, default=None, help=f"log size for the in-process figures "
                        f"(default {DEFAULT_EVENTS:,})")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="SQLite, 1,000 submissions, one round, 10,000 events")
    parser.add_argument(
        "--large",
        default=None,
        metavar="SIZES",
        help="instead: proof latency through the API and "
        "`log audit` on logs of these sizes, e.g. 1000000,10000000 (built once each, by bulk insert)",
    )
    parser.add_argument("--samples", type=int, default=200, help="--large: requests of each kind (default 200)")
    parser.add_argument("--audit-max", type=int, default=1_000_000, help="--large: run `log audit` up to this size")
    parser.add_argument(
        "--keep",
        default=None,
        metavar="DIR",
        help="--large: keep the logs (SQLite files and their "
        "keys in DIR; PostgreSQL's database hxbench_large, with --postgres-url) and reuse them",
    )
    args = parser.parse_args(argv)
    args.databases = [d.strip() for d in (args.database or ("sqlite" if args.quick else "sqlite,postgres")).split(",")]
    if not set(args.databases) <= {"sqlite", "postgres"}:
        parser.error("--database takes sqlite, postgres or sqlite,postgres")
    args.total = args.total or (QUICK_TOTAL if args.quick else DEFAULT_TOTAL)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.events = args.events or (QUICK_EVENTS if args.quick else DEFAULT_EVENTS)
    args.large = sorted(int(size.replace("_", "")) for size in args.large.split(",")) if args.large else []
    return args


def summary(runs: list[Run], kind: str) -> dict[str, Any]:
    by_variant = {}
    for variant in VARIANTS:
        mine = [run for run in runs if run.database == kind and run.verified.get("variant") == variant]
        by_variant[variant] = {
            "runs": len(mine),
            "per_second_median": round(statistics.median(run.per_second for run in mine), 1),
            "cpu_us_median": round(statistics.median(run.cpu_us for run in mine), 1),
            "per_second_all": [round(run.per_second, 1) for run in mine],
            "other_cores_max": max(run.cores.get("other", 0.0) for run in mine),
        }
    tree, reference = by_variant["tree"], by_variant["no tree"]
    timed = [run.verified["extend"] for run in runs if run.database == kind and "extend" in run.verified]
    tree["extend_cpu_us_per_submission_median"] = statistics.median(t["cpu_us_per_submission"] for t in timed)
    tree["extend_cpu_share_median"] = statistics.median(t["cpu_share"] for t in timed)
    tree["extend_cpu_share_all"] = [t["cpu_share"] for t in timed]
    tree["extend_wall_share_median"] = statistics.median(t["wall_share"] for t in timed)
    tree["leaves_cpu_us_per_submission_median"] = statistics.median(t["leaves_cpu_us_per_submission"] for t in timed)
    tree["leaves_cpu_share_median"] = statistics.median(t["leaves_cpu_share"] for t in timed)
    tree["tree_and_leaves_cpu_share_all"] = [t["cpu_share"] + t["leaves_cpu_share"] for t in timed]
    return {
        **by_variant,
        "throughput_ratio": round(tree["per_second_median"] / reference["per_second_median"], 4),
        "cpu_ratio": round(tree["cpu_us_median"] / reference["cpu_us_median"], 4),
    }


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] in INTERNAL_STEPS:
        INTERNAL_STEPS[sys.argv[1]](sys.argv[2:])
        return 0
    args = parse_args(argv)
    print_machine()
    stop_on_signals()
    info = machine_info()
    if args.large:
        return run_large(args, info)
    runs: list[Run] = []
    in_process: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hxbench-auditlog-")))
        redis_url = stack.enter_context(private_redis(workdir))
        pg = _postgres(stack, args, info)
        for kind in args.databases:
            dbs = Databases(kind, workdir, pg, redis_url)
            stack.callback(dbs.drop_all)
            setup = dbs.prepare()
            for round_ in range(args.rounds):
                order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
                for variant in order:
                    log(f"{kind}, round {round_ + 1}: {variant}: {args.total:,} submissions, batches of {args.batch}")
                    stats_dir = workdir / f"tree-stats-{kind}-{round_}-{variant.replace(' ', '-')}"
                    stats_dir.mkdir()
                    os.environ["BENCH_TREE_STATS_DIR"] = str(stats_dir)  # read by timedtree_wsgi
                    run = run_one(
                        dbs,
                        setup,
                        batch=args.batch,
                        clients=args.clients,
                        workers=args.workers,
                        total=args.total,
                        app=VARIANTS[variant],
                        after=_check_tree(variant, stats_dir),
                    )
                    run.verified["variant"] = variant
                    verdict = "" if run.ok else f" — WRONG: {run.problems[0]}"
                    log(f"{kind}: {variant}: {run.per_second:,.0f}/s, {run.cpu_us:.0f} µs CPU each{verdict}")
                    runs.append(run)
            name = dbs.fresh_copy(setup)
            log(f"{kind}: in-process figures up to {args.events:,} events")
            out = run_python([__file__, "_tree", str(args.events)], dbs.env(name), what="in-process tree figures")
            in_process[kind] = json.loads(out.strip().splitlines()[-1])
            dbs.drop(name)
    results = {kind: summary(runs, kind) for kind in args.databases}
    print()
    print(f"{'database':10} {'variant':8} {'subm/s (median)':>16} {'CPU µs/subm':>12} {'runs':>5}")
    for kind, result in results.items():
        for variant in VARIANTS:
            row = result[variant]
            print(
                f"{kind:10} {variant:8} {row['per_second_median']:16,.0f} {row['cpu_us_median']:12.0f} {row['runs']:5}"
            )
        print(
            f"{kind:10} ratio    tree/no tree: throughput {result['throughput_ratio']:.3f}, "
            f"CPU per submission {result['cpu_ratio']:.3f}"
        )
        tree = result["tree"]
        print(
            f"{kind:10} the tree in the tree runs: {tree['extend_cpu_us_per_submission_median']:.2f} µs CPU per "
            f"submission, {tree['extend_cpu_share_median'] * 100:.2f} % of the run's CPU per submission "
            f"(all runs: {', '.join(f'{x * 100:.2f} %' for x in tree['extend_cpu_share_all'])}), "
            f"{tree['extend_wall_share_median'] * 100:.2f} % of request time"
        )
        print(
            f"{kind:10} the stored leaves in the tree runs: {tree['leaves_cpu_us_per_submission_median']:.2f} µs CPU "
            f"per submission, {tree['leaves_cpu_share_median'] * 100:.2f} % of the run's CPU per submission; tree "
            "and leaves together, all runs: "
            + ", ".join(f"{x * 100:.2f} %" for x in tree["tree_and_leaves_cpu_share_all"])
        )
    for kind, figures in in_process.items():
        print(f"\n{kind}, in-process, {figures['events']:,} events, {figures['tree_hashes']:,} tree hashes stored:")
        for batch, row in figures["extend_by_batch"].items():
            print(
                f"  extend, batches of {batch:>4}: {row['extend_us_per_event']:6.2f} µs/event, "
                f"{row['extend_share_of_record'] * 100:5.2f} % of record_many ({row['record_us_per_event']} µs/event); "
                f"stored leaves {row['leaves_us_per_event']:6.2f} µs/event, "
                f"{row['leaves_share_of_record'] * 100:5.2f} %"
            )
        print(f"  checkpoint (777 new events): {figures['checkpoint_ms']} ms")
        for what in ("root", "inclusion_proof", "consistency_proof"):
            print(f"  {what}: {figures[what]['ms_median']} ms median, {figures[what]['queries_max']} queries at most")
        print(f"  auditlog_check of the whole log: {figures['check_s']} s")
    path = write_results(
        "auditlog",
        {
            "machine": info,
            "args": vars(args),
            "summary": results,
            "in_process": in_process,
            "runs": [{**asdict(run), "cpu_us": round(run.cpu_us, 1)} for run in runs],
        },
    )
    print(f"\nwritten to {path.relative_to(ROOT)}")
    wrong = [run for run in runs if not run.ok]
    for run in wrong:
        print(f"WRONG RESULT ({run.database}, {run.verified.get('variant')}):")
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
