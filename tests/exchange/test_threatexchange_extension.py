"""The `hashexchange_client.threatexchange` extension, against a live server on 127.0.0.1.

First the real `threatexchange` CLI with the extension added (`config extensions add`):
fetch, match a photo, withdraw here, fetch again, and the match is gone. Then the
extension through the pytx interfaces Hasher-Matcher-Actioner's storage uses (for_collab
under stored credentials, fetch_iter, naive_convert_to_signal_type per record, a
checkpoint kept as JSON, an index built from what is kept), and its refusals: a relayed
envelope that was altered, a wrong key, a server error, a type pytx does not have.
"""

from __future__ import annotations

import http.server
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hashexchange_client
import pytest
from hashexchange_client import hashing, samples
from hashexchange_client import threatexchange as extension
from threatexchange.exchanges import auth
from threatexchange.exchanges import fetch_state as state
from threatexchange.signal_type.md5 import VideoMD5Signal
from threatexchange.signal_type.pdq.signal import PdqSignal
from threatexchange.utils import dataclass_json

from exchange.models import Dispute, FeedCursor, Outcome
from exchange.outcomes import dispute_decide
from hashes.models import Hash, Submission
from members.models import Program
from tests.conftest import SETUP, Caller
from tests.signing import Signer, random_pdq

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).with_name("threatexchange")
CLIENT_SRC = str(Path(hashexchange_client.__file__).resolve().parents[1])
MODULE = "hashexchange_client.threatexchange"


def run_cli(env: dict[str, str], *args: str, ok: bool = True) -> str:
    done = subprocess.run(
        [str(CLI), *args], env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
    )
    output = done.stdout + done.stderr
    if ok:
        assert done.returncode == 0, f"threatexchange {' '.join(args)} exited {done.returncode}:\n{output}"
    return output


@pytest.fixture
def cli_env(tmp_path: Path, platform_b: Caller) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": CLIENT_SRC,  # the extension, as `pip install hashexchange-client[threatexchange]` gives it
        "TX_STATEDIR": str(tmp_path / "state"),
        "TX_HASHEXCHANGE_KEY": platform_b.token,
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def test_cli_with_the_extension_stops_matching_a_withdrawn_hash(
    tmp_path: Path, live_server: Any, cli_env: dict[str, str], signer_a: Signer, platform_b: Caller
) -> None:
    original = samples.photo_like(512, 512, seed=21)
    value, quality = hashing.pdq_hash(original)
    others = [signer_a.submission(random_pdq()) for _ in range(2)]  # pytx's PDQ index needs two or more
    assert signer_a.submit(signer_a.submission(value, quality=quality), *others).status_code in (200, 201, 207)
    upload = tmp_path / "upload.jpg"
    upload.write_bytes(samples.jpeg_bytes(original.convert("L").convert("RGB").resize((300, 300)), quality=60))

    added = run_cli(cli_env, "config", "extensions", "add", MODULE)
    assert "hashexchange" in added
    run_cli(cli_env, "config", "collab", "edit", "hashexchange", "Hashexchange", "--create", "--base-url",
            live_server.url)  # fmt: skip
    fetched = run_cli(cli_env, "-v", "fetch")
    assert "Hashexchange" in fetched and "failed" not in fetched.lower(), fetched
    assert FeedCursor.objects.get(member=platform_b.member).reads >= 1

    matched = run_cli(cli_env, "match", "photo", str(upload))
    lines = [line for line in matched.splitlines() if "(Hashexchange)" in line]
    assert lines and lines[0].startswith("pdq "), matched
    assert "take-it-down" in lines[0] and signer_a.caller.member.slug in lines[0]

    withdrawn = signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value), format="json")
    assert withdrawn.status_code in (200, 201), withdrawn.content
    assert "failed" not in run_cli(cli_env, "fetch").lower()
    assert "(Hashexchange)" not in run_cli(cli_env, "match", "photo", str(upload))


