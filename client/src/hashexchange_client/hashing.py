"""Hash files on the member's own device; the files themselves never leave it.

Perceptual hashes (PDQ, pHash, dHash) are computed from a reduced copy of the image.
JPEGs are decoded with Pillow's ``draft`` mode, which lets libjpeg scale by 1/2, 1/4 or
1/8 inside the DCT, so a 12-megapixel photo is never fully decoded; anything still
larger than :data:`MAX_SIDE` pixels is box-reduced by an integer factor. PDQ's own
first step is a box (Jarosz) filter down to 64x64, so this loses little: on photo-like
JPEGs from 1024x768 to 4000x3000 the PDQ hash stayed on average 0-4.4 bits (at most
10) from the full-resolution one, about half the drift of resizing further to 512 px
as Meta's reference hasher does (5-7.6, at most 12); other members' hashers work at
full resolution, so closeness to it is what keeps matches. On a 12-megapixel photo it
is about 28 times faster than hashing at full resolution (docs/benchmarks/client-hashing.md).

Images are shown upright first (EXIF orientation applied), so the hash describes the
picture as a person sees it, which is also how platforms usually re-encode uploads.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from . import signal_types
from .payloads import SIGNAL_TYPES

# Image hashing needs Pillow, numpy, ImageHash and pdqhash: the `hashing` extra
# (`pip install "hashexchange-client[hashing]"`). Without them the rest of this module
# (file digests: md5, sha256, video_md5) and the rest of the package work.
try:
    import imagehash
    import numpy as np
    import pdqhash
    from PIL import Image, ImageOps
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess by the tests
    IMAGE_HASHING_ERROR: str | None = (
        f"image hashing (pdq, phash, dhash) needs the hashing extra: "
        f'pip install "hashexchange-client[hashing]" ({_missing})'
    )
else:
    IMAGE_HASHING_ERROR = None

IMAGE_SIGNAL_TYPES = frozenset({"pdq", "phash", "dhash"})
BYTE_SIGNAL_TYPES = frozenset({"md5", "sha256"})
VIDEO_SIGNAL_TYPES = frozenset({"video_md5", "vpdq"})
DEFAULT_TYPES: tuple[str, ...] = ("pdq", "video_md5")

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})

# The JPEG draft request; libjpeg then picks the largest 1/2^k scale that keeps both
# sides at least this big, so a 4000x3000 photo decodes at 1000x750.
DRAFT_SIDE = 512
# Longest side kept for perceptual hashing (see the module docstring for why).
MAX_SIDE = 1024

_CHUNK = 1 << 20

# vPDQ sampling: one frame a second (python-threatexchange's default), decoded at a width of
# 512 pixels at most (PDQ works on a 64x64 reduction, so a full 1080p frame adds decoding and
# scaling time, not information); one decoding thread, so that --jobs decides the cores used.
VPDQ_SECONDS_PER_HASH = 1.0
VPDQ_MAX_WIDTH = 512


class HashingError(Exception):
    """A file that could not be hashed; the message names the file and the reason."""


@dataclass(frozen=True)
class HashResult:
    """One hash of one file. ``quality`` is PDQ's 0-100 confidence, else None."""

    path: Path
    signal_type: str
    value: str
    quality: int | None = None


@dataclass(frozen=True)
class FileHashes:
    """Everything learnt about one file: its hashes, or why there are none."""

    path: Path
    results: tuple[HashResult, ...] = field(default_factory=tuple)
    error: str | None = None


def parse_types(text: str | Iterable[str]) -> tuple[str, ...]:
    """Turn ``"pdq,md5"`` (or a list) into known signal types, in order, without repeats."""
    items = text.split(",") if isinstance(text, str) else list(text)
    types: list[str] = []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if name not in SIGNAL_TYPES:
            raise ValueError(f"unknown signal type {name!r}; known: {', '.join(SIGNAL_TYPES)}")
        if name not in types:
            types.append(name)
    if not types:
        raise ValueError("no signal types given")
    return tuple(types)


def is_video(path: Path) -> bool:
    """Videos are recognised by extension; only vPDQ decodes them (on this device)."""
    return path.suffix.lower() in VIDEO_EXTENSIONS


def applicable_types(path: Path, types: Iterable[str]) -> tuple[str, ...]:
    """The requested types that make sense for this file (image vs video)."""
    allowed = VIDEO_SIGNAL_TYPES if is_video(path) else IMAGE_SIGNAL_TYPES
    return tuple(t for t in types if t in allowed or t in BYTE_SIGNAL_TYPES)


