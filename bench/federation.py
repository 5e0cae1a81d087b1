"""Federation: bootstrap a new peer, and how long a hash takes from a submission at A to B's feed.

    python bench/federation.py [--hashes 20000] [--samples 10] [--database sqlite|postgres]
    python bench/federation.py --database postgres --hashes 1000000 --direct --feed-hashes 5000

Three servers (A, B and C), each a gunicorn on its own database (SQLite files, or databases
of one private PostgreSQL with durable settings), one private Redis (a database number
each). Steps:

1. A member of A submits `--feed-hashes` signed hashes (batches of 1,000) through A's API:
   A's ingest rate, a reference. With --direct, A's snapshot of `--hashes` other signed
   submissions of that member is made first, without A's ingest (signed in a process per
   core, each entry as A's feed shows it with A's attested key binding, the manifest
   signed with A's key at A's seq): making a million through the API would take hours.
2. B adds A as a peer and runs one sync reading A's whole feed (no snapshot): every entry
   checked (origin binding, envelope signature) and stored. Reference in the same run:
   reading the same pages of A's feed without storing them ("pull only").
2b. Without --direct, A builds its program's snapshot (exchange/snapshots.py, timed).
   A new peer C adds A and runs one sync (`peer_sync`, in a child, timed with its CPU
   seconds, its verifying processes included): A's snapshot, every entry checked and
   stored, then A's feed after it. Reference in the same child just before: the snapshot
   downloaded and every line parsed, unchecked ("read only"). Then C's audit log is
   checked (`auditlog_check`: every leaf and tree hash recomputed).
3. Latency: a Celery worker and beat run at B with the default PEER_SYNC_SECONDS; A's
   member submits one hash at a time, and the bench polls B's feed until it is there.

Printed with the CPU model and the load average; results in bench/results/.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
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
from cryptography.hazmat.primitives import serialization
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

# --direct: A's snapshot of `count` signed submissions of its member, made without A's
# ingest: envelopes signed by the member's key (a process per core), each entry exactly as
# A's feed would show it (A's attested key binding of that key), the file gzip members
# written by the workers, the manifest signed with A's key at A's current seq. A's database
# does not hold these hashes; what is measured is C's side.
DIRECT_STEP = r"""
import base64, gzip, hashlib, json, multiprocessing, os, sys, time, django
django.setup()
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hashexchange_client import dsse, payloads
from core.ledger import format_time
from django.utils import timezone
from exchange import crypto, provenance, snapshots
from members.models import SigningKey

count, member, seed = int(sys.argv[1]), sys.argv[2], base64.b64decode(sys.argv[3])
private = Ed25519PrivateKey.from_private_bytes(seed)
from hashexchange_client import keys as client_keys
key = SigningKey.objects.get(key_id=client_keys.key_id(private))
seq = snapshots.latest_seq()
from django.db import connections
origin = provenance.local_origin(
    server=crypto.server_key_id(), server_public_key=crypto.server_public_key_b64(), member=member, program="ncii",
    key_id=key.key_id, public_key=bytes(key.public_key), valid_from=key.valid_from,
)
at = format_time(timezone.now())
encoder = json.JSONEncoder(separators=(",", ":"))

def chunk(bounds):
    start, end = bounds
    lines = []
    for i in range(start, end):
        value = hashlib.sha256(b"bench-federation-%d" % i).hexdigest()
        payload = payloads.submission_payload(program="ncii", signal_type="pdq", value=value)
        envelope = dsse.sign_envelope(payloads.SUBMISSION_TYPE, payload, private)
        lines.append(encoder.encode({
            "seq": seq, "leaf_index": seq - 1, "kind": "hash.added", "program": "ncii", "at": at,
            "hash": {"id": 10_000_000 + i, "signal_type": "pdq", "value": value},
            "envelopes": [envelope], "signed": True, "imported_from": None, "origin": origin,
        }).encode())
    return gzip.compress(b"\n".join(lines) + b"\n", compresslevel=6, mtime=0)