def test_cli_reports_an_unverifiable_entry_and_keeps_its_checkpoint_before_it(
    live_server: Any, cli_env: dict[str, str], signer_a: Signer
) -> None:
    good, bad = random_pdq(), random_pdq()
    signer_a.submit(signer_a.submission(good))
    signer_a.submit(signer_a.submission(bad))
    # What a server (or anything between) that altered a relayed envelope would send.
    row = Submission.objects.get(hash__value=bad)
    row.envelope = {**row.envelope, "payload": signer_a.submission(random_pdq())["payload"]}
    row.save(update_fields=["envelope"])
    run_cli(cli_env, "config", "extensions", "add", MODULE)
    run_cli(cli_env, "config", "collab", "edit", "hashexchange", "Hashexchange", "--create", "--base-url",
            live_server.url)  # fmt: skip
    output = run_cli(cli_env, "-v", "fetch", ok=False)
    assert "failed to fetch" in output and "cannot be verified" in output, output
    listed = run_cli(cli_env, "dataset", "-P", "-S")
    assert good in listed and bad not in listed


# Through the interfaces HMA's storage uses -------------------------------------------------


class HMAShapedStore:
    """What HMA's fetcher and DefaultOMMStore do with an exchange, in memory.

    Credentials set as the default (`with creds.set_default(creds, "db")`), `for_collab`,
    `fetch_iter` with HMA's default signal types, each record converted on its own with
    `naive_convert_to_signal_type` (None, or nothing usable, deletes it), records pickled,
    and the checkpoint kept as JSON and compared on commit as HMA does.
    """

    signal_types = [PdqSignal, VideoMD5Signal]

    def __init__(self, base_url: str, api_key: str) -> None:
        self.collab = extension.HashExchangeCollabConfig(
            name="HASHEXCHANGE", api="hashexchange", enabled=True, base_url=base_url
        )
        self.credentials = extension.HashExchangeCredentials(api_key=api_key)
        self.checkpoint_json: str | None = None
        self.data: dict[str, bytes] = {}  # fetch_id → pickled metadata
        self.signals: dict[str, dict[str, str]] = {}  # fetch_id → {signal type: value}

    def checkpoint(self) -> extension.HashExchangeCheckpoint | None:
        if self.checkpoint_json is None:
            return None
        return dataclass_json.dataclass_loads(self.checkpoint_json, extension.HashExchangeCheckpoint)

    def fetch(self) -> None:
        """HMA's `_fetch`: deltas merged in memory, committed with their checkpoint at the end
        (or every 5,000 updates); an exception loses the uncommitted part and keeps the old checkpoint."""
        api_cls = extension.HashExchangeSignalExchangeAPI
        with self.credentials.set_default(self.credentials, "db"):
            client = api_cls.for_collab(self.collab)
        start = self.checkpoint()
        pending: dict[Any, Any] = {}
        last: Any = None
        for delta in client.fetch_iter(self.signal_types, start):
            pending.update(delta.updates)
            last = delta.checkpoint
            if len(pending) >= 5000:
                self.commit(start, pending, last)
                start, pending = self.checkpoint(), {}
        if last is not None:
            self.commit(start, pending, last)

    def commit(self, old: Any, updates: dict[Any, Any], checkpoint: Any) -> None:
        """DefaultOMMStore.exchange_commit_fetch, the parts that decide what is kept."""
        assert self.checkpoint() == old, "Old checkpoint doesn't match, race condition?"
        api_cls = extension.HashExchangeSignalExchangeAPI
        for raw_key, value in updates.items():
            key = str(raw_key)
            converted = (
                api_cls.naive_convert_to_signal_type(self.signal_types, self.collab, {raw_key: value})
                if value is not None
                else {}
            )
            if not converted:
                self.data.pop(key, None)
                self.signals.pop(key, None)
                continue
            self.data[key] = pickle.dumps(value)
            self.signals[key] = {st.get_name(): v for st, found in converted.items() for v in found}
        self.checkpoint_json = dataclass_json.dataclass_dumps(checkpoint)

    def lookup(self, pdq: str) -> list[Any]:
        entries = [(values["pdq"], key) for key, values in self.signals.items() if "pdq" in values]
        if not entries:
            return []
        index = PdqSignal.get_index_cls().build(entries)
        return index.query(pdq)


