"""`make prod-check`: the production topology on this machine, a smoke flow through it, a backup drill.

    python -m dev.prodcheck [--keep] [--no-backup]

It starts what deploy/ describes, from the same commands the systemd units run
(deploy/bin/run via deploy/Procfile, under honcho): PostgreSQL and Redis of its own;
`release` (migrate, collectstatic, `check --deploy`, whose warnings fail the check but
for the two HSTS decisions left to the operator); gunicorn with three workers, a Celery
worker per queue, beat, and a second beat started by mistake; nginx with
deploy/nginx/hashexchange.conf and a throw-away certificate, and Prometheus with
deploy/prometheus/alerts.yml, when they are installed (CI installs both). The settings
are deploy/production.env with this machine's names, ports and fresh secrets; the one
deviation is WEBHOOKS_ALLOW_PRIVATE=1, for the smoke flow's receiver on 127.0.0.1.

The smoke flow goes through nginx as members would: operators onboard two platforms and
an auditor from the shell; one platform registers its key and submits signed hashes; the
other receives them by webhook (signature checked), reports an outcome and matches; the
auditor's report shows both. Then: /metrics is refused from outside and scraped by
Prometheus (counters from the web and worker processes added up), the request id
crosses from nginx to the web and worker logs, and the stray beat sends nothing.

The backup drill (README, Backups): `pg_dump` while platforms submit and read, restore
into a fresh database, start a web server on it, and check that `ledger_verify` passes,
the restored log is a prefix of the live one, every cursor points inside it, and a
member resumes its feed from its cursor, and `hashexchange log audit` passes on the copy.

Everything is stopped at the end (or at the first failure, which is named, with the end
of the relevant log); --keep leaves it running for a look. Files: var/prod-check/.
"""

from __future__ import annotations

import argparse
import base64
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import requests
from dotenv import dotenv_values
from hashexchange_client import dsse, keys, payloads
from hashexchange_client.webhooks import verify_webhook

from dev.services import (
    ServiceError,
    checkout_ports,
    ensure_postgres,
    find_postgres_bindir,
    start_redis,
    stop_process,
    tail,
)

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "prod-check"
HOST = "exchange.test"
# Deploy-check warnings that production.env leaves to the operator: HSTS for every subdomain
# and the browsers' preload list are decisions for the whole domain.
OPERATORS_CALL = {"security.W005", "security.W021"}
# Hashes imported before the backup drill, so that pg_dump runs long enough to be "under load".
SEED_HASHES = 200_000
SCRAPE_BUDGET_SECONDS = 2.0
PROGRAM = "smoke"


class CheckFailed(RuntimeError):
    """A step of the check failed; the message says which and why."""


def say(message: str) -> None:
    print(f"prod-check: {message}", flush=True)


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (requests.RequestException, OSError, ValueError, KeyError) as exc:
            last_error = exc
        time.sleep(interval)
    raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last_error})" if last_error else ""))


@dataclass
class Ports:
    web: int
    https: int
    http: int
    prometheus: int
    redis: int
    postgres: int
    receiver: int
    restored_web: int

    @classmethod
    def for_checkout(cls) -> Ports:
        base = checkout_ports(ROOT).prod_check
        return cls(*(base + offset for offset in range(8)))


@dataclass
class Stack:
    """What this run started, to stop in reverse order."""

    ports: Ports
    env: dict[str, str] = field(default_factory=dict)
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    stop_postgres: Callable[[], None] | None = None
    postgres_url: str = ""
    nginx: bool = False
    prometheus: bool = False
    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, since: float) -> None:
        self.timings[name] = round(time.monotonic() - since, 1)


# Services ------------------------------------------------------------------------------------


