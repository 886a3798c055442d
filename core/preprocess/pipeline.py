"""A preprocessing pipeline: an ordered list of transforms, split for caching.

Design (why the split): training sees every image many times, so the expensive part
(decoding the file, shrinking a big photo, letterboxing, resizing) should happen once and
the random augmentations every epoch. A pipeline is therefore read as

    downscale(max_side) -> deterministic prefix -> random suffix

where the prefix is every step before the first random one. ``PreprocessedCache`` stores
the uint8 output of ``downscale + prefix`` keyed by ``prefix_hash()``, and applies the
suffix on the fly. When the first step is already random (the ``synthetic`` default starts
with a random margin) the prefix is empty and the cache keeps the decoded image shrunk to
``max_side``: the random margin must see the whole picture, and a cached, size-capped
intermediate is still far cheaper than decoding the file again. The cap is part of the
pipeline (and of its hash), so ``Pipeline.apply`` on a file gives exactly what the cache
gives.

Each random step draws from its own generator ``default_rng([seed, step index])``, so the
same seed gives byte-identical output and editing one step does not reshuffle the others.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from core.preprocess.transforms import (Downscale, Geometry, Letterbox, RandomCrop, RandomMargin,
                                        RandomResizedCrop, Resize, Transform, TransformError,
                                        TrimToLandscape, stable_hash, transform_from_dict)

# Bumped when the cached bytes of the same prefix would change (e.g. a resampling fix).
CACHE_FORMAT = 1
# Built-in pipelines, always available by name (a saved preset of the same name overrides
# one). The original-* pair reproduces the original fruit study's preprocessing.
DEFAULT_NAMES = ("real", "synthetic", "original-real", "original-synthetic")
BUILTIN_DESCRIPTIONS = {
    "real": "SynthLab's default for real images: letterbox onto a black square, bilinear "
            "resize.",
    "synthetic": "SynthLab's default for synthetic images: a random margin cut to a landscape "
                 "or portrait aspect (0.75 to 1.5, redrawn every epoch), black letterbox, "
                 "bilinear resize.",
    "original-real": "The original study's real images: centred letterbox onto a WHITE square "
                     "(SynthLab's default is black) and a LANCZOS resize (default: bilinear) "
                     "straight from the full-size picture (no working-size cap).",
    "original-synthetic": "The original study's synthetic images: half of the square images "
                          "lose 0.2 x width plus a uniform 0 to 0.1 x width from the top and, "
                          "drawn separately, from the bottom (SynthLab's default cuts a random "
                          "margin from every image), then a white letterbox and a LANCZOS "
                          "resize. With the original protocol the cut is drawn once per image, "
                          "not every epoch.",
}


class PipelineError(ValueError):
    """A pipeline could not be built or found; the message says what to do."""


def default_max_side(size: int) -> int:
    """The working resolution cap: twice the output, enough for a clean (antialiased)
    final resize, and small enough that the random steps run fast on the cached copy."""
    return max(128, 2 * size)


@dataclass(frozen=True)
class Pipeline:
    """Ordered transforms, applied after shrinking the image to ``max_side`` (None: never)."""

    steps: tuple[Transform, ...] = ()
    max_side: int | None = 256
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        for step in self.steps:
            if not isinstance(step, Transform):
                raise PipelineError(f"pipeline steps must be transforms, got {step!r}")
        if self.max_side is not None and self.max_side < 1:
            raise PipelineError("max_side must be positive")

    # --- identity ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_side": self.max_side, "steps": [s.to_dict() for s in self.steps]}
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Pipeline":
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            raise PipelineError("a pipeline spec needs a 'steps' list")
        try:
            steps = tuple(transform_from_dict(step) for step in data["steps"])
        except TransformError as exc:
            raise PipelineError(str(exc)) from exc
        return cls(steps, max_side=data.get("max_side", 256), name=data.get("name"))

    def hash(self) -> str:
        """Content hash of the parameters (the name does not count)."""
        return stable_hash({"max_side": self.max_side, "steps": [s.to_dict() for s in self.steps]})

    def describe(self) -> str:
        return " -> ".join(step.describe() for step in self.steps) or "(no steps)"

    # --- the cacheable split ----------------------------------------------------------

    @property
    def random_start(self) -> int:
        """Index of the first random step (``len(steps)`` when all are deterministic)."""
        for index, step in enumerate(self.steps):
            if step.is_random:
                return index
        return len(self.steps)

    @property
    def prefix(self) -> tuple[Transform, ...]:
        return self.steps[:self.random_start]

    @property
    def suffix(self) -> tuple[Transform, ...]:
        return self.steps[self.random_start:]

    @property
    def is_random(self) -> bool:
        return self.random_start < len(self.steps)

    def prefix_hash(self) -> str:
        """Key of the cached intermediate: everything up to the first random step."""
        return stable_hash({"format": CACHE_FORMAT, "max_side": self.max_side,
                            "prefix": [s.to_dict() for s in self.prefix]})

    # --- running ----------------------------------------------------------------------

    def _cap(self, image: Image.Image) -> Image.Image:
        image = image.convert("RGB") if image.mode != "RGB" else image
        return Downscale(self.max_side).apply(image) if self.max_side else image

    def apply_prefix(self, image: Image.Image) -> Image.Image:
        image = self._cap(image)
        for step in self.prefix:
            image = step.apply(image)
        return image

    def apply_suffix(self, image: Image.Image, seed: int) -> Image.Image:
        start = self.random_start
        for offset, step in enumerate(self.suffix):
            image = step.apply(image, _step_rng(seed, start + offset))
        return image

    def apply(self, image: Image.Image, seed: int = 0) -> Image.Image:
        """The whole pipeline on one image; the same seed gives the same bytes."""
        return self.apply_suffix(self.apply_prefix(image), seed)

    def apply_steps(self, image: Image.Image, seed: int = 0) -> list[tuple[str, Image.Image]]:
        """``[("Original", input), ("Downscale", ...) if it shrank, (step label, output), ...]``.

        The last image equals ``apply(image, seed)``; the page shows every stage.
        """
        image = image.convert("RGB") if image.mode != "RGB" else image
        stages = [("Original", image)]
        current = self._cap(image)
        if current.size != image.size:
            stages.append((f"Downscale to {self.max_side}px", current))
        for index, step in enumerate(self.steps):
            current = step.apply(current, _step_rng(seed, index) if index >= self.random_start else None)
            stages.append((step.label, current))
        return stages

    def geometry(self, width: int, height: int, seed: int = 0) -> Geometry:
        """Where the original content ends up, without touching pixels (for statistics)."""
        geo = Geometry(width, height, width, height)
        if self.max_side:
            geo = Downscale(self.max_side).geometry(geo)
        for index, step in enumerate(self.steps):
            geo = step.geometry(geo, _step_rng(seed, index) if step.is_random else None)
        return geo

    @property
    def output_size(self) -> int | None:
        """Side of the square output, or None when it depends on the input."""
        size: int | None = None
        for step in self.steps:
            if isinstance(step, (Resize, RandomResizedCrop)):
                size = step.size
            elif isinstance(step, Letterbox):
                size = step.size or size
            elif isinstance(step, RandomCrop):
                size = size if size is not None and size <= step.size else None
            elif isinstance(step, RandomMargin):
                size = None
        return size

    def with_size(self, size: int) -> "Pipeline":
        """The same pipeline ending in ``size`` x ``size`` images (the model's input size)."""
        if size < 1:
            raise PipelineError("size must be positive")
        steps = list(self.steps)
        for index in range(len(steps) - 1, -1, -1):
            if isinstance(steps[index], (Resize, RandomResizedCrop)):
                steps[index] = dataclasses.replace(steps[index], size=size)
                break
        else:
            steps.append(Resize(size))
        max_side = max(self.max_side, default_max_side(size)) if self.max_side else None
        return Pipeline(tuple(steps), max_side=max_side, name=self.name)


def _step_rng(seed: int, index: int) -> np.random.Generator:
    if int(seed) < 0:
        raise PipelineError(f"seeds must be >= 0, got {seed}")
    return np.random.default_rng([int(seed), index])


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of item ``index`` in epoch ``epoch`` of a run seeded with ``seed``."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1)
    return int(state[0])


def default_pipeline(name: str, size: int = 64) -> Pipeline:
    """A built-in pipeline (see ``BUILTIN_DESCRIPTIONS``) ending in ``size`` x ``size`` images."""
    max_side: int | None = default_max_side(size)
    if name == "real":
        steps: tuple[Transform, ...] = (Letterbox(fill="black"), Resize(size))
    elif name == "synthetic":
        steps = (RandomMargin(min_aspect=0.75, max_aspect=1.5), Letterbox(fill="black"), Resize(size))
    elif name == "original-real":
        steps, max_side = (Letterbox(fill="white"), Resize(size, resample="lanczos")), None
    elif name == "original-synthetic":
        steps = (TrimToLandscape(p=0.5, cut=0.2, jitter=0.1), Letterbox(fill="white"),
                 Resize(size, resample="lanczos"))
        max_side = None
    else:
        raise PipelineError(f"no built-in pipeline {name!r}; the built-ins are {', '.join(DEFAULT_NAMES)}")
    return Pipeline(steps, max_side=max_side, name=name)
