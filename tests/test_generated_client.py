"""A client generated from the published OpenAPI schema works against a live server.

openapi-python-client (a third party's generator, from PyPI) builds a client from
`GET /api/v1/schema/`; four operations are called through it over real HTTP, and its
parsed answers must agree with what the server sent.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Caller
from tests.signing import Signer, random_pdq

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def generated(tmp_path: Path, platform_a: Caller) -> object:
    schema = platform_a.client.get("/api/v1/schema/?format=json")
    assert schema.status_code == 200
    (tmp_path / "openapi.json").write_bytes(schema.content)
    result = subprocess.run(
        [str(VENV_BIN / "openapi-python-client"), "generate", "--path", "openapi.json", "--output-path", "hxgen"]
        + ["--meta", "none"],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("hxgen")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "hxgen" or n.startswith("hxgen.")]:
            del sys.modules[name]


def test_four_operations_through_a_generated_client(
    generated: object, live_server: object, signer_a: Signer, platform_b: Caller
) -> None:
    client_module = importlib.import_module("hxgen.client")
    # Readable names: one module per tag (the path after /api/v1), operations named after their path.
    ops = {
        name: importlib.import_module(f"hxgen.api.{tag}.{name}")
        for tag, name in (
            ("me", "me_retrieve"),
            ("server_key", "server_key_retrieve"),
            ("feed", "feed_retrieve"),
            ("match", "match_create"),
        )
    }
    client = client_module.AuthenticatedClient(base_url=live_server.url, token=platform_b.token)
    value = random_pdq()
    assert signer_a.submit(signer_a.submission(value)).json()["accepted"] == 1

    me = ops["me_retrieve"].sync_detailed(client=client)
    assert me.status_code == 200 and me.parsed.slug == "platform-b"

    key = ops["server_key_retrieve"].sync_detailed(client=client)
    assert key.status_code == 200 and key.parsed.whpk.startswith("whpk_")

    feed = ops["feed_retrieve"].sync_detailed(client=client, after=0)
    assert feed.status_code == 200
    # Typed all the way down: the hash, and the envelope and its signatures.
    [entry] = [e for e in feed.parsed.entries if e.kind.value == "hash.added" and e.hash_.value == value]
    assert entry.hash_.signal_type.value == "pdq"
    [envelope] = entry.envelopes
    assert envelope.payload_type == "application/vnd.hashexchange.submission+json"
    assert envelope.signatures[0].keyid == signer_a.key.key_id

    models = importlib.import_module("hxgen.models")
    request = models.MatchRequestRequest.from_dict({"queries": [{"signal_type": "pdq", "value": value}]})
    matched = ops["match_create"].sync_detailed(client=client, body=request)
    assert matched.status_code == 200, matched.content
    assert matched.parsed.results[0].matches[0].hash_id > 0
