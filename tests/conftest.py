"""The cast of callers every test uses, and the real services tests run against.

Callers: two platforms (`platform_a` must never see `platform_b`'s data), an intake
service, a peer clearinghouse, an auditor, and a Django admin user. Redis is real (REDIS_URL, started by
`make test`); tests that need async behaviour start a real Celery worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

from core.ledger import Actor
from members import services
from members.models import ApiCredential, Member, Program

# Signers (members with registered keys, in tests/signing.py) are used by every app's tests;
# loaded as a plugin so their fixtures are registered, not imported by name.
pytest_plugins = ["tests.signing"]

ROOT = Path(__file__).resolve().parent.parent
SETUP = Actor.operator("tests")

# Property tests check what holds, not how fast: on a loaded CI machine hypothesis's
# per-example deadline and its "generation is slow" check would fail tests that are right.
hypothesis_settings.register_profile(
    "hashexchange", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors]
)
hypothesis_settings.load_profile("hashexchange")


# Fixtures that reach the database (pytest-django's, and the live server that serves it).
DATABASE_FIXTURES = frozenset(
    {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback", "live_server"}
)


def uses_database(item: pytest.Item) -> bool:
    """Whether a test reaches the database: the django_db mark, a database fixture anywhere
    in its fixture closure, or the `both_databases` mark (a test that starts servers of its
    own on the run's database)."""
    if item.get_closest_marker("django_db") or item.get_closest_marker("both_databases"):
        return True
    return bool(DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the second database of `make test` (TEST_DATABASE_TESTS_ONLY=1), only the tests
    that reach the database run again: the rest (the client package, the browser's hashing,
    the index kernel, documents) would repeat the first run's work to the byte."""
    if os.environ.get("TEST_DATABASE_TESTS_ONLY") != "1":
        return
    kept = [item for item in items if uses_database(item)]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if not uses_database(item)])
        items[:] = kept


