"""The whole test suite against real services, on SQLite and on PostgreSQL: what `make test` runs.

    python -m dev.testrun [extra pytest arguments]

The suite talks to a real Redis (rate limits, the Celery broker) and must pass on both
databases the project supports, so this starts what is missing, runs pytest once per
database, stops what it started (also on Ctrl-C or SIGTERM), and ends with one line,
`N passed, N failed`, that sums both runs for CI.

Both databases run at the same time (the suite waits on workers, servers and receivers
much of the time, so two runs share two cores well): SQLite's output is shown as it comes,
PostgreSQL's is kept in var/test-output-postgres.log and shown when SQLite's run ends. Each
run has its own VAR_DIR (var/test-run-<database>) and its own Redis database number, so the
runs share no files, queues or keys. On the second database only the tests that reach the
database run (tests/conftest.py `uses_database`): the rest would repeat the first run to the
byte.

Environment:
  TEST_DATABASES       sqlite,postgres (default both), or one of them.
  TEST_SERIAL          1: run the databases one after the other (output all live).
  TEST_REDIS_URL       a Redis to use; otherwise one is started on 127.0.0.1:TEST_REDIS_PORT,
                       without persistence, data in var/test-redis.
  TEST_POSTGRES_URL    a PostgreSQL (superuser) to use; otherwise a private cluster in
                       var/test-postgres is started on 127.0.0.1:TEST_POSTGRES_PORT.
The default ports are this checkout's own (dev.services.checkout_ports, derived from its
path), so that two checkouts testing at once never flush each other's Redis or share a
test database; the first lines of the output name them.

pytest gets REDIS_URL (db 0 of the test Redis), TEST_REDIS_SERVER (the redis-server binary,
for tests that stop and restart Redis on ports of their own), and DATABASE_URL for the
PostgreSQL run only (unset, settings use SQLite with the test file var/test.sqlite3). The
developer's .env is not read (ENV_FILE=/dev/null unless ENV_FILE is set), so that a local
DATABASE_URL never points the tests at a real database and runs here match CI.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dev.services import (
    ServiceError,
    checkout_ports,
    ensure_postgres,
    ensure_redis,
    find_redis_server,
    stop_process,
)

ROOT = Path(__file__).resolve().parent.parent
DATABASES = ("sqlite", "postgres")
INTERRUPT_GRACE_SECONDS = 60.0
EXIT_NO_TESTS = 5
EXIT_INTERRUPTED = 130

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|rerun)\b")
# pytest's closing line: "==== 3 passed, 1 skipped in 2.01s ====" or, with -q, "3 passed in 2.01s".
_CLOSING = re.compile(r"\bin \d+(\.\d+)?s\b|no tests ran")


@dataclass
class RunResult:
    """One pytest run: its exit code, wall time and the counts from its closing line."""

    database: str
    code: int
    seconds: float
    closing_line: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def passed(self) -> int:
        return self.counts.get("passed", 0)

    @property
    def failed(self) -> int:
        """Failures and errors alike: an error in a fixture is a test that did not pass."""
        return self.counts.get("failed", 0) + self.counts.get("error", 0) + self.counts.get("errors", 0)

    @property
    def skipped(self) -> int:
        return self.counts.get("skipped", 0)


class _Stop:
    """Signal state: Ctrl-C/SIGTERM ask pytest to stop (with SIGINT, so that it tears down) and
    skip the runs not yet started; pytest is killed if it has not stopped within a minute."""

    def __init__(self) -> None:
        self.requested = False
        self.running: set[subprocess.Popen[bytes]] = set()

    def handle(self, signum: int, frame: object) -> None:
        first = not self.requested
        self.requested = True
        for proc in list(self.running):
            if proc.poll() is not None:
                continue
            # Every signal is passed on: pytest can swallow one (a KeyboardInterrupt raised inside
            # a __del__ is only a warning), and a second Ctrl-C should still get through.
            print(f"\ntestrun: signal {signum}: asking pytest to stop", file=sys.stderr, flush=True)
            proc.send_signal(signal.SIGINT)  # pytest runs fixture teardown (stops workers) on SIGINT
            if first:
                timer = threading.Timer(INTERRUPT_GRACE_SECONDS, _kill_if_running, args=(proc,))
                timer.daemon = True
                timer.start()


def _kill_if_running(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()


STOP = _Stop()


def parse_closing_line(lines: Sequence[str]) -> tuple[str, dict[str, int]]:
    """pytest's last summary line and its counts (`{"passed": 3, "failed": 1}`)."""
    for line in reversed(lines):
        plain = _ANSI.sub("", line).strip()
        if plain and _CLOSING.search(plain):
            counts: dict[str, int] = {}
            for number, word in _COUNT.findall(plain):
                counts[word] = counts.get(word, 0) + int(number)
            return plain.strip("= "), counts
    last = next((_ANSI.sub("", line).strip() for line in reversed(lines) if line.strip()), "")
    return last, {}


