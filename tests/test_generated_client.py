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
    ops = {
        name: importlib.import_module(f"hxgen.api.api.{name}")
        for name in ("api_v1_me_retrieve", "api_v1_server_key_retrieve", "api_v1_feed_retrieve", "api_v1_match_create")
    }
    client = client_module.AuthenticatedClient(base_url=live_server.url, token=platform_b.token)
    value = random_pdq()
    assert signer_a.submit(signer_a.submission(value)).json()["accepted"] == 1

    me = ops["api_v1_me_retrieve"].sync_detailed(client=client)
    assert me.status_code == 200 and me.parsed.slug == "platform-b"

    key = ops["api_v1_server_key_retrieve"].sync_detailed(client=client)
    assert key.status_code == 200 and key.parsed.whpk.startswith("whpk_")

    feed = ops["api_v1_feed_retrieve"].sync_detailed(client=client, after=0)
    assert feed.status_code == 200
    # `hash` is an object the schema does not detail yet: the generator keeps its fields as a dict.
    values = [e.hash_.to_dict().get("value") for e in feed.parsed.entries if getattr(e, "hash_", None)]
    assert value in values

    models = importlib.import_module("hxgen.models")
    request = models.MatchRequestRequest.from_dict({"queries": [{"signal_type": "pdq", "value": value}]})
    matched = ops["api_v1_match_create"].sync_detailed(client=client, body=request)
    assert matched.status_code == 200, matched.content
    assert matched.parsed.results[0].matches[0].hash_id > 0
