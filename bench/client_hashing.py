"""How many images per second the member-side client hashes, per signal type.

Measures ``hashexchange_client.hashing.hash_file`` from a JPEG on disk (page-cached),
which is what ``hashexchange hash`` and ``submit`` do per file, on generated photo-like
JPEGs (gradients, a fine grain texture and shapes; quality 85) at 1024x768 and
4000x3000. Each signal type is timed alone and all image types together, in one
process and on two worker processes. It also reports how far the fast PDQ path
(JPEG draft decode, at most 1024 px) is from PDQ at full resolution, and from a path
that resizes further to 512 px, to back the choice made in hashing.py, and what
``pdqhash.compute`` alone costs at a few image sizes.

Usage: python bench/client_hashing.py [--seconds 3] [--images 6] [--processes 2]
       [--drift-images 10] [--skip-speed] [--quick]
Results for the reference machine are in docs/benchmarks/client-hashing.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from harness import format_load, load_average, print_machine
from hashexchange_client import hashing, samples
from PIL import Image

SIZES = ((1024, 768), (4000, 3000))
DRIFT_SIZES = ((1024, 768), (2048, 1536), (4000, 3000), (4032, 3024), (3000, 4000))
PDQHASH_SIZES = ((512, 384), (960, 720), (1000, 750), (1023, 767), (1024, 768), (2048, 1536))
CASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pdq", ("pdq",)),
    ("phash", ("phash",)),
    ("dhash", ("dhash",)),
    ("md5", ("md5",)),
    ("sha256", ("sha256",)),
    ("all (pdq+phash+dhash+md5+sha256)", ("pdq", "phash", "dhash", "md5", "sha256")),
)


def _hash(path: Path, types: tuple[str, ...]) -> int:
    return len(hashing.hash_file(path, types))


def rate_single(files: Sequence[Path], types: tuple[str, ...], seconds: float) -> tuple[float, float, float]:
    """In this process, over at least ``seconds``: images/s by wall clock, images/s by
    CPU time (what one core can do when nothing else competes for it), median ms."""
    for path in files:  # warm-up: imports, page cache, allocator
        _hash(path, types)
    times: list[float] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for path in files:
            t0 = time.perf_counter()
            _hash(path, types)
            times.append(time.perf_counter() - t0)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return len(times) / elapsed, len(times) / max(cpu, 1e-9), statistics.median(times) * 1000


def rate_parallel(pool: ProcessPoolExecutor, files: Sequence[Path], types: tuple[str, ...], seconds: float) -> float:
    """Aggregate images/s across the pool's already-started workers."""
    # Calibrate a work list long enough for ``seconds``, from one warm-up pass.
    t0 = time.perf_counter()
    list(pool.map(_hash, files, [types] * len(files)))
    per_pass = max(time.perf_counter() - t0, 1e-3)
    passes = max(2, int(seconds / per_pass) + 1)
    work = list(files) * passes
    start = time.perf_counter()
    list(pool.map(_hash, work, [types] * len(work), chunksize=2))
    return len(work) / (time.perf_counter() - start)


def pdq_drift(files: Sequence[Path]) -> tuple[list[int], list[int]]:
    """Hamming distance of the client's PDQ, and of a 512-px variant, to full resolution."""
    client, at_512 = [], []
    for path in files:
        with Image.open(path) as opened:
            full, _ = hashing.pdq_hash(opened.convert("RGB"))
        (fast,) = hashing.hash_file(path, ("pdq",))
        client.append(_hamming(fast.value, full))
        reduced = hashing.load_image(path)
        scale = 512 / max(reduced.size)
        small = reduced.resize((round(reduced.width * scale), round(reduced.height * scale)), Image.Resampling.BOX)
        value, _ = hashing.pdq_hash(small)
        at_512.append(_hamming(value, full))
    return client, at_512


def full_resolution_pdq_rate(files: Sequence[Path]) -> float:
    """PDQ on the fully decoded image, as a naive hasher would do it: the baseline."""
    start = time.perf_counter()
    for path in files:
        with Image.open(path) as opened:
            hashing.pdq_hash(opened.convert("RGB"))
    return len(files) / (time.perf_counter() - start)


def _hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def versions() -> str:
    import imagehash
    import numpy
    import pdqhash
    import PIL

    return (
        f"Python {platform.python_version()}, Pillow {PIL.__version__}, numpy {numpy.__version__}, "
        f"pdqhash {pdqhash.__version__}, ImageHash {imagehash.__version__}; {platform.platform()}"
    )


