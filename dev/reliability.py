"""The reliability suite: the whole exchange under load while its parts fail; what `make reliability` runs.

    python -m dev.reliability              # 10 minutes of load and faults, then the checks
    python -m dev.reliability --quick      # about 2 minutes, fewer faults
    python -m dev.reliability --minutes 20

Everything runs on 127.0.0.1, on spare ports, with its files in var/reliability/: a
PostgreSQL cluster and a Redis (dev/services.py), gunicorn with 3 workers
(bench/harness.py), two Celery workers and one beat started with the commands of
dev/server.py, and 20 webhook receivers (dev/reliability_traffic.py). Members are
onboarded with the operator commands (`manage.py program_create`, `member_create`,
`credential_issue`), then register their signing keys and webhooks through the API.

While the load runs (signed submissions in batches, feed readers, match queries,
outcome reports; dev/reliability_traffic.py), faults are injected at recorded times:
receivers answering 500 for a while, Redis restarted, a Celery worker SIGKILLed while it
delivers a webhook (restarted 5 s later, as a supervisor would), a receiver down for
several minutes, PostgreSQL restarted, beat killed and restarted. Then, after a bounded
drain, the suite checks and prints (and writes to var/reliability/results-*.json):

- every accepted submission is in every subscribed member's feed, read from 0;
- every accepted submission reached every receiver at least once (duplicates counted
  by webhook-id and by seq);
- no 5xx answer outside the seconds PostgreSQL was down;
- latency percentiles per operation, and the time to recover from each fault.

The server runs with WEBHOOK_RETRY_SCHEDULE shortened (RETRY_SCHEDULE below, about ten
minutes in all instead of three days) so that a receiver down for minutes is retried
within the run, and with API_RATE_LIMIT out of reach (bench/harness.py's), so that the
load measures the faults rather than the throttle. Everything else is the default.
The exit code is 0 when every guarantee held, 1 when one failed, 2 when the suite could
not run. Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from hashexchange_client import keys

from dev import services
from dev.reliability_traffic import Api, Load, LoadPlan, Member, Recorder, now, percentiles

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402 - bench/harness.py is a script folder's module, found through the line above

VAR = ROOT / "var" / "reliability"
PROGRAM = "reliability"
RECEIVERS = 20
SLOW = (12, 13, 14, 15)  # answer after 0.2-0.8 s
FAILING = (16, 17)  # answer 500 for a while
DOWN = 19  # down for several minutes
SUBMITTERS = 2
SUBMIT_THREADS = 6
READERS = (0, 1, 2)  # also report outcomes on what they read
MATCHERS = (3, 4)
RETRY_SCHEDULE = "2,5,10,20,30,45,60,60,60,60,60,60,60,60"
# dev/server.py's worker (both queues, a thread pool of 8); -n names each of the two.
WORKER_COMMAND = [
    "-m", "celery", "-A", "config", "worker", "-l", "info",
    "-Q", "celery,webhooks", "--pool", "threads", "--concurrency", "8",
]  # fmt: skip
GUNICORN_WORKERS = 3
START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
RECOVERY_LIMIT = 60.0  # seconds after the faulty part is back; longer is "minutes", a failure
INFRASTRUCTURE = ("Redis restarted", "Celery worker SIGKILLed mid-delivery", "PostgreSQL restarted", "beat SIGKILLed")
FLOWING_SECONDS = 15.0
MIN_RATE = 100.0  # signed submissions per second the load must sustain
LOAD_GRACE = 60.0  # a request still failing this long after the load ends is given up on
READYZ_HEARTBEAT = "worker_heartbeat_age_seconds"  # /readyz: age of the heartbeat beat sends, a worker runs
QUEUES = ("celery", "webhooks")  # Celery's Redis lists (config/settings.py routes delivery to webhooks)
# "Task exchange.tasks.fanout[…] raised unexpected: OperationalError('deadlock detected…"
ERROR_SHAPE = re.compile(r"Task ([\w.]+)\[[^]]*\] raised unexpected: (\w+)\('?([^\\'\n]{0,160})")
WHERE_TO = re.compile(r'connection to server at "[^"]+", port \d+ failed: ')


def log(message: str) -> None:
    print(f"reliability: {message}", file=sys.stderr, flush=True)


class SuiteError(RuntimeError):
    """The suite could not set up or run; the message says why."""


# The stack ------------------------------------------------------------------------------------


@dataclass
class Stack:
    """The processes of the run, each replaceable (a fault restarts it), all stopped at the end."""

    var: Path
    env: dict[str, str] = field(default_factory=dict)
    redis_port: int = 0
    pg_port: int = 0
    pg_base: Path | None = None
    redis_proc: subprocess.Popen | None = None
    pg_running: bool = False
    web_port: int = 0
    web_pid: int = 0
    celery: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.var / "logs"

    def start_redis(self) -> None:
        self.redis_proc = services.start_redis(self.redis_port, self.var / "redis", persist=True)

    def stop_redis(self) -> None:
        if self.redis_proc is not None:
            services.stop_process(self.redis_proc)

    def start_postgres(self) -> str:
        os.environ.pop("TEST_POSTGRES_URL", None)  # ensure_postgres would use that server instead
        url, _stop = services.ensure_postgres(self.var / "postgres", self.pg_port)
        self.pg_base = services.postgres_dirs(self.var / "postgres", self.pg_port)
        self.pg_running = True
        return url

    def stop_postgres(self) -> None:
        if self.pg_base is not None and self.pg_running:
            services.stop_postgres(self.pg_base)
            self.pg_running = False

    def start_celery(self, name: str, args: Sequence[str]) -> subprocess.Popen:
        """A Celery process with output in logs/NAME.log; waits for a worker to say it is ready."""
        logfile = self.logs / f"{name}.log"
        offset = logfile.stat().st_size if logfile.exists() else 0
        with logfile.open("ab") as output:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                # INFO: the worker's " ready." line (and the tasks it ran) are INFO, and
                # Celery logs through the project's LOGGING, which LOG_LEVEL sets.
                env={**self.env, "LOG_LEVEL": "INFO"},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        self.celery[name] = proc
        if "worker" in args:
            deadline = time.monotonic() + START_TIMEOUT
            while " ready." not in logfile.read_bytes()[offset:].decode(errors="replace"):
                if proc.poll() is not None:
                    raise SuiteError(f"{name} exited with code {proc.returncode}:\n{services.tail(logfile)}")
                if time.monotonic() > deadline:
                    raise SuiteError(f"{name} was not ready within {START_TIMEOUT:.0f} s:\n{services.tail(logfile)}")
                time.sleep(0.1)
        return proc

    def start_worker(self, number: int) -> subprocess.Popen:
        return self.start_celery(f"worker{number}", [*WORKER_COMMAND, "-n", f"reliability{number}@%h"])

    def start_beat(self) -> subprocess.Popen:
        schedule = str(self.var / "celerybeat-schedule")
        return self.start_celery("beat", ["-m", "celery", "-A", "config", "beat", "-l", "info", "--schedule", schedule])

    def stop_celery(self) -> None:
        """SIGTERM all at once (a worker finishes its drains), then SIGKILL each process group."""
        procs = list(self.celery.values())
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            kill_group(proc)

    def manage(self, *args: str) -> str:
        return harness.run_python(["manage.py", *args], self.env, what=f"manage.py {' '.join(args)}")


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def prepare_var(var: Path) -> None:
    """A clean var/reliability/ (earlier results kept); a cluster left running by a killed run is stopped."""
    pid_file = var / "postgres" / "data" / "postmaster.pid"
    if pid_file.exists():
        log("stopping the PostgreSQL a previous run left in var/reliability/postgres")
        with contextlib.suppress(services.ServiceError):
            services.stop_postgres(var / "postgres")
    for name in ("postgres", "redis", "logs", "index", "celerybeat-schedule"):
        path = var / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    (var / "logs").mkdir(parents=True, exist_ok=True)


# Receivers ------------------------------------------------------------------------------------


class Receivers:
    """The handle on the receivers process (dev/reliability_traffic.py)."""

    def __init__(self, var: Path, modes: list[str]) -> None:
        config = var / "receivers.json"
        config.write_text(json.dumps({"count": len(modes), "modes": modes}))
        self.lock = threading.Lock()
        with (var / "logs" / "receivers.log").open("ab") as errors:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dev.reliability_traffic", "receivers", str(config)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                start_new_session=True,
            )
        self.ports: list[int] = self._read()["ports"]

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SuiteError(f"the receivers process exited with code {self.proc.poll()}")
        return json.loads(line)

    def ask(self, command: str) -> Any:
        with self.lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            return self._read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ask("quit")
        services.stop_process(self.proc)


# Onboarding -----------------------------------------------------------------------------------


def onboard(stack: Stack, receivers: Receivers) -> tuple[list[Member], list[Member]]:
    """The program and members with the operator commands; keys and webhooks through the API."""
    stack.manage("program_create", PROGRAM, "--name", "Reliability", "--signal-types", "pdq")
    slugs = [f"rel-submit-{n}" for n in range(1, SUBMITTERS + 1)] + [f"rel-recv-{n:02d}" for n in range(RECEIVERS)]

    def member(slug: str) -> Member:
        stack.manage("member_create", slug, "--kind", "platform", "--program", PROGRAM)
        token = stack.manage("credential_issue", slug, "--name", "reliability").strip().splitlines()[-1]
        return Member(slug, token)

    with ThreadPoolExecutor(4) as pool:
        members = list(pool.map(member, slugs))
    submitters, receiving = members[:SUBMITTERS], members[SUBMITTERS:]
    recorder, stop = Recorder(), threading.Event()
    for sub in submitters:
        sub.private_key = keys.generate_private_key()
        status, body = Api(stack.web_port, sub.token, recorder, stop).call(
            "setup",
            "POST",
            "/api/v1/keys",
            {"public_key": keys.public_key_to_b64(sub.private_key), "algorithm": "ed25519"},
            give_up_at=now() + 60,
        )
        if status != 201:
            raise SuiteError(f"registering {sub.slug}'s key: {status} {body}")
    secrets_: list[str] = []
    for index, rec in enumerate(receiving):
        url = f"http://127.0.0.1:{receivers.ports[index]}/hook/{index}"
        status, body = Api(stack.web_port, rec.token, recorder, stop).call(
            "setup",
            "POST",
            "/api/v1/webhooks",
            {"url": url, "events": ["hash.added", "hash.withdrawn"]},
            give_up_at=now() + 60,
        )
        if status != 201:
            raise SuiteError(f"registering {rec.slug}'s webhook: {status} {body}")
        secrets_.append(body["secret"])
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.web_port}/api/v1/server-key", timeout=30) as answer:
        server_key = json.loads(answer.read())["public_key"]
    setup_file = stack.var / "receivers-setup.json"
    setup_file.write_text(json.dumps({"secrets": secrets_, "server_key": server_key}))
    receivers.ask(f"setup {setup_file}")
    return submitters, receiving


# Watching /readyz -----------------------------------------------------------------------------


class Monitor:
    """Polls /readyz once a second (database, Redis, the age of the beat heartbeat) and the
    length of the Celery queues in Redis (the tasks waiting for a worker).

    /readyz answering 503 while a dependency is down is its job, so these samples are
    kept apart from the API's answers.
    """

    def __init__(self, port: int, redis_port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/readyz"
        self.redis = redis.Redis(port=redis_port, socket_timeout=1, socket_connect_timeout=1)
        self.samples: list[dict[str, Any]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="readyz", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stopped.wait(1.0):
            at = now()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:
                    status, body = answer.status, json.loads(answer.read())
            except urllib.error.HTTPError as exc:
                status, body = exc.code, json.loads(exc.read() or b"{}")
            except (OSError, ValueError) as exc:
                status, body = 0, {"error": type(exc).__name__}
            checks = body.get("checks") or {}
            try:
                queued = {queue: int(self.redis.llen(queue)) for queue in QUEUES}
            except redis.RedisError:
                queued = {}
            self.samples.append(
                {
                    "at": at,
                    "status": status,
                    "heartbeat_age": checks.get(READYZ_HEARTBEAT),
                    "checks": checks,
                    "queued": queued,
                }
            )

    def last(self) -> dict[str, Any]:
        return self.samples[-1] if self.samples else {}


# Faults ---------------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    start: float
    restored: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _socket_inodes(pid: int) -> set[str]:
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    found.add(link[8:-1])
    return found


def _tcp_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of this machine's TCP socket from `local_port` to `remote_port` (/proc/net/tcp)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if (
                    int(fields[1].rsplit(":", 1)[1], 16) == local_port
                    and int(fields[2].rsplit(":", 1)[1], 16) == remote_port
                ):
                    return fields[9]
    return None


class Faults:
    """The fault actions; each records what it did and when in `self.done`."""

    def __init__(self, stack: Stack, receivers: Receivers, quick: bool) -> None:
        self.stack, self.receivers, self.quick = stack, receivers, quick
        self.done: list[Fault] = []
        self.open: dict[str, Fault] = {}

    def receivers_failing(self) -> None:
        fault = Fault("receivers answer 500", now(), details={"endpoints": list(FAILING)})
        for index in FAILING:
            self.receivers.ask(f"mode {index} fail500")
        self.open[fault.name] = fault
        self.done.append(fault)

    def receivers_recovered(self) -> None:
        for index in FAILING:
            self.receivers.ask(f"mode {index} normal")
        self.open.pop("receivers answer 500").restored = now()

    def receiver_down(self) -> None:
        fault = Fault("receiver down", now(), details={"endpoints": [DOWN]})
        self.receivers.ask(f"mode {DOWN} down")
        self.open[fault.name] = fault
        self.done.append(fault)

    def receiver_up(self) -> None:
        self.receivers.ask(f"mode {DOWN} normal")
        self.open.pop("receiver down").restored = now()

    def redis_restart(self) -> None:
        down = 5.0 if self.quick else 10.0
        fault = Fault("Redis restarted", now(), details={"down_seconds": down})
        self.done.append(fault)
        self.stack.stop_redis()
        fault.details["stopped_at"] = now()
        time.sleep(down)
        self.stack.start_redis()
        fault.restored = now()

    def postgres_restart(self) -> None:
        down = 5.0 if self.quick else 10.0
        fault = Fault("PostgreSQL restarted", now(), details={"down_seconds": down, "mode": "pg_ctl stop -m fast"})
        self.done.append(fault)
        self.stack.stop_postgres()
        fault.details["stopped_at"] = now()
        time.sleep(down)
        self.stack.start_postgres()
        fault.restored = now()

    def worker_killed(self) -> None:
        """SIGKILL the worker that is POSTing to a slow receiver right now; restart it 5 s later."""
        workers = {name: proc for name, proc in self.stack.celery.items() if name.startswith("worker")}
        deadline = now() + (20 if self.quick else 60)
        target, inflight_owned = None, []
        while target is None and now() < deadline:
            inflight = self.receivers.ask("inflight")
            owners = {}
            for index, client_port, since in inflight:
                inode = _tcp_inode(client_port, self.receivers.ports[index])
                for name, proc in workers.items():
                    if inode and inode in _socket_inodes(proc.pid):
                        owners[(index, client_port)] = (name, since)
            for (index, _port), (name, since) in owners.items():
                if index in SLOW and now() - since > 0.05:
                    target = name
                    inflight_owned = sorted({i for (i, _p), (n, _s) in owners.items() if n == name})
                    break
            if target is None:
                time.sleep(0.05)
        observed = target is not None
        target = target or "worker1"
        proc = workers[target]
        fault = Fault(
            "Celery worker SIGKILLed mid-delivery",
            now(),
            details={
                "worker": target,
                "pid": proc.pid,
                "delivery_in_flight_observed": observed,
                "endpoints_in_flight": inflight_owned,
            },
        )
        self.done.append(fault)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        kill_group(proc)
        time.sleep(5.0)
        self.stack.start_worker(int(target.removeprefix("worker")))
        fault.restored = now()

    def beat_killed(self) -> None:
        down = 60.0
        proc = self.stack.celery["beat"]
        fault = Fault("beat SIGKILLed", now(), details={"down_seconds": down, "pid": proc.pid})
        self.done.append(fault)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        kill_group(proc)
        time.sleep(down)
        self.stack.start_beat()
        fault.restored = now()


def schedule(faults: Faults, total: float, quick: bool) -> list[tuple[float, Callable[[], None]]]:
    """When each action runs, in seconds from the start of the load; faults never overlap,
    except the long receiver outage, which spans the PostgreSQL restart."""
    plan = [
        (0.08, faults.receivers_failing),
        (0.17, faults.redis_restart),
        (0.25 if not quick else 0.30, faults.receivers_recovered),
        (0.32, faults.worker_killed),
        (0.42, faults.receiver_down),
        (0.57, faults.postgres_restart),
        (0.72, faults.receiver_up),
    ]
    if not quick:
        plan.append((0.80, faults.beat_killed))
    return sorted(((fraction * total, action) for fraction, action in plan), key=lambda item: item[0])


# After the load: drain, read back, judge ------------------------------------------------------


def drain(receivers: Receivers, accepted: list[int], limit: float) -> dict[str, Any]:
    """Wait (at most `limit` seconds) until every receiver has every accepted hash."""
    expected = VAR / "expected-hash-ids.json"
    expected.write_text(json.dumps(accepted))
    started = now()
    missing = receivers.ask(f"progress {expected}")
    while any(missing) and now() - started < limit:
        time.sleep(2.0)
        missing = receivers.ask(f"progress {expected}")
    return {"seconds": round(now() - started, 1), "limit_seconds": limit, "complete": not any(missing)}


def read_feed(port: int, member: Member) -> dict[int, int]:
    """The member's whole feed from 0: hash id -> seq of its `hash.added`."""
    api = Api(port, member.token, Recorder(), threading.Event())
    after, seen = 0, {}
    while True:
        status, body = api.call("verify", "GET", f"/api/v1/feed?after={after}&limit=5000", give_up_at=now() + 300)
        if status != 200:
            raise SuiteError(f"reading {member.slug}'s feed after {after}: {status} {str(body)[:300]}")
        for entry in body["entries"]:
            if entry["kind"] == "hash.added":
                seen.setdefault(int(entry["hash"]["id"]), int(entry["seq"]))
        after = body["next"]
        if not body["has_more"]:
            return seen


