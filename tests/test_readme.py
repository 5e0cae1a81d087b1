"""The README's examples run as written.

A new user copies them first; each one that failed (the webhook receiver crashed on the
test message, bound every interface and buffered its output) cost an hour.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import Caller
from tests.signing import Signer, random_pdq

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_block(containing: str, language: str = "python") -> str:
    """The README's fenced block of `language` that contains `containing`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"expected one {language} block with {containing!r} in README.md"
    return found[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Running:
    """A process whose output lines arrive in a queue as it prints them."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("w")  # http.server's access log goes to stderr
        self.proc = subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float = 10.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output within {timeout}s (buffered?); exit code {self.proc.poll()}; see {self.log.name}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def test_the_readme_receiver_takes_the_test_message_and_hashes_from_before_it_existed(
    settings, tmp_path: Path, signer_a: Signer, platform_b: Caller
) -> None:
    from exchange import delivery as webhook_delivery

    settings.WEBHOOKS_ALLOW_PRIVATE = True
    earlier = [random_pdq(), random_pdq()]
    signer_a.submit(*[signer_a.submission(value) for value in earlier])
    port = free_port()
    hook = platform_b.client.post(
        "/api/v1/webhooks", {"url": f"http://127.0.0.1:{port}/", "after": 0}, format="json"
    ).json()
    assert hook["starts_after"] == 0

    script = tmp_path / "receiver.py"
    script.write_text(code_block("class Receiver"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # its prints must flush themselves
    env.update(WEBHOOK_SECRET=hook["secret"], RECEIVER_PORT=str(port))
    receiver = Running([sys.executable, str(script)], env, tmp_path / "receiver.log")
    try:
        for _ in range(100):  # until it listens
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            threading.Event().wait(0.05)
        # It listens on loopback only.
        assert receiver.proc.poll() is None
        assert "127.0.0.1" in code_block("class Receiver").split("HTTPServer((")[-1]

        answer = platform_b.client.post(f"/api/v1/webhooks/{hook['id']}/test").json()
        assert (answer["ok"], answer["status_code"], answer["error"]) == (True, 204, "")
        assert receiver.next_line() == f"test message for webhook {hook['id']}"

        assert webhook_delivery.deliver_endpoint(hook["id"]).sent == 1  # both hashes in one batch
        added = [receiver.next_line(), receiver.next_line()]
        assert [line.split()[0] for line in added] == ["add", "add"]
        assert [line.split()[-1] for line in added] == earlier
        assert receiver.proc.poll() is None
    finally:
        receiver.stop()
