"""How fast the intake page hashes on this machine's headless Chromium.

Runs the page's own code (intake/static/intake/pdq.js and digests.js) in Debian's
chromium driven by Playwright:
- photos: a generated photo-like 12-megapixel JPEG (4000x3000, quality 85), decoded by
  the browser and PDQ-hashed at full resolution, alone and with MD5 and SHA-256 of the
  file (what the page does per photo), on the page's main thread and in its worker
  pool (hasher.js, one worker per core up to four, on 8 copies); photos per second;
- video: MD5 and SHA-256 of a 256 MB blob read in 4 MB slices, as the page reads a video;
  MB per second.
Each figure is printed beside its reference measured in the same run in this process:
Pillow's decode plus `pdqhash.compute` at full resolution for the photo, hashlib's MD5
plus SHA-256 for the bytes; the ratio is browser / reference (above 1: the browser is
faster). The CPU model and load average are printed first.

Usage: python bench/intake_browser.py [--seconds 5] [--video-mb 256] [--phase-runs 5] [--quick]
Results for the reference machine are in docs/benchmarks/intake.md.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pdqhash
from harness import format_load, load_average, print_machine
from hashexchange_client import samples
from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "intake" / "static" / "intake"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def reference_photo(data: bytes, seconds: float) -> float:
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs == 0:
        with Image.open(io.BytesIO(data)) as opened:
            pdqhash.compute(np.asarray(opened.convert("RGB"), dtype=np.uint8))
        runs += 1
    return runs / (time.perf_counter() - start)


def reference_phases(data: bytes, runs: int) -> dict[str, float]:
    """Median ms of Pillow's decode (to RGB) and of pdqhash.compute, for the phase table."""
    decode, pdq = [], []
    for _ in range(runs):
        start = time.perf_counter()
        with Image.open(io.BytesIO(data)) as opened:
            pixels = np.asarray(opened.convert("RGB"), dtype=np.uint8)
        middle = time.perf_counter()
        pdqhash.compute(pixels)
        decode.append((middle - start) * 1000)
        pdq.append((time.perf_counter() - middle) * 1000)
    return {"decode": sorted(decode)[runs // 2], "pdq": sorted(pdq)[runs // 2]}


def reference_bytes(megabytes: int) -> float:
    block = os.urandom(4 * 1024 * 1024)
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    start = time.perf_counter()
    for _ in range(megabytes // 4):
        md5.update(block)
        sha.update(block)
    return megabytes / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--video-mb", type=int, default=256)
    parser.add_argument("--phase-runs", type=int, default=5, help="runs timed phase by phase (medians)")
    parser.add_argument("--quick", action="store_true", help="1 s per figure, 32 MB of video, 2 phase runs")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.video_mb, args.phase_runs = 1.0, 32, 2
    print_machine()
    photo = samples.jpeg_bytes(samples.photo_like(4000, 3000, seed=7), quality=85)
    print(f"photo: 4000x3000 JPEG, {len(photo) / 1e6:.1f} MB")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page()
        print(f"browser: Chromium {browser.version}")
        for name in ("digests.js", "pdq.js"):
            page.add_script_tag(content=(STATIC / name).read_text())
        page.evaluate(
            "(b64) => { window.photo = new Blob([Uint8Array.from(atob(b64), c => c.charCodeAt(0))]); }",
            base64.b64encode(photo).decode(),
        )
        timing = """async ([seconds, withDigests]) => {
            let runs = 0; const start = performance.now();
            while (performance.now() - start < seconds * 1000 || runs === 0) {
                await HXPdq.hashBlob(window.photo);
                if (withDigests) await HXDigest.digestBlob(window.photo);
                runs++;
            }
            return runs / ((performance.now() - start) / 1000);
        }"""
        page.evaluate(timing, [0.5, False])  # warm up the JIT
        # Where a photo's time goes, on the page's main thread (median of the runs, ms).
        phases = page.evaluate(
            """async (runs) => {
                const t = {decode: [], pixels: [], pdq: []};
                for (let i = 0; i < runs; i++) {
                    let a = performance.now();
                    const bitmap = await createImageBitmap(window.photo, {imageOrientation: "from-image",
                        colorSpaceConversion: "none", premultiplyAlpha: "none"});
                    let b = performance.now();
                    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
                    const ctx = canvas.getContext("2d", {willReadFrequently: true});
                    ctx.drawImage(bitmap, 0, 0);
                    const data = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
                    let c = performance.now();
                    HXPdq.pdqFromRGBA(data, bitmap.width, bitmap.height);
                    let d = performance.now();
                    bitmap.close();
                    t.decode.push(b - a); t.pixels.push(c - b); t.pdq.push(d - c);
                }
                const median = (xs) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)];
                return {decode: median(t.decode), pixels: median(t.pixels), pdq: median(t.pdq)};
            }""",
            args.phase_runs,
        )
        pdq_rate = page.evaluate(timing, [args.seconds, False])
        page_rate = page.evaluate(timing, [args.seconds, True])
        # The page's worker pool (hasher.js, one per core up to four) on 8 copies of the photo.
        source = "\n".join((STATIC / n).read_text() for n in ("digests.js", "pdq.js", "hasher.js"))
        pool_rate = page.evaluate(
            """async ([source, copies]) => {
                const url = URL.createObjectURL(new Blob([source], {type: "text/javascript"}));
                const n = Math.max(1, Math.min(4, navigator.hardwareConcurrency || 2));
                const workers = Array.from({length: n}, () => new Worker(url));
                const start = performance.now();
                let next = 0;
                await Promise.all(workers.map(w => new Promise(resolve => {
                    const go = () => { if (next >= copies) { resolve(); return; }
                        w.postMessage({id: next++, file: window.photo, kind: "image"}); };
                    w.onmessage = (e) => { if (e.data.type !== "progress") go(); };
                    go();
                })));
                workers.forEach(w => w.terminate());
                return {rate: copies / ((performance.now() - start) / 1000), workers: n};
            }""",
            [source, 8],
        )
        video_rate = page.evaluate(
            """async (mb) => {
                const parts = [], chunk = new Uint8Array(4 * 1024 * 1024);
                for (let i = 0; i < chunk.length; i += 65536) crypto.getRandomValues(chunk.subarray(i, i + 65536));
                for (let i = 0; i < mb / 4; i++) parts.push(chunk);
                const blob = new Blob(parts);
                const start = performance.now();
                await HXDigest.digestBlob(blob);
                return mb / ((performance.now() - start) / 1000);
            }""",
            args.video_mb,
        )
        browser.close()
    ref_photo = reference_photo(photo, args.seconds)
    ref_phases = reference_phases(photo, args.phase_runs)
    ref_bytes = reference_bytes(args.video_mb)
    print(f"load average after: {format_load(load_average())}")
    print(
        f"12 MP photo, PDQ (decode + hash):      {pdq_rate:6.2f} photos/s   "
        f"reference Pillow+pdqhash {ref_photo:6.2f}/s   ratio {pdq_rate / ref_photo:.2f}"
    )
    print(
        f"  per photo, median ms:  decode {phases['decode']:6.0f}   pixels out {phases['pixels']:5.0f}   "
        f"PDQ {phases['pdq']:6.0f}   (reference: Pillow decode {ref_phases['decode']:5.0f}   "
        f"pdqhash {ref_phases['pdq']:5.0f})"
    )
    print(f"12 MP photo, PDQ + MD5 + SHA-256:      {page_rate:6.2f} photos/s")
    print(
        f"12 MP photo, the page's worker pool:   {pool_rate['rate']:6.2f} photos/s   "
        f"({pool_rate['workers']} workers; PDQ + MD5 + SHA-256)"
    )
    print(
        f"video bytes, MD5 + SHA-256 (streamed): {video_rate:6.1f} MB/s      "
        f"reference hashlib {ref_bytes:6.1f} MB/s   ratio {video_rate / ref_bytes:.2f}"
    )


if __name__ == "__main__":
    main()