def first_after(times: list[float], moment: float) -> float | None:
    """The first of sorted `times` after `moment`."""
    import bisect

    index = bisect.bisect_right(times, moment)
    return times[index] if index < len(times) else None


def since(moment: float | None, base: float) -> float | None:
    return None if moment is None else round(moment - base, 1)


def recovery(
    fault: Fault,
    recorder: Recorder,
    hooks: list[dict[str, Any]],
    impaired: Callable[[int, float, float], bool],
    samples: list[dict[str, Any]],
) -> dict[str, Any]:
    """How long each part took to work again after a fault: submissions, webhooks, /readyz, beat.

    A receiver counts as resumed at its first 2xx POST after the faulty part is back. Left
    out: receivers that were down or answering 500 meanwhile for a reason of their own, and
    those that got no POST in the FLOWING_SECONDS before the fault (an earlier fault had
    stalled them already).
    """
    base, back = fault.start, fault.restored or fault.start
    submits = sorted(end for op, _start, end, status, _e in recorder.attempts if op == "submit" and status == 200)
    ok_times = [sorted(endpoint["ok_times"]) for endpoint in hooks]
    every = sorted(t for times in ok_times for t in times)
    resumed: dict[int, float] = {}
    for index, times in enumerate(ok_times):
        first = first_after(times, back)
        flowing = first_after(times, base - FLOWING_SECONDS)
        if (
            index in fault.details.get("endpoints", [])
            or impaired(index, base, first or float("inf"))
            or flowing is None
            or flowing > base  # stalled already (an earlier fault), so not this one's doing
        ):
            continue
        resumed[index] = float("inf") if first is None else first - base
    slowest = max(resumed, key=lambda i: resumed[i], default=None)
    result: dict[str, Any] = {
        "next_submission_s": since(first_after(submits, base), base),
        "next_webhook_s": since(first_after(every, base), base),
        "restored_after_s": since(back, base),
        "next_submission_after_restored_s": since(first_after(submits, back), back),
        "next_webhook_after_restored_s": since(first_after(every, back), back),
        "all_endpoints_resumed_s": None if slowest is None else round(resumed[slowest], 1),
        "slowest_endpoint": slowest,
        "stalled_endpoints": {i: round(t, 1) for i, t in sorted(resumed.items()) if t - (back - base) > RECOVERY_LIMIT},
    }
    for index in fault.details.get("endpoints_in_flight", []) + fault.details.get("endpoints", []):
        result.setdefault("endpoints", {})[index] = {"next_webhook_s": since(first_after(ok_times[index], back), base)}
    ready = [s["at"] for s in samples if s["at"] > back and s["status"] == 200]
    result["readyz_ok_s"] = since(ready[0] if ready else None, base)
    beats = [s["at"] - s["heartbeat_age"] for s in samples if s.get("heartbeat_age") is not None]
    fresh = [b for b in beats if b > back]
    result["next_heartbeat_after_restored_s"] = since(min(fresh) if fresh else None, back)
    during = [s["heartbeat_age"] for s in samples if base <= s["at"] <= back + 60 and s.get("heartbeat_age")]
    result["max_heartbeat_age_s"] = max(during) if during else None
    queued = [s["queued"] for s in samples if back <= s["at"] and s.get("queued")]
    result["queued_when_restored"] = queued[0] if queued else None
    return result


