"""`pip install hashexchange-client` is enough to verify, sign and call the API; image hashing is an extra.

The package's declared dependencies leave Pillow, numpy, ImageHash and pdqhash to the
`hashing` extra, and the modules a platform needs (API client, DSSE, webhooks, the CLI
itself) work in an interpreter where those four cannot be imported: here one with an
import hook that refuses them, in a subprocess. (The `threatexchange` extra brings them
back: threatexchange itself depends on pdqhash, numpy and Pillow.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import hashexchange_client

PYPROJECT = Path(hashexchange_client.__file__).resolve().parents[2] / "pyproject.toml"
HEAVY = ("PIL", "numpy", "imagehash", "pdqhash")


def test_image_hashing_is_an_extra() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("[")[0].strip().lower() for dep in project["dependencies"]}
    assert names == {"cryptography", "requests", "tqdm"}
    hashing = {dep.split(">")[0].lower() for dep in project["optional-dependencies"]["hashing"]}
    assert hashing == {"pillow", "imagehash", "pdqhash", "numpy"}
    assert any(dep.startswith("threatexchange") for dep in project["optional-dependencies"]["threatexchange"])


def test_everything_but_image_hashing_works_without_the_extra(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not really a video, but bytes to digest")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 not decodable without Pillow anyway")
    script = textwrap.dedent(
        f"""
        import hashlib, importlib.abc, sys

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {HEAVY!r}:
                    raise ImportError(f"No module named {{name!r}} (refused by the test)")
                return None

        sys.meta_path.insert(0, Refuse())
        from hashexchange_client import api, cli, dsse, hashing, keys, payloads, webhooks

        key = keys.generate_private_key()
        payload = payloads.submission_payload(program="p", signal_type="md5", value="ab" * 16)
        envelope = dsse.sign_envelope(payloads.SUBMISSION_TYPE, payload, key)
        assert dsse.verify_envelope(envelope, dsse.keyring([key.public_key()])) == payload

        [digest] = hashing.hash_file({str(video)!r}, ["video_md5"])
        assert digest.value == hashlib.md5(open({str(video)!r}, "rb").read()).hexdigest()
        try:
            hashing.hash_file({str(photo)!r}, ["pdq"])
        except hashing.HashingError as exc:
            assert "hashexchange-client[hashing]" in str(exc), exc
        else:
            raise AssertionError("pdq without Pillow should have failed")
        assert not any(name.split(".")[0] in {HEAVY!r} for name in sys.modules)
        try:
            cli.main(["--help"])
        except SystemExit as done:
            assert done.code == 0
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("ok")