def test_hma_shaped_fetch_index_lookup_and_withdrawal(live_server: Any, signer_a: Signer, platform_b: Caller) -> None:
    value = random_pdq()
    signer_a.submit(*(signer_a.submission(v) for v in (value, random_pdq(), random_pdq())))
    store = HMAShapedStore(live_server.url, platform_b.token)
    store.fetch()
    assert len(store.data) == 3
    assert [m.metadata for m in store.lookup(value)] == [f"take-it-down/pdq/{value}"]
    record = pickle.loads(store.data[f"take-it-down/pdq/{value}"])
    assert record.signed_by == [signer_a.caller.member.slug]
    assert record.get_as_aggregate_opinion().category == state.SignalOpinionCategory.INVESTIGATION_SEED

    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value), format="json")
    store.fetch()
    assert store.lookup(value) == []
    assert len(store.data) == 2
    checkpoint = store.checkpoint()
    assert checkpoint is not None and checkpoint.after == FeedCursor.objects.get(member=platform_b.member).last_seq


def test_report_opinion_becomes_an_outcome(live_server: Any, signer_a: Signer, platform_b: Caller) -> None:
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    store = HMAShapedStore(live_server.url, platform_b.token)
    store.fetch()  # an outcome is only accepted for a hash the member was sent
    api = extension.HashExchangeSignalExchangeAPI.for_collab(store.collab, store.credentials)
    api.report_opinion(
        PdqSignal, value, state.SignalOpinion(True, state.SignalOpinionCategory.POSITIVE_CLASS, {"nude"})
    )
    outcome = Outcome.objects.get(member=platform_b.member)
    assert (outcome.kind, outcome.hash.value, outcome.program.slug, outcome.tags) == (
        "removed",
        value,
        "take-it-down",
        ["nude"],
    )
    api.report_opinion(
        PdqSignal, value, state.SignalOpinion(True, state.SignalOpinionCategory.POSITIVE_CLASS, {"nude"})
    )
    assert Outcome.objects.filter(member=platform_b.member).count() == 1  # the same opinion again: a duplicate
    with pytest.raises(ValueError, match="no hash with this value"):
        api.report_opinion(
            PdqSignal, random_pdq(), state.SignalOpinion(True, state.SignalOpinionCategory.NEGATIVE_CLASS, set())
        )


def test_an_altered_envelope_stops_the_fetch_before_it(live_server: Any, signer_a: Signer, platform_b: Caller) -> None:
    first, middle, altered, after = random_pdq(), random_pdq(), random_pdq(), random_pdq()
    signer_a.submit(signer_a.submission(first))
    store = HMAShapedStore(live_server.url, platform_b.token)
    store.fetch()
    before = store.checkpoint()
    for v in (middle, altered, after):
        signer_a.submit(signer_a.submission(v))
    row = Submission.objects.get(hash__value=altered)
    row.envelope = {**row.envelope, "signatures": signer_a.submission(random_pdq())["signatures"]}
    row.save(update_fields=["envelope"])

    api = extension.HashExchangeSignalExchangeAPI.for_collab(store.collab, store.credentials)
    deltas = []
    with pytest.raises(extension.UnverifiableEntryError, match="signature does not match") as raised:
        for delta in api.fetch_iter([PdqSignal], before):
            deltas.append(delta)
    # What came before the bad entry is yielded, with a checkpoint that stops short of it.
    assert [key for d in deltas for key in d.updates] == [f"take-it-down/pdq/{middle}"]
    assert all(d.checkpoint.after < raised.value.seq for d in deltas)
    assert not any(f"/{altered}" in key or f"/{after}" in key for d in deltas for key in d.updates)

    with pytest.raises(extension.UnverifiableEntryError):  # HMA: nothing committed, the checkpoint stays
        store.fetch()
    assert store.checkpoint() == before and list(store.data) == [f"take-it-down/pdq/{first}"]


