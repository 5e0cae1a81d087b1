"""PDQ matching: our index (hashes/index) against python-threatexchange's PDQIndex, same data, same run.

Why both in one run: the machine is a shared 2-core KVM guest whose speed drifts 10-20 %
between sittings, so a ratio is only honest when both sides ran on the same data within
minutes of each other.

Data sets (--datasets), each at every --sizes N:
- random     N uniform random 256-bit hashes: the easy case for multi-index hashing.
- clustered  N hashes around 5,000 random centres, each a centre with every bit flipped
             with a probability drawn per hash from 0-15 % (0-38 bits on average): families
             of near-duplicates, as a viral image shared by many platforms gives.
- images     PDQ hashes (pdqhash, Meta's C++ via Cython) of generated photo-like 64x64
             images (client/…/samples.py), N/4 pictures in 4 versions each (as made,
             cropped and resized, JPEG at quality 40, brightened): correlated bits and
             near-duplicate families. About 1 ms a picture, so it is cached in --workdir.
Queries: 410 planted near-duplicates of stored hashes at exactly d = 0..40 bits (10 each; d <= 31
must match, d >= 32 must not), plus 90 random hashes. The truth is a brute-force scan of all N
(the kernel's plain scan loop, cross-checked against numpy's popcount on 45 of the queries),
independent of both indexes' chunk tables.

For each side: build time; then two worker processes (as two gunicorn workers would be)
load the index and report resident memory (RSS, PSS = shared pages divided among the
processes that map them, and USS = private); worker 0 alone times single queries
(p50/p99, inside the index, one query per call, two passes; wall time and the thread's
CPU time); then both workers run the queries in batches of 100 at the same time for
--seconds (aggregate queries/s), and one worker alone does the same. Queries per CPU
second are reported too: on a machine shared with other work, wall-clock throughput
measures the share of the CPU the benchmark got, CPU time what the index costs. Recall
and false matches are counted from worker 0's answers against the truth for every query
at threshold 31.

- ours: hashes.index.write_snapshot (multi-index hashing tables in a file), then each
  worker maps it (MAP_SHARED, populated) into a HammingIndex.
- reference: threatexchange.signal_type.pdq.pdq_index.PDQIndex (faiss IndexBinaryMultiHash
  16x16 inside IndexBinaryIDMap2, as Hasher-Matcher-Actioner uses it), built from hex
  strings through its public API, pickled with its own serialize() as HMA ships it, and
  unpickled by each worker. It needs faiss, so it runs under --reference-python (a venv
  with threatexchange from PyPI); --jemalloc LIB also runs it with jemalloc preloaded, as
  HMA's Docker image does.

Usage:
    python bench/match.py --reference-python /tmp/txvenv/bin/python \
        --jemalloc /usr/lib/x86_64-linux-gnu/libjemalloc.so.2
    python bench/match.py --sizes 10000000 --datasets random clustered ...
    python bench/match.py --quick          # 100k random hashes, ours only (CI smoke run)

Results are printed as a table and written as JSON to bench/results/. Figures and what
they mean: docs/benchmarks/match.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import ROOT, gunicorn, print_machine, process_cpu_seconds

THRESHOLD = 31
BATCH = 100
PLANTED_MAX = 40


# Data ----------------------------------------------------------------------------------------


def flip_exact(rng: np.random.Generator, code: np.ndarray, distance: int) -> np.ndarray:
    out = code.copy()
    for bit in rng.choice(256, distance, replace=False):
        out[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return out


def random_codes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**64, size=(n, 4), dtype=np.uint64)


def clustered_codes(rng: np.random.Generator, n: int, centres: int = 5000, max_p: float = 0.15) -> np.ndarray:
    """Each hash is a random centre with each bit flipped with a per-hash probability."""
    centre_codes = random_codes(rng, centres)
    out = np.empty((n, 4), np.uint64)
    block = 250_000
    for start in range(0, n, block):
        size = min(block, n - start)
        which = rng.integers(0, centres, size)
        threshold = (rng.uniform(0, max_p, size) * 256).astype(np.uint16)[:, None]
        bits = rng.integers(0, 256, size=(size, 256), dtype=np.uint8) < threshold
        masks = np.packbits(bits, axis=1).view("<u8")
        out[start : start + size] = centre_codes[which] ^ masks
    return out


def _hash_images(args: tuple[int, int]) -> np.ndarray:
    """PDQ hashes of pictures [start, stop), 4 versions each."""
    import io

    import pdqhash
    from hashexchange_client.samples import photo_like
    from PIL import Image

    start, stop = args
    rows = []
    for seed in range(start, stop):
        image = photo_like(64, 64, seed=seed, texture=seed % 2 == 0)
        pixels = np.asarray(image)
        cropped = np.asarray(image.crop((4, 3, 60, 61)).resize((64, 64)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=40)
        jpeg = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        bright = np.clip(pixels.astype(np.int16) + 30, 0, 255).astype(np.uint8)
        for version in (pixels, cropped, jpeg, bright):
            bits, _quality = pdqhash.compute(version)
            rows.append(np.packbits(bits.astype(np.uint8)).view("<u8"))
    return np.array(rows, dtype=np.uint64)


def image_codes(n: int, workdir: Path, processes: int = 2) -> np.ndarray:
    cache = workdir / f"images-{n}.npy"
    if cache.exists():
        return np.load(cache)
    from multiprocessing import get_context

    pictures = n // 4
    step = 2000
    with get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_hash_images, [(s, min(s + step, pictures)) for s in range(0, pictures, step)])
    codes = np.concatenate(parts)[:n]
    np.save(cache, codes)
    return codes


def make_queries(rng: np.random.Generator, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Planted queries (10 per distance 0..40) then 90 random ones; their targets and distances."""
    queries, targets, distances = [], [], []
    for distance in range(PLANTED_MAX + 1):
        for _ in range(10):
            target = int(rng.integers(0, len(codes)))
            queries.append(flip_exact(rng, codes[target], distance))
            targets.append(target)
            distances.append(distance)
    for code in random_codes(rng, 90):
        queries.append(code)
        targets.append(-1)
        distances.append(-1)
    return np.array(queries, dtype=np.uint64), np.array(targets), np.array(distances)


