"""Server CPU of one single-query match request, against the framework's floor, in one run.

bench/match.py --api times the whole path through gunicorn; this bench says where a
request's CPU goes. It prepares a fresh PostgreSQL (or SQLite) database with N imported PDQ
hashes, one program, one platform and its key, and the host's index snapshot, then drives
Django's WSGI handler in-process (the full middleware stack, DRF, the real database and
Redis; no socket) and measures CPU per request with `time.thread_time()` for:

- `healthz`      GET /healthz: Django's floor (middleware, routing, a JsonResponse);
- `noop`         POST /api/v1/bench-noop with a one-query body: an authenticated DRF view
                 with the match view's scope that parses the body and answers an empty
                 result: the API's floor (key lookup, permissions, rate limit in Redis,
                 parsing, rendering);
- `match-miss`   POST /api/v1/match, one random PDQ query (no match);
- `match-hit`    POST /api/v1/match, one query 0-31 bits from a stored hash;
- `match-added`  one signed submission stored, then one matching query: the request right
                 after an add, which must first pick the new event up (the add is not timed).

The database's own CPU (the PostgreSQL backend serving this process) is measured from
/proc when the server runs on this machine and reported beside it. Each figure is also
given as a ratio to `noop` and to `healthz` of the same run. `--profile` adds a cProfile
of `noop`, `match-miss` and `match-hit` (top functions by cumulative and by own time) and the SQL
statements each request issues.

    .venv/bin/python bench/match_api.py                        # 200k hashes, private PostgreSQL
    .venv/bin/python bench/match_api.py --profile --requests 2000
    .venv/bin/python bench/match_api.py --postgres-url postgres://postgres@127.0.0.1:54406/postgres
    .venv/bin/python bench/match_api.py --quick                # 20,000 hashes, SQLite (make bench)

Figures: docs/benchmarks/match-api.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (
    ROOT,
    django_env,
    machine_info,
    postgres_server,
    print_machine,
    private_redis,
    process_cpu_seconds,
    run_python,
    stop_on_signals,
    write_results,
)

THRESHOLD = 31


def _setup(env: dict[str, str], workdir: Path, n: int, seed: int) -> tuple[str, list[str]]:
    """Migrate, program + platform + key, import n random PDQ hashes, build the snapshot."""
    import numpy as np

    manage = [str(ROOT / "manage.py")]
    run_python([*manage, "migrate", "-v", "0"], env, what="migrate")
    run_python([*manage, "program_create", "bench", "--name", "Bench", "--signal-types", "pdq"], env, what="program")
    run_python([*manage, "member_create", "bench", "--kind", "platform", "--program", "bench"], env, what="member")
    out = run_python([*manage, "credential_issue", "bench"], env, what="credential")
    token = out.strip().splitlines()[-1].strip()
    codes = np.random.default_rng(seed).integers(0, 2**64, size=(n, 4), dtype=np.uint64)
    raw = codes.tobytes()
    values = [raw[i * 32 : (i + 1) * 32].hex() for i in range(n)]
    listing = workdir / "hashes.txt"
    listing.write_text("\n".join(values) + "\n")
    run_python(
        [*manage, "import_hashes", str(listing), "--program", "bench", "--source", "bench"]
        + ["--signal-type", "pdq", "--no-progress"],
        env,
        what="import",
    )
    listing.unlink()
    build = (
        "import django; django.setup(); from hashes import matching; matching.index_build(signal_type='pdq', full=True)"
    )
    run_python(["-c", build], env, what="snapshot")
    return token, values


def _near(value: str, bits: int, rng: Any) -> str:
    number = int(value, 16)
    for bit in rng.sample(range(256), bits):
        number ^= 1 << bit
    return f"{number:064x}"


def _environ(method: str, path: str, token: str | None, body: bytes = b"") -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
    }
    if token:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return environ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database", choices=["postgres", "sqlite"], default=None, help="default postgres (quick: sqlite)"
    )
    parser.add_argument("--postgres-url", default="", help="a superuser URL; default: a private server")
    parser.add_argument("--hashes", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=1000, help="requests per kind (after 200 warm-up)")
    parser.add_argument("--added", type=int, default=100, help="add-then-match rounds")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="20k hashes, 300 requests, SQLite unless --database")
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args()
    if args.quick:
        args.hashes, args.requests, args.added = 20_000, 300, 30
    args.database = args.database or ("sqlite" if args.quick else "postgres")
    print_machine()
    stop_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="hx-match-api-"))
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(private_redis(workdir))
        if args.database == "postgres":
            server = stack.enter_context(postgres_server(args.postgres_url or None))
            name = f"bench_match_api_{os.getpid()}"
            server.drop_database(name)
            url = server.create_database(name)
            stack.callback(server.drop_database, name)
        else:
            url = f"sqlite:///{workdir / 'db.sqlite3'}"
        env = django_env(url, redis_url, (secrets.token_hex(32), secrets.token_hex(32)))
        env["MATCH_INDEX_DIR"] = str(workdir / "index")
        # One connection for the whole run, so that its backend's CPU can be read from /proc
        # (a gunicorn worker reconnects once a minute with the default 60 s).
        env["DB_CONN_MAX_AGE"] = "36000"
        t0 = time.perf_counter()
        token, values = _setup(env, workdir, args.hashes, args.seed)
        print(f"prepared {args.hashes:,} hashes in {time.perf_counter() - t0:.1f} s ({args.database})", flush=True)
        os.environ.update(env)
        result = measure(args, token, values)
    result["machine"] = machine_info()
    path = write_results("match-api", result)
    print(f"wrote {path}")


def measure(args: argparse.Namespace, token: str, values: list[str]) -> dict[str, Any]:
    import random

    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import clear_url_caches, path
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from config import urls
    from config.wsgi import application
    from members.models import Scope

    class NoopView(APIView):
        """The match view's authentication, permissions, rate limit, parser and renderer; no work."""

        required_scope = Scope.MATCH

        def post(self, request: Any) -> Response:
            request.data  # noqa: B018 - parse the body as the match view does
            return Response({"results": [], "matched": 0})

    urls.urlpatterns.insert(0, path("api/v1/bench-noop", NoopView.as_view()))
    clear_url_caches()

    rng = random.Random(args.seed)
    body = lambda v: json.dumps({"queries": [{"signal_type": "pdq", "value": v}]}).encode()  # noqa: E731
    misses = [body(f"{rng.getrandbits(256):064x}") for _ in range(500)]
    hits = [body(_near(rng.choice(values), rng.randint(0, THRESHOLD), rng)) for _ in range(500)]
    kinds: dict[str, list[tuple[str, str, bytes]]] = {
        "healthz": [("GET", "/healthz", b"")],
        "noop": [("POST", "/api/v1/bench-noop", b) for b in misses],
        "match-miss": [("POST", "/api/v1/match", b) for b in misses],
        "match-hit": [("POST", "/api/v1/match", b) for b in hits],
    }

    def call(method: str, route: str, payload: bytes, auth: bool = True) -> dict[str, Any]:
        status: list[str] = []
        chunks = application(
            _environ(method, route, token if auth and route != "/healthz" else None, payload),
            lambda s, h, exc_info=None: status.append(s),
        )
        data = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        if not status[0].startswith("200"):
            raise SystemExit(f"{method} {route} answered {status[0]}: {data[:300]!r}")
        return json.loads(data)

    # Warm up every path (index loaded, connections open, imports done).
    for i in range(200):
        for calls in kinds.values():
            call(*calls[i % len(calls)])
    answer = call(*kinds["match-hit"][0])
    assert answer["results"][0]["matches"], "a planted query found nothing"
    assert not call(*kinds["match-miss"][0])["results"][0]["matches"]

    backend = _backend_pid(connection)
    rows: dict[str, dict[str, float]] = {}
    for kind, calls in kinds.items():
        cpu, db_cpu = [], 0.0
        db0 = process_cpu_seconds(backend) if backend else 0.0
        for i in range(args.requests):
            c0 = time.thread_time()
            call(*calls[i % len(calls)])
            cpu.append(time.thread_time() - c0)
        if backend:
            db_cpu = process_cpu_seconds(backend) - db0
        rows[kind] = {
            "cpu_ms_mean": statistics.fmean(cpu) * 1000,
            "cpu_ms_p50": statistics.median(cpu) * 1000,
            "db_cpu_ms_mean": db_cpu / args.requests * 1000,
        }
    rows["match-added"] = _added_rounds(args, call, rng)
    floor, django_floor = rows["noop"]["cpu_ms_mean"], rows["healthz"]["cpu_ms_mean"]
    print(f"\n{'request':<12} {'CPU ms mean':>11} {'p50':>7} {'DB ms':>7} {'x noop':>7} {'x healthz':>9}")
    for kind, row in rows.items():
        row["ratio_noop"] = row["cpu_ms_mean"] / floor
        row["ratio_healthz"] = row["cpu_ms_mean"] / django_floor
        print(
            f"{kind:<12} {row['cpu_ms_mean']:11.3f} {row['cpu_ms_p50']:7.3f} {row['db_cpu_ms_mean']:7.3f} "
            f"{row['ratio_noop']:7.2f} {row['ratio_healthz']:9.2f}"
        )
    queries = {}
    for kind in ("noop", "match-miss", "match-hit"):
        with CaptureQueriesContext(connection) as captured:
            call(*kinds[kind][1])
        queries[kind] = [q["sql"][:160] for q in captured.captured_queries]
        print(f"\n{kind}: {len(queries[kind])} SQL statements")
        for sql in queries[kind]:
            print(f"   {sql}")
    result: dict[str, Any] = {
        "database": connection.vendor,
        "hashes": args.hashes,
        "requests": args.requests,
        "rows": rows,
        "queries": queries,
    }
    if args.profile:
        import cProfile
        import pstats

        for kind in ("noop", "match-miss", "match-hit"):
            profiler = cProfile.Profile(time.thread_time)  # CPU, not wall: the machine is shared
            profiler.enable()
            for i in range(args.requests):
                call(*kinds[kind][i % len(kinds[kind])])
            profiler.disable()
            for order in ("cumulative", "tottime"):
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(30)
                text = out.getvalue()
                print(f"\n== profile of {args.requests} x {kind}, by {order}\n{text[text.find('   ncalls') :]}")
    return result


