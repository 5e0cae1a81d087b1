"""The whole exchange on one machine for development: what `make run` runs.

    python -m dev.server

A fresh clone must come up with one command, so this brings up Redis (unless one answers
at REDIS_URL), migrates, seeds the demo member and prints a fresh API key, then runs the
web server, one Celery worker and Celery beat as its children, with their output prefixed
by name. Ctrl-C or SIGTERM stops everything it started and exits 0; if any child dies the
rest are stopped and it exits 1 naming the child, because a half-running stack (say, no
worker) looks healthy while silently doing nothing.

Configuration comes from the environment and .env (real variables win), as in
config/settings.py: PORT (8000), REDIS_URL, VAR_DIR (var), DEBUG (1 here if unset: the
settings refuse the development SECRET_KEY without it). A missing .env is copied from
.env.example; if neither sets REDIS_URL, this checkout's own Redis port
(dev.services.checkout_ports) is written into .env, so that `manage.py` run by hand
uses the same Redis and no two checkouts share a Celery queue.

Each child runs in its own process group, so a terminal's Ctrl-C reaches only this
process, which then stops the children in order: web and Celery first (the worker
finishes its task and acknowledges it), Redis last.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values, load_dotenv

from dev.services import ServiceError, checkout_ports, ensure_redis, is_loopback, redis_dir, stop_process

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8000
HEALTH_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_print_lock = threading.Lock()
_stop_requested = threading.Event()


class StartupError(RuntimeError):
    """A step before the banner failed; the message says which and why."""


class Interrupted(Exception):
    """Ctrl-C, SIGTERM or SIGHUP arrived: stop what was started and exit 0."""


def say(line: str, stream: IO[str] | None = None) -> None:
    """Print a whole line at once: children's reader threads print at the same time."""
    out = stream or sys.stdout
    with _print_lock:
        out.write(line if line.endswith("\n") else line + "\n")
        out.flush()


def load_env_file() -> None:
    """.env (or ENV_FILE) into the environment with python-dotenv, real variables winning,
    exactly as config/settings.py loads it.

    Done here too because PORT, REDIS_URL and VAR_DIR are needed before any Django code
    runs; the children then inherit the result.
    """
    load_dotenv(os.environ.get("ENV_FILE", ROOT / ".env"), override=False)


def prepare_env_file(root: Path = ROOT) -> list[str]:
    """Create .env from .env.example if missing, and give it this checkout's own REDIS_URL
    unless one is set (in .env or the environment). Returns what it did, to print.

    Left alone when ENV_FILE names another file: that file is the operator's.
    """
    if os.environ.get("ENV_FILE"):
        return []
    notes = []
    path = root / ".env"
    if not path.exists() and (root / ".env.example").exists():
        shutil.copyfile(root / ".env.example", path)
        notes.append(f"created {path} from .env.example")
    if "REDIS_URL" in os.environ or (path.exists() and dotenv_values(path).get("REDIS_URL")):
        return notes
    port = checkout_ports(root).redis
    with path.open("a") as env_file:
        env_file.write(
            "\n# This checkout's own Redis (written by make run; the port is derived from the checkout's path,\n"
            "# so other checkouts and a system Redis on 6379 are not shared). Change it here if you like.\n"
            f"REDIS_URL=redis://127.0.0.1:{port}/0\n"
        )
    notes.append(f"this checkout's own Redis is on port {port}; REDIS_URL written to {path}")
    return notes


def redis_sharing_note(url: str, own_dir: Path) -> str:
    """Why a Redis that was already running may not be this checkout's, or "" if it is.

    A Redis that another checkout (or another service) uses shares its Celery queue with
    this one: tasks queued here would run there, against that checkout's database.
    """
    found = redis_dir(url)
    if found is None or Path(found).resolve() == own_dir.resolve():
        return ""
    return (
        f"WARNING: this Redis keeps its data in {found}, not in {own_dir}: another checkout or service "
        "uses it, and shares its task queue with this one. Give this checkout its own: set REDIS_URL in .env "
        f"(e.g. redis://127.0.0.1:{checkout_ports(ROOT).redis}/0)."
    )


@dataclass
class Child:
    """A process this server started, and the thread that copies its output to the terminal."""

    name: str
    proc: subprocess.Popen[bytes]
    reader: threading.Thread | None = None
    lines: list[str] = field(default_factory=list)


def _pump(child: Child, stream: IO[bytes], *, keep: bool, echo: bool) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        if keep:
            child.lines.append(line)
        if echo:
            say(f"[{child.name}] {line}")
    stream.close()


