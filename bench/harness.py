"""Plumbing the benches share: the machine line, signals, ports, CPU accounting, the
PostgreSQL, Redis and gunicorn a bench starts, the environment of its Django children,
the HTTP client, results files.

A bench imports it as `import harness` or `from harness import ...`: Python puts the
folder of the script it runs (`python bench/x.py`) first on sys.path. Importing it also
makes the project importable: the repository root (for dev/ here, and for the Django apps
in the benches' in-process steps) and, in a checkout where the client package is not
installed, client/src. Import it before `hashexchange_client`.

Only the standard library is imported at module level. bench/match.py runs the index it
compares against under another Python (--reference-python) that lacks the project's
requirements, and dev/services.py needs the `redis` package, so it is imported where it
is used.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import http.client
import importlib.util
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if importlib.util.find_spec("hashexchange_client") is None:  # a checkout without `pip install ./client`
    sys.path.insert(0, str(ROOT / "client" / "src"))

SERVER_START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 600.0
# The per-credential rate limit (1200 requests/min by default) would throttle batches of
# 100 at a few thousand submissions/s; the throttle still runs, with a limit out of reach.
BENCH_RATE_LIMIT = "1000000/min"
# PostgreSQL settings worth stating next to any figure measured on it.
POSTGRES_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "max_wal_size",
    "checkpoint_timeout",
    "effective_io_concurrency",
)
DURABLE_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


class BenchError(RuntimeError):
    """The bench could not run, or the server gave a wrong result; the message says which."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _services() -> ModuleType:
    """dev/services.py (private Redis and PostgreSQL), imported on first use; see the module docstring."""
    from dev import services

    return services


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited within `timeout` seconds (dev/services.py's)."""
    _services().stop_process(proc, timeout)


def tail(path: Path, lines: int = 20) -> str:
    """The end of a log file, for messages that must say why a server did not start."""
    return _services().tail(path, lines)


# The machine ----------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages, or None where the system does not say."""
    with contextlib.suppress(OSError):
        return os.getloadavg()
    return None


def format_load(load: tuple[float, float, float] | None) -> str:
    return " ".join(f"{value:.2f}" for value in load) if load else "unknown"


def machine_line() -> str:
    """One line naming the machine a bench runs on and how busy it is as the bench starts."""
    return (
        f"machine: {cpu_model() or 'unknown CPU'}, {os.cpu_count()} logical CPUs, "
        f"load average {format_load(load_average())}"
    )


def print_machine(prefix: str = "") -> None:
    """Print the machine line; every bench does this first, so each output says where it ran."""
    print(f"{prefix}{machine_line()}", flush=True)


def machine_info() -> dict[str, Any]:
    """What a figure depends on: CPUs, memory, Python and library versions, the commit."""
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    versions: dict[str, str] = {}
    from importlib import metadata

    for package in ("Django", "djangorestframework", "gunicorn", "psycopg", "cryptography"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_average": load_average(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "packages": versions,
        "commit": commit,
    }


# Signals and ports ----------------------------------------------------------------------------


def stop_on_signals() -> None:
    """Make SIGTERM and SIGINT end the bench through its clean-up, which stops the servers
    it started and drops its databases.

    Python's default SIGTERM ends the process on the spot, and a bench started in the
    background by a non-interactive shell inherits an ignored SIGINT; either way gunicorn,
    PostgreSQL and Redis would be left running.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def spare_port() -> int:
    """A TCP port that is free right now on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# CPU accounting (Linux /proc) -----------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU ticks of the process and of its children it has reaped)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
        table[int(entry)] = (int(fields[1]), sum(int(value) for value in fields[11:15]))
    return table


def tree_cpu_seconds(root: int | None, table: dict[int, tuple[int, int]] | None = None) -> float:
    """CPU seconds used so far by `root` and every process under it, exited ones included.

    An exited child's time is in its parent's reaped-children counters, and a live one's
    in its own, so each tick is counted once. `table` is a snapshot of the process table
    (read now if not given), so that several trees can be measured at one instant.
    """
    if table is None:
        table = _process_table()
    if root is None or root not in table:
        return 0.0
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (parent, _ticks) in table.items():
        children[parent].append(pid)
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        total += table[pid][1]
        pending.extend(children.get(pid, ()))
    return total / CLOCK_TICKS


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads, not its children), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat; idle and I/O wait are not busy."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values[:8])
        return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS
    return 0.0, 0.0


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent not idle since boot (/proc/stat)."""
    return machine_cpu_times()[0]


class CpuMeter:
    """Where the cores went during a measurement: the named process trees, this process
    (the client), its children that exited and were reaped meanwhile ("children", e.g. a
    timed command), and everything else on the machine (other users' work, the kernel).

    Figures are in cores (CPU seconds per second of wall time), so on 2 cores they add
    up to at most 2; "other" well above 0 means the measurement was disturbed.
    """

    def __init__(self, roots: dict[str, int | None]) -> None:
        self.roots = roots

    def _sample(self) -> dict[str, float]:
        table = _process_table()
        times = os.times()
        sample = {name: tree_cpu_seconds(pid, table) for name, pid in self.roots.items()}
        sample["client"] = times.user + times.system
        sample["children"] = times.children_user + times.children_system
        sample["machine"] = machine_busy_seconds()
        return sample

    def __enter__(self) -> CpuMeter:
        self.started, self.before = time.perf_counter(), self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        after = self._sample()
        wall = time.perf_counter() - self.started
        used = {name: (after[name] - self.before[name]) / wall for name in after}
        machine = used.pop("machine")
        used["other"] = max(0.0, machine - sum(used.values()))
        self.cores = {name: round(value, 2) for name, value in used.items()}


# PostgreSQL and Redis -------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    """`url` with its path replaced by database `name`."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@dataclass
class PostgresServer:
    """A PostgreSQL server the bench may create and drop databases on."""

    admin_url: str
    settings: dict[str, str]
    started_here: bool
    stop: Callable[[], None] | None = None

    def execute(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]

    def create_database(self, name: str, template: str | None = None) -> str:
        clause = f" TEMPLATE {template}" if template else ""
        self.execute(f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}{clause}")
        return with_database(self.admin_url, name)

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def postmaster_pid(self) -> int | None:
        """The server's main process, when it runs on this machine and we may read its files."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            data = str(conn.execute("SHOW data_directory").fetchone()[0])  # type: ignore[index]
        try:
            return int((Path(data) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


def _postgres_settings(admin_url: str, extra: Sequence[str] = ()) -> dict[str, str]:
    import psycopg

    names = list(dict.fromkeys([*POSTGRES_SETTINGS, *extra]))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in names}  # type: ignore[index]


def parse_settings(pairs: Sequence[str]) -> dict[str, str]:
    """NAME=VALUE strings (from --postgres-setting) as a dict."""
    settings: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[a-z_]+", name.strip()):
            raise BenchError(f"--postgres-setting takes NAME=VALUE, e.g. shared_buffers=2GB; got {pair!r}")
        settings[name.strip()] = value.strip()
    return settings


@contextlib.contextmanager
def postgres_server(
    url: str | None, *, unsafe: bool = False, settings: dict[str, str] | None = None
) -> Iterator[PostgresServer]:
    """The server at `url`, or a private one on a spare port, stopped and deleted afterwards.

    dev/services.py starts its clusters with fsync, synchronous_commit and
    full_page_writes off, which suits throwaway test databases but would flatter every
    write-heavy figure; unless `unsafe`, those three are set back to PostgreSQL's
    defaults with ALTER SYSTEM before anything is measured. Every other setting is
    initdb's default, unless `settings` (--postgres-setting) says otherwise; the server
    is restarted if one of them needs it (shared_buffers does).
    """
    settings = dict(settings or {})
    if url:
        if settings:
            raise BenchError("--postgres-setting applies only to the server the bench starts itself")
        admin = with_database(url, "postgres")
        yield PostgresServer(admin, _postgres_settings(admin), started_here=False)
        return
    services = _services()
    port = spare_port()
    workdir = Path(tempfile.gettempdir()) / f"hashexchange-bench-postgres-{port}"
    os.environ.pop("TEST_POSTGRES_URL", None)  # ensure_postgres would use that server instead
    log(f"starting a private PostgreSQL on 127.0.0.1:{port} (data in {workdir})")
    devurl, stop = services.ensure_postgres(workdir, port)
    admin = with_database(devurl, "postgres")
    try:
        server = PostgresServer(admin, {}, started_here=True, stop=stop)
        wanted = {**({} if unsafe else DURABLE_SETTINGS), **settings}
        if wanted:
            quoted = {name: "'" + value.replace("'", "''") + "'" for name, value in wanted.items()}
            server.execute(*(f"ALTER SYSTEM SET {name} = {value}" for name, value in quoted.items()))
            server.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)  # the postmaster passes the reload on to new backends asynchronously
            import psycopg

            with psycopg.connect(admin, autocommit=True) as conn:
                pending = conn.execute("SELECT count(*) FROM pg_settings WHERE pending_restart").fetchone()[0]  # type: ignore[index]
            if pending:
                log("restarting PostgreSQL for settings that need it")
                stop()
                devurl, stop = services.ensure_postgres(workdir, port)
                server.stop = stop
        server.settings = _postgres_settings(admin, list(settings))
        if not unsafe and any(server.settings[name] != value for name, value in DURABLE_SETTINGS.items()):
            raise BenchError(f"PostgreSQL did not take the durable settings: {server.settings}")
        yield server
    finally:
        if stop is not None:
            stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """A Redis for the rate limiter on a spare port, without persistence; stopped afterwards."""
    port = spare_port()
    proc = _services().start_redis(port, workdir / "redis", persist=False)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)


# Django children ------------------------------------------------------------------------------


def django_env(database_url: str, redis_url: str, secrets_: tuple[str, str]) -> dict[str, str]:
    """Environment for manage.py, gunicorn and the internal steps: this database, nothing from .env.

    SECRET_KEY and API_KEY_PEPPER are set because the system checks refuse the
    development default with DEBUG off; the pepper must be the same in every process
    so that the API key issued in one verifies in the others.
    """
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ENV_FILE": "/dev/null",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets_[0],
        "API_KEY_PEPPER": secrets_[1],
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "API_RATE_LIMIT": BENCH_RATE_LIMIT,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    }


def run_python(args: Sequence[str], env: dict[str, str], *, what: str) -> str:
    """Run a Python child (an internal step or manage.py); return its stdout, or fail saying why."""
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(
            f"{what} failed with code {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result.stdout


# gunicorn and the HTTP client -----------------------------------------------------------------


class Client:
    """One keep-alive-capable HTTP connection to the bench's gunicorn (stdlib, little CPU)."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        try:
            self.conn.request(method, path, body=body, headers=self.headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # gunicorn's sync workers close after each response; reconnect once
            self.conn.request(method, path, body=body, headers=self.headers)
            response = self.conn.getresponse()
            return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def gunicorn(
    env: dict[str, str], *, workers: int, logfile: Path, app: str = "config.wsgi:application"
) -> Iterator[tuple[int, int]]:
    """gunicorn serving config.wsgi (or `app`, a WSGI module in bench/, for a reference run)
    on a spare 127.0.0.1 port; yields (port, master pid) once it answers."""
    port = spare_port()
    command = [
        sys.executable, "-m", "gunicorn", app,
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
        "--worker-class", "sync",
        "--timeout", str(int(REQUEST_TIMEOUT)),
        "--log-level", "warning",
        *(["--pythonpath", str(ROOT / "bench")] if app != "config.wsgi:application" else []),
    ]  # fmt: skip
    with logfile.open("ab") as output:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise BenchError(f"gunicorn exited with code {proc.returncode}:\n{tail(logfile)}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"gunicorn did not answer within {SERVER_START_TIMEOUT:.0f} s")
            time.sleep(0.1)
        yield port, proc.pid
    finally:
        stop_process(proc)


# Data and results -----------------------------------------------------------------------------


def random_pdq(seen: set[str]) -> str:
    """A PDQ value like a real photo's (96..160 of 256 bits set), not in `seen`."""
    while True:
        value = secrets.token_hex(32)
        if value not in seen and 96 <= int(value, 16).bit_count() <= 160:
            seen.add(value)
            return value


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: with few samples p99 is the slowest, not an interpolation."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
