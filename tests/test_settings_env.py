""".env is read with python-dotenv, by the settings and by `make run`'s supervisor alike.

A hand-written KEY=VALUE reader once took `DEBUG=1 # comment` for "off", ignored
`export X=...` lines and kept the first of two values for one key. Each reader runs here
in a fresh interpreter, with an environment holding only what the test gives it, so the
settings module is imported anew and nothing of the developer's own environment leaks in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DOTENV = """\
# Comment lines, comments after values, export, quotes and a repeated key.
DEBUG=1 # development mode
export SITE_URL=http://exchange.test:9000
ALLOWED_HOSTS=first.test
ALLOWED_HOSTS=second.test,third.test
API_KEY_PEPPER="pepper # inside quotes is not a comment"
LOG_LEVEL=DEBUG
VAR_DIR={var_dir}
"""

SETTINGS_PROBE = """
import json
from config import settings
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "SITE_URL": settings.SITE_URL,
    "ALLOWED_HOSTS": settings.ALLOWED_HOSTS,
    "API_KEY_PEPPER": settings.API_KEY_PEPPER,
    "LOG_LEVEL": settings.LOGGING["root"]["level"],
    "VAR_DIR": str(settings.VAR_DIR),
    "DATABASE": str(settings.DATABASES["default"]["NAME"]),
    "WEBHOOKS_ALLOW_PRIVATE": settings.WEBHOOKS_ALLOW_PRIVATE,
}))
"""

SERVER_PROBE = """
import json, os
from dev.server import load_env_file
load_env_file()
names = ("DEBUG", "SITE_URL", "ALLOWED_HOSTS", "API_KEY_PEPPER", "LOG_LEVEL", "VAR_DIR")
print(json.dumps({name: os.environ.get(name) for name in names}))
"""


def run_probe(code: str, env_file: Path | str, **environment: str) -> dict:
    """Run `code` in a new interpreter whose environment is only PATH, ENV_FILE and `environment`."""
    env = {"PATH": os.environ.get("PATH", ""), "ENV_FILE": str(env_file), **environment}
    if "PYTHONPATH" in os.environ:  # an interpreter set up that way must still find its packages
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text(DOTENV.format(var_dir=tmp_path / "from-dotenv"))
    return path


def test_settings_read_dotenv_syntax(env_file: Path, tmp_path: Path) -> None:
    found = run_probe(SETTINGS_PROBE, env_file, LOG_LEVEL="WARNING")
    assert found["DEBUG"] is True  # the comment after the value is not part of it
    assert found["SITE_URL"] == "http://exchange.test:9000"  # `export` is allowed
    assert found["ALLOWED_HOSTS"] == ["second.test", "third.test"]  # the last value wins
    assert found["API_KEY_PEPPER"] == "pepper # inside quotes is not a comment"
    assert found["LOG_LEVEL"] == "WARNING"  # a real environment variable wins over .env
    # .env is read before VAR_DIR, so the settings derived from it follow it too.
    assert found["VAR_DIR"] == str(tmp_path / "from-dotenv")
    assert found["DATABASE"] == str(tmp_path / "from-dotenv" / "db.sqlite3")


def test_dev_server_reads_dotenv_like_the_settings(env_file: Path, tmp_path: Path) -> None:
    found = run_probe(SERVER_PROBE, env_file, LOG_LEVEL="WARNING")
    assert found == {
        "DEBUG": "1",
        "SITE_URL": "http://exchange.test:9000",
        "ALLOWED_HOSTS": "second.test,third.test",
        "API_KEY_PEPPER": "pepper # inside quotes is not a comment",
        "LOG_LEVEL": "WARNING",
        "VAR_DIR": str(tmp_path / "from-dotenv"),
    }


@pytest.mark.parametrize("missing", [os.devnull, "/nonexistent/.env"])
def test_no_dotenv_leaves_the_defaults(missing: str) -> None:
    found = run_probe(SETTINGS_PROBE, missing)
    assert found["DEBUG"] is False
    assert found["SITE_URL"] == "http://127.0.0.1:8000"
    assert found["VAR_DIR"] == str(ROOT / "var")


def test_the_development_env_allows_receivers_on_this_machine_and_the_default_refuses_them() -> None:
    development = run_probe(SETTINGS_PROBE, ROOT / ".env.example")
    assert development["DEBUG"] is True
    assert development["WEBHOOKS_ALLOW_PRIVATE"] is True
    assert run_probe(SETTINGS_PROBE, os.devnull)["WEBHOOKS_ALLOW_PRIVATE"] is False
