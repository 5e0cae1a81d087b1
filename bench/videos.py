"""vPDQ: the client's video hashing speed, and match queries per second at scale.

1. Hashing: a 1080p H.264 video made here with ffmpeg (testsrc2, 30 frames/s) is hashed
   by the client's `hashing.vpdq_hash` (the ffmpeg program decoding on one thread without
   the loop filter and non-reference frames, one frame a second scaled to 512 px wide,
   pdqhash), and, as the reference, by `vpdq.computeHash` at full resolution with the same
   sampling and one thread. CPU seconds of this process and its children (the client's
   ffmpeg runs as a child; vpdq decodes in-process). Also: how far each of the client's
   frame hashes is from vpdq's for the same second (PDQ bits).
2. Matching: `--videos` videos of `--frames` random frames each go into the frame index the
   server uses (hashes/index HammingIndex, ids `video << 16 | frame`); queries are re-encoded
   copies of indexed videos (every frame moved 8 bits) and unrelated videos, half each. A
   query is the server's path minus the database: the index search at distance 31 and
   `hashes.video_matching.score_videos`. The reference is python-threatexchange's VPDQIndex
   (faiss) over the same videos, on a sample of the same queries; both answers are
   compared on that sample.

    python bench/videos.py                     # 100,000 videos x 60 frames
    python bench/videos.py --videos 10000      # smaller
"""

from __future__ import annotations

