"""Transforms that change the geometry: letterbox, resize, margins and crops, downscale."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image, ImageFilter

from core.preprocess.transform_base import (LETTERBOX_FILLS, RESAMPLING, RGB, Geometry, Transform,
                                            TransformError, _check_colour, _check_probability,
                                            _from_array, _to_array, register)

@register
@dataclass(frozen=True)
class Letterbox(Transform):
    """Resize keeping the aspect ratio, then pad to a square.

    ``size`` None pads at the image's own scale (longer side), leaving scaling to a later
    ``Resize``. ``fill``: black, white, colour (``colour``), mean (the image's mean
    colour), edge (replicated border pixels) or blur (a blurred, stretched copy).
    """

    type_name: ClassVar[str] = "letterbox"
    label: ClassVar[str] = "Letterbox"
    size: int | None = None
    fill: str = "black"
    colour: RGB = (0, 0, 0)
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 1:
            raise TransformError(f"letterbox size must be positive, got {self.size}")
        if self.fill not in LETTERBOX_FILLS:
            raise TransformError(f"letterbox fill must be one of {LETTERBOX_FILLS}, got {self.fill!r}")
        _check_colour(self.colour, "letterbox colour")
        if self.resample not in RESAMPLING:
            raise TransformError(f"resample must be one of {sorted(RESAMPLING)}")

    def layout(self, width: int, height: int) -> tuple[int, int, int, int, int]:
        """(square side, content width, content height, left, top) for an input size."""
        side = self.size or max(width, height)
        scale = side / max(width, height)
        content_w = max(1, min(side, round(width * scale)))
        content_h = max(1, min(side, round(height * scale)))
        return side, content_w, content_h, (side - content_w) // 2, (side - content_h) // 2

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        side, cw, ch, left, top = self.layout(image.width, image.height)
        content = image if (cw, ch) == image.size else image.resize((cw, ch), RESAMPLING[self.resample])
        if (cw, ch) == (side, side):
            return content.copy()
        array = _to_array(content)
        if self.fill == "edge":
            pad = ((top, side - ch - top), (left, side - cw - left), (0, 0))
            return _from_array(np.pad(array, pad, mode="edge"))
        if self.fill == "blur":
            canvas = content.resize((side, side), Image.Resampling.BILINEAR)
            canvas = canvas.filter(ImageFilter.GaussianBlur(radius=max(1.0, side / 16)))
        else:
            canvas = Image.new("RGB", (side, side), self._flat_colour(array))
        canvas.paste(content, (left, top))
        return canvas

    def _flat_colour(self, array: np.ndarray) -> RGB:
        if self.fill == "white":
            return (255, 255, 255)
        if self.fill == "colour":
            return self.colour
        if self.fill == "mean":
            mean = array.reshape(-1, 3).mean(axis=0)
            return tuple(int(round(float(c))) for c in mean)  # type: ignore[return-value]
        return (0, 0, 0)

    def geometry(self, geo: Geometry, rng: np.random.Generator | None = None) -> Geometry:
        side = self.size or max(geo.canvas_w, geo.canvas_h)
        scale = side / max(geo.canvas_w, geo.canvas_h)
        return geo.scaled(scale, scale, side, side)


@register
@dataclass(frozen=True)
class Resize(Transform):
    """Plain resize to ``size`` x ``size`` (stretches anything that is not square)."""

    type_name: ClassVar[str] = "resize"
    label: ClassVar[str] = "Resize"
    size: int = 64
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise TransformError(f"resize size must be positive, got {self.size}")
        if self.resample not in RESAMPLING:
            raise TransformError(f"resample must be one of {sorted(RESAMPLING)}")

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        if image.size == (self.size, self.size):
            return image.copy()
        return image.resize((self.size, self.size), RESAMPLING[self.resample])

    def geometry(self, geo: Geometry, rng: np.random.Generator | None = None) -> Geometry:
        return geo.scaled(self.size / geo.canvas_w, self.size / geo.canvas_h, self.size, self.size)


@register
@dataclass(frozen=True)
class RandomMargin(Transform):
    """Cut a random margin off one axis so the picture gets a target aspect ratio.

    Meant for square synthetic images: the target aspect ratio (width / height) is drawn
    from ``aspects`` when given (e.g. measured from a real dataset, see
    ``core.preprocess.stats.measured_aspects``), else log-uniformly from
    ``[min_aspect, max_aspect]``. Where the cut falls along the axis is random when
    ``position`` is "random", centred when "center".
    """

    type_name: ClassVar[str] = "random_margin"
    label: ClassVar[str] = "Random margin"
    min_aspect: float = 0.75
    max_aspect: float = 1.5
    aspects: tuple[float, ...] = ()
    position: str = "random"

    def __post_init__(self) -> None:
        if not (0 < self.min_aspect <= self.max_aspect):
            raise TransformError(
                f"random margin needs 0 < min_aspect <= max_aspect, got {self.min_aspect}, {self.max_aspect}")
        if any(not (a > 0 and math.isfinite(a)) for a in self.aspects):
            raise TransformError("measured aspect ratios must be positive numbers")
        if self.position not in ("random", "center"):
            raise TransformError("position must be 'random' or 'center'")

    @property
    def is_random(self) -> bool:
        return True

    def sample_aspect(self, rng: np.random.Generator) -> float:
        if self.aspects:
            return float(self.aspects[int(rng.integers(len(self.aspects)))])
        low, high = math.log(self.min_aspect), math.log(self.max_aspect)
        return float(math.exp(rng.uniform(low, high))) if high > low else self.min_aspect

    def crop_box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        aspect = self.sample_aspect(rng)
        if aspect >= width / height:  # wider than now: cut rows
            new_w, new_h = width, max(1, min(height, round(width / aspect)))
        else:  # taller than now: cut columns
            new_w, new_h = max(1, min(width, round(height * aspect))), height
        spare_x, spare_y = width - new_w, height - new_h
        if self.position == "random":
            left = int(rng.integers(spare_x + 1))
            top = int(rng.integers(spare_y + 1))
        else:
            left, top = spare_x // 2, spare_y // 2
        return left, top, left + new_w, top + new_h

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        box = self.crop_box(image.width, image.height, self._rng(rng))
        return image.crop(box)

    def geometry(self, geo: Geometry, rng: np.random.Generator | None = None) -> Geometry:
        aspect = self.sample_aspect(self._rng(rng))
        if aspect >= geo.canvas_w / geo.canvas_h:
            w, h = geo.canvas_w, geo.canvas_w / aspect
        else:
            w, h = geo.canvas_h * aspect, geo.canvas_h
        return Geometry(w, h, min(w, geo.content_w), min(h, geo.content_h))


@register
@dataclass(frozen=True)
class RandomCrop(Transform):
    """Crop a ``size`` x ``size`` window at a random place (smaller sides are kept whole)."""

    type_name: ClassVar[str] = "random_crop"
    label: ClassVar[str] = "Random crop"
    size: int = 56

    def __post_init__(self) -> None:
        if self.size < 1:
            raise TransformError(f"crop size must be positive, got {self.size}")

    @property
    def is_random(self) -> bool:
        return True

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        rng = self._rng(rng)
        w, h = min(self.size, image.width), min(self.size, image.height)
        left = int(rng.integers(image.width - w + 1))
        top = int(rng.integers(image.height - h + 1))
        return image.crop((left, top, left + w, top + h))

    def geometry(self, geo: Geometry, rng: np.random.Generator | None = None) -> Geometry:
        w, h = min(self.size, geo.canvas_w), min(self.size, geo.canvas_h)
        return Geometry(w, h, min(w, geo.content_w), min(h, geo.content_h))


@register
@dataclass(frozen=True)
class RandomResizedCrop(Transform):
    """Crop a random area fraction (``scale``) and aspect ratio (``ratio``), resize to ``size``."""

    type_name: ClassVar[str] = "random_resized_crop"
    label: ClassVar[str] = "Random crop + resize"
    size: int = 64
    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (0.75, 1.3333)
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise TransformError(f"size must be positive, got {self.size}")
        if not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise TransformError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise TransformError(f"ratio must satisfy 0 < low <= high, got {self.ratio}")
        if self.resample not in RESAMPLING:
            raise TransformError(f"resample must be one of {sorted(RESAMPLING)}")

    @property
    def is_random(self) -> bool:
        return True

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        rng = self._rng(rng)
        width, height = image.size
        area = width * height * rng.uniform(*self.scale)
        aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
        w = max(1, min(width, round(math.sqrt(area * aspect))))
        h = max(1, min(height, round(math.sqrt(area / aspect))))
        left = int(rng.integers(width - w + 1))
        top = int(rng.integers(height - h + 1))
        return image.resize((self.size, self.size), RESAMPLING[self.resample],
                            box=(left, top, left + w, top + h))

    def geometry(self, geo: Geometry, rng: np.random.Generator | None = None) -> Geometry:
        return Geometry(self.size, self.size, self.size, self.size)


@register
@dataclass(frozen=True)
class Downscale(Transform):
    """Shrink so the longer side is at most ``max_side`` (never enlarges)."""

    type_name: ClassVar[str] = "downscale"
    label: ClassVar[str] = "Downscale"
    max_side: int = 256

    def __post_init__(self) -> None:
        if self.max_side < 1:
            raise TransformError("max_side must be positive")

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        longer = max(image.size)
        if longer <= self.max_side:
            return image.copy()
        scale = self.max_side / longer
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        # reducing_gap: a fast box pre-shrink for big photos, then an antialiased resize.
        return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)

    def geometry(self, geo: Geometry, rng: np.random.Generator | None = None) -> Geometry:
        longer = max(geo.canvas_w, geo.canvas_h)
        if longer <= self.max_side:
            return geo
        scale = self.max_side / longer
        return geo.scaled(scale, scale, geo.canvas_w * scale, geo.canvas_h * scale)


@register
@dataclass(frozen=True)
class TrimToLandscape(Transform):
    """The original study's margin rule: with probability ``p`` a square picture loses
    ``cut`` x width plus a uniform 0 to ``jitter`` x width from its top and, drawn
    separately, from its bottom (so it keeps 40% to 60% of its height with the defaults)
    and looks like a landscape photo. Pictures that are not square pass unchanged.
    """

    type_name: ClassVar[str] = "trim_to_landscape"
    label: ClassVar[str] = "Trim square to landscape"
    p: float = 0.5
    cut: float = 0.2
    jitter: float = 0.1
    # |width / height - 1| up to this counts as square (a 512x511 generation is square).
    square_tolerance: float = 0.02

    def __post_init__(self) -> None:
        _check_probability(self.p, "trim probability")
        if self.cut < 0 or self.jitter < 0 or 2 * (self.cut + self.jitter) >= 1:
            raise TransformError("trim needs cut >= 0, jitter >= 0 and 2 x (cut + jitter) < 1 "
                                 "(something of the picture must remain)")
        if not 0 <= self.square_tolerance < 1:
            raise TransformError("square_tolerance must be in [0, 1)")

    @property
    def is_random(self) -> bool:
        return self.p > 0

    def trim_rows(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int]:
        """(rows cut from the top, rows cut from the bottom); (0, 0) when left alone."""
        # Three draws every time, square or not, so one image's choice never shifts another's.
        apply, top_extra, bottom_extra = rng.random(), rng.uniform(0, 1), rng.uniform(0, 1)
        square = abs(width / height - 1) <= self.square_tolerance
        if not square or apply >= self.p:
            return 0, 0
        top = round(width * (self.cut + self.jitter * top_extra))
        bottom = round(width * (self.cut + self.jitter * bottom_extra))
        return min(top, height - 1), min(bottom, max(0, height - 1 - top))

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        if not self.is_random:
            return image.copy()
        top, bottom = self.trim_rows(image.width, image.height, self._rng(rng))
        if not top and not bottom:
            return image.copy()
        return image.crop((0, top, image.width, image.height - bottom))

    def geometry(self, geo: Geometry, rng: np.random.Generator | None = None) -> Geometry:
        if not self.is_random:
            return geo
        top, bottom = self.trim_rows(round(geo.canvas_w), max(1, round(geo.canvas_h)), self._rng(rng))
        height = geo.canvas_h - top - bottom
        return Geometry(geo.canvas_w, height, geo.content_w, min(height, geo.content_h))
