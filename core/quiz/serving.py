"""Fair serving: every quiz image leaves the server as fresh pixels in one format and size.

Real and synthetic files differ in ways that give the answer away without looking at the
picture: format (JPEG photos vs PNG generations), aspect ratio, size, EXIF, and the PNG
text chunks where diffusion front-ends write prompt and seed. So the served bytes are
re-encoded from pixels only: centre-cropped to a square, resized to one size, written by
a fresh encoder with no metadata, identically for both sides.
"""

from __future__ import annotations

import importlib
import io
from typing import Any

import numpy as np
from PIL import Image

from core.config import Settings
from core.db.models import SOURCE_REAL
from core.quiz.models import VIEW_MODEL, VIEW_ORIGINAL
from core.store import ImageStore

SERVED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
JPEG_QUALITY = 90


class ModelViewUnavailable(RuntimeError):
    """Preprocessing ("as the model sees them") is not available; the message says why."""


def centre_square(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """The largest centred square, resized to ``size`` (aspect ratio must not leak the source)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    if square.size != (size, size):
        square = square.resize((size, size), resample)
    return square


def encode_clean(image: Image.Image, fmt: str) -> bytes:
    """Encode pixels only: a new image built from the array carries no info, EXIF or ICC."""
    fmt = fmt.upper()
    if fmt not in SERVED_FORMATS:
        raise ValueError(f"quiz image format must be one of {sorted(SERVED_FORMATS)}, not {fmt!r}")
    fresh = Image.fromarray(np.asarray(image.convert("RGB"), dtype=np.uint8).copy(), "RGB")
    buffer = io.BytesIO()
    if fmt == "JPEG":
        fresh.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    else:
        fresh.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _preprocess_module() -> Any:
    try:
        return importlib.import_module("core.preprocess")
    except ModuleNotFoundError as exc:
        if exc.name and "core.preprocess".startswith(exc.name):
            raise ModelViewUnavailable(
                "preprocessing is not installed in this SynthLab (core.preprocess is missing); "
                "play with the original images") from exc
        raise


def model_view_status() -> str | None:
    """None when the "as the model sees them" view can be served, else the reason it cannot."""
    try:
        module = _preprocess_module()
    except ModelViewUnavailable as exc:
        return str(exc)
    if not hasattr(module, "load_pipeline"):
        return "core.preprocess has no load_pipeline(); play with the original images"
    return None


def resolve_pipelines(real: str, synthetic: str, settings: Settings) -> dict[str, dict[str, Any]]:
    """The specs of the named preprocessing pipelines (presets or the built-in defaults)."""
    module = _preprocess_module()
    try:
        return {"real": module.load_pipeline(real, settings).to_dict(),
                "synthetic": module.load_pipeline(synthetic, settings).to_dict()}
    except ValueError as exc:  # PipelineError: an unknown preset, a bad spec
        raise ModelViewUnavailable(str(exc)) from exc


def pipelines_label(pipelines: dict[str, dict[str, Any]]) -> str:
    """How statistics name a preprocessing setting: preset names, or a short spec hash."""
    module = _preprocess_module()
    names = []
    for source in ("real", "synthetic"):
        pipeline = module.load_pipeline(pipelines[source])
        names.append(f"{source}: {pipeline.name or pipeline.hash()[:8]}")
    return "model view (" + ", ".join(names) + ")"


def _model_view(image: Image.Image, spec: dict[str, Any], seed: int) -> Image.Image:
    pipeline = _preprocess_module().load_pipeline(spec)
    return pipeline.apply(image, seed).convert("RGB")


def render_pixels(store: ImageStore, relpath: str, source: str, view: str, seed: int, px: int,
                  settings: Settings, pipelines: dict[str, dict[str, Any]] | None = None) -> Image.Image:
    """The picture a player sees (before encoding): same size for every image of a round."""
    image = store.open_rgb(relpath)
    if view == VIEW_ORIGINAL:
        return centre_square(image, px, Image.Resampling.LANCZOS)
    if view == VIEW_MODEL:
        if not pipelines:
            raise ValueError("the model view needs the round's preprocessing pipelines")
        spec = pipelines["real" if source == SOURCE_REAL else "synthetic"]
        # Blown up with NEAREST so the player sees the model's pixels, not a smoothed version.
        return centre_square(_model_view(image, spec, seed), px, Image.Resampling.NEAREST)
    raise ValueError(f"unknown view {view!r}")


def render_bytes(store: ImageStore, relpath: str, source: str, view: str, seed: int, px: int,
                 fmt: str, settings: Settings,
                 pipelines: dict[str, dict[str, Any]] | None = None) -> bytes:
    return encode_clean(render_pixels(store, relpath, source, view, seed, px, settings, pipelines),
                        fmt)