def spawn(stack: Stack, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = (WORK / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        list(args),
        cwd=ROOT,
        env=env or stack.env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.processes.append((name, proc))
    return proc


def stop(stack: Stack) -> None:
    for name, proc in reversed(stack.processes):
        if proc.poll() is None:
            say(f"stopping {name} (pid {proc.pid})")
            if name == "nginx":
                proc.send_signal(signal.SIGQUIT)  # graceful
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
            stop_process(proc, timeout=40)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything a child left behind
        except (ProcessLookupError, PermissionError):
            pass
    if stack.stop_postgres is not None:
        stack.stop_postgres()


def production_env(stack: Stack, database: str) -> dict[str, str]:
    """deploy/production.env with this machine's names, ports and fresh secrets."""
    ports = stack.ports
    values = {k: v for k, v in dotenv_values(ROOT / "deploy" / "production.env").items() if v is not None}
    site = f"https://{HOST}:{ports.https}" if stack.nginx else f"https://{HOST}"
    values.update(
        {
            "SECRET_KEY": secrets.token_urlsafe(50),
            "API_KEY_PEPPER": secrets.token_urlsafe(50),
            "SECRETS_ENCRYPTION_KEY": secrets.token_urlsafe(50),
            "SERVER_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
            "METRICS_TOKEN": secrets.token_urlsafe(24),
            "ALLOWED_HOSTS": f"{HOST},127.0.0.1,localhost",
            "CSRF_TRUSTED_ORIGINS": site,
            "SITE_URL": site,
            "DATABASE_URL": f"{stack.postgres_url.rsplit('/', 1)[0]}/{database}",
            "REDIS_URL": f"redis://127.0.0.1:{ports.redis}/0",
            "VAR_DIR": str(WORK / "var"),
            "STATIC_ROOT": str(WORK / "static"),
            "MATCH_INDEX_DIR": str(WORK / "var" / "index"),
            "BEAT_SCHEDULE_FILE": str(WORK / "var" / "celerybeat-schedule"),
            "METRICS_ROOT": str(WORK / "metrics"),
            "GUNICORN_BIND": f"127.0.0.1:{ports.web}",
            "WEB_CONCURRENCY": "3",
            "CELERY_CONCURRENCY": "2",
            "WEBHOOK_CONCURRENCY": "8",
            # The smoke flow's receiver listens on 127.0.0.1; production leaves this off.
            "WEBHOOKS_ALLOW_PRIVATE": "1",
            "VENV": sys.prefix,
            # The checkout's own .env is for development; this run reads nothing but the above.
            "ENV_FILE": os.devnull,
        }
    )
    missing = [key for key, value in values.items() if "CHANGE-ME" in value]
    if missing:
        raise CheckFailed(f"production.env values left unset by the check: {', '.join(missing)}")
    return values


def write_env_file(values: dict[str, str], path: Path) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    path.chmod(0o600)


def process_env(values: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONPATH")}
    return {**keep, **values, "PYTHONUNBUFFERED": "1"}


def run_step(stack: Stack, name: str, args: Sequence[str], *, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        list(args), cwd=ROOT, env=env or stack.env, capture_output=True, text=True, timeout=600, check=False
    )
    (WORK / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise CheckFailed(f"`{' '.join(args)}` failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def manage(stack: Stack, *args: str) -> str:
    return run_step(stack, f"manage-{args[0]}", [sys.executable, "manage.py", *args])


def start_postgres(stack: Stack) -> None:
    url, stop_pg = ensure_postgres(ROOT / "var" / "prod-check-postgres", stack.ports.postgres)
    stack.postgres_url, stack.stop_postgres = url, stop_pg
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        for name in ("prodcheck", "prodcheck_restored"):
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute("CREATE DATABASE prodcheck")


def make_certificate() -> tuple[Path, Path]:
    tls = WORK / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    cert, key = tls / "cert.pem", tls / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST},IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def nginx_site(ports: Ports, cert: Path, key: Path) -> str:
    """deploy/nginx/hashexchange.conf with this run's names, ports and paths; every
    replaced line must be there, so the check fails if the site file changes shape."""
    site = (ROOT / "deploy" / "nginx" / "hashexchange.conf").read_text()
    replacements = [
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{ports.web};"),
        ("    listen 80;\n", f"    listen 127.0.0.1:{ports.http};\n"),
        ("    listen [::]:80;\n", ""),
        ("    listen 443 ssl http2;\n", f"    listen 127.0.0.1:{ports.https} ssl http2;\n"),
        ("    listen [::]:443 ssl http2;\n", ""),
        ("server_name exchange.example.org;", f"server_name {HOST};"),
        ("/etc/letsencrypt/live/exchange.example.org/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/exchange.example.org/privkey.pem", str(key)),
        ("alias /opt/hashexchange/staticfiles/;", f"alias {WORK / 'static'}/;"),
    ]
    for old, new in replacements:
        if old not in site:
            raise CheckFailed(f"deploy/nginx/hashexchange.conf no longer contains {old.strip()!r}")
        site = site.replace(old, new)
    return site


def start_nginx(stack: Stack) -> str:
    """nginx in the foreground with the deploy site; returns the base URL of the HTTPS server."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    cert, key = make_certificate()
    (WORK / "nginx-site.conf").write_text(nginx_site(stack.ports, cert, key))
    temp = WORK / "nginx-temp"
    temp.mkdir(exist_ok=True)
    mime = "/etc/nginx/mime.types"
    main = "\n".join(
        [
            "user root;" if os.geteuid() == 0 else "",
            "daemon off;",
            "worker_processes 2;",
            f"pid {WORK / 'nginx.pid'};",
            f"error_log {WORK / 'nginx-error.log'} warn;",
            "events { worker_connections 256; }",
            "http {",
            f"    include {mime};" if Path(mime).exists() else "",
            f"    access_log {WORK / 'nginx-access.log'};",
            *[f"    {kind}_temp_path {temp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")],
            f"    include {WORK / 'nginx-site.conf'};",
            "}",
            "",
        ]
    )
    (WORK / "nginx.conf").write_text(main)
    run_step(stack, "nginx-test", [nginx, "-t", "-p", str(WORK), "-c", str(WORK / "nginx.conf")])
    spawn(stack, "nginx", [nginx, "-p", str(WORK), "-c", str(WORK / "nginx.conf")])
    return f"https://127.0.0.1:{stack.ports.https}"


def start_prometheus(stack: Stack) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus is not None
    (WORK / "metrics-token").write_text(stack.env["METRICS_TOKEN"])
    shutil.copyfile(ROOT / "deploy" / "prometheus" / "alerts.yml", WORK / "alerts.yml")
    (WORK / "prometheus.yml").write_text(
        "global: {scrape_interval: 2s, scrape_timeout: 2s, evaluation_interval: 2s}\n"
        f"rule_files: [{WORK / 'alerts.yml'}]\n"
        "scrape_configs:\n"
        "  - job_name: hashexchange\n"
        "    metrics_path: /metrics\n"
        f"    authorization: {{type: Bearer, credentials_file: {WORK / 'metrics-token'}}}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{stack.ports.web}']}}]\n"
    )
    spawn(
        stack,
        "prometheus",
        [
            prometheus,
            f"--config.file={WORK / 'prometheus.yml'}",
            f"--storage.tsdb.path={WORK / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{stack.ports.prometheus}",
        ],
    )


def prometheus_query(stack: Stack, expression: str) -> list[dict[str, Any]]:
    answer = requests.get(
        f"http://127.0.0.1:{stack.ports.prometheus}/api/v1/query", params={"query": expression}, timeout=5
    )
    answer.raise_for_status()
    return answer.json()["data"]["result"]


# The smoke flow ------------------------------------------------------------------------------


class Api:
    """A member's (or operator's) HTTP client, through nginx when it runs."""

    def __init__(self, base: str, key: str | None, *, verify: str | bool, direct: bool) -> None:
        self.base = base
        # Per request: a Session's own `verify` loses to REQUESTS_CA_BUNDLE in the environment.
        self.verify = verify
        self.session = requests.Session()
        self.session.headers["Host"] = HOST
        if direct:  # no nginx: say what it would have said
            self.session.headers["X-Forwarded-Proto"] = "https"
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base + path, timeout=30, verify=self.verify, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.session.post(self.base + path, json=body, timeout=60, verify=self.verify, **kwargs)


def expect(response: requests.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise CheckFailed(f"{what}: expected {status}, got {response.status_code}: {response.text[:500]}")
    return response.json() if response.content and "json" in response.headers.get("content-type", "") else None


class Receiver:
    """A member's webhook receiver on 127.0.0.1 that checks each signature."""

    def __init__(self, port: int) -> None:
        self.secret = ""
        self.entries: list[dict[str, Any]] = []
        self.request_ids: list[str] = []
        self.failures: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    verify_webhook(self.headers, body, secret=receiver.secret)
                except Exception as exc:  # noqa: BLE001 - reported by the check
                    receiver.failures.append(str(exc))
                    self.send_response(401)
                    self.end_headers()
                    return
                message = json.loads(body)
                if message["type"] != "webhook.test":
                    batch = message["type"] == "events.batch"
                    receiver.entries += message["data"]["entries"] if batch else [message["data"]]
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Member:
    slug: str
    token: str
    api: Api
    key: Any = None

    def sign(self, value: str, kind: str = "pdq") -> dict[str, Any]:
        payload = payloads.submission_payload(program=PROGRAM, signal_type=kind, value=value)
        return dsse.sign_envelope(payloads.SUBMISSION_TYPE, payload, self.key)


def random_pdq() -> str:
    while True:
        value = secrets.token_hex(32)
        if 64 < bin(int(value, 16)).count("1") < 192:
            return value


def onboard(stack: Stack, base: str, verify: str | bool, direct: bool) -> dict[str, Member]:
    """Operators onboard from the shell, as README says."""
    manage(stack, "program_create", PROGRAM, "--name", "Smoke", "--signal-types", "pdq,md5")
    members = {}
    for slug, kind in (("alpha", "platform"), ("beta", "platform"), ("audit", "auditor")):
        args = ["member_create", slug, "--kind", kind] + (["--program", PROGRAM] if kind != "auditor" else [])
        manage(stack, *args)
        token = manage(stack, "credential_issue", slug).strip().splitlines()[-1]
        members[slug] = Member(slug, token, Api(base, token, verify=verify, direct=direct))
    return members


def probe_id(api: Api) -> bool:
    """A request without X-Request-ID gets nginx's $request_id (32 hex digits), echoed back."""
    return bool(re.fullmatch(r"[0-9a-f]{32}", api.get("/api/v1/me").headers.get("X-Request-ID", "")))


def smoke(stack: Stack, base: str, verify: str | bool, direct: bool, receiver: Receiver) -> dict[str, Member]:
    members = onboard(stack, base, verify, direct)
    alpha, beta, audit = members["alpha"], members["beta"], members["audit"]
    alpha.key = keys.generate_private_key()
    public = base64.b64encode(keys.public_key_bytes(alpha.key)).decode()
    expect(alpha.api.post("/api/v1/keys", {"public_key": public, "algorithm": "ed25519"}), 201, "register a key")

    hook = expect(beta.api.post("/api/v1/webhooks", {"url": f"http://127.0.0.1:{stack.ports.receiver}/hook"}), 201,
                  "create a webhook")  # fmt: skip
    receiver.secret = hook["secret"]
    test = expect(beta.api.post(f"/api/v1/webhooks/{hook['id']}/test", {}), 200, "webhook test")
    if not test["ok"]:
        raise CheckFailed(f"the webhook test message did not arrive: {test}")

    values = [random_pdq() for _ in range(3)]
    answer = alpha.api.post(
        "/api/v1/submissions", {"envelopes": [alpha.sign(v) for v in values]}, headers={"X-Request-ID": "smoke-submit"}
    )
    result = expect(answer, 200, "submit three signed hashes")
    if result["accepted"] != 3:
        raise CheckFailed(f"submissions not accepted: {result}")
    if answer.headers.get("X-Request-ID") != "smoke-submit":
        raise CheckFailed(f"the request id did not come back: {answer.headers.get('X-Request-ID')!r}")
    if not direct and not probe_id(members["beta"].api):
        raise CheckFailed("nginx did not give a request without X-Request-ID an id of its own")

    wait_until(lambda: {e["hash"]["value"] for e in receiver.entries} >= set(values), timeout=60,
               what="the three hashes at beta's webhook receiver (webhooks worker)")  # fmt: skip
    if receiver.failures:
        raise CheckFailed(f"webhook signatures failed to verify: {receiver.failures}")

    hash_id = next(e["hash"]["id"] for e in receiver.entries if e["hash"]["value"] == values[0])
    outcome = {
        "hash_id": hash_id,
        "program": PROGRAM,
        "kind": "removed",
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "client_ref": "smoke-1",
    }
    expect(beta.api.post("/api/v1/outcomes", {"outcomes": [outcome]}), 200, "report an outcome")
    matched = expect(
        beta.api.post("/api/v1/match", {"queries": [{"signal_type": "pdq", "value": values[1]}]}), 200, "match"
    )
    if matched["matched"] != 1:
        raise CheckFailed(f"the match API did not find a submitted hash: {matched}")
    report = expect(audit.api.get(f"/api/v1/reports/programs/{PROGRAM}"), 200, "the auditor's report")
    row = next(r for r in report["members"] if r["member"] == "beta")
    if row["removals"]["count"] != 1 or row["match_api"]["matches"] != 1 or report["hashes"]["distributed"] != 3:
        raise CheckFailed(f"the report does not show the flow: {json.dumps(row)[:800]}")
    say("smoke flow: onboarding, key, 3 signed hashes → webhook (signed), outcome, match, auditor's report: ok")
    return members


def check_metrics(stack: Stack, base: str, verify: str | bool) -> None:
    token = stack.env["METRICS_TOKEN"]
    direct = f"http://127.0.0.1:{stack.ports.web}/metrics"
    if requests.get(direct, timeout=10).status_code != 403:
        raise CheckFailed("/metrics answered without the token")
    if requests.get(direct, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code != 200:
        raise CheckFailed("/metrics refused the token")
    if stack.nginx:
        public = requests.get(f"{base}/metrics", headers={"Host": HOST, "Authorization": f"Bearer {token}"},
                              verify=verify, timeout=10)  # fmt: skip
        if public.status_code != 404:
            raise CheckFailed(f"/metrics is reachable through the public site ({public.status_code})")
    if not stack.prometheus:
        say("metrics: token and refusal ok (Prometheus not installed: no scrape)")
        return
    wait_until(lambda: prometheus_query(stack, 'up{job="hashexchange"} == 1'), timeout=60, what="Prometheus up")
    delivered = wait_until(
        lambda: prometheus_query(stack, 'hashexchange_webhook_deliveries_total{result="delivered"} > 0'),
        timeout=60,
        what="deliveries counted by the webhooks worker, scraped through the web",
    )
    accepted = wait_until(
        lambda: prometheus_query(stack, 'hashexchange_submissions_total{result="accepted"} >= 3'),
        timeout=30,
        what="accepted submissions in Prometheus",
    )
    wait_until(
        lambda: prometheus_query(stack, "hashexchange_beat_heartbeat_age_seconds"),
        timeout=60,
        what="beat's heartbeat in Prometheus",
    )
    rules = requests.get(f"http://127.0.0.1:{stack.ports.prometheus}/api/v1/rules", timeout=5).json()
    names = {rule["name"] for group in rules["data"]["groups"] for rule in group["rules"]}
    if "NoBeatHeartbeat" not in names:
        raise CheckFailed(f"Prometheus did not load deploy/prometheus/alerts.yml: {sorted(names)}")
    say(
        f"metrics: scraped by Prometheus, {len(names)} alert rules loaded; delivered "
        f"{delivered[0]['value'][1]}, accepted {accepted[0]['value'][1]}"
    )


def check_logs() -> None:
    """The id a request came with is on the web's lines and on the worker task it caused."""
    lines: dict[str, list[str]] = {}
    for line in (WORK / "honcho.log").read_text(errors="replace").splitlines():
        found = re.match(r"^\S+ ([\w-]+)\.\d+\s*\| (.*)$", line)  # honcho: "12:00:01 web.1 | ..."
        if found:
            lines.setdefault(found.group(1), []).append(found.group(2))
    web = lines.get("web", [])
    worker = lines.get("worker-celery", []) + lines.get("worker-webhooks", [])
    if not any('"request_id": "smoke-submit"' in line for line in web):
        raise CheckFailed("the web log has no JSON line with the smoke request's id")
    if not any('"request_id": "smoke-submit"' in line and '"task_name"' in line for line in worker):
        raise CheckFailed("no worker log line carries the smoke request's id into its task")
    say("logs: JSON lines; the request id reached the web and worker logs")


def check_second_beat(stack: Stack) -> None:
    env = dict(stack.env, BEAT_SCHEDULE_FILE=str(WORK / "var" / "celerybeat-schedule-stray"), METRICS_ROOT="")
    proc = spawn(stack, "stray-beat", [str(ROOT / "deploy" / "bin" / "run"), "beat"], env)
    log = WORK / "stray-beat.log"
    wait_until(lambda: "stands by" in log.read_text(), timeout=60, what="the stray beat standing by")
    time.sleep(16)  # beat's sweep is due every 15 s: a stray beat that sent would have by now
    stop_process(proc)
    if "Sending due task" in log.read_text():
        raise CheckFailed("a second beat sent periodic tasks")
    say("beat: a second beat stood by and sent nothing")


# The backup drill ----------------------------------------------------------------------------


class Load:
    """Platforms at work while the dump runs: alpha submits small batches, beta reads its feed.
    Each accepted batch is kept with the time its answer came, to count those during the dump."""

    def __init__(self, alpha: Member, beta: Member) -> None:
        self.alpha, self.beta = alpha, beta
        self.stop = threading.Event()
        self.submitted = 0
        self.answered: list[tuple[float, int]] = []  # (monotonic time, accepted)
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def accepted_between(self, start: float, end: float) -> int:
        return sum(n for at, n in list(self.answered) if start <= at <= end)

    def _run(self) -> None:
        after = 0
        while not self.stop.is_set():
            try:
                batch = [self.alpha.sign(random_pdq()) for _ in range(5)]
                answer = self.alpha.api.post("/api/v1/submissions", {"envelopes": batch})
                if answer.status_code == 200:
                    accepted = answer.json()["accepted"]
                    self.submitted += accepted
                    self.answered.append((time.monotonic(), accepted))
                else:
                    self.errors.append(f"submit {answer.status_code}")
                page = self.beta.api.get(f"/api/v1/feed?after={after}&limit=500")
                if page.status_code == 200:
                    after = page.json()["next"]
            except requests.RequestException as exc:
                self.errors.append(str(exc))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return list(connection.execute(query).fetchall())


def backup_drill(stack: Stack, members: dict[str, Member], base: str, verify: str | bool, direct: bool) -> None:
    started = time.monotonic()
    bindir = find_postgres_bindir()
    live = stack.env["DATABASE_URL"]
    restored = live.rsplit("/", 1)[0] + "/prodcheck_restored"
    dump = WORK / "backup.dump"
    # A log of some size, so that the dump takes long enough for writes to land meanwhile.
    seeded = WORK / "seed-hashes.txt"
    seeded.write_text("".join(random_pdq() + "\n" for _ in range(SEED_HASHES)))
    manage(stack, "import_hashes", str(seeded), "--program", PROGRAM, "--source", "prod-check-seed",
           "--signal-type", "pdq", "--no-progress")  # fmt: skip
    # A scrape must stay cheap as the log grows: it holds a web worker while it runs.
    scrape_started = time.monotonic()
    scrape = requests.get(f"http://127.0.0.1:{stack.ports.web}/metrics", timeout=60,
                          headers={"Authorization": f"Bearer {stack.env['METRICS_TOKEN']}"})  # fmt: skip
    scrape_seconds = time.monotonic() - scrape_started
    if scrape.status_code != 200 or scrape_seconds > SCRAPE_BUDGET_SECONDS:
        raise CheckFailed(
            f"/metrics took {scrape_seconds:.1f}s (status {scrape.status_code}) with {SEED_HASHES} hashes"
        )
    say(f"metrics: one scrape with {SEED_HASHES} more hashes in the log took {scrape_seconds * 1000:.0f} ms")
    with Load(members["alpha"], members["beta"]) as load:
        wait_until(lambda: load.submitted >= 20, timeout=60, what=f"load before the dump (errors: {load.errors[:3]})")
        dump_started = time.monotonic()
        run_step(stack, "pg_dump", [str(bindir / "pg_dump"), "--format=custom", f"--file={dump}", f"--dbname={live}"])
        dump_ended = time.monotonic()
        dump_seconds = dump_ended - dump_started
        time.sleep(1)
        during = load.accepted_between(dump_started, dump_ended)
    if load.errors:
        raise CheckFailed(f"the load saw errors during the dump: {load.errors[:5]}")
    if during <= 0:
        raise CheckFailed("nothing was submitted while pg_dump ran: not a dump under load")
    with psycopg.connect(live.rsplit("/", 1)[0] + "/postgres", autocommit=True) as connection:
        connection.execute("CREATE DATABASE prodcheck_restored")
    run_step(
        stack, "pg_restore", [str(bindir / "pg_restore"), "--no-owner", "--jobs=2", f"--dbname={restored}", str(dump)]
    )
    restored_env = dict(
        stack.env,
        DATABASE_URL=restored,
        GUNICORN_BIND=f"127.0.0.1:{stack.ports.restored_web}",
        WEB_CONCURRENCY="2",
        METRICS_ROOT=str(WORK / "metrics-restored"),
        MATCH_INDEX_DIR=str(WORK / "var" / "index-restored"),
        # The copy serves plain HTTP on loopback to this check, which audits it with the client.
        SECURE_SSL_REDIRECT="0",
    )
    verified = run_step(stack, "ledger-verify-restored", [sys.executable, "manage.py", "ledger_verify"],
                        env=restored_env).strip()  # fmt: skip

    # The restored log is exactly the live log up to where the dump's snapshot was taken.
    restored_log = rows(restored, "SELECT seq, leaf_hash FROM exchange_event ORDER BY seq")
    last = restored_log[-1][0]
    live_log = rows(live, f"SELECT seq, leaf_hash FROM exchange_event WHERE seq <= {int(last)} ORDER BY seq")
    if restored_log != live_log:
        raise CheckFailed("the restored event log differs from the live one up to its last event")
    live_last = rows(live, "SELECT max(seq) FROM exchange_event")[0][0]
    # Every cursor of the copy points inside its log, so no member skips or re-reads on restore.
    beyond = rows(
        restored,
        f"SELECT 'feed', member_id, last_seq FROM exchange_feedcursor WHERE last_seq > {int(last)} "
        f"UNION ALL SELECT 'webhook', id, cursor_seq FROM exchange_webhookendpoint WHERE cursor_seq > {int(last)}",
    )
    if beyond:
        raise CheckFailed(f"cursors beyond the restored log: {beyond}")
    beta_cursor = rows(
        restored,
        "SELECT c.last_seq FROM exchange_feedcursor c JOIN members_member m ON m.id = c.member_id "
        "WHERE m.slug = 'beta'",
    )[0][0]

    server = spawn(stack, "restored-web", [str(ROOT / "deploy" / "bin" / "run"), "web"], restored_env)
    restored_base = f"http://127.0.0.1:{stack.ports.restored_web}"
    wait_until(lambda: requests.get(f"{restored_base}/readyz", timeout=10).status_code == 200, timeout=90,
               what="the server on the restored database")  # fmt: skip
    beta = Api(restored_base, members["beta"].token, verify=False, direct=True)
    page = expect(beta.get(f"/api/v1/feed?after={beta_cursor}&limit=500"), 200, "beta's feed on the restored copy")
    if page["entries"] and page["entries"][0]["seq"] <= beta_cursor:
        raise CheckFailed("the restored feed repeats events before beta's cursor")
    first = expect(beta.get("/api/v1/feed?after=0&limit=50"), 200, "the restored feed from the start")
    live_first = expect(members["beta"].api.get("/api/v1/feed?after=0&limit=50"), 200, "the live feed")
    if [e["seq"] for e in first["entries"]] != [e["seq"] for e in live_first["entries"] if e["seq"] <= last]:
        raise CheckFailed("the restored feed differs from the live feed")
    # The audit log of the copy: every entry re-read and the root of its latest signed
    # checkpoint recomputed, with the log key taken from the live server.
    log_key = expect(members["audit"].api.get("/api/v1/server-key"), 200, "the server key")["log_vkey"]
    audited = run_step(
        stack,
        "log-audit-restored",
        [sys.executable, "-m", "hashexchange_client", "log", "audit", "--no-progress"],
        env=dict(
            stack.env,
            HASHEXCHANGE_SERVER=restored_base,
            HASHEXCHANGE_API_KEY=members["audit"].token,
            HASHEXCHANGE_LOG_KEY=log_key,
        ),
    ).strip()
    stop_process(server)
    stack.mark("backup drill", started)
    say(
        f"backup drill: pg_dump {dump_seconds:.1f}s under load ({during} hashes submitted meanwhile), "
        f"{dump.stat().st_size // 1024} KiB; restored up to seq {last} of {live_last} live; {verified}; "
        f"a server started on the copy; cursors inside the log; beta resumed its feed after {beta_cursor}; "
        f"log audit on the copy: {audited.splitlines()[-1] if audited else 'ok'}"
    )


# Main ------------------------------------------------------------------------------------------


def run(keep: bool, with_backup: bool) -> int:
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    stack = Stack(ports=Ports.for_checkout())
    stack.nginx = shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()
    stack.prometheus = shutil.which("prometheus") is not None
    say(f"ports {stack.ports}; nginx {'yes' if stack.nginx else 'not installed'}; "
        f"prometheus {'yes' if stack.prometheus else 'not installed'}; files in {WORK}")  # fmt: skip
    receiver = Receiver(stack.ports.receiver)
    code = 0
    try:
        step = time.monotonic()
        start_postgres(stack)
        # First in the list, so stopped last.
        stack.processes.append(("redis", start_redis(stack.ports.redis, WORK / "redis", persist=True)))
        stack.mark("postgres and redis", step)

        values = production_env(stack, "prodcheck")
        write_env_file(values, WORK / "env")
        stack.env = process_env(values)
        step = time.monotonic()
        released = run_step(stack, "release", [str(ROOT / "deploy" / "bin" / "run"), "release"])
        released += (WORK / "release.log").read_text()
        warnings = sorted(set(re.findall(r"\(([\w.]+\.W\d+)\)", released)) - OPERATORS_CALL)
        if warnings:
            raise CheckFailed(f"check --deploy warns about the production settings: {', '.join(warnings)}")
        stack.mark("release", step)

        step = time.monotonic()
        spawn(
            stack,
            "honcho",
            [sys.executable, "-m", "honcho", "-f", "deploy/Procfile", "-e", str(WORK / "env"), "-d", str(ROOT),
             "--no-colour", "start"],
        )  # fmt: skip
        base, verify, direct = f"http://127.0.0.1:{stack.ports.web}", False, True
        if stack.nginx:
            base, verify, direct = start_nginx(stack), str(WORK / "tls" / "cert.pem"), False
        if stack.prometheus:
            start_prometheus(stack)
        probe = Api(base, None, verify=verify, direct=direct)
        wait_until(lambda: probe.get("/readyz").status_code == 200, timeout=120, what="/readyz through the front")
        stack.mark("start", step)
        say(f"topology up in {stack.timings['start']}s: gunicorn (3 workers), 2 workers, beat"
            + (", nginx" if stack.nginx else "") + (", prometheus" if stack.prometheus else ""))  # fmt: skip

        step = time.monotonic()
        members = smoke(stack, base, verify, direct, receiver)
        stack.mark("smoke", step)
        check_metrics(stack, base, verify)
        check_logs()
        check_second_beat(stack)
        if with_backup:
            backup_drill(stack, members, base, verify, direct)
        timings = ", ".join(f"{name} {seconds}s" for name, seconds in stack.timings.items())
        say(f"ok in {time.monotonic() - stack.started:.0f}s ({timings})")
        if keep:
            say(f"--keep: running; web {base}, env {WORK / 'env'}; Ctrl-C stops it")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except (CheckFailed, ServiceError, subprocess.CalledProcessError) as exc:
        code = 1
        say(f"FAILED: {exc}")
        for name in ("honcho", "nginx-error", "prometheus"):
            path = WORK / f"{name}.log"
            if path.exists():
                say(f"end of {path}:\n{tail(path, 40)}")
    finally:
        receiver.close()
        stop(stack)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.prodcheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack running after the checks (Ctrl-C stops)")
    parser.add_argument("--no-backup", action="store_true", help="skip the backup drill")
    args = parser.parse_args(argv)
    os.environ.pop("ENV_FILE", None)
    return run(args.keep, not args.no_backup)


if __name__ == "__main__":
    sys.exit(main())
