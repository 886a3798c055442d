"""Composable image transforms (PIL + numpy), each a small frozen dataclass.

Every transform is serialisable (``to_dict`` / ``transform_from_dict`` with a ``"type"``
key) and has a stable content hash of that JSON, so a pipeline's parameters identify its
cache entries. Random transforms draw from the ``np.random.Generator`` they are handed;
the pipeline makes that generator from an explicit seed, so the same seed gives
byte-identical output.

Besides ``apply``, each transform describes what it does to the geometry of the picture
(``geometry``): the canvas size and the size of the original content inside it. The
Compare page uses that to draw aspect-ratio histograms "after the pipeline" for thousands
of images without decoding any of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

RGB = tuple[int, int, int]

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}

LETTERBOX_FILLS = ("black", "white", "colour", "mean", "edge", "blur")


class TransformError(ValueError):
    """A transform was given parameters it cannot work with; the message says which."""


@dataclass(frozen=True)
class Geometry:
    """Canvas size and the size of the original picture's content inside it (floats)."""

    canvas_w: float
    canvas_h: float
    content_w: float
    content_h: float

    @property
    def content_aspect(self) -> float:
        return self.content_w / self.content_h if self.content_h > 0 else float("nan")

    def scaled(self, sx: float, sy: float, canvas_w: float, canvas_h: float) -> "Geometry":
        return Geometry(canvas_w, canvas_h, self.content_w * sx, self.content_h * sy)


_REGISTRY: dict[str, type["Transform"]] = {}


def _register(cls: type["Transform"]) -> type["Transform"]:
    _REGISTRY[cls.type_name] = cls
    return cls


def transform_types() -> dict[str, type["Transform"]]:
    """Every transform class by its ``type`` name (for menus and ``from_dict``)."""
    return dict(_REGISTRY)


@dataclass(frozen=True)
class Transform:
    """Base class: subclasses set ``type_name``, ``label`` and implement ``apply``."""

    type_name: ClassVar[str] = ""
    label: ClassVar[str] = ""

    @property
    def is_random(self) -> bool:
        return False

    def apply(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        raise NotImplementedError

    def geometry(self, geo: Geometry, rng: np.random.Generator | None = None) -> Geometry:
        return geo  # colour-only transforms keep the geometry

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: _jsonable(getattr(self, f.name), str(f.type)) for f in dataclasses.fields(self)}
        return {"type": self.type_name, **values}

    def hash(self) -> str:
        return stable_hash(self.to_dict())

    def describe(self) -> str:
        def short(value: Any) -> Any:
            return f"[{len(value)} values]" if isinstance(value, list) and len(value) > 4 else value

        params = ", ".join(f"{k}={short(v)}" for k, v in self.to_dict().items() if k != "type")
        return f"{self.label} ({params})" if params else self.label

    def _rng(self, rng: np.random.Generator | None) -> np.random.Generator:
        if rng is None:
            raise TransformError(f"{self.label} is random: it needs a seeded generator")
        return rng


def _jsonable(value: Any, type_text: str) -> Any:
    # 1 and 1.0 must give the same JSON (and hash) for a float parameter.
    if isinstance(value, tuple):
        return [_jsonable(v, type_text) for v in value]
    if "float" in type_text and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def stable_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def transform_from_dict(data: dict[str, Any]) -> Transform:
    """Rebuild a transform from ``to_dict`` output; unknown types or fields are errors."""
    if not isinstance(data, dict) or "type" not in data:
        raise TransformError(f"a transform needs a 'type' key, got {data!r}")
    cls = _REGISTRY.get(str(data["type"]))
    if cls is None:
        raise TransformError(f"unknown transform type {data['type']!r}; known: {sorted(_REGISTRY)}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names) - {"type"}
    if unknown:
        raise TransformError(f"{cls.type_name}: unknown parameters {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        if name == "type":
            continue
        kwargs[name] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise TransformError(f"{cls.type_name}: {exc}") from exc


def _check_colour(colour: Any, what: str) -> None:
    if (not isinstance(colour, tuple) or len(colour) != 3
            or not all(isinstance(c, int) and 0 <= c <= 255 for c in colour)):
        raise TransformError(f"{what} must be three integers 0-255, got {colour!r}")


def _check_probability(p: float, what: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise TransformError(f"{what} must be between 0 and 1, got {p}")


def _to_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)


def _from_array(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), "RGB")


# --- geometry ------------------------------------------------------------------------


@_register
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


@_register
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


@_register
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


@_register
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


@_register
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


@_register
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


@_register
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


# --- colour and noise ----------------------------------------------------------------


@_register
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


@_register
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


@_register
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


@_register
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


@_register
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


@_register
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


__all__ = [
    "Geometry", "Transform", "TransformError", "transform_from_dict", "transform_types",
    "stable_hash", "Letterbox", "Resize", "RandomMargin", "RandomCrop", "RandomResizedCrop",
    "HorizontalFlip", "Rotate", "Grayscale", "GaussianNoise", "Cutout", "ColouredMargins",
    "ColourJitter", "Downscale", "LETTERBOX_FILLS", "RESAMPLING",
]
