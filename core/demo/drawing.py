"""Procedurally drawn fruit-like pictures for the demo dataset (PIL only, seeded).

Three classes with distinct shapes and colours (a round red apple with a stem and a leaf,
a yellow banana crescent, a green oval lime with a pale rind ring), each picture with its
own canvas size and aspect ratio, background (plain, gradient, or a table edge), fruit
size, position, tilt and colour jitter. The same seed draws the same pixels, so a second
``python -m core demo`` finds every picture already indexed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True)
class DemoClass:
    key: str  # the class key in the index (prefixed, so it never merges into a user's class)
    display_name: str
    prompt_name: str  # what the generation prompt calls it


DEMO_CLASSES: tuple[DemoClass, ...] = (
    DemoClass("demo_apple", "Apple (demo)", "apple"),
    DemoClass("demo_banana", "Banana (demo)", "banana"),
    DemoClass("demo_lime", "Lime (demo)", "lime"),
)

RGB = tuple[int, int, int]


def _jitter(rng: random.Random, colour: RGB, amount: int) -> RGB:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)  # type: ignore[return-value]


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    width, height = size
    first = (rng.randint(90, 250), rng.randint(90, 250), rng.randint(90, 250))
    style = rng.choice(("plain", "gradient", "table"))
    canvas = Image.new("RGB", size, first)
    draw = ImageDraw.Draw(canvas)
    if style == "gradient":
        second = (rng.randint(40, 220), rng.randint(40, 220), rng.randint(40, 220))
        for y in range(height):
            t = y / max(1, height - 1)
            draw.line([(0, y), (width, y)],
                      fill=tuple(int(a + (b - a) * t) for a, b in zip(first, second)))
    elif style == "table":
        wood = _jitter(rng, (150, 105, 60), 30)
        draw.rectangle([0, int(height * rng.uniform(0.55, 0.8)), width, height], fill=wood)
    return canvas


def _apple(draw: ImageDraw.ImageDraw, rng: random.Random, box: tuple[float, float, float, float]) -> None:
    left, top, right, bottom = box
    width = right - left
    body = _jitter(rng, rng.choice(((200, 30, 35), (170, 20, 40), (120, 190, 50))), 25)
    draw.ellipse([left, top + width * 0.08, right, bottom], fill=body)
    centre = (left + right) / 2
    draw.line([(centre, top + width * 0.15), (centre + width * 0.05, top - width * 0.05)],
              fill=(90, 60, 30), width=max(1, int(width * 0.05)))
    draw.ellipse([centre + width * 0.04, top - width * 0.04, centre + width * 0.3, top + width * 0.1],
                 fill=_jitter(rng, (50, 140, 40), 20))
    draw.ellipse([left + width * 0.2, top + width * 0.25, left + width * 0.35, top + width * 0.4],
                 fill=tuple(min(255, c + 60) for c in body))


def _banana(draw: ImageDraw.ImageDraw, rng: random.Random, box: tuple[float, float, float, float]) -> None:
    left, top, right, bottom = box
    colour = _jitter(rng, (235, 205, 45), 20)
    thickness = max(2, int((right - left) * rng.uniform(0.14, 0.22)))
    draw.arc([left, top - (bottom - top) * 0.6, right, bottom], start=20, end=160, fill=colour,
             width=thickness)
    draw.ellipse([left + (right - left) * 0.1, bottom - (bottom - top) * 0.55,
                  left + (right - left) * 0.16, bottom - (bottom - top) * 0.45], fill=(80, 60, 20))


def _lime(draw: ImageDraw.ImageDraw, rng: random.Random, box: tuple[float, float, float, float]) -> None:
    left, top, right, bottom = box
    height = bottom - top
    squash = height * rng.uniform(0.1, 0.2)
    rind = _jitter(rng, (60, 150, 40), 20)
    draw.ellipse([left, top + squash, right, bottom - squash], fill=rind)
    inset = (right - left) * 0.12
    draw.ellipse([left + inset, top + squash + inset, right - inset, bottom - squash - inset],
                 outline=_jitter(rng, (170, 220, 110), 20), width=max(1, int(inset * 0.4)))


PAINTERS: dict[str, Callable[[ImageDraw.ImageDraw, random.Random, tuple[float, float, float, float]], None]] = {
    "demo_apple": _apple, "demo_banana": _banana, "demo_lime": _lime}


def draw_fruit(class_key: str, index: int, seed: int = 0) -> Image.Image:
    """Picture ``index`` of a demo class; the same (class, index, seed) draws the same pixels."""
    class_number = [c.key for c in DEMO_CLASSES].index(class_key)
    rng = random.Random(f"{seed}:{class_number}:{index}")
    short_side = rng.randint(64, 128)
    aspect = rng.uniform(0.6, 1.7)
    size = (int(short_side * aspect), short_side) if aspect >= 1 else (short_side, int(short_side / aspect))
    canvas = _background(rng, size)
    fruit = min(size) * rng.uniform(0.35, 0.8)
    left = rng.uniform(0, size[0] - fruit)
    top = rng.uniform(fruit * 0.1, size[1] - fruit)
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    PAINTERS[class_key](ImageDraw.Draw(layer), rng, (left, top, left + fruit, top + fruit))
    layer = layer.rotate(rng.uniform(-30, 30), center=(left + fruit / 2, top + fruit / 2),
                         resample=Image.BICUBIC)
    canvas.paste(layer, (0, 0), layer)
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return canvas


def draw_dataset(folder: Path, per_class: int, seed: int = 0) -> dict[str, int]:
    """Write ``folder/<class key>/<class key>_<index>.png`` (the class-folder layout)."""
    counts = {}
    for demo_class in DEMO_CLASSES:
        target = folder / demo_class.key
        target.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            draw_fruit(demo_class.key, index, seed).save(
                target / f"{demo_class.key}_{index:04d}.png", optimize=False, compress_level=1)
        counts[demo_class.key] = per_class
    return counts
