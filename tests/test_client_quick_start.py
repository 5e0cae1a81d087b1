"""docs/client.md's quick start, run as written against a real server (the demo of `make run`).

It once showed keys as `hx_…` and `--program ncii`; following it literally failed. Here
every `hashexchange` line of the quick start runs against a live server seeded as
`make run` seeds it, with only the placeholders filled in.
"""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import pytest
from django.core.management import call_command
from hashexchange_client.cli import main
from hashexchange_client.samples import photo_like

from hashes.models import Submission

ROOT = Path(__file__).resolve().parent.parent


def quick_start() -> str:
    text = (ROOT / "docs" / "client.md").read_text()
    section = text.split("## Quick start", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, flags=re.S).group(1)


@pytest.mark.django_db(transaction=True)
def test_the_client_quick_start_works_as_written(
    live_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    call_command("demo_seed", "--key-file", str(tmp_path / "demo-api-key"), stdout=out, stderr=io.StringIO())
    demo_key = out.getvalue().strip().splitlines()[-1]

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reported").mkdir()
    photo_like(640, 480, 5).save(tmp_path / "reported" / "one.jpg")
    photo_like(480, 640, 6).save(tmp_path / "reported" / "two.png")

    commands = []
    for line in quick_start().splitlines():
        line = line.strip()
        if line.startswith("export "):
            name, value = line.removeprefix("export ").split("=", 1)
            if name == "HASHEXCHANGE_API_KEY":
                assert value.startswith("hxk_"), "the quick start shows keys as the server issues them"
                value = demo_key
            elif name == "HASHEXCHANGE_SERVER":
                value = live_server.url
            monkeypatch.setenv(name, str(Path(value).expanduser()) if value.startswith("~") else value)
        elif line.startswith("hashexchange "):
            commands.append([str(Path(a).expanduser()) if a.startswith("~") else a for a in shlex.split(line)[1:]])
    assert [c[0] for c in commands] == ["keygen", "register-key", "submit"]

    for args in commands:
        assert main(args) == 0, capsys.readouterr()
    captured = capsys.readouterr().out
    assert "registered key id:" in captured
    assert "accepted: 2, duplicate: 0, rejected: 0" in captured
    assert Submission.objects.filter(submitter__slug="demo-platform").count() == 2

    # Setup scripts run twice: registering the same key again is fine.
    assert main(commands[1]) == 0
    assert "already registered key id:" in capsys.readouterr().out