def truth(codes: np.ndarray, queries: np.ndarray, radius: int, *, check: int = 25) -> list[set[tuple[int, int]]]:
    """Brute force: {(row, distance)} within `radius` for every query.

    All queries go through the kernel's blocked scan (hx_scan: a plain loop over every
    row, no chunk tables, ~100x faster than numpy at 10M), and the first `check` of them
    (planted at distances 0..2) plus every 20th also through numpy's popcount; the two
    must agree, or the benchmark stops.
    """
    from hashes.index import kernel

    found = kernel.search(codes, None, None, queries, radius)
    answers: list[set[tuple[int, int]]] = [set() for _ in queries]
    for q, row, d in zip(found.query.tolist(), found.row.tolist(), found.dist.tolist(), strict=True):
        answers[q].add((row, d))
    sample = sorted(set(range(min(check, len(queries)))) | set(range(0, len(queries), 20)))
    reference = numpy_truth(codes, queries[sample], radius)
    if [answers[i] for i in sample] != reference:
        raise SystemExit("the kernel's scan and numpy disagree: the benchmark's truth is wrong")
    return answers


def numpy_truth(codes: np.ndarray, queries: np.ndarray, radius: int) -> list[set[tuple[int, int]]]:
    """Brute force with numpy alone."""
    answers: list[set[tuple[int, int]]] = [set() for _ in queries]
    block = 1 << 20
    for start in range(0, len(codes), block):
        part = codes[start : start + block]
        for qi, query in enumerate(queries):
            distances = np.bitwise_count(part ^ query).sum(axis=1, dtype=np.uint16)
            for row in np.flatnonzero(distances <= radius):
                answers[qi].add((int(row) + start, int(distances[row])))
    return answers


# Workers (run as child processes; the reference under its own Python) ---------------------------


