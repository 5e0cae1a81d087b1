"""deploy/ holds together: the units and the Procfile run the same commands, the production env
explains every setting, nginx accepts the site, promtool accepts (and tests) the alert rules,
and the dashboard and the rules ask only for metrics that /metrics has."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.test import Client, override_settings
from dotenv import dotenv_values

from dev import prodcheck
from tests.signing import Signer, random_pdq

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT_ROOT = "/opt/hashexchange/"


def settings_read() -> set[str]:
    """Every environment variable config/settings.py reads."""
    tree = ast.parse((ROOT / "config" / "settings.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if called in {"env_str", "env_bool", "env_int", "env_list", "get"} and isinstance(node.args[0].value, str):
                if node.args[0].value.isupper():
                    names.add(node.args[0].value)
    return names - {"ENV_FILE", "TEST_SQLITE_NAME", "DJANGO_SETTINGS_MODULE"}


def test_the_units_and_the_procfile_run_the_same_commands() -> None:
    procfile = {}
    for line in (DEPLOY / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            procfile[name.strip()] = command.strip()
    units = {}
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text()
        command = re.search(r"^ExecStart=(.*)$", text, flags=re.M).group(1).removeprefix(UNIT_ROOT)
        if "@" in unit.name:  # a template: one instance per queue
            for queue in ("celery", "webhooks"):
                units[f"worker-{queue}"] = command.replace("%i", queue)
        else:
            units[unit.stem.removeprefix("hashexchange-")] = command
        assert "EnvironmentFile=/etc/hashexchange/env" in text
        assert f"WorkingDirectory={UNIT_ROOT.rstrip('/')}" in text
    assert units.pop("release") == "deploy/bin/run release"
    assert procfile == units
    target = (DEPLOY / "systemd" / "hashexchange.target").read_text()
    for name in ("web", "worker@celery", "worker@webhooks", "beat"):
        assert f"hashexchange-{name}.service" in target


def test_the_run_script_knows_every_service() -> None:
    script = (DEPLOY / "bin" / "run").read_text()
    for service in ("web", "worker-celery", "worker-webhooks", "beat", "release"):
        assert f"    {service})" in script
    done = subprocess.run([str(DEPLOY / "bin" / "run"), "nonsense"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "unknown service" in done.stderr


def test_the_production_env_explains_every_setting_in_a_syntax_both_readers_share() -> None:
    text = (DEPLOY / "production.env").read_text()
    mentioned = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.M))
    assert settings_read() - mentioned == set()
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if not line.strip() or line.startswith("#"):
            continue
        # systemd's EnvironmentFile and python-dotenv read these alike: no quotes, export or inline comments.
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*=[^'\"#]*", line), f"line {number + 1}: {line}"
        assert lines[number - 1].startswith("#") or not lines[number - 1].strip() or "=" in lines[number - 1]
    values = dotenv_values(DEPLOY / "production.env")
    assert values["DEBUG"] == "0" and values["WEBHOOKS_ALLOW_PRIVATE"] == "0" and values["BEHIND_TLS_PROXY"] == "1"
    assert values["LOG_FORMAT"] == "json" and values["METRICS_TOKEN"] == "CHANGE-ME"


def test_the_example_env_and_the_readme_mention_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    in_example = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.M))
    readme = (ROOT / "README.md").read_text()
    assert settings_read() - in_example == set()
    assert {name for name in settings_read() if f"`{name}`" not in readme} == set()


@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(), reason="no nginx")
def test_nginx_accepts_the_site_and_keeps_metrics_inside(tmp_path: Path) -> None:
    ports = prodcheck.Ports(*range(30000, 30008))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    site = prodcheck.nginx_site(ports, cert, key)
    assert "location = /metrics { return 404; }" in site
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
        f"http {{ include {tmp_path / 'site.conf'}; }}\n"
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    done = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian's prometheus (promtool) is not installed")
def test_the_alert_rules_load_and_fire_as_their_unit_tests_say() -> None:
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run(["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    names = set(re.findall(r"alert: (\w+)", (DEPLOY / "prometheus" / "alerts.yml").read_text()))
    assert {
        "WebhooksFailing",
        "FeedLag",
        "WithdrawalAcknowledgementsOverdue",
        "MatchIndexLag",
        "NoBeatHeartbeat",
    } <= names


def metric_names(expression: str) -> set[str]:
    words = set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?=\{|\[|\)|$| )", expression))
    return {w for w in words if w.startswith(("hashexchange_", "django_"))}


@pytest.mark.django_db(transaction=True)
@override_settings(METRICS_TOKEN="t")
def test_the_dashboard_and_the_alerts_ask_for_metrics_that_exist(signer_a: Signer) -> None:
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    signer_a.client.post("/api/v1/match", {"queries": [{"signal_type": "pdq", "value": value}]}, format="json")
    from core import metrics

    metrics.webhook_delivery("delivered")
    body = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
    exposed = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line and not line.startswith("#")}
    dashboard = json.loads((DEPLOY / "grafana" / "hashexchange.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    expressions += re.findall(r"expr: (.+)", (DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    expressions += [block for block in re.findall(r"expr: \|\n((?:\s{10}.*\n)+)", rules)]
    wanted = set().union(*(metric_names(e) for e in expressions))
    # Absent until their first sample: gauges of lagging members, failing endpoints, overdue debts.
    sometimes_empty = {
        "hashexchange_webhook_failing_seconds",
        "hashexchange_obligations_overdue",
        "hashexchange_beat_heartbeat_age_seconds",
        "hashexchange_webhook_lag_events",
    }
    assert len(dashboard["panels"]) >= 12 and wanted
    missing = {name for name in wanted - sometimes_empty if name not in exposed}
    assert missing == set(), f"not in /metrics: {sorted(missing)}"
    assert {"hashexchange_feed_lag_seconds", "hashexchange_webhook_deliveries_total"} <= wanted


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the units, pointed at this checkout instead of /opt/hashexchange."""
    for unit in (DEPLOY / "systemd").iterdir():
        text = unit.read_text().replace(UNIT_ROOT.rstrip("/"), str(ROOT))
        text = text.replace("EnvironmentFile=/etc/", "EnvironmentFile=-/etc/")  # may be absent here
        (tmp_path / unit.name).write_text(text)
        if "@" in unit.name:
            for queue in ("celery", "webhooks"):
                (tmp_path / unit.name.replace("@", f"@{queue}")).write_text(text)
    names = [p.name for p in tmp_path.iterdir() if not p.name.endswith("@.service")]
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
