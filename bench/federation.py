"""Federation: bootstrap a new peer, and how long a hash takes from a submission at A to B's feed.

    python bench/federation.py [--hashes 20000] [--samples 10]

Three servers (A, B and C), each a gunicorn on its own SQLite database, one private Redis
(a database number each). Steps:

1. A member of A submits `--hashes` signed hashes (batches of 1,000): A's ingest rate is
   the reference for the import rate below.
2. B adds A as a peer and runs one sync (`peer_sync`, in-process in a child): the whole
   feed of A, every entry checked (origin binding, envelope signature) and stored.
   Reference in the same run: reading the same pages of A's feed without storing them.
   (A has no snapshot yet, so this is the feed-only bootstrap.)
2b. A builds its program's snapshot (exchange/snapshots.py, in-process, timed), and a
   third server C, new, adds A as a peer and runs one sync: it starts from A's snapshot
   (federation/snapshots.py), every entry checked the same way, then reads A's feed
   after it. Compared with step 2 in the same run.
3. Latency: a Celery worker and beat run at B with the default PEER_SYNC_SECONDS; A's
   member submits one hash at a time, and the bench polls B's feed until it is there.

Printed with the CPU model and the load average; results in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from hashexchange_client import dsse, keys, payloads

SYNC_STEP = r"""
import json, time, django
django.setup()
from django.conf import settings
from exchange import crypto
from federation import remote, services
from federation.models import Peer
peer = Peer.objects.get(slug="a")
key = crypto.decrypt(peer.api_key_encrypted)
started, after, entries = time.perf_counter(), 0, 0
while True:
    page = remote.feed_page(peer.base_url, api_key=key, after=after, limit=settings.PEER_PAGE_SIZE)
    entries += len(page["entries"]); after = page["next"]
    if not page["has_more"]:
        break
pull = time.perf_counter() - started
import cProfile, io, os, pstats
profiler = cProfile.Profile() if os.environ.get("BENCH_PROFILE") else None
started = time.perf_counter()
if profiler:
    profiler.enable()
result = services.peer_sync(peer=peer)
sync = time.perf_counter() - started
if profiler:
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
    open(os.environ["BENCH_PROFILE"], "w").write(out.getvalue())
print(json.dumps({"pull_seconds": pull, "pulled": entries, "sync_seconds": sync, "imported": result.imported,
                  "error": result.error}))
"""


# A's snapshot of its program, built in-process (the background task's work), timed.
BUILD_STEP = r"""
import json, time, django
django.setup()
from exchange import snapshots
from members.models import Program
started = time.perf_counter()
built = snapshots.snapshot_build(program=Program.objects.get(slug="ncii"))
print(json.dumps({"seconds": time.perf_counter() - started, "entries": built.entries, "bytes": built.size}))
"""

# A new peer C bootstraps from A: one sync, which starts from A's snapshot.
SNAPSHOT_SYNC_STEP = r"""
import cProfile, io, json, os, pstats, time, django
django.setup()
from federation import services
from federation.models import Peer
peer = Peer.objects.get(slug="a")
profiler = cProfile.Profile() if os.environ.get("BENCH_PROFILE") else None
started = time.perf_counter()
if profiler:
    profiler.enable()
result = services.peer_sync(peer=peer)
seconds = time.perf_counter() - started
if profiler:
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
    open(os.environ["BENCH_PROFILE"] + ".snapshot", "w").write(out.getvalue())
print(json.dumps({"sync_seconds": seconds, "imported": result.imported, "cursor": result.cursor,
                  "error": result.error}))
