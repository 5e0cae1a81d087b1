"""Snapshot bootstrap against feed bootstrap: the same data, the same server, one run.

Why: a new member (or peer) used to read every page of the feed from `after=0`; with
program snapshots (exchange/snapshots.py) it downloads one signed, gzip-compressed file of
the program's current hashes, checks it, and reads only the feed after it. This makes a
data set (bench/feed.py's `import` or `submit`, in a fresh SQLite file or PostgreSQL
database), builds the snapshot in a child process (the background task's work, timed),
then through gunicorn (2 workers):

1. reads the whole feed from 0 (the reference: bench/feed.py's read, checked the same way);
2. bootstraps as `hashexchange feed bootstrap` does: GET the manifest, check its signature
   with the server key, download the file, check its SHA-256, parse every line and check
   every signed envelope (origin key binding, then the member's signature), then read the
   feed after the snapshot's seq.

It checks that both give the same set of hashes, and prints the CPU model, the load
average and the ratio feed seconds / snapshot seconds.

Usage:
    python bench/snapshot.py --database postgres --data import              # 1,000,000 imported
    python bench/snapshot.py --database sqlite --data submit --submitted 100000
    python bench/snapshot.py --database postgres --data import --imported 10000000 --no-feed
    python bench/snapshot.py --profile-build ...                            # cProfile the build

Results are printed and written as JSON to bench/results/; history: docs/benchmarks/snapshot.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import feed as feedbench
from harness import (
    BenchError,
    format_load,
    gunicorn,
    load_average,
    log,
    machine_info,
    machine_line,
    postgres_server,
    print_machine,
    private_redis,
    run_python,
    write_results,
)


def step_build(out_file: str, profile: str) -> None:
    """Build the program's snapshot in-process and say how long it took (the task's work)."""
    feedbench._django()
    import cProfile
    import io
    import pstats

    from exchange import snapshots
    from members.models import Program

    program = Program.objects.get(slug=feedbench.PROGRAM)
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    built = snapshots.snapshot_build(program=program)
    seconds = time.perf_counter() - started
    if profiler:
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        Path(profile).write_text(text.getvalue())
    Path(out_file).write_text(
        json.dumps({"seconds": seconds, "entries": built.entries, "bytes": built.size, "seq": built.seq})
    )


def bootstrap(port: int, token: str, workdir: Path) -> dict[str, float | int]:
    """What `hashexchange feed bootstrap` does, timed in parts; returns the figures and the hash ids."""
    from hashexchange_client import snapshot
    from hashexchange_client.api import Client

    client = Client(f"http://127.0.0.1:{port}", token)
    started = time.perf_counter()
    server_key = client.server_key()["public_key"]
    found = client.snapshot(feedbench.PROGRAM)
    if found is None:
        raise BenchError("no snapshot was served")
    manifest = snapshot.verify_manifest(found["manifest"], server_key)
    path = workdir / "snapshot.ndjson.gz"
    client.download(found["url"], path)
    downloaded = time.perf_counter()
    snapshot.check_file(path, manifest)
    checker = snapshot.EntryChecker()
    hash_ids = [
        entry["hash"]["id"]
        for entry in snapshot.read_entries(path, manifest, checker=checker)
        if entry["kind"] == "hash.added"
    ]
    checked = time.perf_counter()
    feed_entries = 0
    for entries, _next in client.iter_feed(manifest.seq, limit=5000):
        for entry in entries:
            if entry.get("kind", "").startswith("hash."):
                checker.check(entry)
        hash_ids += [e["hash"]["id"] for e in entries if e.get("kind") == "hash.added"]
        feed_entries += len(entries)
    done = time.perf_counter()
    return {
        "seconds": round(done - started, 3),
        "download_seconds": round(downloaded - started, 3),
        "check_seconds": round(checked - downloaded, 3),
        "feed_after_seconds": round(done - checked, 3),
        "snapshot_entries": manifest.entries,
        "feed_entries": feed_entries,
        "envelopes_verified": checker.verified,
        "bytes": manifest.size,
        "hash_ids": hash_ids,  # type: ignore[dict-item]
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="postgres", help="sqlite or postgres (default postgres)")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--data", default="import", help="import or submit (default import)")
    parser.add_argument("--imported", type=int, default=feedbench.DEFAULT_IMPORTED)
    parser.add_argument("--submitted", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-feed", action="store_true", help="skip the whole-feed reference read (10M)")
    parser.add_argument("--profile-build", action="store_true", help="cProfile the snapshot build")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_build":
        step_build(sys.argv[2], sys.argv[3])
        return 0
    args = parse_args(argv)
    print_machine()
    load_before = load_average()
    info = machine_info()
    count = args.imported if args.data == "import" else args.submitted
    figures: dict[str, object] = {"database": args.database, "data": args.data, "hashes": count}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hxbench-snapshot-")))
        redis_url = stack.enter_context(private_redis(workdir))
        pg = stack.enter_context(postgres_server(args.postgres_url)) if args.database == "postgres" else None
        dataset, env = feedbench.make_dataset(
            args.database, args.data, count, workdir=workdir, pg=pg, redis_url=redis_url
        )
        env["SNAPSHOT_DIR"] = str(workdir / "snapshots")
        figures["data_set_seconds"] = dataset.build_seconds
        try:
            if not args.no_feed:
                log(f"reading the whole feed ({count:,} hashes) from 0")
                read = feedbench.read_feed(dataset, env, limit=5000, workers=args.workers, workdir=workdir)
                if not read.ok:
                    raise BenchError(f"the feed read was wrong: {read.problems}")
                figures["feed_seconds"] = read.seconds
                figures["feed_mb"] = round(read.bytes_total / 1e6, 1)
            log("building the snapshot (the background task's work)")
            out = workdir / "build.json"
            profile = str(feedbench.RESULTS_DIR / f"snapshot-build-profile-{args.database}-{args.data}.txt")
            if args.profile_build:
                feedbench.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            run_python([__file__, "_build", str(out), profile if args.profile_build else ""], env, what="build")
            built = json.loads(out.read_text())
            figures["build_seconds"] = round(built["seconds"], 2)
            figures["snapshot_mb"] = round(built["bytes"] / 1e6, 1)
            log(f"built: {built['entries']:,} entries, {built['bytes'] / 1e6:.1f} MB in {built['seconds']:.1f} s")
            with gunicorn(env, workers=args.workers, logfile=workdir / "gunicorn.log") as (port, _pid):
                log("bootstrapping from the snapshot")
                boot = bootstrap(port, dataset.token, workdir)
            hash_ids = boot.pop("hash_ids")
            if len(hash_ids) != count or len(set(hash_ids)) != count:  # type: ignore[arg-type]
                raise BenchError(f"the snapshot bootstrap gave {len(set(hash_ids))} hashes, expected {count}")  # type: ignore[arg-type]
            figures.update({f"snapshot_{k}": v for k, v in boot.items()})
            if "feed_seconds" in figures:
                figures["feed_over_snapshot"] = round(figures["feed_seconds"] / boot["seconds"], 2)  # type: ignore[operator]
        finally:
            feedbench.drop_dataset(dataset, pg)
    print(machine_line())
    print(f"load average before: {format_load(load_before)}; after: {format_load(load_average())}")
    for name, value in figures.items():
        print(f"  {name:34} {value}")
    path = write_results("snapshot", {"machine": info, "args": vars(args), "figures": figures})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