started = time.perf_counter()
directory = snapshots.snapshot_dir()
directory.mkdir(parents=True, exist_ok=True)
name = f"ncii-{seq:012d}-bench"
digest, size = hashlib.sha256(), 0
bounds = [(start, min(count, start + 5000)) for start in range(0, count, 5000)]
connections.close_all()  # the signing children must not share the connection
pool = multiprocessing.get_context("fork").Pool(os.cpu_count())
with pool, open(directory / f"{name}.ndjson.gz", "wb") as out:
    for member_bytes in pool.imap(chunk, bounds):
        out.write(member_bytes); digest.update(member_bytes); size += len(member_bytes)
described = {"program": "ncii", "seq": seq, "entries": count, "sha256": digest.hexdigest(), "size": size,
             "created_at": format_time(timezone.now()), "name": name}
manifest = snapshots.manifest_payload(**described)
envelope = dsse.sign_envelope(snapshots.SNAPSHOT_TYPE, manifest, crypto.server_private_key())
(directory / f"{name}.json").write_text(json.dumps(envelope))
print(json.dumps({"seconds": time.perf_counter() - started, "entries": count, "bytes": size, "seq": seq}))
"""

# A new peer C bootstraps from A: one sync, which starts from A's snapshot. Before it, in
# the same child, the reference: the snapshot downloaded and every line parsed, unchecked.
SNAPSHOT_SYNC_STEP = r"""
import cProfile, gzip, io, json, os, pstats, resource, tempfile, time, django
django.setup()
from exchange import crypto
from federation import remote, services
from federation.models import Peer
peer = Peer.objects.get(slug="a")
key = crypto.decrypt(peer.api_key_encrypted)
started = time.perf_counter()
answer = remote.snapshot(peer.base_url, api_key=key, program="ncii")
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "s.ndjson.gz")
    remote.download(peer.base_url, answer["url"], api_key=key, dest=__import__("pathlib").Path(path), max_bytes=10**11)
    with gzip.open(path, "rb") as handle:
        read = sum(1 for line in handle if json.loads(line))
read_seconds = time.perf_counter() - started
def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"self": own.ru_utime + own.ru_stime, "children": kids.ru_utime + kids.ru_stime}
cpu_before = cpu()
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
                  "error": result.error, "read_seconds": read_seconds, "read": read,
                  "cpu_seconds": sum(cpu().values()) - sum(cpu_before.values()),
                  "cpu_seconds_storing": cpu()["self"] - cpu_before["self"],
                  "refused": result.refused}))
