"""Shared helpers for the client tests: plain pytest, no Django, no database.

The client is its own package (``client/``); when it has not been installed with
``pip install -e ./client`` its source directory is put on the path, so the suite
runs from a fresh checkout.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]

if importlib.util.find_spec("hashexchange_client") is None:
    sys.path.insert(0, str(REPO / "client" / "src"))


@pytest.fixture(scope="session", autouse=True)
def _real_redis() -> None:
    """Overrides the suite-wide Redis check: the client needs no server services."""


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """Overrides the suite-wide Redis flush, for the same reason."""


def photo_like(width: int, height: int, seed: int = 0, *, texture: bool = False) -> Image.Image:
    """A deterministic picture with smooth gradients and solid shapes.

    Perceptual hashes of pure noise are meaningless, so test images look like
    pictures: smooth colour fields with edges. ``texture`` adds a coarse, smoothed
    grain like a photo's, for the benchmark-like cases.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    channels = [
        127 + 100 * np.sin(x / width * np.pi * (1 + i) + phase[i]) * np.cos(y / height * np.pi * (1 + (i + 1) % 3))
        for i in range(3)
    ]
    pixels = np.stack(channels, axis=-1)
    if texture:
        grain = rng.normal(0, 1, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
        pixels += 12 * np.kron(grain, np.ones((8, 8, 1), np.float32))[:height, :width]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    for _ in range(12):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(short // 20, short // 4))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.rectangle([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=colour)
    return image


def jpeg_bytes(image: Image.Image, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture
def make_photo() -> Callable[..., Image.Image]:
    """:func:`photo_like`, as a fixture (test modules cannot import conftest)."""
    return photo_like


@pytest.fixture
def make_jpeg() -> Callable[..., bytes]:
    """:func:`jpeg_bytes`, as a fixture."""
    return jpeg_bytes


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A folder with a JPEG, a PNG, a video, a broken image and a stray text file."""
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(jpeg_bytes(photo_like(640, 480, 1)))
    photo_like(320, 240, 2).save(folder / "nested" / "b.png")
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.jpg").write_bytes(jpeg_bytes(photo_like(64, 64, 3)))
    return folder
