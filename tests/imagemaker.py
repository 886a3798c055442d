"""Images made by the tests: simple classes a CNN can tell apart, and bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# Each class is a coloured shape on a noisy background, so a small CNN separates them.
CLASS_COLOURS = {
    "apple": (200, 30, 30),
    "banana": (230, 210, 40),
    "lime": (40, 180, 60),
    "plum": (110, 40, 140),
    "orange": (240, 140, 20),
    "mixed": (150, 100, 60),  # the original study's photos of several fruits
}


def fruit_image(label: str, seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    background = rng.integers(60, 200, size=3)
    pixels = np.clip(rng.normal(background, 20, size=(height, width, 3)), 0, 255)
    colour = np.array(CLASS_COLOURS[label], dtype=float)
    cy, cx = height / 2 + rng.uniform(-0.1, 0.1) * height, width / 2 + rng.uniform(-0.1, 0.1) * width
    radius = min(width, height) * rng.uniform(0.25, 0.4)
    yy, xx = np.mgrid[0:height, 0:width]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    pixels[mask] = np.clip(rng.normal(colour, 12, size=(int(mask.sum()), 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def save_jpeg(image: Image.Image, path: Path, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=quality)
    return path


def make_imagefolder(root: Path, classes: list[str], per_class: int, *, seed: int = 0,
                     size: tuple[int, int] = (96, 72)) -> Path:
    """``root/<class>/<class>_<i>.jpg``: the ImageFolder layout."""
    for c_index, label in enumerate(classes):
        for i in range(per_class):
            save_jpeg(fruit_image(label, seed * 100_000 + c_index * 1000 + i, size),
                      root / label / f"{label}_{i}.jpg")
    return root


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()