def run_pytest(database: str, env: dict[str, str], args: Sequence[str], *, log: Path | None = None) -> RunResult:
    """Run pytest once and keep the tail for the summary; its output is echoed as it comes, or,
    given `log`, written there (`show_log` echoes it later)."""
    command = [sys.executable, "-m", "pytest", *args]
    say(f"\n=== testrun: pytest on {database}: {' '.join(command[1:])}" + (f" (output: {log})" if log else ""))
    tail: deque[str] = deque(maxlen=40)
    started = time.monotonic()
    # Its own session: a terminal's Ctrl-C reaches only us, and we pass exactly one SIGINT on.
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    STOP.running.add(proc)
    if STOP.requested:
        STOP.handle(signal.SIGINT, None)
    assert proc.stdout is not None
    out = open(log, "wb") if log else sys.stdout.buffer  # noqa: SIM115 - closed below
    try:
        for raw in iter(proc.stdout.readline, b""):
            out.write(raw)
            out.flush()
            tail.append(raw.decode("utf-8", errors="replace").rstrip("\n"))
    finally:
        if log:
            out.close()
    code = proc.wait()
    STOP.running.discard(proc)
    closing, counts = parse_closing_line(list(tail))
    if code == EXIT_NO_TESTS and counts.get("deselected") and env.get("TEST_DATABASE_TESTS_ONLY") == "1":
        code = 0  # the tests asked for reach no database: the first run was their run
    return RunResult(database, code, time.monotonic() - started, closing, counts)


def show_log(log: Path, done: threading.Event) -> None:
    """Echo a log another run is writing: what it has so far, then what it adds until it ends."""
    say(f"\n=== testrun: the output so far of {log.name}, then as it comes")
    out = sys.stdout.buffer
    with open(log, "rb") as source:
        while True:
            chunk = source.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
            elif done.is_set():
                rest = source.read()
                out.write(rest)
                out.flush()
                return
            else:
                time.sleep(0.5)


def run_databases(runs: Sequence[tuple[str, dict[str, str]]], args: Sequence[str], var_dir: Path) -> list[RunResult]:
    """The first run's output live; the others at the same time, each into its log, shown after."""
    results: dict[str, RunResult] = {}
    threads: list[tuple[threading.Thread, threading.Event, Path]] = []
    for database, env in runs[1:]:
        log = var_dir / f"test-output-{database}.log"
        log.write_bytes(b"")
        done = threading.Event()

        def work(database: str = database, env: dict[str, str] = env, log: Path = log, done: threading.Event = done):
            try:
                results[database] = run_pytest(database, env, args, log=log)
            except Exception as exc:  # noqa: BLE001 - a run that could not run is a failed run, not a missing one
                results[database] = RunResult(database, 1, 0.0, f"could not run pytest: {exc}")
            finally:
                done.set()

        thread = threading.Thread(target=work, name=f"pytest-{database}", daemon=True)
        thread.start()
        threads.append((thread, done, log))
    first, env = runs[0]
    results[first] = run_pytest(first, env, args)
    for thread, done, log in threads:
        show_log(log, done)
        thread.join()
    return [results[database] for database, _ in runs if database in results]


def say(line: str) -> None:
    print(line, flush=True)


def redis_db0(url: str) -> str:
    """The same Redis URL with database 0, the one the settings and tests use."""
    return redis_db(url, 0)