def spawn(name: str, args: Sequence[str], env: dict[str, str], *, capture_stdout: bool = False) -> Child:
    """Start `args` in its own session; echo its output prefixed by `name`.

    With `capture_stdout`, stdout is kept (not echoed) for the caller and stderr is echoed.
    """
    proc = subprocess.Popen(
        list(args),
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_stdout else subprocess.STDOUT,
        start_new_session=True,
    )
    child = Child(name, proc)
    assert proc.stdout is not None
    child.reader = threading.Thread(
        target=_pump,
        args=(child, proc.stdout),
        kwargs={"keep": capture_stdout, "echo": not capture_stdout},
        daemon=True,
    )
    child.reader.start()
    if capture_stdout:
        assert proc.stderr is not None
        threading.Thread(
            target=_pump, args=(child, proc.stderr), kwargs={"keep": False, "echo": True}, daemon=True
        ).start()
    return child


def stop_children(children: list[Child], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every child at once, wait, then SIGKILL each one's whole process group.

    The group kill also ends what a child left behind (a Celery pool process, say).
    """
    for child in reversed(children):
        if child.proc.poll() is None:
            say(f"devserver: stopping {child.name} (pid {child.proc.pid})")
            try:
                child.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"devserver: {child.name} did not stop within {timeout:.0f}s; killing it")
        _kill_group(child.proc.pid)
        child.proc.wait()
    for child in children:
        if child.reader is not None:
            child.reader.join(timeout=2)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_step(name: str, args: Sequence[str], env: dict[str, str], *, capture_stdout: bool = False) -> list[str]:
    """Run a setup command to completion (migrate, demo_seed); a signal stops it and aborts startup."""
    child = spawn(name, args, env, capture_stdout=capture_stdout)
    try:
        while child.proc.poll() is None:
            if _stop_requested.wait(0.1):
                raise Interrupted
    finally:
        if child.proc.poll() is None:
            stop_children([child])
    if child.reader is not None:
        child.reader.join(timeout=5)
    if child.proc.returncode != 0:
        raise StartupError(f"`{' '.join(args[1:])}` failed with exit code {child.proc.returncode}; see [{name}] above.")
    return child.lines


def check_port_free(port: int) -> None:
    """Fail before anything starts if the web port is taken, instead of after migrations."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise StartupError(
                f"Port {port} on 127.0.0.1 is in use ({exc.strerror}); run with PORT=<another port>."
            ) from exc


def first_dead(children: list[Child]) -> Child | None:
    return next((child for child in children if child.proc.poll() is not None), None)


def wait_healthy(url: str, children: list[Child], timeout: float = HEALTH_TIMEOUT) -> None:
    """Poll /healthz until it answers 200, watching that no child died and no signal came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = first_dead(children)
        if dead is not None:
            raise StartupError(
                f"{dead.name} exited with code {dead.proc.returncode} during startup; see [{dead.name}]."
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if _stop_requested.wait(0.25):
            raise Interrupted
    raise StartupError(f"{url} did not answer within {timeout:.0f}s; see [web] above.")


def redact(url: str) -> str:
    """A URL fit to print: the password replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def banner(*, port: int, key: str, redis_note: str, database: str) -> str:
    base = f"http://127.0.0.1:{port}"
    rule = "=" * 78
    return "\n".join(
        [
            "",
            rule,
            "  Hash exchange is running (development mode: DEBUG on, not for production)",
            "",
            f"  intake      {base}/intake/  (people hash their own images; status at /intake/status/)",
            f"  API docs    {base}/api/v1/docs/",
            f"  Admin       {base}/admin/",
            f"  Liveness    {base}/healthz",
            f"  Readiness   {base}/readyz",
            f"  Redis       {redis_note}",
            f"  Database    {database}",
            "",
            "  Demo API key (member demo-platform in program take-it-down; kept in var/demo-api-key",
            "  and reused by every make run; delete that file for a new one, which revokes the old):",
            f"    {key}",
            "  Try it:",
            f'    curl -H "Authorization: Bearer {key}" {base}/api/v1/me',
            "",
            "  Admin user for /admin/:  .venv/bin/python manage.py createsuperuser",
            "  Ctrl-C stops the web server, the worker, beat and the Redis started here.",
            rule,
            "",
        ]
    )


