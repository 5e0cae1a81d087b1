"""A real video, made here with ffmpeg from generated frames, through the client's vPDQ
hashing, a signed submission, the feed and the match API; a re-encoded, resized and trimmed
copy matches, an unrelated video does not, and a file that is no video is refused."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hashexchange_client import hashing, signal_types

from tests.conftest import Caller
from tests.signing import Signer

pytestmark = [
    pytest.mark.usefixtures("index_dir"),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by .ci/run"),
]
FPS = 10


def scene_frames(seed: int, seconds: int, size: tuple[int, int] = (480, 270)) -> Iterator[bytes]:
    """Raw RGB frames: a new random scene of coloured blocks each second, drifting slowly."""
    rng = np.random.default_rng(seed)
    width, height = size
    for _ in range(seconds):
        blocks = rng.integers(0, 256, size=(9, 16, 3), dtype=np.uint8)
        image = np.kron(blocks, np.ones((height // 9 + 1, width // 16 + 1, 1), dtype=np.uint8))
        for shift in range(FPS):
            yield np.ascontiguousarray(np.roll(image, shift, axis=1)[:height, :width]).tobytes()


def make_video(path: Path, seed: int, seconds: int) -> Path:
    ffmpeg = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "480x270"]
    ffmpeg += ["-r", str(FPS), "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(ffmpeg, input=b"".join(scene_frames(seed, seconds)), check=True)
    return path


def reencode(source: Path, target: Path) -> Path:
    """Another codec and quality, a smaller size, the first and last two seconds cut."""
    command = ["ffmpeg", "-loglevel", "error", "-y", "-ss", "2", "-i", str(source), "-t", "8"]
    command += ["-vf", "scale=320:180", "-c:v", "mpeg4", "-q:v", "8", str(target)]
    subprocess.run(command, check=True)
    return target


def test_a_video_round_trip_through_client_server_feed_and_match(
    tmp_path: Path, signer_a: Signer, platform_b: Caller
) -> None:
    original = make_video(tmp_path / "original.mp4", seed=1, seconds=12)
    copy = reencode(original, tmp_path / "copy.avi")
    unrelated = make_video(tmp_path / "unrelated.mp4", seed=2, seconds=12)

    # The client hashes on the device: one frame a second, python-threatexchange's format.
    [result] = hashing.hash_file(original, ["vpdq"])
    assert result.signal_type == "vpdq"
    frames = signal_types.parse_vpdq(result.value)
    assert len(frames) == 12 and [round(f.timestamp) for f in frames] == list(range(12))
    body = signer_a.submit(signer_a.submission(result.value, signal_type="vpdq")).json()
    assert body["accepted"] == 1, body
    hash_id = body["results"][0]["hash_id"]

    feed = platform_b.client.get("/api/v1/feed?after=0").json()
    [entry] = [e for e in feed["entries"] if e["kind"] == "hash.added"]
    assert entry["hash"] == {"id": hash_id, "signal_type": "vpdq", "value": result.value}

    queries = [hashing.hash_file(path, ["vpdq"])[0].value for path in (copy, unrelated)]
    response = platform_b.client.post(
        "/api/v1/match", {"queries": [{"signal_type": "vpdq", "value": v} for v in queries]}, format="json"
    )
    assert response.status_code == 200, response.content
    matched, other = response.json()["results"]
    assert [m["hash_id"] for m in matched["matches"]] == [hash_id]
    assert matched["matches"][0]["query_match_percent"] >= 80
    assert matched["matches"][0]["full_match"] is False  # the trimmed copy holds 8 of its 12 seconds
    assert other["matches"] == []


def test_a_file_that_is_no_video_is_refused_clearly(tmp_path: Path) -> None:
    fake = tmp_path / "holiday.mp4"
    fake.write_bytes(b"this is not a video" * 100)
    with pytest.raises(hashing.HashingError, match="holiday.mp4"):
        hashing.hash_file(fake, ["vpdq"])
    failed = next(hashing.hash_files([fake], ["vpdq"]))
    assert failed.error and "holiday.mp4" in failed.error and not failed.results