def memory() -> dict[str, int]:
    """kB resident: RSS, PSS and USS (private) of this process."""
    values: dict[str, int] = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key.strip()] = int(rest.split()[0])
    return {
        "rss_kb": values["Rss"],
        "pss_kb": values["Pss"],
        "uss_kb": values["Private_Clean"] + values["Private_Dirty"],
    }


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def worker(args: argparse.Namespace) -> None:
    """Load one side's index, then obey the parent: latency | throughput <start> <seconds> | exit."""
    started = time.perf_counter()
    queries = np.load(args.queries)
    if args.side == "ours":
        from hashes.index import HammingIndex, kernel, open_snapshot

        assert kernel.NATIVE, "the native kernel is not installed"
        index = HammingIndex(256, open_snapshot(Path(args.index), populate=True))

        def search(batch: np.ndarray) -> list[list[tuple[int, int]]]:
            return index.search(batch, THRESHOLD).per_query(len(batch))

    else:
        import faiss
        from threatexchange.signal_type.pdq.pdq_index import PDQIndex

        faiss.omp_set_num_threads(1)
        with open(args.index, "rb") as handle:
            reference = PDQIndex.deserialize(handle)
        hexes = [q.tobytes().hex() for q in queries]
        hex_of = {h: i for i, h in enumerate(hexes)}

        def search(batch: np.ndarray) -> list[list[tuple[int, int]]]:
            keys = [q.tobytes().hex() for q in batch]
            if len(keys) == 1:
                return [[(match.metadata, match.similarity_info.distance) for match in reference.query(keys[0])]]
            found = reference.index.search_with_distance_in_result(keys, THRESHOLD)
            return [[(int(i), int(d)) for i, _h, d in found[k]] for k in keys]

        del hex_of
    search(queries[:BATCH])  # warm up
    _send({"loaded": True, "load_seconds": time.perf_counter() - started, "memory": memory()})
    for line in sys.stdin:
        command = line.split()
        if command[0] == "latency":
            times, cpu, answers = [], [], []
            for _ in range(2):
                answers = []
                for query in queries:
                    t0, c0 = time.perf_counter(), time.thread_time()
                    answers.append(search(query[None, :])[0])
                    times.append(time.perf_counter() - t0)
                    cpu.append(time.thread_time() - c0)
            _send(
                {
                    "p50_ms": float(np.percentile(times, 50) * 1000),
                    "p99_ms": float(np.percentile(times, 99) * 1000),
                    "cpu_p50_ms": float(np.percentile(cpu, 50) * 1000),
                    "cpu_p99_ms": float(np.percentile(cpu, 99) * 1000),
                    "answers": answers,
                }
            )
        elif command[0] == "throughput":
            start_at, seconds = float(command[1]), float(command[2])
            while time.time() < start_at:
                time.sleep(0.001)
            done, t0, c0 = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < seconds:
                for begin in range(0, len(queries), BATCH):
                    search(queries[begin : begin + BATCH])
                    done += min(BATCH, len(queries) - begin)
            _send(
                {
                    "queries": done,
                    "seconds": time.perf_counter() - t0,
                    "cpu_seconds": time.process_time() - c0,
                    "memory": memory(),
                }
            )
        elif command[0] == "exit":
            return


def build_reference(args: argparse.Namespace) -> None:
    """Build PDQIndex from hex strings as HMA does, and pickle it with serialize()."""
    from threatexchange.signal_type.pdq.pdq_index import PDQIndex

    codes = np.load(args.codes, mmap_mode="r")
    t0 = time.perf_counter()
    raw = np.ascontiguousarray(codes).tobytes()
    entries = [(raw[i * 32 : (i + 1) * 32].hex(), i) for i in range(len(codes))]
    t1 = time.perf_counter()
    index = PDQIndex.build(entries)
    t2 = time.perf_counter()
    with open(args.index, "wb") as handle:
        index.serialize(handle)
    t3 = time.perf_counter()
    _send({"hex_seconds": t1 - t0, "build_seconds": t2 - t1, "serialize_seconds": t3 - t2, "memory": memory()})


# The parent ------------------------------------------------------------------------------------


def _child(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, **(env or {})}
    )


def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"worker {proc.args} died (exit {proc.wait()})")
    return json.loads(line)


