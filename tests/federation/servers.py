"""Whole clearinghouses for the federation tests: each one a gunicorn process with its own database.

A `Server` has its own SECRET_KEY (so its own server key), its own database (a SQLite
file, or a PostgreSQL database in the test cluster when the suite runs on PostgreSQL),
its own Redis database number, and a port chosen free at start. Operators' steps run as
`manage.py` commands against it, members call its API over HTTP, and a worker and beat
can be started for it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_admin_url(db: dict[str, Any], name: str) -> str:
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{name}"


class Server:
    def __init__(self, name: str, tmp: Path, redis_db: int, **env: str) -> None:
        self.name = name
        self.tmp = tmp / name
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        db = settings.DATABASES["default"]
        self.postgres = not db["ENGINE"].endswith("sqlite3")
        if self.postgres:
            self.db_name = f"fed_{name}_{os.getpid()}"
            self._psql(f'DROP DATABASE IF EXISTS "{self.db_name}"')
            self._psql(f'CREATE DATABASE "{self.db_name}"')
            database_url = _postgres_admin_url(db, self.db_name)
        else:
            database_url = f"sqlite:///{self.tmp / 'db.sqlite3'}"
        redis = urlsplit(settings.REDIS_URL)
        redis_url = urlunsplit((redis.scheme, redis.netloc, f"/{redis_db}", "", ""))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_ALLOW_ASYNC", "PROMETHEUS"))},
            "ENV_FILE": "/dev/null",
            "DEBUG": "1",
            "SECRET_KEY": f"federation-test-{name}-{secrets.token_hex(16)}",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "CACHE_URL": redis_url,
            "WEBHOOKS_ALLOW_PRIVATE": "1",
            "SITE_URL": self.url,
            "VAR_DIR": str(self.tmp),
            "MATCH_INDEX_DIR": str(self.tmp / "index"),
            "API_RATE_LIMIT": "100000/min",
            "PEER_SYNC_SECONDS": "1",
            **env,
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        self.manage("migrate", "-v0")
        self.web = self._start(
            "web",
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "-b",
            f"127.0.0.1:{self.port}",
            "-w",
            "1",
            "--threads",
            "4",
        )
        self._wait_healthy()

    def _psql(self, sql: str) -> None:
        import psycopg

        db = settings.DATABASES["default"]
        with psycopg.connect(_postgres_admin_url(db, "postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def _start(self, label: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{label}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.web.poll() is not None:
                raise RuntimeError(f"server {self.name} exited; see {self.tmp / 'web.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server {self.name} did not answer /healthz; see {self.tmp / 'web.log'}")

    def manage(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{self.name}: manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout if check else done.stdout + done.stderr

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run SQL on the server's database directly (counts, and B's tampering); `?` placeholders."""
        if self.postgres:
            import psycopg

            db = settings.DATABASES["default"]
            with psycopg.connect(_postgres_admin_url(db, self.db_name), autocommit=True) as conn:
                cursor = conn.execute(sql.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description else []
        import sqlite3

        conn = sqlite3.connect(self.tmp / "db.sqlite3", timeout=30)
        try:
            with conn:
                cursor = conn.execute(sql, params)
                return cursor.fetchall()
        finally:
            conn.close()

    def commands(self, *calls: tuple[str, ...]) -> list[str]:
        """Several management commands in one process (each Django start costs seconds); their outputs."""
        code = (
            "import io, json\n"
            "from django.core.management import call_command\n"
            "outs = []\n"
            f"for args in {json.dumps([list(c) for c in calls])}:\n"
            "    out = io.StringIO()\n"
            "    call_command(*args, stdout=out, stderr=io.StringIO())\n"
            "    outs.append(out.getvalue())\n"
            "print(json.dumps(outs))\n"
        )
        return json.loads(self.shell(code).splitlines()[-1])

    def members(self, *specs: tuple[str, str, str]) -> list[str]:
        """Create active members (slug, kind, program) in one process; their new API keys."""
        calls: list[tuple[str, ...]] = []
        for slug, kind, program in specs:
            calls += [
                ("member_create", slug, "--kind", kind, *(("--program", program) if program else ())),
                ("credential_issue", slug),
            ]
        outs = self.commands(*calls)
        return [outs[i].strip().splitlines()[-1].strip() for i in range(1, len(outs), 2)]

    def manage_popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self._start("manage", "manage.py", *args, env=env)

    def shell(self, code: str) -> str:
        return self.manage("shell", "-c", code).strip()

    def api(self, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("accept", "application/json")
        if data is not None:
            request.add_header("content-type", "application/json")
        if token:
            request.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def start_celery(self, *extra: str) -> None:
        self._start("worker", "-m", "celery", "-A", "config", "worker", "-l", "info", "--pool", "solo", "-Q", "celery")
        self._start(
            "beat", "-m", "celery", "-A", "config", "beat", "-l", "info", "-s", str(self.tmp / "beat-schedule"), *extra
        )

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()
        if self.postgres:
            self._psql(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