def judge_errors(recorder: Recorder, faults: list[Fault]) -> dict[str, Any]:
    """5xx and unanswered attempts, inside and outside the PostgreSQL windows."""
    windows = [(f.start, f.restored or f.start) for f in faults if f.name == "PostgreSQL restarted"]

    def where(moment: float) -> str:
        for start, end in windows:
            if start <= moment <= end:
                return "inside"
        return "outside"

    def nearest(moment: float) -> str:
        if not windows:
            return "no PostgreSQL window"
        start, end = min(windows, key=lambda w: min(abs(moment - w[0]), abs(moment - w[1])))
        return f"{moment - end:+.1f} s after PostgreSQL was back" if moment > end else f"{start - moment:.1f} s before"

    counted = [a for a in recorder.attempts if a[0] not in ("setup", "verify")]
    five = [a for a in counted if a[3] >= 500]
    unanswered = [a for a in counted if a[3] == 0]
    outside = [
        {"op": op, "at": iso(end), "status": status, "when": nearest(end), "error": error[:200]}
        for op, _start, end, status, error in five
        if where(end) == "outside"
    ]
    return {
        "postgres_windows": [{"from": iso(s), "to": iso(e), "seconds": round(e - s, 1)} for s, e in windows],
        "5xx_total": len(five),
        "5xx_inside_postgres_window": sum(1 for a in five if where(a[2]) == "inside"),
        "5xx_outside_postgres_window": outside,
        "unanswered_total": len(unanswered),
        "unanswered_outside_postgres_window": [
            {"op": op, "at": iso(end), "when": nearest(end), "error": error[:200]}
            for op, _start, end, _status, error in unanswered
            if where(end) == "outside"
        ][:50],
        "429": sum(1 for a in counted if a[3] == 429),
        "retried_calls": sum(1 for c in recorder.calls if c[4] > 1 and c[0] not in ("setup", "verify")),
        "given_up_calls": sum(1 for c in recorder.calls if c[3] == 0 and c[0] not in ("setup", "verify")),
    }


