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
database's tree is checked against its events (core.tlog.check); after every `no tree`
run, that it really has none.

Then, in-process on a fresh copy (`_tree` step): the cost of `tlog.extend` itself per
event for batches of 1, 100 and 1,000 events, as a share of `record_many`; and, once the
log holds --events events, the time and queries of a checkpoint, an inclusion proof, a
consistency proof and a full `auditlog_check`.

Usage:
    python bench/auditlog.py                         # SQLite and PostgreSQL, 10,000 submissions, 3 rounds
    python bench/auditlog.py --database postgres --rounds 5
    python bench/auditlog.py --quick                 # SQLite, 1,000 submissions, 1 round (CI)

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
            run.verified["extend"] = {
                "calls": sum(t["calls"] for t in totals),
                "events": sum(t["events"] for t in totals),
                "cpu_us_per_submission": round(cpu / run.total * 1e6, 2),
                # of all the CPU the run used (gunicorn, database, client) per submission
                "cpu_share": round(cpu / run.total * 1e6 / run.cpu_us, 4) if run.cpu_us else 0.0,
                # of the time requests were in flight
                "wall_share": round(wall / (sum(run.latency_ms) / 1000), 4) if run.latency_ms else 0.0,
            }
            if run.verified["extend"]["events"] != run.total:
                run.problems.append(f"the timed tree saw {run.verified['extend']['events']} events, not {run.total}")
        if variant == "tree" and not (found["ok"] and found["stored"] == found["size"] // 256):
            run.problems.append(f"the tree does not match the events: {found}")
        if variant == "no tree" and found["stored"] != 0:
            run.problems.append(f"the reference run stored tree hashes: {found}")

    return after


# Internal steps: run in a child process with DATABASE_URL set ----------------------------------


def step_check() -> None:
    import django

    django.setup()
    from core import tlog
    from core.tlog import TreeHash

    result = tlog.check()
    print(json.dumps({"ok": result.ok, "size": result.size, "stored": TreeHash.objects.count()}))


def step_tree(events: int) -> None:
    """The tree's own costs, in-process: extend per event, checkpoint, proofs, check."""
    import django

    django.setup()
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from core import ledger, tlog
    from core.ledger import Actor, NewEvent
    from exchange import auditlog

    actor = Actor.system("bench")
    spent = {"extend": 0.0}
    original = tlog.extend

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
        spent["extend"] = 0.0
        seconds = record(count, batch)
        per_batch[str(batch)] = {
            "events": count,
            "record_us_per_event": round(seconds / count * 1e6, 1),
            "extend_us_per_event": round(spent["extend"] / count * 1e6, 2),
            "extend_share_of_record": round(spent["extend"] / seconds, 4),
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
    result = tlog.check()
    figures["check_s"] = round(time.perf_counter() - started, 2)
    if not result.ok:
        raise BenchError(f"the tree does not match the events after the in-process step: {result}")
    print(json.dumps(figures))


INTERNAL_STEPS = {"_check": lambda argv: step_check(), "_tree": lambda argv: step_tree(int(argv[0]))}


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
    args = parser.parse_args(argv)
    args.databases = [d.strip() for d in (args.database or ("sqlite" if args.quick else "sqlite,postgres")).split(",")]
    if not set(args.databases) <= {"sqlite", "postgres"}:
        parser.error("--database takes sqlite, postgres or sqlite,postgres")
    args.total = args.total or (QUICK_TOTAL if args.quick else DEFAULT_TOTAL)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.events = args.events or (QUICK_EVENTS if args.quick else DEFAULT_EVENTS)
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
    runs: list[Run] = []
    in_process: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hxbench-auditlog-")))
        redis_url = stack.enter_context(private_redis(workdir))
        pg = None
        if "postgres" in args.databases:
            pg = stack.enter_context(
                postgres_server(
                    args.postgres_url, unsafe=args.postgres_unsafe, settings=parse_settings(args.postgres_setting)
                )
            )
            info["postgres"] = pg.settings
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
    for kind, figures in in_process.items():
        print(f"\n{kind}, in-process, {figures['events']:,} events, {figures['tree_hashes']:,} tree hashes stored:")
        for batch, row in figures["extend_by_batch"].items():
            print(
                f"  extend, batches of {batch:>4}: {row['extend_us_per_event']:6.2f} µs/event, "
                f"{row['extend_share_of_record'] * 100:5.2f} % of record_many ({row['record_us_per_event']} µs/event)"
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
