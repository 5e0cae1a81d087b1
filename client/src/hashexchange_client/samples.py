"""Synthetic, photo-like images for tests, benchmarks and trying the client out.

Nobody should need a real photo to check that hashing works, and perceptual hashes of
random noise are meaningless (their quality is low and they do not behave like photos
under scaling). These pictures have what PDQ and pHash respond to: smooth colour
gradients and solid shapes with edges, plus optionally a fine grain like a camera's.
They are deterministic for a given seed.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def photo_like(width: int, height: int, seed: int = 0, *, texture: bool = False) -> Image.Image:
    """An RGB picture of gradients and shapes; ``texture`` adds 8-px-grain noise."""
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
        r = int(rng.integers(max(1, short // 20), max(2, short // 4)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.rectangle([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=colour)
    return image


def jpeg_bytes(image: Image.Image, quality: int = 85) -> bytes:
    """The image as a baseline JPEG, the form photos usually arrive in."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
