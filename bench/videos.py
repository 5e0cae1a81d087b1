"""vPDQ: the client's video hashing speed, and match queries per second at scale.

1. Hashing: a 1080p H.264 video made here with ffmpeg (testsrc2, 30 frames/s) is hashed
   by the client's `hashing.vpdq_hash` (one frame a second, frames scaled to 512 px wide,
   one thread), and, as the reference, by `vpdq.computeHash` at full resolution with the
   same sampling and one thread. CPU seconds of this process (vpdq decodes in-process).
2. Matching: `--videos` videos of `--frames` random frames each go into the frame index the
   server uses (hashes/index HammingIndex, ids `video << 16 | frame`); queries are re-encoded
   copies of indexed videos (every frame moved 8 bits) and unrelated videos, half each. A
   query is the server's path minus the database: the index search at distance 31 and
   `hashes.matching.score_videos`. The reference is python-threatexchange's VPDQIndex
   (faiss) over the same videos, on a sample of the same queries; both answers are
   compared on that sample.

    python bench/videos.py                     # 100,000 videos x 60 frames
    python bench/videos.py --videos 10000      # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import harness  # noqa: F401 - makes the project importable

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("ENV_FILE", os.devnull)
os.environ.setdefault("DEBUG", "1")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_hashing(seconds: int) -> dict[str, float]:
    import vpdq
    from hashexchange_client import hashing

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        command = ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30"]
        command += ["-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)]
        subprocess.run(command, check=True)
        start = cpu_seconds()
        value = hashing.vpdq_hash(path)
        ours = cpu_seconds() - start
        frames = len(json.loads(value))
        start = cpu_seconds()
        reference = vpdq.computeHash(str(path), seconds_per_hash=1.0, thread_count=1)
        theirs = cpu_seconds() - start
    return {
        "video_seconds": seconds,
        "frames_hashed": frames,
        "reference_frames": len(reference),
        "client_cpu_s": round(ours, 2),
        "reference_cpu_s": round(theirs, 2),
        "client_frames_per_s": round(frames / ours, 1),
        "client_s_per_minute": round(ours * 60 / seconds, 2),
        "reference_s_per_minute": round(theirs * 60 / seconds, 2),
        "speedup": round(theirs / ours, 2),
    }


def random_frame(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def moved(value: str, bits: int, rng: random.Random) -> str:
    mask = 0
    for bit in rng.sample(range(256), bits):
        mask |= 1 << bit
    return f"{int(value, 16) ^ mask:064x}"


def bench_matching(videos: int, frames: int, queries: int, reference_sample: int) -> dict[str, object]:
    import numpy as np

    from hashes import index as hx
    from hashes.matching import FRAME_BITS, score_videos

    rng = random.Random(18)
    library = [[random_frame(rng) for _ in range(frames)] for _ in range(videos)]
    harness.log(f"building the frame index: {videos * frames:,} frames")
    idx = hx.HammingIndex(256)
    for start in range(0, videos, 5000):
        block = library[start : start + 5000]
        ids = np.fromiter(
            ((start + v) << FRAME_BITS | f for v, video in enumerate(block) for f in range(len(video))), np.int64
        )
        idx.add(ids, hx.codes_from_hex([h for video in block for h in video], 256))
    asked = []
    for i in range(queries):
        if i % 2 == 0:
            asked.append([moved(h, 8, rng) for h in library[rng.randrange(videos)]])
        else:
            asked.append([random_frame(rng) for _ in range(frames)])
    totals = dict.fromkeys(range(videos), frames)

    def answer(query: list[str]) -> set[int]:
        found = idx.search(hx.codes_from_hex(query, 256), 31)
        pairs: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
        mask = (1 << FRAME_BITS) - 1
        for j, frame_id, d in zip(found.query.tolist(), found.ids.tolist(), found.distances.tolist(), strict=True):
            pairs[(0, frame_id >> FRAME_BITS)].append((j, frame_id & mask, d))
        return {pk for _, pk in score_videos(pairs, {0: len(query)}, totals, [31])}

    answer(asked[0])  # warm-up
    start, wall = cpu_seconds(), time.perf_counter()
    ours = [answer(q) for q in asked]
    our_cpu, our_wall = cpu_seconds() - start, time.perf_counter() - wall
    matched = sum(1 for a in ours if a)

    harness.log("building python-threatexchange's VPDQIndex (faiss) over the same videos")
    from threatexchange.extensions.vpdq.vpdq_index import VPDQIndex

    def serialise(video: list[str]) -> str:
        return json.dumps([f"{h},100,{i}" for i, h in enumerate(video)])

    built = time.perf_counter()
    reference = VPDQIndex.build((serialise(video), n) for n, video in enumerate(library))
    build_s = time.perf_counter() - built
    sample = asked[:reference_sample]
    reference_answers = []
    start = cpu_seconds()
    for query in sample:
        reference_answers.append({match.metadata for match in reference.query(serialise(query))})
    ref_cpu = cpu_seconds() - start
    agree = reference_answers == ours[: len(sample)]
    return {
        "videos": videos,
        "frames_per_video": frames,
        "indexed_frames": len(idx),
        "queries": queries,
        "queries_matched": matched,
        "native_kernel": hx.NATIVE,
        "ours_queries_per_cpu_s": round(queries / our_cpu, 1),
        "ours_queries_per_wall_s": round(queries / our_wall, 1),
        "ours_cpu_ms_per_query": round(our_cpu * 1000 / queries, 2),
        "reference_sample": len(sample),
        "reference_cpu_ms_per_query": round(ref_cpu * 1000 / len(sample), 1),
        "reference_build_s": round(build_s, 1),
        "speedup": round((ref_cpu / len(sample)) / (our_cpu / queries), 1),
        "same_answers_on_sample": agree,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video-seconds", type=int, default=60)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--reference-sample", type=int, default=20)
    parser.add_argument("--skip-hashing", action="store_true")
    parser.add_argument("--skip-matching", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke test: a 5 s video, 2,000 videos, 10 queries")
    args = parser.parse_args()
    if args.quick:
        args.video_seconds, args.videos, args.queries, args.reference_sample = 5, 2000, 10, 4
    import django

    django.setup()
    harness.print_machine()
    results: dict[str, object] = {"machine": harness.machine_info()}
    if not args.skip_hashing:
        results["hashing"] = bench_hashing(args.video_seconds)
        print(json.dumps(results["hashing"]), flush=True)
    if not args.skip_matching:
        results["matching"] = bench_matching(args.videos, args.frames, args.queries, args.reference_sample)
        print(json.dumps(results["matching"]), flush=True)
        if not results["matching"]["same_answers_on_sample"]:  # type: ignore[index]
            print("vPDQ answers differ from python-threatexchange's VPDQIndex", file=sys.stderr)
            return 1
    harness.print_machine("after: ")
    print(harness.write_results("videos", results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