def latencies(recorder: Recorder) -> dict[str, Any]:
    """Per operation: answered attempts (2xx) and whole calls with their retries, in ms."""
    result: dict[str, Any] = {}
    for op in ("submit", "feed", "match", "outcomes"):
        ok = sorted((end - start) * 1000 for o, start, end, status, _e in recorder.attempts if o == op and status < 300)
        calls = sorted((end - start) * 1000 for o, start, end, status, _t in recorder.calls if o == op and status)
        result[op] = {
            "count": len(ok),
            "ms": {k: round(v) for k, v in percentiles(ok).items()},
            "with_retries_ms": {k: round(v) for k, v in percentiles(calls).items()},
        }
    return result


def log_errors(logs: Path) -> dict[str, Any]:
    """Error lines in the children's logs, grouped by task and exception: the evidence behind a failure."""
    found: dict[str, Any] = {}
    for path in sorted(logs.glob("*.log")):
        groups: dict[str, dict[str, Any]] = {}
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR" not in line and "CRITICAL" not in line:
                continue
            match = ERROR_SHAPE.search(line)
            if match:
                task, error, message = match.groups()
                key = f"{task} {error}: {WHERE_TO.sub('', message)[:70]}"
            else:
                key = line[max(0, line.find(" ERROR"), line.find("CRITICAL")) :].strip()[:110]
            group = groups.setdefault(key, {"count": 0, "first": line[:30], "example": line[:700]})
            group["count"] += 1
            group["last"] = line[:30]
        if groups:
            found[path.name] = dict(sorted(groups.items(), key=lambda item: -item[1]["count"]))
    return found


def iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%H:%M:%S.%f")[:-3]


# The run --------------------------------------------------------------------------------------


def modes() -> list[str]:
    return ["slow" if index in SLOW else "normal" for index in range(RECEIVERS)]


def start_stack(stack: Stack, exits: contextlib.ExitStack) -> None:
    """PostgreSQL (durable settings), Redis, migrations, then the Django children's environment."""
    stack.redis_port, stack.pg_port = harness.spare_port(), harness.spare_port()
    log(f"PostgreSQL on 127.0.0.1:{stack.pg_port}, Redis on 127.0.0.1:{stack.redis_port}, files in {stack.var}")
    url = stack.start_postgres()
    exits.callback(stack.stop_postgres)
    server = harness.PostgresServer(harness.with_database(url, "postgres"), {}, started_here=True)
    quoted = [f"ALTER SYSTEM SET {name} = '{value}'" for name, value in harness.DURABLE_SETTINGS.items()]
    server.execute(*quoted, "SELECT pg_reload_conf()")
    database_url = server.create_database("reliability")
    stack.start_redis()
    exits.callback(stack.stop_redis)
    redis_url = f"redis://127.0.0.1:{stack.redis_port}/0"
    stack.env = {
        **harness.django_env(database_url, redis_url, (secrets.token_urlsafe(32), secrets.token_urlsafe(32))),
        "VAR_DIR": str(stack.var),
        "MATCH_INDEX_DIR": str(stack.var / "index"),
        "WEBHOOKS_ALLOW_PRIVATE": "1",
        "WEBHOOK_RETRY_SCHEDULE": RETRY_SCHEDULE,
        "PYTHONUNBUFFERED": "1",
    }
    stack.manage("migrate", "--noinput")


