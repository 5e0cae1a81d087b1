"""The page's PDQ code against an earlier version of it, in one Chromium tab.

Both versions of intake/static/intake/pdq.js (this checkout's and the one at a git
revision) are loaded side by side and run alternately on the same generated
4000x3000 RGBA pixels, so both see the same load; prints the median time of each, their
ratio, and whether every hash agreed. The CPU model and load average are printed too.

Usage: python bench/intake_pdq_ab.py [--before REV] [--runs 7] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

from harness import format_load, load_average, print_machine
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
PDQ = "intake/static/intake/pdq.js"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

TIMING = """(runs) => {
    const w = 4000, h = 3000, rgba = new Uint8ClampedArray(w * h * 4);
    let x = 7;
    for (let i = 0; i < rgba.length; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        rgba[i] = (x >>> 24) ^ ((i % 16000) >> 6);
    }
    const t = {before: [], after: []};
    let same = true;
    for (let r = 0; r < runs; r++) {
        let s = performance.now(); const a = BEFORE.pdqFromRGBA(rgba, w, h); t.before.push(performance.now() - s);
        s = performance.now(); const b = AFTER.pdqFromRGBA(rgba, w, h); t.after.push(performance.now() - s);
        same = same && a.hash === b.hash && a.quality === b.quality;
    }
    const median = (xs) => xs.sort((p, q) => p - q)[Math.floor(xs.length / 2)];
    return {before: median(t.before), after: median(t.after), same};
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="HEAD~1", help="git revision of the earlier pdq.js")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 runs (make bench)")
    args = parser.parse_args()
    if args.quick:
        args.runs = 3
    before = subprocess.run(
        ["git", "show", f"{args.before}:{PDQ}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    after = (ROOT / PDQ).read_text()
    print_machine()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        print(f"browser: Chromium {browser.version}")
        page.add_script_tag(content=before.replace("root.HXPdq", "root.BEFORE"))
        page.add_script_tag(content=after.replace("root.HXPdq", "root.AFTER"))
        result = page.evaluate(TIMING, args.runs)
        browser.close()
    print(f"load average after: {format_load(load_average())}")
    print(
        f"pdqFromRGBA on 4000x3000 pixels, median of {args.runs} alternating runs: "
        f"{args.before} {result['before']:.0f} ms, this checkout {result['after']:.0f} ms, "
        f"ratio {result['after'] / result['before']:.2f}; every hash the same: {result['same']}"
    )


if __name__ == "__main__":
    main()