import argparse
import json
import os
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
    """CPU seconds of this process and of its children that have ended (the client's ffmpeg)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def make_pan(path: Path, seconds: int) -> None:
    """1080p30 H.264 closer to filmed footage than testsrc2: a smooth photo-like scene (a
    bicubic blow-up of random colours) panning 4 px a frame, a new scene every 5 seconds."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(18)
    width, height = 1920, 1080
    command = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "1920x1080"]
    command += ["-r", "30", "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)]
    with subprocess.Popen(command, stdin=subprocess.PIPE) as encoder:
        assert encoder.stdin is not None
        for _scene in range(max(1, seconds // 5)):
            colours = Image.fromarray(rng.integers(0, 256, size=(18, 36, 3), dtype=np.uint8))
            scene = np.asarray(colours.resize((width + 600, height), Image.BICUBIC))
            for i in range(150):
                encoder.stdin.write(np.ascontiguousarray(scene[:, i * 4 : i * 4 + width]).tobytes())
        encoder.stdin.close()
    if encoder.returncode:
        raise RuntimeError("ffmpeg could not encode the pan video")


def bench_hashing(seconds: int, kind: str = "testsrc2") -> dict[str, float]:
    import vpdq
    from hashexchange_client import hashing

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        if kind == "pan":
            make_pan(path, seconds)
            seconds = max(1, seconds // 5) * 5
        else:
            command = ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30"]
            command += ["-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)]
            subprocess.run(command, check=True)  # before the first reading: its CPU is counted there
        start = cpu_seconds()
        value = hashing.vpdq_hash(path)
        ours = cpu_seconds() - start
        frames = len(json.loads(value))
        start = cpu_seconds()
        reference = vpdq.computeHash(str(path), seconds_per_hash=1.0, thread_count=1)
        theirs = cpu_seconds() - start
    from hashexchange_client import signal_types

    distances = sorted(
        (int(ours_frame.pdq, 16) ^ int(theirs_frame.hex, 16)).bit_count()
        for ours_frame, theirs_frame in zip(signal_types.parse_vpdq(value), reference, strict=False)
    )
    return {
        "video": kind,
        "video_seconds": seconds,
        "bits_from_reference_median": distances[len(distances) // 2],
        "bits_from_reference_max": distances[-1],
        "frames_within_31_bits": sum(d <= 31 for d in distances),
        "frames_hashed": frames,
        "reference_frames": len(reference),
        "client_cpu_s": round(ours, 2),
        "reference_cpu_s": round(theirs, 2),
        "client_frames_per_s": round(frames / ours, 1),
        "client_s_per_minute": round(ours * 60 / seconds, 2),
        "reference_s_per_minute": round(theirs * 60 / seconds, 2),
        "speedup": round(theirs / ours, 2),
    }


def bench_matching(
    videos: int, frames: int, queries: int, reference_sample: int, with_threatexchange: bool
) -> dict[str, object]:
    import numpy as np

    from hashes import index as hx
    from hashes.video_matching import FRAME_BITS, score_videos

    rng = np.random.default_rng(18)
    harness.log(f"building a snapshot of the frame index: {videos * frames:,} frames")
    codes = rng.integers(0, 2**64, size=(videos * frames, 4), dtype=np.uint64)
    ids = (np.arange(videos, dtype=np.int64)[:, None] << FRAME_BITS | np.arange(frames, dtype=np.int64)).ravel()
    with tempfile.TemporaryDirectory() as tmp:
        built = time.perf_counter()
        path = hx.write_snapshot(Path(tmp) / "vpdq.idx", signal_type="vpdq", ids=ids, codes=codes, seq=0)
        snapshot_s = time.perf_counter() - built
        idx = hx.HammingIndex(256, hx.open_snapshot(path, populate=True))
        picks = rng.integers(0, videos, size=queries)
        asked = []
        for i in range(queries):
            if i % 2 == 0:  # a re-encoded copy: every frame moved 8 bits
                frames_of = codes[picks[i] * frames : (picks[i] + 1) * frames].copy()
                for row in frames_of:
                    for bit in rng.choice(256, size=8, replace=False):
                        row[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
                asked.append(frames_of)
            else:
                asked.append(rng.integers(0, 2**64, size=(frames, 4), dtype=np.uint64))
        totals = dict.fromkeys(range(videos), frames)
        mask = (1 << FRAME_BITS) - 1

        def score(query: np.ndarray, found: list[tuple[int, int, int]]) -> set[int]:
            pairs: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
            for j, frame_id, d in found:
                pairs[(0, frame_id >> FRAME_BITS)].append((j, frame_id & mask, d))
            return {pk for _, pk in score_videos(pairs, {0: len(query)}, totals, [31])}

        def answer(query: np.ndarray) -> set[int]:
            found = idx.search(query, 31)
            return score(
                query, list(zip(found.query.tolist(), found.ids.tolist(), found.distances.tolist(), strict=True))
            )

        answer(asked[0])  # warm-up
        start, wall = cpu_seconds(), time.perf_counter()
        ours = [answer(q) for q in asked]
        our_cpu, our_wall = cpu_seconds() - start, time.perf_counter() - wall
        # The reference: every frame of the query against every indexed frame, in numpy.
        sample = asked[:reference_sample]
        start = cpu_seconds()
        reference = []
        for query in sample:
            rows = hx.brute_force(codes, query, 31)
            reference.append(score(query, [(j, int(ids[r]), d) for j, found in enumerate(rows) for r, d in found]))
        ref_cpu = cpu_seconds() - start
    result: dict[str, object] = {
        "videos": videos,
        "frames_per_video": frames,
        "indexed_frames": int(len(ids)),
        "snapshot_build_s": round(snapshot_s, 1),
        "queries": queries,
        "queries_matched": sum(1 for a in ours if a),
        "copies_found": sum(1 for i, a in enumerate(ours) if i % 2 == 0 and int(picks[i]) in a),
        "native_kernel": hx.NATIVE,
        "ours_queries_per_cpu_s": round(queries / our_cpu, 1),
        "ours_queries_per_wall_s": round(queries / our_wall, 1),
        "ours_cpu_ms_per_query": round(our_cpu * 1000 / queries, 2),
        "reference_sample": len(sample),
        "brute_force_cpu_ms_per_query": round(ref_cpu * 1000 / len(sample), 1),
        "speedup_vs_brute_force": round((ref_cpu / len(sample)) / (our_cpu / queries), 1),
        "same_answers_on_sample": reference == ours[: len(sample)],
    }
    if with_threatexchange:
        result.update(_threatexchange_reference(codes, frames, asked[:reference_sample], ours[:reference_sample]))
    return result


def _threatexchange_reference(codes: object, frames: int, sample: list, ours: list[set[int]]) -> dict[str, object]:
    """python-threatexchange's VPDQIndex (faiss) over the same videos (slow to build at scale)."""
    from threatexchange.extensions.vpdq.vpdq_index import VPDQIndex

    def serialise(block: object) -> str:
        return json.dumps([f"{bytes(row.astype('<u8').tobytes()).hex()},100,{i}" for i, row in enumerate(block)])

    videos = len(codes) // frames  # type: ignore[arg-type]
    harness.log(f"building python-threatexchange's VPDQIndex over {videos:,} videos")
    reference = VPDQIndex.build((serialise(codes[v * frames : (v + 1) * frames]), v) for v in range(videos))  # type: ignore[index]
    start = cpu_seconds()
    answers = [{match.metadata for match in reference.query(serialise(q))} for q in sample]
    cpu = cpu_seconds() - start
    return {
        "threatexchange_cpu_ms_per_query": round(cpu * 1000 / len(sample), 1),
        "threatexchange_same_answers": answers == ours,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video-seconds", type=int, default=60)
    parser.add_argument(
        "--video", choices=["testsrc2", "pan"], default="testsrc2", help="ffmpeg's test pattern, or a panning scene"
    )
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--reference-sample", type=int, default=20)
    parser.add_argument("--skip-hashing", action="store_true")
    parser.add_argument("--skip-matching", action="store_true")
    parser.add_argument(
        "--threatexchange", action="store_true", help="also time python-threatexchange's VPDQIndex (slow to build)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test: a 5 s video, 2,000 videos, 10 queries")
    args = parser.parse_args()
    if args.quick:
        args.video_seconds, args.videos, args.queries, args.reference_sample = 5, 2000, 10, 4
    import django

    django.setup()
    harness.print_machine()
    results: dict[str, object] = {"machine": harness.machine_info()}
    if not args.skip_hashing:
        results["hashing"] = bench_hashing(args.video_seconds, args.video)
        print(json.dumps(results["hashing"]), flush=True)
    if not args.skip_matching:
        results["matching"] = bench_matching(
            args.videos, args.frames, args.queries, args.reference_sample, args.threatexchange or args.quick
        )
        print(json.dumps(results["matching"]), flush=True)
        matching = results["matching"]
        if not matching["same_answers_on_sample"] or matching.get("threatexchange_same_answers") is False:  # type: ignore[index, union-attr]
            print("vPDQ answers differ from python-threatexchange's VPDQIndex", file=sys.stderr)
            return 1
    harness.print_machine("after: ")
    print(harness.write_results("videos", results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