def run(args: argparse.Namespace, stack: Stack, exits: contextlib.ExitStack, info: dict[str, Any]) -> int:
    started_at = dt.datetime.now(dt.UTC)
    load_start = harness.load_average()
    start_stack(stack, exits)
    receivers = Receivers(stack.var, modes())
    exits.callback(receivers.close)
    stack.web_port, stack.web_pid = exits.enter_context(
        harness.gunicorn(stack.env, workers=GUNICORN_WORKERS, logfile=stack.logs / "gunicorn.log")
    )
    log(f"gunicorn ({GUNICORN_WORKERS} workers) on 127.0.0.1:{stack.web_port}; onboarding members")
    submitters, receiving = onboard(stack, receivers)
    exits.callback(stack.stop_celery)
    stack.start_worker(1)
    stack.start_worker(2)
    stack.start_beat()
    monitor = Monitor(stack.web_port, stack.redis_port)
    monitor.start()
    exits.callback(monitor.stop)

    total = args.minutes * 60
    recorder, stop = Recorder(), threading.Event()
    plan = LoadPlan(
        port=stack.web_port,
        program=PROGRAM,
        start=now() + 1.0,
        end=now() + 1.0 + total,
        grace=LOAD_GRACE,
        rate=args.rate,
        batch=args.batch,
        submitters=submitters,
        submit_threads=SUBMIT_THREADS,
        readers=[receiving[i] for i in READERS],
        matchers=[receiving[i] for i in MATCHERS],
        match_rate=args.match_rate,
    )
    load = Load(plan, recorder, stop)
    exits.callback(stop.set)
    faults = Faults(stack, receivers, args.quick)
    log(
        f"load for {total:.0f} s: {args.rate:.0f} signed submissions/s in batches of {args.batch}, "
        f"{len(READERS)} feed readers reporting outcomes, {args.match_rate:.0f} match requests/s, "
        f"{RECEIVERS} receivers"
    )
    load.run()
    next_print = plan.start + 30
    for offset, action in schedule(faults, total, args.quick):
        while now() < plan.start + offset:
            time.sleep(0.2)
            if now() >= next_print:
                next_print += 30
                progress(plan, recorder, monitor)
        log(f"t+{now() - plan.start:.0f} s: {action.__name__.replace('_', ' ')}")
        action()
    while now() < plan.end:
        time.sleep(0.5)
        if now() >= next_print:
            next_print += 30
            progress(plan, recorder, monitor)
    still = load.join(LOAD_GRACE + 30)
    if still:
        recorder.note("load threads still running after the grace period", threads=still)
    accepted = sorted(recorder.accepted)
    log(f"load done: {len(accepted):,} submissions accepted; draining webhooks (at most {args.drain:.0f} s)")
    drained = drain(receivers, accepted, args.drain)
    log(f"drain: {drained}; reading every member's feed from 0")
    members = submitters + receiving
    verify_started = now()
    with ThreadPoolExecutor(3) as pool:
        feeds = dict(
            zip([m.slug for m in members], pool.map(lambda m: read_feed(stack.web_port, m), members), strict=True)
        )
    seq_of = feeds[receiving[0].slug]
    expected = VAR / "expected.json"
    expected.write_text(json.dumps({"seq_of_hash": {str(h): seq_of.get(h, -1) for h in accepted}}))
    drained["feeds_read_seconds"] = round(now() - verify_started, 1)
    hooks = receivers.ask(f"report {expected}")
    endpoints_state = []
    for member in receiving:
        status, body = Api(stack.web_port, member.token, Recorder(), stop).call(
            "verify", "GET", "/api/v1/webhooks", give_up_at=now() + 60
        )
        listed = body.get("results") if isinstance(body, dict) else body  # paginated, or a plain list
        endpoints_state += listed if status == 200 and isinstance(listed, list) else [{"member": member.slug}]
    stop.set()
    results = assemble(
        args=args,
        info=info,
        started_at=started_at,
        load_start=load_start,
        plan=plan,
        recorder=recorder,
        faults=faults.done,
        drained=drained,
        feeds=feeds,
        accepted=accepted,
        hooks=hooks,
        endpoints_state=endpoints_state,
        monitor=monitor,
        logs=stack.logs,
    )
    path = VAR / f"results-{started_at.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_results(results)
    print(f"\nresults written to {path.relative_to(ROOT)}")
    return 0 if all(g["ok"] for g in results["guarantees"].values()) else 1


def progress(plan: LoadPlan, recorder: Recorder, monitor: Monitor) -> None:
    with recorder.lock:
        accepted, attempts = len(recorder.accepted), list(recorder.attempts)
    five = sum(1 for a in attempts if a[3] >= 500)
    unanswered = sum(1 for a in attempts if a[3] == 0)
    ready = monitor.last()
    log(
        f"t+{now() - plan.start:.0f} s: {accepted:,} accepted, {len(attempts):,} requests, {five} 5xx, "
        f"{unanswered} unanswered; /readyz {ready.get('status')} heartbeat age {ready.get('heartbeat_age')} s"
    )


# Results --------------------------------------------------------------------------------------


