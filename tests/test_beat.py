"""One beat, guaranteed: a second beat started by mistake sends nothing, and takes over
when the first one dies (config/beat.py). Real beat processes against the test Redis."""

from __future__ import annotations

import re
import signal
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, celery_command, stop_process, wait_for

SENT = re.compile(r"Sending due task webhooks-sweep")

pytestmark = [pytest.mark.worker, pytest.mark.slow]


def start_beat(tmp_path: Path, name: str):  # noqa: ANN201
    log_name = f"beat-{name}-{uuid.uuid4().hex[:6]}"
    proc = celery_command(
        "beat",
        "--schedule",
        str(tmp_path / f"schedule-{name}"),
        extra_env={"WEBHOOK_SWEEP_SECONDS": "1", "BEAT_LOCK_SECONDS": "3", "LOG_LEVEL": "INFO"},
        log_name=log_name,
    )
    return proc, ROOT / "var" / f"test-{log_name}.log"


def sent(log: Path) -> int:
    return len(SENT.findall(log.read_text())) if log.exists() else 0


def test_a_second_beat_sends_nothing_and_takes_over_when_the_first_dies(tmp_path: Path, db: None) -> None:
    first, first_log = start_beat(tmp_path, "first")
    try:
        wait_for(lambda: "holds the beat lock" in first_log.read_text(), timeout=60, what="the first beat's lock")
        second, second_log = start_beat(tmp_path, "second")
        try:
            wait_for(lambda: "stands by" in second_log.read_text(), timeout=60, what="the second beat standing by")
            before = sent(first_log)
            wait_for(lambda: sent(first_log) >= before + 4, timeout=30, what="the first beat sending")
            assert sent(second_log) == 0  # the mistake costs nothing: no task is sent twice
            assert "another beat (" in second_log.read_text()

            first.send_signal(signal.SIGKILL)  # dies without releasing the lock
            first.wait(timeout=10)
            wait_for(lambda: "holds the beat lock" in second_log.read_text(), timeout=30, what="the take-over")
            wait_for(lambda: sent(second_log) >= 2, timeout=30, what="the second beat sending")
        finally:
            stop_process(second)
    finally:
        if first.poll() is None:
            stop_process(first)
    for log in (first_log, second_log):
        log.unlink(missing_ok=True)
