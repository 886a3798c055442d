"""The base of every image transform: the ``Transform`` class, its registry by type
name, geometry bookkeeping and the helpers the transforms share."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

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


def register(cls: type["Transform"]) -> type["Transform"]:
    _REGISTRY[cls.type_name] = cls
    return cls


def transform_types() -> dict[str, type["Transform"]]:
    """Every transform class by its ``type`` name (for menus and ``from_dict``)."""
    import core.preprocess.transforms  # noqa: F401 - registers every built-in transform

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
    import core.preprocess.transforms  # noqa: F401 - registers every built-in transform

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
