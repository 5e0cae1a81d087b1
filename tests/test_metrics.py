"""GET /metrics: who may read it, what it counts, that no label carries anything sensitive,
that several processes add up, and that a real Prometheus (Debian's package) scrapes it."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from django.test import Client, override_settings

from core.ledger import Event
from exchange import delivery as webhook_delivery
from tests.conftest import ROOT, Caller, Receiver, worker_database_url
from tests.signing import Signer, random_pdq

TOKEN = "metrics-token-for-tests-0123456789"


def scrape(client: Client | None = None, **headers: str) -> tuple[int, str]:
    response = (client or Client()).get("/metrics", **headers)
    return response.status_code, response.content.decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in the exposition text, or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        head, _, rest = metric.partition("{")
        if head != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


@override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=[], DEBUG=False)
def test_only_the_token_opens_metrics_in_production(db: None) -> None:
    assert scrape()[0] == 403
    status, body = scrape(HTTP_AUTHORIZATION="Bearer wrong")
    assert status == 401 and "METRICS_TOKEN" in body
    status, body = scrape(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert status == 200 and "hashexchange_ledger_last_seq" in body


@override_settings(METRICS_TOKEN="", DEBUG=False)
def test_an_allowed_network_needs_no_token_and_others_get_nothing(db: None) -> None:
    import ipaddress

    with override_settings(METRICS_ALLOWED_NETWORKS=[ipaddress.ip_network("10.1.0.0/16")]):
        assert scrape(REMOTE_ADDR="10.1.2.3")[0] == 200
        assert scrape(REMOTE_ADDR="10.2.0.1")[0] == 403
        assert scrape(REMOTE_ADDR="127.0.0.1")[0] == 403  # loopback is not special without DEBUG
        # X-Forwarded-For is not believed.
        assert scrape(REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="10.1.2.3")[0] == 403
    with override_settings(DEBUG=True, METRICS_ALLOWED_NETWORKS=[]):
        assert scrape(REMOTE_ADDR="127.0.0.1")[0] == 200
        assert scrape(REMOTE_ADDR="::1")[0] == 200
        assert scrape(REMOTE_ADDR="192.0.2.1")[0] == 403


@pytest.mark.django_db(transaction=True)  # events are counted when their transaction commits
@override_settings(METRICS_TOKEN=TOKEN, WEBHOOKS_ALLOW_PRIVATE=True)
def test_the_flow_is_counted_and_no_label_carries_a_value_key_or_case(
    receiver: Receiver, signer_a: Signer, platform_b: Caller
) -> None:
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    before = scrape(**auth)[1]
    case = "CASE-metrics-41"
    values = [random_pdq() for _ in range(3)]
    hook = platform_b.client.post("/api/v1/webhooks", {"url": receiver.url}, format="json").json()
    result = signer_a.submit(*[signer_a.submission(v, case=case) for v in values]).json()
    assert result["accepted"] == 3
    signer_a.submit(signer_a.submission(values[0], case=case))  # duplicate
    stale = signer_a.submission(random_pdq(), created_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    signer_a.submit(stale)  # rejected: stale_timestamp
    platform_b.client.post(
        "/api/v1/match",
        {"queries": [{"signal_type": "pdq", "value": v} for v in [*values, random_pdq()]]},
        format="json",
    )
    receiver.responses = [500]
    webhook_delivery.deliver_endpoint(hook["id"])  # fails once
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(values[2], case=case), format="json")

    status, after = scrape(**auth)
    assert status == 200

    def grew(name: str, **labels: str) -> float:
        return (sample(after, name, **labels) or 0) - (sample(before, name, **labels) or 0)

    assert grew("hashexchange_events_recorded_total", kind="hash.added") == 3
    assert grew("hashexchange_events_recorded_total", kind="hash.withdrawn") == 1
    assert grew("hashexchange_submissions_total", result="accepted", reason="") == 3
    assert grew("hashexchange_submissions_total", result="duplicate", reason="") == 1
    assert grew("hashexchange_submissions_total", result="rejected", reason="stale_timestamp") == 1
    assert grew("hashexchange_match_queries_total", matched="yes") == 3
    assert grew("hashexchange_match_queries_total", matched="no") == 1
    assert grew("hashexchange_match_request_seconds_count") == 1
    assert grew("hashexchange_webhook_deliveries_total", result="failed") == 1
    assert sample(after, "hashexchange_ledger_last_seq") == Event.objects.order_by("-seq").first().seq
    assert sample(after, "hashexchange_webhook_lag_events", endpoint=str(hook["id"]), member="platform-b") > 0
    assert sample(after, "hashexchange_webhook_failing_seconds", endpoint=str(hook["id"]), member="platform-b") >= 0
    assert sample(after, "hashexchange_feed_lag_seconds", member="platform-b", program="take-it-down") >= 0
    assert sample(after, "hashexchange_celery_queue_length", queue="webhooks") is not None
    assert sample(after, "hashexchange_index_hashes", signal_type="pdq") is not None
    assert sample(after, "hashexchange_metrics_collect_errors", part="database") == 0
    assert sample(after, "django_http_requests_total_by_method_total", method="POST") is not None

    secrets = [*values, case, signer_a.caller.token, platform_b.token, hook["secret"]]
    labels = " ".join(re.findall(r"\{[^}]*\}", after))
    for value in secrets:
        assert value not in after and value not in labels


# Several processes, and a real Prometheus ------------------------------------------------------

PROMETHEUS = shutil.which("prometheus")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_counts_of_several_processes_add_up(tmp_path: Path, db: None) -> None:
    """Each process writes its counters into PROMETHEUS_MULTIPROC_DIR; /metrics adds up the
    files of that directory and its siblings (web and worker services on one host)."""
    code = (
        "import sys\n"
        "from core import metrics\n"
        "metrics.events_recorded(['hash.added'] * int(sys.argv[1]))\n"
        "metrics.webhook_delivery('delivered')\n"
    )
    for service, count in (("web", "2"), ("web", "3"), ("worker", "5")):
        directory = tmp_path / service
        directory.mkdir(exist_ok=True)
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "DJANGO_SETTINGS_MODULE": "config.settings"}
        subprocess.run([sys.executable, "-c", code, count], cwd=ROOT, env=env, check=True, timeout=60)
    probe = (
        "import django, os\n"
        "django.setup()\n"
        "from django.test import Client\n"
        "from django.test.utils import setup_test_environment\n"
        "setup_test_environment()\n"
        "r = Client().get('/metrics', HTTP_AUTHORIZATION='Bearer t')\n"
        "print(r.status_code)\n"
        "print(r.content.decode())\n"
    )
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "web"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "METRICS_TOKEN": "t",
        "DEBUG": "1",
        "DATABASE_URL": worker_database_url(),
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    status, _, body = done.stdout.partition("\n")
    assert status == "200"
    assert sample(body, "hashexchange_events_recorded_total", kind="hash.added") == 10
    assert sample(body, "hashexchange_webhook_deliveries_total", result="delivered") == 3
    assert (
        body.count("# TYPE hashexchange_events_recorded_total counter")
        + body.count("# TYPE hashexchange_events_recorded counter")
        == 1
    )


@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed (.ci/run installs it)")
@pytest.mark.django_db(transaction=True)
@override_settings(METRICS_TOKEN=TOKEN)
def test_a_real_prometheus_scrapes_metrics(live_server, tmp_path: Path, signer_a: Signer) -> None:  # noqa: ANN001
    signer_a.submit(signer_a.submission())
    target = urllib.parse.urlsplit(live_server.url).netloc
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: hashexchange\n"
        "    metrics_path: /metrics\n"
        f"    authorization: {{type: Bearer, credentials_file: {tmp_path / 'token'}}}\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def query(expression: str) -> list:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)["data"]["result"]

    try:
        deadline = time.monotonic() + 60
        found: list = []
        while time.monotonic() < deadline and not found:
            time.sleep(1)
            try:
                found = query('hashexchange_events_recorded_total{kind="hash.added"}')
            except OSError:
                continue
        assert found, f"Prometheus did not scrape the exchange; see {tmp_path / 'prometheus.log'}"
        assert float(found[0]["value"][1]) >= 1
        assert query('up{job="hashexchange"}')[0]["value"][1] == "1"
        assert query("hashexchange_ledger_last_seq")[0]["value"][1] == str(Event.objects.order_by("-seq")[0].seq)
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=20)
        log.close()