def pdqhash_cost_by_size(repeats: int = 15) -> list[tuple[int, int, float]]:
    """Median CPU ms of ``pdqhash.compute`` alone on arrays of a few sizes.

    Shows the cost of the sizes the client hands to PDQ, including the slow case of a
    width of exactly 1024.
    """
    import numpy as np
    import pdqhash

    costs = []
    for width, height in PDQHASH_SIZES:
        pixels = np.asarray(samples.photo_like(width, height, 1))
        pdqhash.compute(pixels)
        times = []
        for _ in range(repeats):
            t0 = time.process_time()
            pdqhash.compute(pixels)
            times.append(time.process_time() - t0)
        costs.append((width, height, statistics.median(times) * 1000))
    return costs


def _write_jpegs(folder: str, width: int, height: int, count: int) -> list[Path]:
    files = []
    for seed in range(count):
        path = Path(folder, f"{width}x{height}-{seed}.jpg")
        path.write_bytes(samples.jpeg_bytes(samples.photo_like(width, height, seed, texture=True)))
        files.append(path)
    return files


def speed(args: argparse.Namespace, tmp: str) -> None:
    """The throughput table, plus the full-resolution PDQ baseline per size."""
    rows: list[tuple[str, str, float, float, float, float]] = []
    baselines: list[str] = []
    with ProcessPoolExecutor(args.processes) as pool:
        for width, height in SIZES:
            files = _write_jpegs(tmp, width, height, args.images)
            size_kib = statistics.mean(p.stat().st_size for p in files) / 1024
            label = f"{width}x{height} ({size_kib:.0f} KiB)"
            for name, types in CASES:
                single, per_cpu, median_ms = rate_single(files, types, args.seconds)
                parallel = rate_parallel(pool, files, types, args.seconds)
                rows.append((label, name, median_ms, single, per_cpu, parallel))
                print(f"  {label:<22} {name:<34} {single:8.1f} img/s  {parallel:8.1f} img/s", file=sys.stderr)
            baselines.append(f"{width}x{height}: {full_resolution_pdq_rate(files[:3]):.1f} img/s")
    print()
    print(
        "| image | signal types | median ms/img | img/s, 1 process | img/s per core (CPU time) "
        f"| img/s, {args.processes} processes |"
    )
    print("|---|---|---|---|---|---|")
    for label, name, median_ms, single, per_cpu, parallel in rows:
        print(f"| {label} | {name} | {median_ms:.1f} | {single:.1f} | {per_cpu:.1f} | {parallel:.1f} |")
    print()
    print(f"PDQ on the fully decoded image, 1 process: {'; '.join(baselines)}")


def fidelity(args: argparse.Namespace, tmp: str) -> None:
    """PDQ drift from full resolution, for the client's path and for a 512 px resize."""
    print()
    print("| image | PDQ bits from full resolution, client path: max / mean | same, resized to 512 px: max / mean |")
    print("|---|---|---|")
    for width, height in DRIFT_SIZES:
        client, at_512 = pdq_drift(_write_jpegs(tmp, width, height, args.drift_images))
        print(
            f"| {width}x{height} ({len(client)} images) | {max(client)} / {statistics.mean(client):.1f} "
            f"| {max(at_512)} / {statistics.mean(at_512):.1f} |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--images", type=int, default=6, help="distinct images per size")
    parser.add_argument("--processes", type=int, default=2, help="workers for the parallel column")
    parser.add_argument("--drift-images", type=int, default=10, help="images per size for PDQ fidelity")
    parser.add_argument("--skip-speed", action="store_true", help="only the fidelity and pdqhash-size tables")
    parser.add_argument("--quick", action="store_true", help="0.2 s per measurement, 1 image per size (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.images, args.drift_images = 0.2, 1, 1

    print(f"# client hashing benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    print_machine("# ")
    print(f"# {versions()}")
    print(f"# command: python bench/client_hashing.py {' '.join(argv or sys.argv[1:])}".rstrip())
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_speed:
            speed(args, tmp)
        fidelity(args, tmp)
    print()
    print("| array given to pdqhash.compute | median CPU ms |")
    print("|---|---|")
    for width, height, ms in pdqhash_cost_by_size():
        print(f"| {width}x{height} | {ms:.1f} |")
    print()
    print(f"# load average at end: {format_load(load_average())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
