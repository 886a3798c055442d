"""Augmentations: flips, rotation, colour changes, noise, cutout, coloured margins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image, ImageEnhance

from core.preprocess.transform_base import (RGB, Transform, TransformError, _check_colour,
                                            _check_probability, _from_array, _to_array, register)

@register
@dataclass(frozen=True)
class HorizontalFlip(Transform):
    """Mirror left-right with probability ``p``."""

    type_name: ClassVar[str] = "hflip"
    label: ClassVar[str] = "Horizontal flip"
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_probability(self.p, "flip probability")

    @property
    def is_random(self) -> bool:
        return 0.0 < self.p < 1.0

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        flip = self.p >= 1.0 or (self.p > 0.0 and self._rng(rng).random() < self.p)
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else image.copy()


@register
@dataclass(frozen=True)
class Rotate(Transform):
    """Rotate by a random angle in ``[-max_degrees, max_degrees]``; corners get ``fill``."""

    type_name: ClassVar[str] = "rotate"
    label: ClassVar[str] = "Small rotation"
    max_degrees: float = 10.0
    fill: RGB = (0, 0, 0)

    def __post_init__(self) -> None:
        if not 0 <= self.max_degrees <= 180:
            raise TransformError(f"max_degrees must be within 0-180, got {self.max_degrees}")
        _check_colour(self.fill, "rotation fill")

    @property
    def is_random(self) -> bool:
        return self.max_degrees > 0

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        if self.max_degrees == 0:
            return image.copy()
        angle = float(self._rng(rng).uniform(-self.max_degrees, self.max_degrees))
        return image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=self.fill)


@register
@dataclass(frozen=True)
class Grayscale(Transform):
    """Convert to gray (kept as 3 channels) with probability ``p``."""

    type_name: ClassVar[str] = "grayscale"
    label: ClassVar[str] = "Grayscale"
    p: float = 1.0

    def __post_init__(self) -> None:
        _check_probability(self.p, "grayscale probability")

    @property
    def is_random(self) -> bool:
        return 0.0 < self.p < 1.0

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        gray = self.p >= 1.0 or (self.p > 0.0 and self._rng(rng).random() < self.p)
        return image.convert("L").convert("RGB") if gray else image.copy()


@register
@dataclass(frozen=True)
class GaussianNoise(Transform):
    """Add Gaussian noise of standard deviation ``sigma`` (in 0-255 units)."""

    type_name: ClassVar[str] = "gaussian_noise"
    label: ClassVar[str] = "Gaussian noise"
    sigma: float = 8.0

    def __post_init__(self) -> None:
        if self.sigma < 0:
            raise TransformError(f"noise sigma must be >= 0, got {self.sigma}")

    @property
    def is_random(self) -> bool:
        return self.sigma > 0

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        if self.sigma == 0:
            return image.copy()
        array = _to_array(image).astype(np.float32)
        noise = self._rng(rng).standard_normal(array.shape, dtype=np.float32) * np.float32(self.sigma)
        return _from_array(np.clip(np.rint(array + noise), 0, 255))


@register
@dataclass(frozen=True)
class Cutout(Transform):
    """Blank out ``count`` random squares of side ``size_fraction`` of the shorter side."""

    type_name: ClassVar[str] = "cutout"
    label: ClassVar[str] = "Cutout"
    count: int = 1
    size_fraction: float = 0.25
    fill: RGB = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.count < 0:
            raise TransformError("cutout count must be >= 0")
        if not 0 < self.size_fraction <= 1:
            raise TransformError(f"cutout size_fraction must be in (0, 1], got {self.size_fraction}")
        _check_colour(self.fill, "cutout fill")

    @property
    def is_random(self) -> bool:
        return self.count > 0

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        array = _to_array(image).copy()
        if self.count == 0:
            return _from_array(array)
        rng = self._rng(rng)
        height, width = array.shape[:2]
        side = max(1, round(min(width, height) * self.size_fraction))
        for _ in range(self.count):
            cy, cx = int(rng.integers(height)), int(rng.integers(width))
            top, left = max(0, cy - side // 2), max(0, cx - side // 2)
            array[top:top + side, left:left + side] = self.fill
        return _from_array(array)


@register
@dataclass(frozen=True)
class ColouredMargins(Transform):
    """Paint bands of random width (up to ``max_fraction`` of the side) along each edge.

    The colour is ``colour``, or a random one per image when ``random_colour`` is set, so
    a model cannot use the colour of letterbox margins as a cue.
    """

    type_name: ClassVar[str] = "coloured_margins"
    label: ClassVar[str] = "Coloured margins"
    max_fraction: float = 0.1
    random_colour: bool = True
    colour: RGB = (0, 0, 0)

    def __post_init__(self) -> None:
        if not 0 <= self.max_fraction < 0.5:
            raise TransformError(f"max_fraction must be in [0, 0.5), got {self.max_fraction}")
        _check_colour(self.colour, "margin colour")

    @property
    def is_random(self) -> bool:
        return True

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        rng = self._rng(rng)
        array = _to_array(image).copy()
        height, width = array.shape[:2]
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3)) if self.random_colour else self.colour
        top, bottom = (int(rng.integers(int(height * self.max_fraction) + 1)) for _ in range(2))
        left, right = (int(rng.integers(int(width * self.max_fraction) + 1)) for _ in range(2))
        array[:top] = colour
        array[height - bottom:] = colour
        array[:, :left] = colour
        array[:, width - right:] = colour
        return _from_array(array)


@register
@dataclass(frozen=True)
class ColourJitter(Transform):
    """Random brightness, contrast, saturation (factors in ``1 +- x``) and hue shift."""

    type_name: ClassVar[str] = "colour_jitter"
    label: ClassVar[str] = "Colour jitter"
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.0  # fraction of the colour wheel, at most 0.5

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise TransformError(f"{name} jitter must be in [0, 1)")
        if not 0 <= self.hue <= 0.5:
            raise TransformError("hue jitter must be in [0, 0.5]")

    @property
    def is_random(self) -> bool:
        return any((self.brightness, self.contrast, self.saturation, self.hue))

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        if not self.is_random:
            return image.copy()
        rng = self._rng(rng)
        factors = [float(rng.uniform(1 - x, 1 + x)) for x in (self.brightness, self.contrast, self.saturation)]
        shift = float(rng.uniform(-self.hue, self.hue))
        out = ImageEnhance.Brightness(image).enhance(factors[0])
        out = ImageEnhance.Contrast(out).enhance(factors[1])
        out = ImageEnhance.Color(out).enhance(factors[2])
        if shift:
            hsv = np.asarray(out.convert("HSV")).copy()
            hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + round(shift * 255)) % 256).astype(np.uint8)
            out = Image.fromarray(hsv, "HSV").convert("RGB")
        return out