"""


def manage(env: dict[str, str], *args: str) -> str:
    return harness.run_python(["manage.py", *args], env, what=f"manage.py {args[0]}")


def server_env(workdir: Path, name: str, redis_url: str) -> dict[str, str]:
    db = workdir / f"{name}.sqlite3"
    env = harness.django_env(f"sqlite:///{db}", redis_url, (secrets.token_urlsafe(40), secrets.token_urlsafe(40)))
    return {
        **env,
        "CELERY_BROKER_URL": redis_url,
        "WEBHOOKS_ALLOW_PRIVATE": "1",
        "PEERS_ALLOW_HTTP": "1",
        "MATCH_INDEX_DIR": str(workdir / f"{name}-index"),
        "VAR_DIR": str(workdir / name),
        "SUBMISSION_CLOCK_SKEW_SECONDS": "3600",
    }


def submit(client: harness.Client, key: Any, values: list[str]) -> None:
    for start in range(0, len(values), 1000):
        envelopes = [
            dsse.sign_envelope(
                payloads.SUBMISSION_TYPE, payloads.submission_payload(program="ncii", signal_type="pdq", value=v), key
            )
            for v in values[start : start + 1000]
        ]
        status, body = client.request("POST", "/api/v1/submissions", json.dumps({"envelopes": envelopes}).encode())
        if status not in (200, 201, 207):
            raise harness.BenchError(f"submissions answered {status}: {body[:300]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hashes", type=int, default=20000)
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    harness.stop_on_signals()
    harness.print_machine()
    load_before = harness.load_average()
    with tempfile.TemporaryDirectory(prefix="bench-federation-") as tmp:
        workdir = Path(tmp)
        with harness.private_redis(workdir) as redis_url:
            env_a = server_env(workdir, "a", redis_url.replace("/0", "/1"))
            env_b = server_env(workdir, "b", redis_url.replace("/0", "/2"))
            env_c = server_env(workdir, "c", redis_url.replace("/0", "/3"))
            if os.environ.get("BENCH_PROFILE"):  # cProfile the bootstrap sync into this file
                env_b["BENCH_PROFILE"] = os.environ["BENCH_PROFILE"]
            if os.environ.get("BENCH_PROFILE"):
                env_c["BENCH_PROFILE"] = os.environ["BENCH_PROFILE"]
            for env in (env_a, env_b, env_c):
                manage(env, "migrate", "-v0")
                manage(env, "program_create", "ncii")
            manage(env_a, "member_create", "alice", "--kind", "platform", "--program", "ncii")
            alice = manage(env_a, "credential_issue", "alice").strip().splitlines()[-1]
            manage(env_a, "member_create", "b", "--kind", "peer", "--program", "ncii")
            b_at_a = manage(env_a, "credential_issue", "b").strip().splitlines()[-1]
            manage(env_a, "member_create", "c", "--kind", "peer", "--program", "ncii")
            c_at_a = manage(env_a, "credential_issue", "c").strip().splitlines()[-1]
            manage(env_b, "member_create", "bob", "--kind", "platform", "--program", "ncii")
            bob = manage(env_b, "credential_issue", "bob").strip().splitlines()[-1]
            with (
                harness.gunicorn(env_a, workers=2, logfile=workdir / "a.log") as (port_a, _pid_a),
                harness.gunicorn(env_b, workers=1, logfile=workdir / "b.log") as (port_b, _pid_b),
            ):
                client = harness.Client(port_a, alice)
                key = keys.generate_private_key()
                body = json.dumps({"public_key": keys.public_key_to_b64(key), "algorithm": "ed25519"}).encode()
                status, _ = client.request("POST", "/api/v1/keys", body)
                assert status == 201
                seen: set[str] = set()
                values = [harness.random_pdq(seen) for _ in range(args.hashes)]
                harness.log(f"submitting {args.hashes} signed hashes to A")
                started = time.perf_counter()
                submit(client, key, values)
                ingest = time.perf_counter() - started
                manage(
                    env_b, "peer_add", "a", "--url", f"http://127.0.0.1:{port_a}", "--key", b_at_a, "--program", "ncii"
                )
                harness.log("B bootstraps from A (one sync)")
                step = json.loads(harness.run_python(["-c", SYNC_STEP], env_b, what="bootstrap sync").splitlines()[-1])
                if step["error"] or step["imported"] != args.hashes:
                    raise harness.BenchError(f"bootstrap imported {step['imported']} of {args.hashes}: {step['error']}")
                harness.log("A builds its snapshot; a new peer C bootstraps from it")
                built = json.loads(
                    harness.run_python(["-c", BUILD_STEP], env_a, what="snapshot build").splitlines()[-1]
                )
                manage(
                    env_c, "peer_add", "a", "--url", f"http://127.0.0.1:{port_a}", "--key", c_at_a, "--program", "ncii"
                )
                snap = json.loads(
                    harness.run_python(["-c", SNAPSHOT_SYNC_STEP], env_c, what="snapshot sync").splitlines()[-1]
                )
                if snap["error"] or snap["imported"] != args.hashes:
                    raise harness.BenchError(f"snapshot bootstrap imported {snap['imported']}: {snap['error']}")
                harness.log("latency: worker and beat at B, one hash at a time at A")
                procs = [
                    subprocess.Popen(
                        [sys.executable, "-m", "celery", "-A", "config", *command],
                        cwd=harness.ROOT,
                        env=env_b,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                    for command in (
                        ("worker", "--pool", "solo", "-Q", "celery", "-l", "warning"),
                        ("beat", "-l", "warning", "-s", str(workdir / "beat-schedule")),
                    )
                ]
                reader = harness.Client(port_b, bob)
                latencies: list[float] = []
                try:
                    time.sleep(5)  # beat's first tick
                    cursor = 0
                    while True:
                        status, page = reader.request("GET", f"/api/v1/feed?after={cursor}&limit=5000")
                        data = json.loads(page)
                        cursor = data["next"]
                        if not data["has_more"]:
                            break
                    for _ in range(args.samples):
                        value = harness.random_pdq(seen)
                        sent = time.perf_counter()
                        submit(client, key, [value])
                        while True:
                            status, page = reader.request("GET", f"/api/v1/feed?after={cursor}&limit=100")
                            data = json.loads(page)
                            cursor = data["next"]
                            if any(e.get("hash", {}).get("value") == value for e in data["entries"]):
                                latencies.append(time.perf_counter() - sent)
                                break
                            if time.perf_counter() - sent > 60:
                                raise harness.BenchError("a hash did not reach B within 60 s")
                            time.sleep(0.05)
                        time.sleep(secrets.randbelow(1000) / 1000)
                finally:
                    for proc in procs:
                        harness.stop_process(proc)
    figures = {
        "hashes": args.hashes,
        "ingest_at_a_per_second": args.hashes / ingest,
        "bootstrap_seconds": step["sync_seconds"],
        "bootstrap_entries_per_second": args.hashes / step["sync_seconds"],
        "pull_only_seconds": step["pull_seconds"],
        "bootstrap_over_pull_only": step["sync_seconds"] / step["pull_seconds"],
        "bootstrap_rate_over_ingest_rate": (args.hashes / step["sync_seconds"]) / (args.hashes / ingest),
        "snapshot_build_seconds_at_a": built["seconds"],
        "snapshot_mb": built["bytes"] / 1e6,
        "snapshot_bootstrap_seconds": snap["sync_seconds"],
        "snapshot_bootstrap_entries_per_second": args.hashes / snap["sync_seconds"],
        "feed_bootstrap_over_snapshot_bootstrap": step["sync_seconds"] / snap["sync_seconds"],
        "latency_p50_seconds": harness.percentile(latencies, 0.5),
        "latency_p95_seconds": harness.percentile(latencies, 0.95),
        "latency_samples": len(latencies),
    }
    print(harness.machine_line())
    print(
        f"load average before: {harness.format_load(load_before)}; after: {harness.format_load(harness.load_average())}"
    )
    for name, value in figures.items():
        print(f"  {name:36} {value:.3f}" if isinstance(value, float) else f"  {name:36} {value}")
    path = harness.write_results("federation", {"machine": harness.machine_info(), "figures": figures})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