def _tell(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def measure_side(
    name: str, python: str, side: str, index_path: Path, queries_path: Path, seconds: float, env: dict[str, str]
) -> dict[str, Any]:
    """Two workers: load, latency on worker 0, then throughput of both at once and of one alone."""
    command = [python, str(Path(__file__).resolve()), "--role", "worker", "--side", side]
    command += ["--index", str(index_path), "--queries", str(queries_path)]
    workers = [_child(command, env) for _ in range(2)]
    try:
        loaded = [_read(w) for w in workers]
        _tell(workers[0], "latency")
        latency = _read(workers[0])
        start = time.time() + 0.5
        for w in workers:
            _tell(w, f"throughput {start} {seconds}")
        both = [_read(w) for w in workers]
        _tell(workers[0], f"throughput {time.time()} {seconds}")
        alone = _read(workers[0])
        for w in workers:
            _tell(w, "exit")
            w.wait(timeout=120)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    return {
        "side": name,
        "load_seconds": [entry["load_seconds"] for entry in loaded],
        "memory_per_worker": [entry["memory"] for entry in both],
        "p50_ms": latency["p50_ms"],
        "p99_ms": latency["p99_ms"],
        "cpu_p50_ms": latency["cpu_p50_ms"],
        "cpu_p99_ms": latency["cpu_p99_ms"],
        "qps_2_workers": sum(b["queries"] / b["seconds"] for b in both),
        "qps_1_worker": alone["queries"] / alone["seconds"],
        # Queries per second of CPU: what a core gives when the machine is not shared.
        "qps_per_cpu_second": alone["queries"] / alone["cpu_seconds"],
        "qps_per_cpu_second_2_workers": sum(b["queries"] for b in both) / sum(b["cpu_seconds"] for b in both),
        "answers": latency["answers"],
    }


def score(answers: list[list[list[int]]], expected: list[set[tuple[int, int]]]) -> dict[str, Any]:
    found = sum(len(e) for e in expected)
    hits = false = 0
    for got, want in zip(answers, expected, strict=True):
        pairs = {(int(r), int(d)) for r, d in got}
        hits += len(pairs & want)
        false += len(pairs - want)
    return {"recall": hits / found if found else 1.0, "true_matches": found, "false_matches": false}


def run_case(args: argparse.Namespace, dataset: str, n: int) -> list[dict[str, Any]]:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    print(f"\n== {dataset} N={n:,}", flush=True)
    t0 = time.perf_counter()
    if dataset == "random":
        codes = random_codes(rng, n)
    elif dataset == "clustered":
        codes = clustered_codes(rng, n)
    else:
        codes = image_codes(n, workdir)
    print(f"   data in {time.perf_counter() - t0:.1f} s", flush=True)
    codes_path, queries_path = workdir / "codes.npy", workdir / "queries.npy"
    np.save(codes_path, codes)
    queries, targets, distances = make_queries(rng, codes)
    np.save(queries_path, queries)
    t0 = time.perf_counter()
    expected = truth(codes, queries, THRESHOLD)
    print(f"   brute-force truth in {time.perf_counter() - t0:.1f} s", flush=True)
    planted_ok = all(
        ((int(t), int(d)) in expected[i]) == (d <= THRESHOLD)
        for i, (t, d) in enumerate(zip(targets, distances, strict=True))
        if t >= 0
    )
    stats = bucket_stats(codes)
    rows = []

    from hashes.index import write_snapshot

    snapshot_path = workdir / "pdq-bench.hxi"
    t0 = time.perf_counter()
    write_snapshot(snapshot_path, signal_type="pdq", ids=np.arange(n, dtype=np.int64), codes=codes, seq=0)
    build = time.perf_counter() - t0
    del codes
    result = measure_side("ours", sys.executable, "ours", snapshot_path, queries_path, args.seconds, {})
    result.update(build_seconds=build, index_bytes=snapshot_path.stat().st_size)
    rows.append(result)
    print(f"   ours built in {build:.1f} s", flush=True)
    if args.reference_python:
        pickle_path = workdir / "pdq-reference.pickle"
        builder = _child(
            [args.reference_python, str(Path(__file__).resolve()), "--role", "build-reference"]
            + ["--codes", str(codes_path), "--index", str(pickle_path)]
        )
        built = _read(builder)
        builder.wait()
        print(f"   reference built in {built['build_seconds']:.1f} s (+{built['hex_seconds']:.1f} s hex)", flush=True)
        variants = [("reference (glibc)", {})]
        if args.jemalloc:
            variants.append(("reference (jemalloc)", {"LD_PRELOAD": args.jemalloc}))
        for name, env in variants:
            python = args.reference_python
            result = measure_side(name, python, "reference", pickle_path, queries_path, args.seconds, env)
            result.update(
                build_seconds=built["build_seconds"],
                hex_seconds=built["hex_seconds"],
                serialize_seconds=built["serialize_seconds"],
                index_bytes=pickle_path.stat().st_size,
            )
            rows.append(result)
        pickle_path.unlink()
    for row in rows:
        row.update(score(row.pop("answers"), expected))
        row.update(dataset=dataset, n=n, planted_truth_ok=planted_ok, buckets=stats)
        print_row(row)
    snapshot_path.unlink()
    return rows


def bucket_stats(codes: np.ndarray) -> dict[str, float]:
    """How skewed the 16-bit chunks are: expected rows per probed bucket for a query drawn from
    the data (sum of squared bucket sizes / N), against N / 65536 if values were uniform."""
    sample = codes[: min(len(codes), 2_000_000)]
    expected = []
    for chunk in range(16):
        values = ((sample[:, chunk >> 2] >> np.uint64((chunk & 3) * 16)) & np.uint64(0xFFFF)).astype(np.int64)
        counts = np.bincount(values, minlength=65536).astype(np.float64)
        expected.append(float((counts**2).sum() / len(sample)))
    uniform = len(sample) / 65536
    return {"rows_per_bucket_if_uniform": uniform, "rows_per_bucket_for_data_queries": float(np.mean(expected))}


def print_row(row: dict[str, Any]) -> None:
    memory = row["memory_per_worker"]
    print(
        f"   {row['side']:<22} build {row['build_seconds']:6.1f} s | "
        f"RSS/worker {max(m['rss_kb'] for m in memory) / 1024:7.0f} MiB, "
        f"PSS/worker {max(m['pss_kb'] for m in memory) / 1024:7.0f} MiB, "
        f"host {sum(m['pss_kb'] for m in memory) / 1024:7.0f} MiB | "
        f"p50 {row['p50_ms']:7.3f} ms p99 {row['p99_ms']:7.3f} ms "
        f"(CPU {row['cpu_p50_ms']:.3f} / {row['cpu_p99_ms']:.3f}) | "
        f"{row['qps_1_worker']:8.0f} q/s (1 worker) {row['qps_2_workers']:8.0f} q/s (2) "
        f"{row['qps_per_cpu_second']:8.0f} q/CPU-s | "
        f"recall {row['recall']:.4f} false {row['false_matches']}",
        flush=True,
    )


# Through the API ------------------------------------------------------------------------------


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _post(port: int, token: str, body: bytes) -> tuple[float, dict[str, Any]]:
    import http.client

    t0 = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request(
        "POST", "/api/v1/match", body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    )
    response = connection.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - t0
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"match answered {response.status}: {data[:300]!r}")
    return elapsed, json.loads(data)