def test_types_pytx_lacks_are_skipped_not_fatal(live_server: Any, signer_a: Signer, platform_b: Caller) -> None:
    value = random_pdq()
    signer_a.submit(signer_a.submission("0f" * 8, signal_type="phash"), signer_a.submission(value))
    store = HMAShapedStore(live_server.url, platform_b.token)
    store.fetch()
    assert list(store.data) == [f"take-it-down/pdq/{value}"]


def test_a_refused_key_is_an_auth_error(live_server: Any, platform_b: Caller) -> None:
    store = HMAShapedStore(live_server.url, "hxk_not-a-key")
    with pytest.raises(auth.SignalExchangeAPIInvalidAuthException, match="refused the API key"):
        store.fetch()
    assert store.checkpoint() is None


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(503)
        self.send_header("Content-Type", "application/problem+json")
        self.end_headers()
        self.wfile.write(b'{"title": "Service Unavailable", "detail": "down for maintenance"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_server_error_raises_and_keeps_the_checkpoint(failing_server: str) -> None:
    store = HMAShapedStore(failing_server, "hxk_any")
    store.checkpoint_json = dataclass_json.dataclass_dumps(extension.HashExchangeCheckpoint(after=7, progress_time=1))
    api = extension.HashExchangeSignalExchangeAPI.for_collab(store.collab, store.credentials)
    api.client.backoff = 0.01
    with pytest.raises(extension.ApiError, match="HTTP 503: down for maintenance"):
        next(api.fetch_iter([PdqSignal], store.checkpoint()))
    assert store.checkpoint() == extension.HashExchangeCheckpoint(after=7, progress_time=1)


def test_a_disputed_hash_goes_and_comes_back_verified(
    live_server: Any, signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    """NEGATIVE_CLASS through report_opinion opens a dispute (threshold 1): the hash is quarantined,
    the next fetch drops it; an admin restores it, the next fetch has it again, its envelope verified."""
    program.dispute_threshold = 1
    program.save(update_fields=["dispute_threshold"])
    value = random_pdq()
    signer_a.submit(*(signer_a.submission(v) for v in (value, random_pdq())))
    store = HMAShapedStore(live_server.url, platform_b.token)
    store.fetch()
    key = f"take-it-down/pdq/{value}"
    assert key in store.data
    api = extension.HashExchangeSignalExchangeAPI.for_collab(store.collab, store.credentials)
    api.report_opinion(PdqSignal, value, state.SignalOpinion(True, state.SignalOpinionCategory.NEGATIVE_CLASS, set()))
    assert Hash.objects.get(value=value).status == Hash.Status.QUARANTINED
    store.fetch()
    assert key not in store.data and store.lookup(value) == []

    dispute_decide(dispute=Dispute.objects.get(), decision="restored", reason="reviewed", actor=SETUP)
    store.fetch()
    assert pickle.loads(store.data[key]).signed_by == [signer_a.caller.member.slug]
    assert [m.metadata for m in store.lookup(value)] == [key]


def test_a_restoration_overtaken_by_a_withdrawal_does_not_block_the_fetch(
    live_server: Any, signer_a: Signer, platform_b: Caller, program: Program
) -> None:
    """hash.restored carries no envelope and is checked against the hash as it is now; when
    the hash was withdrawn since, the entry is passed over and the withdrawal after it applies."""
    program.dispute_threshold = 1
    program.save(update_fields=["dispute_threshold"])
    value = random_pdq()
    signer_a.submit(*(signer_a.submission(v) for v in (value, random_pdq())))
    store = HMAShapedStore(live_server.url, platform_b.token)
    store.fetch()
    api = extension.HashExchangeSignalExchangeAPI.for_collab(store.collab, store.credentials)
    api.report_opinion(PdqSignal, value, state.SignalOpinion(True, state.SignalOpinionCategory.NEGATIVE_CLASS, set()))
    dispute_decide(dispute=Dispute.objects.get(), decision="restored", reason="reviewed", actor=SETUP)
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value), format="json")
    store.fetch()
    assert f"take-it-down/pdq/{value}" not in store.data and len(store.data) == 1