def _added_rounds(args: argparse.Namespace, call: Any, rng: Any) -> dict[str, float]:
    """Store one signed submission (not timed), then time the first match request for it."""
    import base64

    from django.db import connection
    from hashexchange_client import dsse, keys, payloads

    from core.ledger import Actor
    from hashes.services import submissions_create
    from members.models import Member
    from members.services import signing_key_register

    member = Member.objects.get(slug="bench")
    private = keys.generate_private_key()
    public = base64.b64encode(keys.public_key_bytes(private)).decode()
    signing_key_register(member=member, public_key=public, actor=Actor.operator("bench"))
    cpu, db_cpu = [], 0.0
    backend = _backend_pid(connection)
    for _ in range(args.added):
        value = f"{rng.getrandbits(256):064x}"
        payload = payloads.submission_payload(program="bench", signal_type="pdq", value=value)
        envelope = dsse.sign_envelope(payloads.SUBMISSION_TYPE, payload, private)
        results = submissions_create(member=member, items=[envelope])
        assert results[0].status == "accepted", results[0].as_dict()
        query = json.dumps({"queries": [{"signal_type": "pdq", "value": _near(value, 3, rng)}]}).encode()
        db0 = process_cpu_seconds(backend) if backend else 0.0
        c0 = time.thread_time()
        answer = call("POST", "/api/v1/match", query)
        cpu.append(time.thread_time() - c0)
        if backend:
            db_cpu += process_cpu_seconds(backend) - db0
        assert answer["results"][0]["matches"], "a just-added hash did not match"
    return {
        "cpu_ms_mean": statistics.fmean(cpu) * 1000,
        "cpu_ms_p50": statistics.median(cpu) * 1000,
        "db_cpu_ms_mean": db_cpu / args.added * 1000,
    }


def _backend_pid(connection: Any) -> int | None:
    """The PostgreSQL backend serving this process, if it runs on this machine."""
    if connection.vendor != "postgresql":
        return None
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    return pid if Path(f"/proc/{pid}").exists() else None


if __name__ == "__main__":
    main()
