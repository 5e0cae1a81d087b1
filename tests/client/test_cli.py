"""The ``hashexchange`` command line, driven through ``main(argv)``."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hashexchange_client import dsse, keys, payloads
from hashexchange_client.cli import main
from hashexchange_client.encoding import b64encode
from PIL import Image

from .conftest import FakeExchange

MakePhoto = Callable[..., Image.Image]


@pytest.fixture
def key_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    folder = tmp_path / "keys"
    assert main(["keygen", "--out", str(folder)]) == 0
    capsys.readouterr()
    return folder


@pytest.fixture
def server_env(exchange: FakeExchange, monkeypatch: pytest.MonkeyPatch) -> FakeExchange:
    monkeypatch.setenv("HASHEXCHANGE_SERVER", exchange.url)
    monkeypatch.setenv("HASHEXCHANGE_API_KEY", FakeExchange.API_KEY)
    return exchange


@pytest.fixture
def clean_dir(tmp_path: Path, make_photo: MakePhoto) -> Path:
    """Two decodable images and a video, nothing broken."""
    folder = tmp_path / "clean"
    folder.mkdir()
    make_photo(640, 480, 21).save(folder / "one.jpg")
    make_photo(500, 500, 22).save(folder / "two.png")
    (folder / "three.webm").write_bytes(b"\x1aE\xdf\xa3" + bytes(range(200)))
    return folder


def test_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    pem = tmp_path / "signing_key.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    key = keys.load_private_key(pem)
    assert f"public key: {keys.public_key_to_b64(key)}" in out
    assert f"key id: {keys.key_id(key)}" in out
    assert (tmp_path / "signing_key.pub").read_text().strip() == keys.public_key_to_b64(key)

    assert main(["keygen", "--out", str(tmp_path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert keys.key_id(keys.load_private_key(pem)) == keys.key_id(key)
    assert main(["keygen", "--out", str(tmp_path), "--force"]) == 0
    assert keys.key_id(keys.load_private_key(pem)) != keys.key_id(key)


def test_hash_prints_hashes_and_reports_broken_files(image_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash", str(image_dir), "--jobs", "1"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("pdq:") and lines[0].endswith("a.jpg")
    assert "quality=" in lines[0]
    assert lines[1].startswith("video_md5:") and lines[1].endswith("clip.mp4")
    assert lines[2].startswith("pdq:") and lines[2].endswith("b.png")
    assert "broken.jpg: cannot decode image" in captured.err


def test_hash_json_lines(image_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jpg = image_dir / "a.jpg"
    assert main(["hash", str(jpg), "--types", "md5,pdq,dhash", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["signal_type"] for row in rows] == ["md5", "pdq", "dhash"]
    assert all(row["path"] == str(jpg) for row in rows)
    assert isinstance(rows[1]["quality"], int) and rows[0]["quality"] is None

    assert main(["hash", str(image_dir / "broken.jpg"), "--json"]) == 1
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["path"].endswith("broken.jpg") and "cannot decode image" in row["error"]


def test_hash_rejects_unknown_types(image_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["hash", str(image_dir), "--types", "pdq,sha1"])
    assert exited.value.code == 2
    assert "unknown signal type 'sha1'" in capsys.readouterr().err


def write_envelope(path: Path, key_dir: Path, **fields: object) -> dict[str, object]:
    key = keys.load_private_key(key_dir / "signing_key.pem")
    payload = payloads.submission_payload(
        program="ncii",
        signal_type="md5",
        value="c" * 32,
        **fields,  # type: ignore[arg-type]
    )
    envelope = dsse.sign_envelope(payloads.SUBMISSION_TYPE, payload, key)
    path.write_text(json.dumps(envelope))
    return envelope


def test_verify(tmp_path: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env_path = tmp_path / "envelope.json"
    envelope = write_envelope(env_path, key_dir, labels=["x"])
    public_b64 = (key_dir / "signing_key.pub").read_text().strip()

    assert main(["verify", str(env_path), "--public-key", public_b64]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["value"] == "c" * 32
    assert f"signed by key {envelope['signatures'][0]['keyid']}" in captured.err  # type: ignore[index]

    # A .pub file works too, and the expected type is enforced.
    args = ["verify", str(env_path), "--public-key", str(key_dir / "signing_key.pub")]
    assert main([*args, "--payload-type", payloads.SUBMISSION_TYPE]) == 0
    assert main([*args, "--payload-type", payloads.WITHDRAWAL_TYPE]) == 1
    assert "verification failed" in capsys.readouterr().err


def test_verify_failures(
    tmp_path: Path, key_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env_path = tmp_path / "envelope.json"
    envelope = write_envelope(env_path, key_dir)
    public_b64 = (key_dir / "signing_key.pub").read_text().strip()

    tampered = dict(envelope)
    tampered["payload"] = b64encode(payloads.submission_payload(program="ncii", signal_type="md5", value="d" * 32))
    env_path.write_text(json.dumps(tampered))
    assert main(["verify", str(env_path), "--public-key", public_b64]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "verification failed: signature does not match" in captured.err

    stranger = keys.public_key_to_b64(keys.generate_private_key())
    env_path.write_text(json.dumps(envelope))
    assert main(["verify", str(env_path), "--public-key", stranger]) == 1
    assert "unknown key id" in capsys.readouterr().err

    env_path.write_text("{not json")
    assert main(["verify", str(env_path), "--public-key", public_b64]) == 1
    assert "verification failed" in capsys.readouterr().err

    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(envelope)))
    assert main(["verify", "-", "--public-key", public_b64]) == 0


def test_submit_register_and_rerun(
    clean_dir: Path, key_dir: Path, server_env: FakeExchange, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(key_dir / "signing_key.pem")
    assert main(["register-key", "--key", key]) == 0
    assert "registered key id:" in capsys.readouterr().out

    base = ["submit", str(clean_dir), "--program", "ncii", "--label", "nudity", "--key", key, "--jobs", "1"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "files: 3 (0 could not be hashed)" in out
    assert "accepted: 3, duplicate: 0, rejected: 0" in out
    (request,) = [r for r in server_env.requests if r["path"] == "/api/v1/submissions"]
    sent = [
        json.loads(dsse.verify_envelope(e, server_env.keys, payloads.SUBMISSION_TYPE))
        for e in request["body"]["envelopes"]
    ]
    assert sorted(p["signal_type"] for p in sent) == ["pdq", "pdq", "video_md5"]
    assert all(p["labels"] == ["nudity"] and p["program"] == "ncii" for p in sent)
    assert all("quality" in p for p in sent if p["signal_type"] == "pdq")

    # Safe to re-run: the server answers duplicates.
    assert main(base) == 0
    assert "accepted: 0, duplicate: 3, rejected: 0" in capsys.readouterr().out


def test_submissions_held_for_review_are_counted(
    clean_dir: Path, key_dir: Path, server_env: FakeExchange, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(key_dir / "signing_key.pem")
    assert main(["register-key", "--key", key]) == 0
    server_env.hold_new = True
    base = ["submit", str(clean_dir), "--program", "ncii", "--key", key, "--jobs", "1"]
    assert main(base) == 0
    assert "accepted: 0, duplicate: 0, rejected: 0, held for review: 3" in capsys.readouterr().out
    # Stored by the server: a re-run gets duplicates, as for accepted ones.
    assert main(base) == 0
    assert "accepted: 0, duplicate: 3, rejected: 0\n" in capsys.readouterr().out


def test_submit_journal_skips_confirmed_items(
    clean_dir: Path, key_dir: Path, server_env: FakeExchange, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(key_dir / "signing_key.pem")
    journal = tmp_path / "journal.jsonl"
    main(["register-key", "--key", key])
    base = ["submit", str(clean_dir), "--program", "ncii", "--key", key, "--journal", str(journal), "--jobs", "1"]
    assert main(base) == 0
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["accepted"] * 3
    capsys.readouterr()

    before = len([r for r in server_env.requests if r["method"] == "POST"])
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "skipped: 3 already in journal" in out
    assert len([r for r in server_env.requests if r["method"] == "POST"]) == before  # nothing sent

    # A withdrawal recorded in the journal makes the hash eligible again.
    pdq = next(line for line in lines if line["signal_type"] == "pdq")
    withdraw = ["withdraw", "--program", "ncii", "--signal-type", "pdq", "--value", pdq["value"]]
    assert main([*withdraw, "--key", key, "--journal", str(journal), "--reason", "mistake"]) == 0
    assert "withdrawn: hash" in capsys.readouterr().out
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "skipped: 2 already in journal" in out
    assert "accepted: 1, duplicate: 0, rejected: 0" in out


def test_submit_reports_rejections_and_broken_files(
    image_dir: Path, key_dir: Path, server_env: FakeExchange, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(key_dir / "signing_key.pem")
    main(["register-key", "--key", key])
    capsys.readouterr()
    assert main(["hash", str(image_dir / "a.jpg"), "--json"]) == 0
    value = json.loads(capsys.readouterr().out)["value"]
    server_env.reject_values.add(value)

    code = main(["submit", str(image_dir), "--program", "ncii", "--key", key, "--jobs", "2", "--batch-size", "1"])
    assert code == 1
    out = capsys.readouterr().out
    assert "files: 4 (1 could not be hashed)" in out
    assert "accepted: 2, duplicate: 0, rejected: 1" in out
    assert f"rejected: {image_dir / 'a.jpg'} pdq:{value} (degenerate: pdq value is degenerate)" in out
    assert "not hashed:" in out and "broken.jpg" in out
    submissions = [r for r in server_env.requests if r["path"] == "/api/v1/submissions"]
    assert len(submissions) == 3  # --batch-size 1


def test_submit_skips_low_quality_pdq(
    tmp_path: Path, key_dir: Path, server_env: FakeExchange, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(key_dir / "signing_key.pem")
    main(["register-key", "--key", key])
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), "white").save(blank)
    assert main(["submit", str(blank), "--program", "ncii", "--key", key]) == 0
    out = capsys.readouterr().out
    assert "1 PDQ below quality threshold" in out
    assert not [r for r in server_env.requests if r["path"] == "/api/v1/submissions"]


def test_submit_dry_run_prints_verifiable_envelopes(
    clean_dir: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_path = key_dir / "signing_key.pem"
    args = ["submit", str(clean_dir), "--program", "ncii", "--case", "c-1", "--key", str(key_path), "--dry-run"]
    assert main(args) == 0
    captured = capsys.readouterr()
    ring = dsse.keyring([keys.load_private_key(key_path).public_key()])
    envelopes = [json.loads(line) for line in captured.out.splitlines()]
    assert len(envelopes) == 3
    for envelope in envelopes:
        fields = json.loads(dsse.verify_envelope(envelope, ring, payloads.SUBMISSION_TYPE))
        assert fields["case"] == "c-1"
    assert "signed: 3 envelopes (dry run, nothing sent)" in captured.err


def test_server_errors_are_shown_with_their_detail(
    clean_dir: Path, key_dir: Path, server_env: FakeExchange, capsys: pytest.CaptureFixture[str]
) -> None:
    # A wrong API key fails the whole request; the person sees the server's own words.
    key = str(key_dir / "signing_key.pem")
    code = main(["submit", str(clean_dir), "--program", "ncii", "--key", key, "--api-key", "wrong", "--jobs", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "hashexchange: error: HTTP 401: Invalid API key." in err


def test_failure_midway_shows_what_was_confirmed(
    clean_dir: Path, key_dir: Path, server_env: FakeExchange, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(key_dir / "signing_key.pem")
    main(["register-key", "--key", key])
    capsys.readouterr()
    journal = tmp_path / "journal.jsonl"
    server_env.pass_first = 3  # the program check (me, programs) and the first batch go through; the second is refused
    server_env.fail_next = [(400, {})]
    args = ["submit", str(clean_dir), "--program", "ncii", "--key", key, "--batch-size", "1", "--journal", str(journal)]
    assert main([*args, "--jobs", "1"]) == 1
    captured = capsys.readouterr()
    assert "accepted: 1, duplicate: 0, rejected: 0" in captured.out
    assert "hashexchange: error: HTTP 400: simulated failure 400" in captured.err
    assert len(journal.read_text().splitlines()) == 1

    # Running again finishes the job and skips what was confirmed.
    assert main([*args, "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "skipped: 1 already in journal" in out
    assert "accepted: 2, duplicate: 0, rejected: 0" in out


def test_hash_with_nothing_to_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("no pictures here")
    with pytest.raises(SystemExit) as exited:
        main(["hash", str(tmp_path)])
    assert exited.value.code == 2
    assert "no image or video files found" in capsys.readouterr().err


def test_bad_label_is_refused_before_hashing(
    clean_dir: Path, key_dir: Path, server_env: FakeExchange, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["submit", str(clean_dir), "--program", "ncii", "--label", "two words"]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--key", str(key_dir / "signing_key.pem")])
    assert exited.value.code == 2
    assert "label 'two words'" in capsys.readouterr().err
    assert server_env.requests == []


def test_missing_server_is_a_usage_error(
    clean_dir: Path, key_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HASHEXCHANGE_SERVER", raising=False)
    monkeypatch.delenv("HASHEXCHANGE_API_KEY", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["submit", str(clean_dir), "--program", "ncii", "--key", str(key_dir / "signing_key.pem")])
    assert exited.value.code == 2
    assert "HASHEXCHANGE_SERVER" in capsys.readouterr().err


def test_register_key_again_is_a_success(
    key_dir: Path, server_env: FakeExchange, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(key_dir / "signing_key.pem")
    assert main(["register-key", "--key", key]) == 0
    key_id = capsys.readouterr().out.split()[-1]
    assert main(["register-key", "--key", key]) == 0
    assert capsys.readouterr().out.strip() == f"already registered key id: {key_id}"
    assert [r for r in server_env.requests if r["method"] == "POST"] == [server_env.requests[1]]  # one POST


def test_a_program_the_member_cannot_submit_to_is_refused_before_hashing(
    clean_dir: Path,
    key_dir: Path,
    server_env: FakeExchange,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hashexchange_client.cli as cli

    def no_hashing(*args: object, **kwargs: object) -> None:
        raise AssertionError("files were hashed before the program was checked")

    key = str(key_dir / "signing_key.pem")
    monkeypatch.setattr(cli, "hash_files", no_hashing)
    assert main(["submit", str(clean_dir), "--program", "take-it-down", "--key", key]) == 1
    err = capsys.readouterr().err
    assert "not enrolled in a program 'take-it-down'" in err and "ncii (opted_in)" in err
    assert main(["submit", str(clean_dir), "--program", "paused-one", "--key", key]) == 1
    assert "you are paused in program 'paused-one'" in capsys.readouterr().err
    server_env.enrollments["pdq-only"] = "opted_in"
    with pytest.raises(SystemExit):
        main(["submit", str(clean_dir), "--program", "pdq-only", "--types", "pdq,md5", "--key", key])
    assert "does not take md5; it takes pdq" in capsys.readouterr().err


def test_default_types_a_program_does_not_take_are_dropped(
    clean_dir: Path, key_dir: Path, server_env: FakeExchange, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(key_dir / "signing_key.pem")
    main(["register-key", "--key", key])
    server_env.enrollments["pdq-only"] = "opted_in"
    assert main(["submit", str(clean_dir), "--program", "pdq-only", "--key", key, "--jobs", "1"]) == 0
    captured = capsys.readouterr()
    assert "does not take video_md5; not computing them" in captured.err
    assert "accepted: 2, duplicate: 0, rejected: 0" in captured.out


def test_me(server_env: FakeExchange, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["me"]) == 0
    assert json.loads(capsys.readouterr().out)["slug"] == "platform-a"


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hashexchange_client", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("hashexchange ")