def hash_file(path: str | os.PathLike[str], types: Iterable[str] = DEFAULT_TYPES) -> list[HashResult]:
    """Hash one file with each applicable requested type, in the order requested.

    Raises :class:`HashingError` if the file cannot be read, or if an image type was
    asked for and the file is not a decodable image. Returns an empty list when no
    requested type applies (for example ``pdq`` for a video).
    """
    path = Path(path)
    wanted = applicable_types(path, types)
    if not wanted:
        return []
    values: dict[str, str] = _file_digests(path, wanted)
    quality: int | None = None
    if IMAGE_SIGNAL_TYPES.intersection(wanted):
        _require_image_hashing()
        image = load_image(path)
        if "pdq" in wanted:
            values["pdq"], quality = pdq_hash(image)
        if "phash" in wanted:
            values["phash"] = str(imagehash.phash(image))
        if "dhash" in wanted:
            values["dhash"] = str(imagehash.dhash(image))
    if "vpdq" in wanted:
        values["vpdq"] = vpdq_hash(path)
    return [HashResult(path, t, values[t], quality if t == "pdq" else None) for t in wanted]


def _require_image_hashing() -> None:
    if IMAGE_HASHING_ERROR is not None:
        raise HashingError(IMAGE_HASHING_ERROR)


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode an image upright, in RGB, with its longest side at most :data:`MAX_SIDE`.

    Any failure to decode becomes a :class:`HashingError`: Pillow's format parsers
    raise many exception types on damaged input, and one bad file among thousands must
    not stop the rest.
    """
    _require_image_hashing()
    path = Path(path)
    try:
        with Image.open(path) as opened:
            opened.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
            # Returns a loaded copy, transposed if EXIF says the camera was turned.
            image = ImageOps.exif_transpose(opened)
        if image.mode != "RGB":
            # Through RGBA so palette transparency is interpreted, not warned about.
            image = image.convert("RGBA").convert("RGB")
    except FileNotFoundError:
        raise HashingError(f"{path}: no such file") from None
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise HashingError(f"{path}: cannot decode image: {reason}") from exc
    longest = max(image.size)
    if longest > MAX_SIDE:
        image = image.reduce(math.ceil(longest / MAX_SIDE))
    return image


def pdq_hash(image: Image.Image) -> tuple[str, int]:
    """PDQ hash as 64 lowercase hex digits, and its quality (0-100).

    ``pdqhash`` returns the 256 bits most significant first, so packing them into
    bytes gives the same hex as Meta's reference implementation prints.
    """
    _require_image_hashing()
    bits, quality = pdqhash.compute(np.asarray(image, dtype=np.uint8))
    return np.packbits(bits.astype(np.uint8)).tobytes().hex(), int(quality)


def vpdq_hash(path: Path, *, seconds_per_hash: float = VPDQ_SECONDS_PER_HASH) -> str:
    """The vPDQ value of a video, in python-threatexchange's serialisation, checked.

    Decoded on this device by the `ffmpeg` program (`vpdq_frames`), each sampled frame
    hashed with pdqhash; where there is no `ffmpeg` program, by the `vpdq` package (FFmpeg's
    libraries, every frame decoded: about twice the CPU time). Only the frame hashes leave
    the device. Raises :class:`HashingError` when neither is available, the file is not a
    video that can be decoded, or no frame could be decoded.
    """
    if not path.is_file():
        raise HashingError(f"{path}: no such file")
    if shutil.which("ffmpeg") is not None and IMAGE_HASHING_ERROR is None:
        frames = vpdq_frames(path, seconds_per_hash=seconds_per_hash)
    else:
        frames = _vpdq_package_frames(path, seconds_per_hash=seconds_per_hash)
    if not frames:
        raise HashingError(f"{path}: no frames could be decoded")
    try:
        return signal_types.validate("vpdq", signal_types.serialise_vpdq(frames[: signal_types.VPDQ_MAX_FRAMES]))
    except signal_types.SignalValueError as exc:
        raise HashingError(f"{path}: {exc}") from None


# FFmpeg's decoder options that skip work a frame hash does not need: the in-loop deblocking
# filter (its effect on PDQ's 64x64 reduction is a bit or two), and frames no other frame
# refers to (B-frames, mostly: when the frame at a second's start is one, the next decoded
# frame, at most a few frames later, is hashed instead). docs/benchmarks/videos.md has the
# figures: about half the CPU time of decoding every frame.
VPDQ_DECODE_OPTIONS = ("-threads", "1", "-skip_loop_filter", "all", "-skip_frame", "noref")


def vpdq_frames(path: Path, *, seconds_per_hash: float = VPDQ_SECONDS_PER_HASH) -> list[signal_types.VpdqFrame]:
    """A PDQ hash per `seconds_per_hash` of a video, decoded by the `ffmpeg` program.

    Steps: ffmpeg decodes on one thread with `VPDQ_DECODE_OPTIONS`, keeps the first decoded
    frame of each interval, scales it to at most `VPDQ_MAX_WIDTH` wide and pipes it as raw
    RGB; each frame is hashed with pdqhash and stamped with its interval's start (the k-th
    frame kept: k intervals), as the `vpdq` package stamps its frames.
    """
    _require_image_hashing()
    width, height = _video_size(path)
    if not width or not height:
        raise HashingError(f"{path}: cannot decode the video: ffprobe finds no video stream")
    out_w = min(width, VPDQ_MAX_WIDTH)
    out_h = max(2, round(height * out_w / width / 2) * 2)
    out_w = max(2, out_w // 2 * 2)
    command = ["ffmpeg", "-nostdin", "-v", "error", "-filter_threads", "1", *VPDQ_DECODE_OPTIONS, "-i", str(path)]
    # The first decoded frame of each interval (vpdq keeps frame 0, fps, 2 x fps … by count);
    # `fps` would not do: it keeps the last frame before each half interval.
    interval = f"{seconds_per_hash:g}"
    keep = f"select='isnan(prev_selected_t)+gt(floor(t/{interval})\\,floor(prev_selected_t/{interval}))'"
    command += ["-map", "0:v:0", "-vf", f"{keep},scale={out_w}:{out_h}:flags=area", "-fps_mode", "passthrough"]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    size = out_w * out_h * 3
    frames: list[signal_types.VpdqFrame] = []
    # Its messages go to a file, so that a damaged video's many cannot fill a pipe nobody reads.
    with (
        tempfile.TemporaryFile() as messages,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=messages) as process,
    ):
        assert process.stdout is not None
        while len(frames) < signal_types.VPDQ_MAX_FRAMES:
            raw = process.stdout.read(size)
            if len(raw) < size:
                break
            image = np.frombuffer(raw, dtype=np.uint8).reshape(out_h, out_w, 3)
            bits, quality = pdqhash.compute(image)
            value = np.packbits(bits.astype(np.uint8)).tobytes().hex()
            frames.append(signal_types.VpdqFrame(value, int(quality), round(len(frames) * seconds_per_hash, 3)))
        process.stdout.close()
        code = process.wait()
        messages.seek(0)
        errors = messages.read().decode(errors="replace").strip()
    if code != 0 and not frames:
        last = errors.splitlines()[-1] if errors else f"ffmpeg exited with {code}"
        raise HashingError(f"{path}: cannot decode the video: {last}")
    return frames


def _vpdq_package_frames(path: Path, *, seconds_per_hash: float) -> list[signal_types.VpdqFrame]:
    try:
        import vpdq  # noqa: PLC0415 - optional: only members who hash videos install it
    except ImportError:
        raise HashingError(f"{path}: vpdq hashing needs FFmpeg's ffmpeg program, or the vpdq package") from None
    width, height = _video_size(path)
    scale = min(1.0, VPDQ_MAX_WIDTH / width) if width else 1.0
    try:
        features = vpdq.computeHash(
            str(path),
            seconds_per_hash=seconds_per_hash,
            downsample_width=int(width * scale) if scale < 1 else 0,
            downsample_height=int(height * scale) if scale < 1 else 0,
            thread_count=1,
        )
    except Exception as exc:  # noqa: BLE001 - vpdq raises a bare Exception for a file it cannot decode
        raise HashingError(f"{path}: cannot decode the video: {str(exc).strip()}") from None
    return [signal_types.VpdqFrame(f.hex, int(f.quality), float(f.timestamp)) for f in features]


def _video_size(path: Path) -> tuple[int, int]:
    """(width, height) of the first video stream, or (0, 0) if unknown (then no downscaling)."""
    try:
        out = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=width,height",
                "-of",
                "csv=p=0",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.strip()
        width, height = (int(x) for x in out.split(",")[:2])
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0, 0
    return width, height


def _file_digests(path: Path, types: Sequence[str]) -> dict[str, str]:
    """Stream the file once for every byte digest asked for (MD5, SHA-256)."""
    digests: dict[str, Any] = {}
    if "md5" in types or "video_md5" in types:
        digests["md5"] = hashlib.md5(usedforsecurity=False)
    if "sha256" in types:
        digests["sha256"] = hashlib.sha256()
    if not digests:
        return {}
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                for digest in digests.values():
                    digest.update(chunk)
    except FileNotFoundError:
        raise HashingError(f"{path}: no such file") from None
    except OSError as exc:
        raise HashingError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    values = {name: digest.hexdigest() for name, digest in digests.items()}
    if "md5" in values:
        values["video_md5"] = values["md5"]
    return values


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files named directly, plus image and video files found under named directories.

    A file named on the command line is always tried, whatever its extension; inside
    directories only known image and video extensions are taken, and hidden files and
    directories are skipped, so stray documents or system files are not reported as
    broken images. The walk is sorted, so runs are repeatable.
    """
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                candidate = Path(root, name)
                if not name.startswith(".") and (candidate.suffix.lower() in IMAGE_EXTENSIONS or is_video(candidate)):
                    yield candidate


def hash_one(path: Path, types: Sequence[str]) -> FileHashes:
    """:func:`hash_file`, with failures captured in the result instead of raised."""
    try:
        return FileHashes(path, tuple(hash_file(path, types)))
    except HashingError as exc:
        return FileHashes(path, error=str(exc))


def hash_files(files: Iterable[Path], types: Sequence[str] = DEFAULT_TYPES, *, jobs: int = 1) -> Iterator[FileHashes]:
    """Hash many files, in input order, optionally on ``jobs`` worker processes.

    Processes rather than threads, because PDQ and the JPEG decoder hold the GIL for
    much of their work.
    """
    if jobs <= 1:
        for path in files:
            yield hash_one(path, types)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(partial(hash_one, types=tuple(types)), files, chunksize=4)