def assemble(**run: Any) -> dict[str, Any]:
    plan: LoadPlan = run["plan"]
    recorder: Recorder = run["recorder"]
    faults: list[Fault] = run["faults"]
    accepted: list[int] = run["accepted"]
    hooks: dict[str, Any] = run["hooks"]
    samples = run["monitor"].samples
    want = set(accepted)
    seconds = plan.end - plan.start

    def impaired(index: int, start: float, end: float) -> bool:
        """Whether receiver `index` was down or answering 500 at some time between `start` and `end`."""
        return any(
            index in f.details.get("endpoints", []) and f.start <= end and (f.restored or float("inf")) >= start
            for f in faults
        )

    fault_rows = []
    for fault in faults:
        measured = recovery(fault, recorder, hooks["endpoints"], impaired, samples)
        fault_rows.append(
            {
                "name": fault.name,
                "at": iso(fault.start),
                "t_seconds": round(fault.start - plan.start, 1),
                "restored_at": iso(fault.restored) if fault.restored else None,
                "details": {k: (iso(v) if k.endswith("_at") else v) for k, v in fault.details.items()},
                "recovery": measured,
            }
        )
    feeds = {
        slug: {"hash_added": len(seen), "missing": len(want - set(seen)), "examples": sorted(want - set(seen))[:10]}
        for slug, seen in run["feeds"].items()
    }
    endpoints = [{k: v for k, v in e.items() if k != "ok_times"} for e in hooks["endpoints"]]
    errors = judge_errors(recorder, faults)
    slow_recoveries = []
    for row in fault_rows:
        if row["name"] not in INFRASTRUCTURE:
            continue
        measured = row["recovery"]
        restored = measured["restored_after_s"] or 0.0
        checks = {
            "next submission": measured["next_submission_after_restored_s"],
            "all endpoints resumed": None
            if measured["all_endpoints_resumed_s"] is None
            else round(measured["all_endpoints_resumed_s"] - restored, 1),
        }
        if row["name"] == "beat SIGKILLed":
            checks["next heartbeat"] = measured["next_heartbeat_after_restored_s"]
        for what, value in checks.items():
            if value is None or value > RECOVERY_LIMIT:
                slow_recoveries.append(f"{row['name']} at t+{row['t_seconds']:.0f} s: {what} {value} s after restored")
    missing_feed = {slug: f["missing"] for slug, f in feeds.items() if f["missing"]}
    missing_hooks = {e["index"]: e["missing_hashes"] for e in endpoints if e["missing_hashes"] or e["missing_seqs"]}
    guarantees = {
        "feed_complete": {
            "ok": not missing_feed,
            "detail": f"{len(accepted):,} accepted submissions in all {len(feeds)} subscribed members' feeds"
            if not missing_feed
            else f"missing from feeds: {missing_feed}",
        },
        "webhooks_complete": {
            "ok": not missing_hooks,
            "detail": f"{len(accepted):,} accepted submissions reached all {len(endpoints)} receivers"
            if not missing_hooks
            else f"hashes missing per receiver: {missing_hooks}",
        },
        "no_5xx_outside_postgres_window": {
            "ok": not errors["5xx_outside_postgres_window"],
            "detail": f"{errors['5xx_total']} 5xx, {errors['5xx_inside_postgres_window']} inside the PostgreSQL "
            f"window; outside: {errors['5xx_outside_postgres_window'][:5]}",
        },
        "webhook_signatures_valid": {
            "ok": not hooks["signature_errors"],
            "detail": "; ".join(hooks["signature_errors"][:5]) or "every POST had valid v1 and v1a signatures",
        },
        "recovery_within_a_minute": {
            "ok": not slow_recoveries,
            "detail": "; ".join(slow_recoveries)
            or f"every part worked again within {RECOVERY_LIMIT:.0f} s of its return",
        },
    }
    with recorder.lock:
        answered = [at for _value, at in recorder.accepted.values()]
        in_window = sum(1 for at in answered if at <= plan.end)
        last = max(answered, default=plan.end)
        load = {
            "seconds": round(seconds, 1),
            "envelopes_sent": recorder.envelopes_sent,
            "accepted": len(accepted),
            "accepted_per_second": round(len(accepted) / seconds, 1),
            "accepted_in_window": in_window,
            "accepted_per_second_in_window": round(in_window / seconds, 1),
            "last_accepted_after_end_s": round(last - plan.end, 1),
            "duplicates_after_retry": recorder.duplicates_after_retry,
            "rejected": len(recorder.rejected),
            "rejected_examples": recorder.rejected[:5],
            "unknown_batches": recorder.unknown_batches,
            "unknown_envelopes": recorder.unknown_envelopes,
            "feed_entries_read": recorder.feed_entries,
            "outcomes": recorder.outcomes,
            "outcome_rejections": recorder.outcome_rejections[:10],
            "match_known_queries": recorder.match_known,
            "match_misses": len(recorder.match_misses),
            "match_miss_examples": [
                {**m, "asked_at": iso(m["asked_at"]), "accepted_at": iso(m["accepted_at"])}
                for m in recorder.match_misses[:10]
            ],
            "unexpected": recorder.unexpected[:20],
        }
    return {
        "suite": "reliability",
        "started_at": run["started_at"].isoformat(timespec="seconds"),
        "commit": run["info"].get("commit"),
        "mode": "quick" if run["args"].quick else "full",
        "minutes": run["args"].minutes,
        "machine": run["info"],
        "load_average_start": run["load_start"],
        "load_average_end": harness.load_average(),
        "settings": {
            "WEBHOOK_RETRY_SCHEDULE": RETRY_SCHEDULE,
            "API_RATE_LIMIT": harness.BENCH_RATE_LIMIT,
            "gunicorn_workers": GUNICORN_WORKERS,
            "celery_workers": "2 x (-Q celery,webhooks --pool threads --concurrency 8), 1 beat",
            "receivers": {"count": RECEIVERS, "slow": list(SLOW), "failing": list(FAILING), "down": DOWN},
            "postgres": "dev/services.py cluster with fsync, synchronous_commit, full_page_writes on",
        },
        "load": load,
        "latency_ms": latencies(recorder),
        "webhook_entry_latency_s": hooks["latency_seconds"],
        "faults": fault_rows,
        "errors": errors,
        "drain": run["drained"],
        "feeds": feeds,
        "webhooks": endpoints,
        "webhook_endpoints_state": run["endpoints_state"],
        "queues": queue_summary(samples, plan.start),
        "readyz_not_ok": [
            {"at": iso(s["at"]), "status": s["status"], "checks": s.get("checks")}
            for s in samples
            if s["status"] != 200
        ][:100],
        "log_errors": log_errors(run["logs"]),
        "guarantees": guarantees,
    }


