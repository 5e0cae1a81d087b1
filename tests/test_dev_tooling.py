"""The first hour: what `make run` and `make test` do before the server runs.

The install names the build tools it lacks and shows progress; each checkout gets Redis
and test ports of its own and says so when a Redis it finds is someone else's.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from django.conf import settings
from dotenv import dotenv_values

from dev import install, server
from dev.services import checkout_ports, redis_dir

ROOT = Path(__file__).resolve().parent.parent


def test_missing_build_tools_are_named_with_the_packages_to_install(tmp_path: Path) -> None:
    missing = install.missing_build_tools(which=lambda name: None, include_dir=str(tmp_path))
    message = install.explain(missing)
    assert [item.package for item in missing] == ["gcc", "g++", "python3-dev"]
    assert "sudo apt-get install gcc g++ python3-dev" in message
    assert str(tmp_path / "Python.h") in message

    (tmp_path / "Python.h").write_text("")
    found = {"gcc": "/usr/bin/gcc", "c++": "/usr/bin/c++"}
    assert install.missing_build_tools(which=found.get, include_dir=str(tmp_path)) == []


def test_install_numbers_what_pip_collects_and_speaks_up_when_it_is_quiet() -> None:
    out = io.StringIO()
    script = "import time; print('Collecting a==1'); print('Collecting b==2'); time.sleep(2.5); print('done')"
    code = install.run_with_progress([sys.executable, "-c", script], total=2, quiet_seconds=1.0, out=out)
    lines = out.getvalue().splitlines()
    assert code == 0
    assert lines[:2] == ["[1/2] Collecting a==1", "[2/2] Collecting b==2"]
    assert any("still working" in line and "Collecting b==2" in line for line in lines[2:-1])
    assert lines[-1] == "done"


def test_each_checkout_has_ports_of_its_own() -> None:
    here, other = checkout_ports(ROOT), checkout_ports(ROOT / "elsewhere")
    assert here == checkout_ports(ROOT)  # stable from run to run
    assert here != other
    assert 6400 <= here.redis < 7200 and here.test_redis == here.redis + 1
    assert 55000 <= here.test_postgres < 55500
    assert 6379 not in (here.redis, here.test_redis)


def test_make_run_writes_this_checkouts_redis_into_a_new_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENV_FILE", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    (tmp_path / ".env.example").write_text((ROOT / ".env.example").read_text())
    notes = server.prepare_env_file(tmp_path)
    port = checkout_ports(tmp_path).redis
    assert dotenv_values(tmp_path / ".env")["REDIS_URL"] == f"redis://127.0.0.1:{port}/0"
    assert any(f"port {port}" in note for note in notes)
    # Run again: nothing more is written; a REDIS_URL the developer set is kept.
    before = (tmp_path / ".env").read_text()
    assert server.prepare_env_file(tmp_path) == []
    assert (tmp_path / ".env").read_text() == before
    (tmp_path / ".env").write_text("REDIS_URL=redis://127.0.0.1:6999/2\n")
    server.prepare_env_file(tmp_path)
    assert dotenv_values(tmp_path / ".env")["REDIS_URL"] == "redis://127.0.0.1:6999/2"


def test_a_redis_of_another_checkout_is_named() -> None:
    own = Path(redis_dir(settings.REDIS_URL) or "")
    assert server.redis_sharing_note(settings.REDIS_URL, own) == ""
    warning = server.redis_sharing_note(settings.REDIS_URL, ROOT / "other-checkout" / "var" / "redis")
    assert "another checkout or service uses it" in warning and str(own) in warning
    assert f"redis://127.0.0.1:{checkout_ports(ROOT).redis}/0" in warning
