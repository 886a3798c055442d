"""Fair pixels and fair bytes: what a quiz image looks like, and how it is written.

Real and synthetic files differ in ways that give the answer away without looking at the
picture: format (JPEG photos vs PNG generations), aspect ratio, size, EXIF, the PNG text
chunks where diffusion front-ends write prompt and seed, and - after any compression -
the byte size, since compressed size follows the picture's entropy (issue 12: generated
files were ~3.5 KB, photos 0.8-1.7 KB). So a served image is:

* pixels only: centre-cropped to a square, resized to the round's size (the same for every
  image of the round, chosen from the pools, not from the image shown);
* enlarged to at least ``MIN_DISPLAY_PX`` by an integer factor with nearest-neighbour, so
  a small picture is shown big and sharp, never smoothed by the browser;
* written as an *uncompressed* PNG (deflate "stored" blocks, no filters), whose length
  depends on the width and height alone; plus one private chunk of ``NONCE_BYTES`` random
  bytes, new for every serve, so that Streamlit's media file name (a hash of the bytes)
  is new every time while the length stays fixed. No other chunk: no metadata.
"""

from __future__ import annotations

import importlib
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

from core.config import Settings
from core.db.models import SOURCE_REAL
from core.quiz.models import VIEW_MODEL, VIEW_ORIGINAL
from core.store import ImageStore

MIMETYPE = "image/png"
SERVED_FORMAT = "PNG"
# Shown at least this big (CSS px); smaller pictures are enlarged by a whole factor.
MIN_DISPLAY_PX = 256
NONCE_BYTES = 16
# A private (2nd letter lower case), ancillary (1st lower case), safe-to-copy chunk:
# decoders skip it. It holds only random bytes, never anything about the image.
NONCE_CHUNK = b"raNd"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ModelViewUnavailable(RuntimeError):
    """Preprocessing ("as the model sees them") is not available; the message says why."""


def centre_square(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """The largest centred square, resized to ``size`` (aspect ratio must not leak the source)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    if square.size != (size, size):
        # Only ever shrink smoothly; a square smaller than asked (an index that is out of
        # date) is enlarged with nearest-neighbour rather than blurred.
        square = square.resize((size, size),
                               resample if side > size else Image.Resampling.NEAREST)
    return square


def sharp_scale(content_px: int) -> int:
    """The whole factor that brings ``content_px`` to at least ``MIN_DISPLAY_PX``."""
    return max(1, -(-MIN_DISPLAY_PX // max(1, content_px)))


def enlarge_sharp(image: Image.Image) -> Image.Image:
    """Enlarge by ``sharp_scale`` with nearest-neighbour: every source pixel a crisp block."""
    scale = sharp_scale(min(image.size))
    if scale == 1:
        return image
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def encode_fixed_png(image: Image.Image, nonce: bytes) -> bytes:
    """Uncompressed RGB PNG: IHDR, the nonce chunk, one IDAT, IEND - nothing else.

    Each row is filter type 0 and the deflate stream uses stored blocks (level 0), so the
    length is a function of width and height only (tests measure it on very different
    pictures). ``nonce`` must be ``NONCE_BYTES`` long.
    """
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce must be {NONCE_BYTES} bytes")
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    height, width, _ = pixels.shape
    rows = np.zeros((height, 1 + width * 3), dtype=np.uint8)  # column 0: filter "None"
    rows[:, 1:] = pixels.reshape(height, width * 3)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(NONCE_CHUNK, nonce)
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 0)) + _chunk(b"IEND", b""))


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


def content_px(view: str, served_px: int, settings: Settings) -> int:
    """The side of the picture before the sharp enlargement: the round's size for originals,
    the model's input size for the model view (both sides of a round alike)."""
    return settings.image_size if view == VIEW_MODEL else served_px


def render_pixels(store: ImageStore, relpath: str, source: str, view: str, seed: int, px: int,
                  settings: Settings, pipelines: dict[str, dict[str, Any]] | None = None) -> Image.Image:
    """The picture a player sees, at its own resolution (``content_px``), not yet enlarged."""
    image = store.open_rgb(relpath)
    if view == VIEW_ORIGINAL:
        return centre_square(image, px, Image.Resampling.LANCZOS)
    if view == VIEW_MODEL:
        if not pipelines:
            raise ValueError("the model view needs the round's preprocessing pipelines")
        spec = pipelines["real" if source == SOURCE_REAL else "synthetic"]
        # The model's own pixels: squared to its input size with NEAREST, never smoothed,
        # so two pipelines with different output sizes still serve one size.
        return centre_square(_model_view(image, spec, seed), settings.image_size,
                             Image.Resampling.NEAREST)
    raise ValueError(f"unknown view {view!r}")