def queue_summary(samples: list[dict[str, Any]], start: float) -> dict[str, Any]:
    """The longest each Celery queue got, when, and its length every 30 s (seconds from the load's start)."""
    summary: dict[str, Any] = {}
    for queue in QUEUES:
        points = [(s["at"], s["queued"][queue]) for s in samples if queue in s.get("queued", {})]
        if not points:
            continue
        at, longest = max(points, key=lambda point: point[1])
        every: dict[int, int] = {}
        for t, n in points:
            every.setdefault(int((t - start) // 30 * 30), n)  # the first sample of each 30 s
        summary[queue] = {"max": longest, "max_at_s": round(at - start, 1), "every_30_s": every}
    return summary


def print_results(results: dict[str, Any]) -> None:
    load = results["load"]
    print(f"\n== reliability, {results['mode']} ({results['minutes']:g} min), {results['started_at']}, "
          f"commit {results['commit']}")  # fmt: skip
    print(harness.machine_line())
    print(
        f"load average at the start {harness.format_load(results['load_average_start'])}, "
        f"at the end {harness.format_load(results['load_average_end'])}"
    )
    print(
        f"load: {load['accepted']:,} submissions accepted of {load['envelopes_sent']:,} sent "
        f"({load['accepted_per_second']}/s; {load['accepted_per_second_in_window']}/s answered within the load's "
        f"{load['seconds']:.0f} s, the last {load['last_accepted_after_end_s']} s after it), "
        f"{load['duplicates_after_retry']} answered duplicate after a retry, "
        f"{load['rejected']} rejected, {load['unknown_envelopes']} unanswered; outcomes {load['outcomes']}; "
        f"{load['match_known_queries']:,} known hashes queried, {load['match_misses']} not matched"
    )
    columns = ("p50 ms", "p95 ms", "p99 ms", "max ms")
    print(f"\n{'operation':10} {'count':>7} " + " ".join(f"{c:>8}" for c in columns) + f" {'p99 with retries':>17}")
    for op, row in results["latency_ms"].items():
        ms = row["ms"]
        print(
            f"{op:10} {row['count']:>7,} {ms.get('p50', 0):>8,} {ms.get('p95', 0):>8,} {ms.get('p99', 0):>8,} "
            f"{ms.get('max', 0):>8,} {row['with_retries_ms'].get('p99', 0):>17,}"
        )
    hook = results["webhook_entry_latency_s"]
    print(f"webhook entry, event to first arrival (s): p50 {hook.get('p50')} p95 {hook.get('p95')} "
          f"p99 {hook.get('p99')} max {hook.get('max')}")  # fmt: skip
    dup_msgs = sum(e["duplicate_messages"] for e in results["webhooks"])
    dup_entries = sum(e["duplicate_entries"] for e in results["webhooks"])
    print(f"webhook duplicates: {dup_msgs} messages by webhook-id, {dup_entries} entries by seq; "
          f"drain {results['drain']}")  # fmt: skip
    for e in results["webhooks"]:
        if e["duplicate_messages"] or e["duplicate_entries"]:
            print(f"  receiver #{e['index']}: {e['duplicate_messages']} repeated webhook-ids, "
                  f"{e['duplicate_entries']} repeated seqs, {e['posts']} POSTs {e['statuses']}")  # fmt: skip
    disabled = [e for e in results["webhook_endpoints_state"] if not e.get("is_active", False)]
    print(f"webhook endpoints disabled at the end: {len(disabled)} {[e.get('disabled_reason') for e in disabled]}")
    print("\nfaults (seconds from the fault; 'resumed' = every unimpaired receiver got a POST again):")
    for row in results["faults"]:
        r = row["recovery"]
        print(
            f"  t+{row['t_seconds']:>5.0f} s {row['name']}: back after {r['restored_after_s']} s; next submission "
            f"{r['next_submission_s']} s, next webhook {r['next_webhook_s']} s, all receivers resumed "
            f"{r['all_endpoints_resumed_s']} s (slowest #{r['slowest_endpoint']}), /readyz ok {r['readyz_ok_s']} s"
        )
        if r.get("endpoints"):
            print(f"      its receivers: {r['endpoints']}")
        if r.get("stalled_endpoints") and row["name"] in INFRASTRUCTURE:
            print(f"      receivers stalled over {RECOVERY_LIMIT:.0f} s after it was back (s from the fault): "
                  f"{r['stalled_endpoints']}")  # fmt: skip
        if row["name"] == "beat SIGKILLed":
            print(
                f"      heartbeat {r['next_heartbeat_after_restored_s']} s after restart; max age "
                f"{r['max_heartbeat_age_s']} s; tasks queued at restart {r['queued_when_restored']}"
            )
        if row["details"]:
            print(f"      {row['details']}")
    for queue, row in results["queues"].items():
        print(f"Celery queue {queue!r}: longest {row['max']} tasks at t+{row['max_at_s']:.0f} s")
    errors = results["errors"]
    print(
        f"\nerrors: {errors['5xx_total']} 5xx ({errors['5xx_inside_postgres_window']} inside the PostgreSQL window "
        f"{errors['postgres_windows']}), {errors['unanswered_total']} unanswered, {errors['429']} 429, "
        f"{errors['retried_calls']} calls retried, {errors['given_up_calls']} given up"
    )
    for item in errors["5xx_outside_postgres_window"][:20]:
        print(f"  5xx outside: {item}")
    for item in errors["unanswered_outside_postgres_window"][:10]:
        print(f"  unanswered outside: {item}")
    for name, groups in results["log_errors"].items():
        for key, group in list(groups.items())[:8]:
            print(f"  {name}: {group['count']:>4} x {key} ({group['first'][1:20]} .. {group.get('last', '')[1:20]})")
    if load["accepted_per_second_in_window"] < MIN_RATE:
        print(
            f"\nnote: the load fell short of {MIN_RATE:.0f} submissions/s within its window "
            f"({load['accepted_per_second_in_window']}/s): the machine could not serve it; see the load average"
        )
    print("\nguarantees:")
    for name, verdict in results["guarantees"].items():
        print(f"  [{'ok' if verdict['ok'] else 'FAILED'}] {name}: {verdict['detail']}")


# Command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dev.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="minutes of load and faults (default 10)")
    parser.add_argument("--quick", action="store_true", help="about 2 minutes, fewer faults (no beat kill)")
    parser.add_argument("--rate", type=float, default=120.0, help="signed submissions per second (default 120)")
    parser.add_argument("--batch", type=int, default=50, help="envelopes per POST /api/v1/submissions (default 50)")
    parser.add_argument("--match-rate", type=float, default=2.0, help="match requests per second (default 2)")
    parser.add_argument("--drain", type=float, default=None, help="seconds allowed for webhooks to catch up")
    args = parser.parse_args(argv)
    args.minutes = args.minutes or (2.0 if args.quick else 10.0)
    args.drain = args.drain or (240.0 if args.quick else 420.0)
    if args.minutes <= 0 or args.rate <= 0 or not 1 <= args.batch <= 1000:
        parser.error("--minutes and --rate must be positive, --batch 1 to 1000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    harness.stop_on_signals()
    harness.print_machine()
    info = harness.machine_info()
    prepare_var(VAR)
    stack = Stack(VAR)
    exits = contextlib.ExitStack()
    code = 2
    try:
        code = run(args, stack, exits, info)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        code = 130
    except (SuiteError, services.ServiceError, harness.BenchError) as exc:
        log(str(exc))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signum, signal.SIG_IGN)
        log("stopping the load, Celery, gunicorn, the receivers, Redis and PostgreSQL")
        try:
            exits.close()
        except Exception as exc:  # noqa: BLE001 - report, and still exit with the run's code
            log(f"while stopping: {type(exc).__name__}: {exc}")
    return code


if __name__ == "__main__":
    sys.exit(main())
