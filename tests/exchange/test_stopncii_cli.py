"""End to end with the real `threatexchange` CLI: configured by TX_STOPNCII_KEYS alone, it fetches
from a live server on 127.0.0.1 and matches a photo near a hash a member submitted.

This is what a platform does on its first day: `config collab edit stop_ncii`, `fetch`,
`match photo`. No code of ours runs on the client side.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hashexchange_client import hashing, samples

from exchange.models import FeedCursor
from tests.conftest import Caller
from tests.exchange.test_stopncii import feedback, fetch_run, stopncii_client
from tests.signing import Signer, random_pdq

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).with_name("threatexchange")


def run_cli(env: dict[str, str], *args: str) -> str:
    """Run the CLI; its output (stdout and stderr) or a failure that shows it."""
    done = subprocess.run(
        [str(CLI), *args], env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"threatexchange {' '.join(args)} exited {done.returncode}:\n{output}"
    return output


@pytest.fixture
def cli_env(tmp_path: Path, live_server: Any, platform_b: Caller) -> dict[str, str]:
    """The environment of a platform's shell: its keys and our base URL in TX_STOPNCII_KEYS."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TX_STATEDIR": str(tmp_path / "state"),
        "TX_STOPNCII_KEYS": f"{platform_b.token},{platform_b.token},{live_server.url}/compat/stopncii/v1",
        # Anything not for 127.0.0.1 goes to a dead local port: a misconfigured run reaches nothing real.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def test_the_cli_fetches_from_us_and_matches_a_photo(
    tmp_path: Path, cli_env: dict[str, str], signer_a: Signer, platform_b: Caller
) -> None:
    original = samples.photo_like(512, 512, seed=7)
    value, quality = hashing.pdq_hash(original)
    # Two hashes at least stay after the withdrawal below: the client's PDQ index never
    # matches when it holds exactly one.
    others = [signer_a.submission(random_pdq()) for _ in range(2)]
    signer_a.submit(signer_a.submission(value, quality=quality), *others)
    upload = tmp_path / "upload.jpg"  # what a user uploads: smaller, grey, recompressed
    upload.write_bytes(samples.jpeg_bytes(original.convert("L").convert("RGB").resize((300, 300)), quality=60))
    unrelated = tmp_path / "unrelated.jpg"
    unrelated.write_bytes(samples.jpeg_bytes(samples.photo_like(512, 512, seed=99)))

    run_cli(cli_env, "config", "collab", "edit", "stop_ncii", "Hashexchange", "--create")
    fetched = run_cli(cli_env, "fetch")
    assert "Hashexchange" in fetched and "failed" not in fetched.lower()
    assert FeedCursor.objects.get(member=platform_b.member).reads >= 1

    matched = run_cli(cli_env, "match", "photo", str(upload))
    lines = [line for line in matched.splitlines() if "(Hashexchange)" in line]
    assert lines, matched
    assert lines[0].startswith("pdq ")
    distance = int(lines[0].split()[1])
    assert 0 < distance <= 31
    assert "(Hashexchange)" not in run_cli(cli_env, "match", "photo", str(unrelated))

    assert "INVESTIGATION_SEED" in lines[0]  # nobody has reported on it yet

    # Platform A reports a removal through the facade; B's next fetch resumes from its stored
    # checkpoint (the client asserts it never rewinds) and sees it, without learning who.
    reporter = stopncii_client(signer_a.caller.token)
    fetch_run(reporter)
    assert feedback(reporter, {"hashValue": value, "feedbackValue": "Blocked", "tags": ["nude"]})["accepted"] == 1
    assert "failed" not in run_cli(cli_env, "fetch").lower()
    rematched = run_cli(cli_env, "match", "photo", str(upload))
    assert f"pdq {distance} (Hashexchange) POSITIVE_CLASS +1 +other member 1" in rematched


def test_withdrawals_need_the_documented_workaround(
    tmp_path: Path, cli_env: dict[str, str], signer_a: Signer, platform_b: Caller
) -> None:
    """pytx 1.2.17 keeps a Withdrawn record as a live hash (docs/platforms.md, known gaps);
    `fetch --clear` then `fetch` drops it, because a run from the start gets no tombstones."""
    original = samples.photo_like(512, 512, seed=11)
    value, quality = hashing.pdq_hash(original)
    others = [signer_a.submission(random_pdq()) for _ in range(2)]
    signer_a.submit(signer_a.submission(value, quality=quality), *others)
    upload = tmp_path / "upload.jpg"
    upload.write_bytes(samples.jpeg_bytes(original, quality=70))
    run_cli(cli_env, "config", "collab", "edit", "stop_ncii", "Hashexchange", "--create")
    run_cli(cli_env, "fetch")
    assert "(Hashexchange)" in run_cli(cli_env, "match", "photo", str(upload))

    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value), format="json")
    run_cli(cli_env, "fetch")  # receives the record with hashStatus Withdrawn ...
    assert "(Hashexchange)" in run_cli(cli_env, "match", "photo", str(upload))  # ... and keeps matching it
    run_cli(cli_env, "fetch", "--clear")
    run_cli(cli_env, "fetch")
    assert "(Hashexchange)" not in run_cli(cli_env, "match", "photo", str(upload))