def child_environment(port: int, redis_url: str) -> dict[str, str]:
    """The environment of every child: DEBUG on unless set, unbuffered output, links on PORT."""
    env = dict(os.environ)
    env.setdefault("DEBUG", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env["REDIS_URL"] = redis_url
    site = urlsplit(env.get("SITE_URL", ""))
    if not site.hostname or is_loopback(site.hostname):
        env["SITE_URL"] = f"http://127.0.0.1:{port}"  # .env's default names port 8000; follow PORT here
    return env


def _on_signal(signum: int, frame: object) -> None:
    _stop_requested.set()


def main(argv: Sequence[str] | None = None) -> int:
    """Start everything, supervise it, stop it; the exit code says whether it ended cleanly."""
    for note in prepare_env_file():
        say(f"devserver: {note}")
    load_env_file()
    os.environ.setdefault("DEBUG", "1")
    port = int(os.environ.get("PORT") or DEFAULT_PORT)
    redis_url = os.environ.get("REDIS_URL") or f"redis://127.0.0.1:{checkout_ports(ROOT).redis}/0"
    var_dir = Path(os.environ.get("VAR_DIR") or ROOT / "var")
    if not var_dir.is_absolute():
        var_dir = ROOT / var_dir
    env = child_environment(port, redis_url)
    python = sys.executable
    manage = str(ROOT / "manage.py")

    for signum in SIGNALS:
        signal.signal(signum, _on_signal)
    redis_proc: subprocess.Popen | None = None
    children: list[Child] = []
    code = 0
    try:
        check_port_free(port)
        var_dir.mkdir(parents=True, exist_ok=True)
        redis_proc = ensure_redis(redis_url, var_dir / "redis")
        if redis_proc is not None:
            redis_note = f"{redact(redis_url)} (this checkout's, started here; log {var_dir / 'redis' / 'redis.log'})"
        else:
            sharing = redis_sharing_note(redis_url, var_dir / "redis")
            redis_note = f"{redact(redis_url)} (already running; left alone)"
            if sharing:
                say(f"[redis] {sharing}", sys.stderr)
                redis_note += " SHARED: see the warning above"
            else:
                redis_note = f"{redact(redis_url)} (this checkout's, already running; left alone)"
        say(f"[redis] {redis_note}")
        if _stop_requested.is_set():
            raise Interrupted
        run_step("migrate", [python, manage, "migrate", "--noinput"], env)
        key_file = var_dir / "demo-api-key"
        seeded = run_step("seed", [python, manage, "demo_seed", "--key-file", str(key_file)], env, capture_stdout=True)
        key = next((line.strip() for line in reversed(seeded) if line.strip()), "")
        if not key.startswith("hxk_"):
            say(f"devserver: warning: demo_seed's last line does not look like an API key: {key!r}", sys.stderr)
        # The intake (/intake/): its member and its two programs, idempotent.
        run_step("intake", [python, manage, "intake_setup"], env)

        children.append(
            spawn("web", [python, manage, "runserver", f"127.0.0.1:{port}", "--noreload", "--insecure"], env)
        )
        children.append(
            spawn(
                "worker",
                # Threads: the work is mostly waiting on receivers' HTTP answers and the database.
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-l",
                    "info",
                    "-Q",
                    "celery,webhooks",
                    "--pool",
                    "threads",
                    "--concurrency",
                    "8",
                ],
                env,
            )
        )
        schedule = str(var_dir / "celerybeat-schedule")
        children.append(
            spawn("beat", [python, "-m", "celery", "-A", "config", "beat", "-l", "info", "--schedule", schedule], env)
        )
        wait_healthy(f"http://127.0.0.1:{port}/healthz", children)
        database = redact(os.environ.get("DATABASE_URL") or f"SQLite {var_dir / 'db.sqlite3'}")
        say(banner(port=port, key=key, redis_note=redis_note, database=database))

        while not _stop_requested.wait(0.5):
            dead = first_dead(children)
            if dead is not None:
                raise StartupError(f"{dead.name} exited with code {dead.proc.returncode}; stopping the rest.")
            if redis_proc is not None and redis_proc.poll() is not None:
                raise StartupError(f"redis exited with code {redis_proc.returncode}; stopping the rest.")
        raise Interrupted
    except Interrupted:
        say("devserver: stopping (signal received)")
    except (StartupError, ServiceError) as exc:
        say(f"devserver: {exc}", sys.stderr)
        code = 1
    finally:
        for signum in SIGNALS:  # a second Ctrl-C must not cut the orderly stop short
            signal.signal(signum, signal.SIG_IGN)
        stop_children(children)
        if redis_proc is not None:
            say(f"devserver: stopping redis (pid {redis_proc.pid})")
            stop_process(redis_proc)
    say("devserver: stopped" if code == 0 else "devserver: stopped after a failure", sys.stderr if code else None)
    return code


if __name__ == "__main__":
    sys.exit(main())
