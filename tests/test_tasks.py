"""Celery tasks: named `*_task` in code, addressed by stable registered names on the wire.

Messages queued in Redis, the beat schedule and the task routes name a task by the
string it was registered under, so renaming a function must not rename its task.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from celery import Task
from django.conf import settings

from config.celery import app

TASK_MODULES = ("exchange.tasks", "hashes.tasks", "federation.tasks")

# The registered names in use; changing one strands messages already queued under it.
REGISTERED = {
    "exchange.tasks.fanout",
    "exchange.tasks.deliver_endpoint",
    "exchange.tasks.deliver_group",
    "exchange.tasks.sweep_webhooks",
    "exchange.tasks.heartbeat",
    "exchange.tasks.project_obligations",
    "exchange.tasks.check_participation",
    "exchange.tasks.checkpoint",
    "hashes.tasks.match_index_compact",
    "hashes.tasks.match_index_rebuild",
    "exchange.tasks.scan_match_anomalies",
    "exchange.tasks.snapshot_build",
    "exchange.tasks.snapshots_refresh",
    "federation.tasks.peers_sync",
    "federation.tasks.peer_sync",
}


def _tasks() -> dict[str, Task]:
    found = {}
    for name in TASK_MODULES:
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if isinstance(value, Task):
                found[f"{name}.{attribute}"] = value
    return found


def test_every_task_function_ends_in_task() -> None:
    misnamed = [name for name in _tasks() if not name.endswith("_task")]
    assert not misnamed, f"name these *_task: {misnamed}"


def test_registered_task_names_are_stable() -> None:
    assert {task.name for task in _tasks().values()} == REGISTERED
    assert REGISTERED <= set(app.tasks)


@pytest.mark.parametrize("entry", sorted(settings.CELERY_BEAT_SCHEDULE))
def test_the_beat_schedule_names_registered_tasks(entry: str) -> None:
    assert settings.CELERY_BEAT_SCHEDULE[entry]["task"] in REGISTERED


def test_task_routes_name_registered_tasks() -> None:
    assert set(settings.CELERY_TASK_ROUTES) <= REGISTERED


@pytest.mark.parametrize(
    ("url", "ssl_options"),
    [
        ("redis://127.0.0.1:6379/0", "False"),
        # kombu's own default for rediss:// would not check the certificate.
        ("rediss://redis.example:6380/0", "{'ssl_cert_reqs': <VerifyMode.CERT_REQUIRED: 2>}"),
    ],
)
def test_the_broker_connection_uses_our_transport_and_checks_tls_certificates(url: str, ssl_options: str) -> None:
    script = (
        "import django; django.setup()\n"
        "from config.celery import app\n"
        "c = app.connection_for_write()\n"
        "print(c.transport_cls, c.ssl, c.hostname)\n"
    )
    env = {**os.environ, "CELERY_BROKER_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split(" ", 1)[0] == "config.broker:Transport"
    assert ssl_options in out and url.split("//")[1].split(":")[0] in out