def _fresh_postgres_database(url: str) -> None:
    """Drop and create the database named in `url` (connecting to `postgres` on that server)."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')


def _worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def _proc_memory(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key.strip()] = int(rest.split()[0])
    return {
        "rss_kb": values["Rss"],
        "pss_kb": values["Pss"],
        "uss_kb": values["Private_Clean"] + values["Private_Dirty"],
    }


def _api_setup(env: dict[str, str], workdir: Path, codes: np.ndarray, n: int) -> tuple[str, float, float]:
    """Migrate, create a program, a platform and its key, import the hashes, build the snapshot."""
    _manage(env, "migrate", "-v", "0")
    _manage(env, "program_create", "take-it-down", "--name", "Take It Down")
    _manage(env, "member_create", "bench", "--kind", "platform", "--program", "take-it-down")
    token = _manage(env, "credential_issue", "bench").strip().splitlines()[-1].strip()
    listing = workdir / "hashes.txt"
    with open(listing, "w") as handle:
        raw = codes.tobytes()
        for start in range(0, n, 100_000):
            stop = min(n, start + 100_000)
            handle.write("".join(raw[i * 32 : (i + 1) * 32].hex() + "\n" for i in range(start, stop)))
    t0 = time.perf_counter()
    _manage(
        env,
        "import_hashes",
        str(listing),
        "--program",
        "take-it-down",
        "--source",
        "bench",
        "--signal-type",
        "pdq",
        "--no-progress",
    )
    imported = time.perf_counter() - t0
    listing.unlink()
    t0 = time.perf_counter()
    build = (
        "import django; django.setup(); from hashes import matching; "
        "print(matching.index_build(signal_type='pdq', full=True))"
    )
    subprocess.run(
        [sys.executable, "-c", build], cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"}, check=True
    )
    built = time.perf_counter() - t0
    return token, imported, built


def run_api(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """The whole path: N PDQ hashes imported into a fresh database (SQLite, or PostgreSQL with
    --api-postgres), the snapshot built from it, gunicorn with 2 sync workers (DEBUG off), and
    single-query and 100-query requests."""
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    workdir = Path(args.workdir) / ("api-postgres" if args.api_postgres else "api")
    reuse = args.api_reuse and (workdir / "index").exists()
    if not reuse:
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
    env = {
        **os.environ,
        "DATABASE_URL": args.api_postgres or f"sqlite:///{workdir / 'db.sqlite3'}",
        "MATCH_INDEX_DIR": str(workdir / "index"),
        "API_RATE_LIMIT": "100000000/min",
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + os.urandom(16).hex(),
        "ENV_FILE": "/dev/null",
        "LOG_LEVEL": "WARNING",
    }
    if args.api_postgres and not reuse:
        _fresh_postgres_database(args.api_postgres)
    rng = np.random.default_rng(args.seed)
    codes = random_codes(rng, n)
    print(f"\n== API, {n:,} PDQ hashes", flush=True)
    imported = built = 0.0
    if reuse:  # the database and snapshot of an earlier run with the same --seed and N
        token = _manage(env, "credential_issue", "bench").strip().splitlines()[-1].strip()
    else:
        token, imported, built = _api_setup(env, workdir, codes, n)
    print(f"   imported in {imported:.1f} s, snapshot built from the database in {built:.1f} s", flush=True)
    with gunicorn(env, workers=2, logfile=workdir / "gunicorn.log") as (port, master):
        queries, targets, distances = make_queries(rng, codes)
        values = [q.tobytes().hex() for q in queries]
        single = [json.dumps({"queries": [{"signal_type": "pdq", "value": v}]}).encode() for v in values]
        deadline = time.time() + 120
        while True:
            try:
                _post(port, token, single[0])
                break
            except (OSError, RuntimeError):
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        for body in single[:200]:  # both workers load and warm up
            _post(port, token, body)
        errors = 0
        latencies = []
        cpu_before = sum(process_cpu_seconds(pid) for pid in _worker_pids(master))
        for body, target, distance in zip(single, targets, distances, strict=True):
            elapsed, answer = _post(port, token, body)
            latencies.append(elapsed)
            found = {(m["value"], m["distance"]) for m in answer["results"][0]["matches"]}
            if target >= 0:
                want = (codes[target].tobytes().hex(), int(distance))
                errors += (want in found) != (distance <= THRESHOLD)
        server_cpu = sum(process_cpu_seconds(pid) for pid in _worker_pids(master)) - cpu_before
        # The framework's floor in the same run: server CPU of a GET /healthz (every
        # middleware, no authentication, no database), over as many requests.
        import http.client

        cpu_before = sum(process_cpu_seconds(pid) for pid in _worker_pids(master))
        for _ in single:
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            probe.request("GET", "/healthz")
            probe.getresponse().read()
            probe.close()
        floor_cpu = sum(process_cpu_seconds(pid) for pid in _worker_pids(master)) - cpu_before
        result: dict[str, Any] = {
            "n": n,
            "server_cpu_ms_per_request": server_cpu / len(single) * 1000,
            "healthz_server_cpu_ms_per_request": floor_cpu / len(single) * 1000,
            "ratio_to_healthz": server_cpu / floor_cpu if floor_cpu else None,
            "import_seconds": imported,
            "snapshot_from_db_seconds": built,
            "single_p50_ms": float(np.percentile(latencies, 50) * 1000),
            "single_p99_ms": float(np.percentile(latencies, 99) * 1000),
            "planted_errors": errors,
        }
        for threads in (2, 8):
            count, t0 = 0, time.perf_counter()

            def loop(offset: int, started: float = t0) -> int:
                done = 0
                while time.perf_counter() - started < args.seconds:
                    _post(port, token, single[(offset + done) % len(single)])
                    done += 1
                return done

            with ThreadPoolExecutor(threads) as pool:
                count = sum(pool.map(loop, range(0, threads * 37, 37)))
            result[f"single_rps_c{threads}"] = count / (time.perf_counter() - t0)
        batches = [
            json.dumps({"queries": [{"signal_type": "pdq", "value": v} for v in values[i : i + BATCH]]}).encode()
            for i in range(0, len(values), BATCH)
        ]
        batch_latencies = [_post(port, token, body)[0] for body in batches * 4]
        result["batch100_p50_ms"] = float(np.percentile(batch_latencies, 50) * 1000)
        result["batch100_queries_per_s_c1"] = BATCH / float(np.mean(batch_latencies))
        result["worker_memory"] = [_proc_memory(pid) for pid in _worker_pids(master)]
    print(
        f"   single query: p50 {result['single_p50_ms']:.2f} ms p99 {result['single_p99_ms']:.2f} ms "
        f"(server CPU {result['server_cpu_ms_per_request']:.2f} ms per request, "
        f"{result['ratio_to_healthz'] or 0:.2f}x /healthz's {result['healthz_server_cpu_ms_per_request']:.2f} ms); "
        f"{result['single_rps_c2']:.0f} req/s at 2 clients, {result['single_rps_c8']:.0f} at 8; "
        f"100-query batch p50 {result['batch100_p50_ms']:.1f} ms ({result['batch100_queries_per_s_c1']:.0f} q/s); "
        f"worker PSS {[m['pss_kb'] // 1024 for m in result['worker_memory']]} MiB; planted errors {errors}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", default="main", choices=["main", "worker", "build-reference"])
    parser.add_argument("--side", choices=["ours", "reference"])
    parser.add_argument("--index")
    parser.add_argument("--queries")
    parser.add_argument("--codes")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--datasets", nargs="+", default=["random", "clustered", "images"])
    parser.add_argument("--reference-python", default="")
    parser.add_argument("--jemalloc", default="")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run")
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--workdir", default="/tmp/hx-bench-match")
    parser.add_argument("--quick", action="store_true", help="100k random hashes, ours only")
    parser.add_argument("--api", type=int, nargs="*", default=None, help="also time the HTTP API at these sizes")
    parser.add_argument("--api-reuse", action="store_true", help="reuse the database of an earlier --api run")
    parser.add_argument(
        "--api-postgres", default="", help="time the API on this PostgreSQL database URL (dropped and recreated)"
    )
    args = parser.parse_args()
    if args.role == "worker":
        return worker(args)
    if args.role == "build-reference":
        return build_reference(args)
    print_machine()
    if args.quick:
        args.sizes, args.datasets, args.reference_python, args.seconds = [100_000], ["random"], "", 1.0
    rows, api = [], []
    for n in args.sizes:
        for dataset in args.datasets:
            rows += run_case(args, dataset, n)
    for n in args.api or ():
        api.append(run_api(args, n))
    for row in rows:
        if row["recall"] != 1.0 or row["false_matches"] or not row["planted_truth_ok"]:
            print(f"FAILED: {row['side']} {row['dataset']} N={row['n']}: not exact", file=sys.stderr)
            if row["side"] == "ours":
                sys.exit(1)
    out = ROOT / "bench" / "results" / f"match-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"machine": platform.uname()._asdict(), "cpus": os.cpu_count(), "rows": rows, "api": api},
            indent=1,
            default=int,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