"""


def manage(env: dict[str, str], *args: str) -> str:
    return harness.run_python(["manage.py", *args], env, what=f"manage.py {args[0]}")


def server_env(workdir: Path, name: str, redis_url: str, database_url: str | None = None) -> dict[str, str]:
    db = database_url or f"sqlite:///{workdir / f'{name}.sqlite3'}"
    env = harness.django_env(db, redis_url, (secrets.token_urlsafe(40), secrets.token_urlsafe(40)))
    return {
        **env,
        "CELERY_BROKER_URL": redis_url,
        "WEBHOOKS_ALLOW_PRIVATE": "1",
        "PEERS_ALLOW_HTTP": "1",
        "MATCH_INDEX_DIR": str(workdir / f"{name}-index"),
        "VAR_DIR": str(workdir / name),
        "SUBMISSION_CLOCK_SKEW_SECONDS": "3600",
        "PEER_TIMEOUT_SECONDS": "600",
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
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", help="a PostgreSQL server to use (superuser); default: a private one")
    parser.add_argument(
        "--postgres-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the private PostgreSQL besides initdb's defaults, e.g. shared_buffers=1GB",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="make A's snapshot of --hashes signed submissions directly (not through A's ingest); "
        "the feed references then use --feed-hashes",
    )
    parser.add_argument(
        "--feed-hashes", type=int, help="hashes submitted through A's API (default: --hashes, or 5,000 with --direct)"
    )
    args = parser.parse_args()
    feed_hashes = args.feed_hashes if args.feed_hashes is not None else (5000 if args.direct else args.hashes)
    harness.stop_on_signals()
    harness.print_machine()
    load_before = harness.load_average()
    with tempfile.TemporaryDirectory(prefix="bench-federation-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        pg = None
        urls: dict[str, str | None] = {"a": None, "b": None, "c": None}
        if args.database == "postgres":
            pg = stack.enter_context(
                harness.postgres_server(args.postgres_url, settings=harness.parse_settings(args.postgres_setting))
            )
            for name in urls:
                urls[name] = pg.create_database(f"hxbench_federation_{name}")
                stack.callback(pg.drop_database, f"hxbench_federation_{name}")
        redis_url = stack.enter_context(harness.private_redis(workdir))
        env_a = server_env(workdir, "a", redis_url.replace("/0", "/1"), urls["a"])
        env_b = server_env(workdir, "b", redis_url.replace("/0", "/2"), urls["b"])
        env_c = server_env(workdir, "c", redis_url.replace("/0", "/3"), urls["c"])
        if os.environ.get("BENCH_PROFILE"):  # cProfile the bootstrap syncs into this file (+ ".snapshot")
            env_b["BENCH_PROFILE"] = env_c["BENCH_PROFILE"] = os.environ["BENCH_PROFILE"]
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
            harness.gunicorn(env_a, workers=2, logfile=workdir / "a.log") as (port_a, pid_a),
            harness.gunicorn(env_b, workers=1, logfile=workdir / "b.log") as (port_b, _pid_b),
        ):
            client = harness.Client(port_a, alice)
            key = keys.generate_private_key()
            body = json.dumps({"public_key": keys.public_key_to_b64(key), "algorithm": "ed25519"}).encode()
            status, _ = client.request("POST", "/api/v1/keys", body)
            assert status == 201
            direct: dict[str, Any] = {}
            if args.direct:
                harness.log(f"A's snapshot of {args.hashes} signed hashes, made directly")
                seed = base64.b64encode(
                    key.private_bytes(
                        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
                    )
                ).decode()
                out = harness.run_python(
                    ["-c", DIRECT_STEP, str(args.hashes), "alice", seed], env_a, what="direct snapshot"
                )
                direct = json.loads(out.splitlines()[-1])
            seen: set[str] = set()
            values = [harness.random_pdq(seen) for _ in range(feed_hashes)]
            harness.log(f"submitting {feed_hashes} signed hashes to A")
            started = time.perf_counter()
            submit(client, key, values)
            ingest = time.perf_counter() - started
            manage(env_b, "peer_add", "a", "--url", f"http://127.0.0.1:{port_a}", "--key", b_at_a, "--program", "ncii")
            harness.log("B bootstraps from A's feed (one sync, no snapshot)")
            env_b["PEER_BOOTSTRAP_FROM_SNAPSHOTS"] = "0"
            step = json.loads(harness.run_python(["-c", SYNC_STEP], env_b, what="bootstrap sync").splitlines()[-1])
            if step["error"] or step["imported"] != feed_hashes:
                raise harness.BenchError(f"bootstrap imported {step['imported']} of {feed_hashes}: {step['error']}")
            built: dict[str, Any] = {"seconds": 0.0, "bytes": direct.get("bytes", 0)}
            if not args.direct:
                harness.log("A builds its snapshot")
                built = json.loads(
                    harness.run_python(["-c", BUILD_STEP], env_a, what="snapshot build").splitlines()[-1]
                )
            manage(env_c, "peer_add", "a", "--url", f"http://127.0.0.1:{port_a}", "--key", c_at_a, "--program", "ncii")
            expected = args.hashes + (feed_hashes if args.direct else 0)
            harness.log(f"a new peer C bootstraps from A's snapshot ({expected} hashes in all)")
            verify_us = one_verification_us()
            roots = {"a": pid_a, "postgres": pg.postmaster_pid() if pg else None}
            with harness.CpuMeter(roots) as meter:
                snap = json.loads(
                    harness.run_python(["-c", SNAPSHOT_SYNC_STEP], env_c, what="snapshot sync").splitlines()[-1]
                )
            if snap["error"] or snap["imported"] != expected:
                raise harness.BenchError(
                    f"snapshot bootstrap imported {snap['imported']} of {expected}: {snap['error']}"
                )
            audit = manage(env_c, "auditlog_check")
            latencies: list[float] = []
            if args.samples:
                harness.log("latency: worker and beat at B, one hash at a time at A")
                latencies = latency(env_b, workdir, port_b, bob, client, key, seen, args.samples)
    figures = {
        "database": args.database,
        "hashes": args.hashes,
        "direct_snapshot": bool(args.direct),
        "feed_hashes": feed_hashes,
        "ingest_at_a_per_second": feed_hashes / ingest,
        "feed_bootstrap_seconds": step["sync_seconds"],
        "feed_bootstrap_entries_per_second": feed_hashes / step["sync_seconds"],
        "feed_pull_only_seconds": step["pull_seconds"],
        "feed_bootstrap_over_pull_only": step["sync_seconds"] / step["pull_seconds"],
        "feed_bootstrap_rate_over_ingest_rate": (feed_hashes / step["sync_seconds"]) / (feed_hashes / ingest),
        "snapshot_made_seconds_at_a": direct.get("seconds", built["seconds"]),
        "snapshot_mb": built["bytes"] / 1e6,
        "snapshot_read_only_seconds": snap["read_seconds"],
        "snapshot_bootstrap_seconds": snap["sync_seconds"],
        "snapshot_bootstrap_entries": expected,
        "snapshot_bootstrap_entries_per_second": expected / snap["sync_seconds"],
        "snapshot_bootstrap_over_read_only": snap["sync_seconds"] / snap["read_seconds"],
        "snapshot_bootstrap_rate_over_ingest_rate": (expected / snap["sync_seconds"]) / (feed_hashes / ingest),
        "snapshot_bootstrap_cpu_seconds_at_c": snap["cpu_seconds"],
        # of which the syncing process itself (reading, storing); the rest is its verifying processes
        "snapshot_bootstrap_cpu_seconds_storing_at_c": snap["cpu_seconds_storing"],
        "cores_during_bootstrap": meter.cores,
        "one_ed25519_verification_us": verify_us,
        "bootstrap_cpu_per_entry_over_one_verification": snap["cpu_seconds"] * 1e6 / expected / verify_us,
        "postgres_settings": pg.settings if pg else None,
        "latency_p50_seconds": harness.percentile(latencies, 0.5) if latencies else None,
        "latency_p95_seconds": harness.percentile(latencies, 0.95) if latencies else None,
        "latency_samples": len(latencies),
    }
    print(harness.machine_line())
    print(
        f"load average before: {harness.format_load(load_before)}; after: {harness.format_load(harness.load_average())}"
    )
    if audit:
        print(f"C's auditlog_check: {audit.strip().splitlines()[-1]}")
    for name, value in figures.items():
        print(f"  {name:44} {value:.3f}" if isinstance(value, float) else f"  {name:44} {value}")
    path = harness.write_results("federation", {"machine": harness.machine_info(), "figures": figures})
    print(f"results: {path}")
    return 0


def one_verification_us(count: int = 3000) -> float:
    """CPU µs of one Ed25519 verification of an envelope's PAE as the server makes it (the
    bootstrap's reference), in this process just before the bootstrap."""
    private = keys.generate_private_key()
    envelope = dsse.sign_envelope(payloads.SUBMISSION_TYPE, b"x" * 300, private)
    message = dsse.pae(payloads.SUBMISSION_TYPE, b"x" * 300)
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    public = private.public_key()
    started = time.process_time()
    for _ in range(count):
        if not dsse.verify_signature(public, signature, message):
            raise harness.BenchError("the reference verification failed")
    return (time.process_time() - started) * 1e6 / count


def latency(
    env_b: dict[str, str],
    workdir: Path,
    port_b: int,
    bob: str,
    client: harness.Client,
    key: Any,
    seen: set[str],
    samples: int,
) -> list[float]:
    """From a submission at A to its first appearance in B's feed, with B's worker and beat."""
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
        for _ in range(samples):
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
    return latencies


if __name__ == "__main__":
    sys.exit(main())