def redis_db(url: str, number: int) -> str:
    """The same Redis URL with database `number` (one per run when the databases run at once)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{number}"))


def selected_databases() -> list[str]:
    raw = os.environ.get("TEST_DATABASES") or ",".join(DATABASES)
    chosen = [name.strip().lower() for name in raw.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in DATABASES]
    if unknown or not chosen:
        raise ServiceError(f"TEST_DATABASES={raw!r}: use a comma-separated list of {', '.join(DATABASES)}.")
    return list(dict.fromkeys(chosen))


def pytest_environment(redis_url: str, redis_server: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ENV_FILE", os.devnull)
    env["REDIS_URL"] = redis_url
    env["TEST_REDIS_SERVER"] = redis_server
    for name in ("CELERY_BROKER_URL", "CACHE_URL", "DATABASE_URL"):  # all follow REDIS_URL / the run
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    if sys.stdout.isatty() and "NO_COLOR" not in env:
        env.setdefault("PY_COLORS", "1")  # pytest sees a pipe; keep the colours a terminal would get
    return env


def describe(result: RunResult) -> str:
    if result.code == EXIT_NO_TESTS:
        verdict = "FAILED (exit 5: pytest collected no tests; an empty suite is not a pass)"
    elif result.ok:
        verdict = "ok"
    else:
        verdict = f"FAILED (exit {result.code})"
    return f"  {result.database:<9} {result.seconds:7.1f}s  {verdict}: {result.closing_line or '(no summary line)'}"


def total_line(results: Sequence[RunResult]) -> str:
    passed = sum(result.passed for result in results)
    failed = sum(result.failed for result in results)
    skipped = sum(result.skipped for result in results)
    return f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Start services, run pytest per database, stop services; 0 only if every run passed."""
    pytest_args = list(sys.argv[1:] if argv is None else argv)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, STOP.handle)
    started = time.monotonic()
    var_dir = ROOT / "var"
    var_dir.mkdir(exist_ok=True)
    redis_proc: subprocess.Popen | None = None
    stop_postgres: Callable[[], None] | None = None
    results: list[RunResult] = []
    try:
        databases = selected_databases()
        ports = checkout_ports(ROOT)
        redis_port = int(os.environ.get("TEST_REDIS_PORT") or ports.test_redis)
        redis_url = os.environ.get("TEST_REDIS_URL") or f"redis://127.0.0.1:{redis_port}/0"
        redis_proc = ensure_redis(redis_url, var_dir / "test-redis", persist=False)
        say(f"testrun: Redis {redis_url} ({'started' if redis_proc else 'already running'})")
        env = pytest_environment(redis_db0(redis_url), find_redis_server())
        postgres_url = ""
        if "postgres" in databases and not STOP.requested:
            port = int(os.environ.get("TEST_POSTGRES_PORT") or ports.test_postgres)
            postgres_url, stop_postgres = ensure_postgres(var_dir / "test-postgres", port)
            say(f"testrun: PostgreSQL {postgres_url} ({'started' if stop_postgres else 'already running'})")
        runs = []
        for number, database in enumerate(databases):
            run_env = dict(env, DATABASE_URL=postgres_url) if database == "postgres" else dict(env)
            if number:
                run_env["TEST_DATABASE_TESTS_ONLY"] = "1"
            runs.append((database, run_env))
        if len(runs) > 1 and os.environ.get("TEST_SERIAL") != "1":
            for number, (database, run_env) in enumerate(runs):
                run_env["REDIS_URL"] = redis_db(redis_url, number)
                run_env["VAR_DIR"] = str(var_dir / f"test-run-{database}")
                Path(run_env["VAR_DIR"]).mkdir(exist_ok=True)
            if not STOP.requested:
                results = run_databases(runs, pytest_args, var_dir)
        else:
            for database, run_env in runs:
                if STOP.requested:
                    break
                results.append(run_pytest(database, run_env, pytest_args))
    except ServiceError as exc:
        say(f"testrun: {exc}")
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # let the cleanup finish
            signal.signal(signum, signal.SIG_IGN)
        if stop_postgres is not None:
            stop_postgres()
        if redis_proc is not None:
            say(f"testrun: stopping the test Redis (pid {redis_proc.pid})")
            stop_process(redis_proc)

    say("\n=== testrun summary")
    for result in results:
        say(describe(result))
    say(f"  total     {time.monotonic() - started:7.1f}s wall time")
    if STOP.requested:
        say("testrun: interrupted")
    say(total_line(results))
    if STOP.requested:
        return EXIT_INTERRUPTED
    return 0 if results and all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