@pytest.fixture
def index_dir(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """A match index snapshot directory of the test's own and a freshly loaded registry
    (modules that match use it for every test: `pytest.mark.usefixtures("index_dir")`)."""
    from hashes import matching

    settings.MATCH_INDEX_DIR = tmp_path / "index"
    matching.registry.reset()
    yield settings.MATCH_INDEX_DIR
    matching.registry.reset()


@pytest.fixture(scope="session", autouse=True)
def _real_redis() -> None:
    """The suite needs a real Redis; say so plainly instead of failing test by test."""
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis at {settings.REDIS_URL} is not reachable ({exc}); run the suite with `make test`.", 2)


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """Rate-limit counters and heartbeats must not leak from one test into the next (nor
    this process's own view of the counters, core/api.py)."""
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    from core import api

    api._local_counts.clear()


@pytest.fixture(autouse=True)
def _own_snapshot_dir(settings: Any, tmp_path: Path) -> None:
    """Program snapshots are files: one that a test (or a worker it started, whose beat
    builds any snapshot that is due) left in the run's directory would be served to the
    next test as if it had built it."""
    settings.SNAPSHOT_DIR = tmp_path / "snapshots"


@pytest.fixture(autouse=True)
def _fresh_log_head() -> None:
    """The latest checkpoint each process keeps for a second (exchange/auditlog.py) must not
    outlive the test whose rolled-back transaction made it."""
    from exchange import auditlog

    auditlog.latest_head.clear()


@dataclass
class Caller:
    """A member with an API key, and a client that sends it."""

    member: Member
    credential: ApiCredential
    token: str
    client: APIClient


def make_caller(member: Member, *, scopes: list[str] | None = None) -> Caller:
    credential, token = services.credential_issue(member=member, scopes=scopes, actor=SETUP)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return Caller(member=member, credential=credential, token=token, client=client)


def make_member(slug: str, kind: str, *programs: Program) -> Member:
    member = services.member_create(slug=slug, kind=kind, status=Member.Status.ACTIVE, actor=SETUP)
    for program in programs:
        services.enrollment_set(member=member, program=program, state="opted_in", actor=SETUP)
    return member


@pytest.fixture
def program(db: None) -> Program:
    return services.program_create(slug="take-it-down", name="Take It Down", actor=SETUP)


@pytest.fixture
def other_program(db: None) -> Program:
    return services.program_create(slug="ncii", name="NCII", signal_types_=["pdq", "md5"], actor=SETUP)


@pytest.fixture
def platform_a(program: Program) -> Caller:
    return make_caller(make_member("platform-a", Member.Kind.PLATFORM, program))


@pytest.fixture
def platform_b(program: Program) -> Caller:
    return make_caller(make_member("platform-b", Member.Kind.PLATFORM, program))


@pytest.fixture
def intake(program: Program) -> Caller:
    return make_caller(make_member("intake", Member.Kind.INTAKE, program))


@pytest.fixture
def peer(program: Program) -> Caller:
    """Another clearinghouse, a member of ours: it submits and receives like a platform would."""
    return make_caller(make_member("peer", Member.Kind.PEER, program))


@pytest.fixture
def auditor(db: None) -> Caller:
    return make_caller(make_member("auditor", Member.Kind.AUDITOR))


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


@pytest.fixture
def admin_client(db: None, client):  # noqa: ANN001, ANN201 - pytest-django's Django test client
    from django.contrib.auth.models import User
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = User.objects.create_superuser("admin", "admin@example.org", "admin-password-123")
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    # The admin asks for a verified second factor (ADMIN_REQUIRE_OTP is on unless DEBUG):
    # this session has passed it, as after a login with password and TOTP code.
    device = TOTPDevice.objects.create(user=user, name="test", confirmed=True)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


# A real Celery worker ------------------------------------------------------------------------


def worker_database_url() -> str:
    """The URL of the database the tests are using, for processes the tests start."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def celery_command(*args: str, extra_env: dict[str, str] | None = None, log_name: str = "worker"):  # noqa: ANN201
    """Start `celery -A config ARGS` on the test database and Redis; output goes to var/test-*.log."""
    env = {
        **os.environ,
        "DATABASE_URL": worker_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DEBUG": "1",
        **(extra_env or {}),
    }
    log = open(ROOT / "var" / f"test-{log_name}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_worker(
    *, extra_env: dict[str, str] | None = None, queues: str = "celery", pool: str = "prefork", log_name: str = "worker"
) -> subprocess.Popen[bytes]:
    return celery_command(
        "worker",
        "-l",
        "info",
        "--pool",
        pool,
        "--concurrency",
        "2" if pool == "prefork" else "8",
        "-Q",
        queues,
        "--without-gossip",
        "--without-mingle",
        "-n",
        f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
        extra_env=extra_env,
        log_name=log_name,
    )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def celery_worker_process(transactional_db: None) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process on the test database and Redis."""
    proc = start_worker()
    yield proc
    stop_process(proc)


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):  # noqa: ANN001, ANN201
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


# A real HTTP receiver on 127.0.0.1 ---------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A webhook receiver: a real HTTP server on 127.0.0.1 that records what it gets.

    `responses` is consumed one status per request (then `default_status`); `delay`
    makes each answer wait, to test timeouts and workers killed mid-request.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.responses: list[int] = []
        self.default_status = 200
        self.delay = 0.0
        self.headers: dict[str, str] = {}  # extra response headers, e.g. Retry-After
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body, self.path))
                    status = receiver.responses.pop(0) if receiver.responses else receiver.default_status
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Type", "text/plain")
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(f"answered {status}".encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def entries(self) -> list[dict[str, Any]]:
        """Every feed entry received, unwrapping batches, in arrival order."""
        found = []
        for item in list(self.received):
            message = item.json()
            found += message["data"]["entries"] if message["type"] == "events.batch" else [message["data"]]
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def local_server(settings: Any, server: Any) -> Iterator[Any]:
    """For a fixture: `server`, an HTTP server of the test's on 127.0.0.1 that the exchange
    may call (WEBHOOKS_ALLOW_PRIVATE), closed after the test."""
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    yield server
    server.close()


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    yield from local_server(settings, Receiver())
