"""Attribution maps drawn over their image: a PNG for the CLI, arrays for the page.

Non-negative maps (saliency, Grad-CAM) use a dark-to-bright sequential colour scale;
signed maps (integrated gradients, occlusion) a diverging blue-white-red one centred on
zero, so evidence against the class is not confused with evidence for it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Anchor colours (0..1 position, RGB); values between anchors are interpolated.
SEQUENTIAL = ((0.0, (0, 0, 4)), (0.25, (87, 16, 110)), (0.5, (188, 55, 84)),
              (0.75, (249, 142, 9)), (1.0, (252, 255, 164)))  # close to "inferno"
DIVERGING = ((0.0, (33, 102, 172)), (0.5, (247, 247, 247)), (1.0, (178, 24, 43)))
# Scale to this percentile of |map| so that one extreme pixel does not wash out the rest.
DISPLAY_PERCENTILE = 99.5


def is_signed(attribution: np.ndarray) -> bool:
    return bool(np.nanmin(attribution) < 0)


def display_scale(attribution: np.ndarray) -> float:
    magnitude = np.abs(np.asarray(attribution, dtype=np.float64))
    scale = float(np.percentile(magnitude, DISPLAY_PERCENTILE)) if magnitude.size else 0.0
    if scale <= 0:
        scale = float(magnitude.max()) if magnitude.size else 0.0
    return scale if scale > 0 else 1.0


def normalised(attribution: np.ndarray) -> tuple[np.ndarray, bool]:
    """The map in 0..1 (sequential) or -1..1 (signed), and whether it is signed."""
    signed = is_signed(attribution)
    values = np.clip(np.asarray(attribution, dtype=np.float64) / display_scale(attribution),
                     -1.0 if signed else 0.0, 1.0)
    return values, signed


def _lookup(positions: np.ndarray, anchors: tuple) -> np.ndarray:
    xs = np.array([a[0] for a in anchors])
    colours = np.array([a[1] for a in anchors], dtype=np.float64)
    return np.stack([np.interp(positions, xs, colours[:, c]) for c in range(3)], axis=-1)


def colourise(attribution: np.ndarray) -> np.ndarray:
    """``(H, W)`` map -> uint8 ``(H, W, 3)`` colours."""
    values, signed = normalised(attribution)
    if signed:
        return _lookup((values + 1.0) / 2.0, DIVERGING).round().astype(np.uint8)
    return _lookup(values, SEQUENTIAL).round().astype(np.uint8)


def plotly_colorscale(signed: bool) -> list[list]:
    anchors = DIVERGING if signed else SEQUENTIAL
    return [[pos, f"rgb{tuple(colour)}"] for pos, colour in anchors]


def render_overlay(pixels: np.ndarray, attribution: np.ndarray, *, opacity: float = 0.55,
                   scale: int = 4, content_box: tuple[int, int, int, int] | None = None,
                   side_by_side: bool = True) -> Image.Image:
    """The heatmap blended over the image (upscaled ``scale`` times, pixels kept sharp).

    ``side_by_side`` puts the plain input on the left, so the overlay can be read against
    what the model saw. ``content_box`` draws the letterbox content outline.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError("opacity must be between 0 and 1")
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.shape[:2] != np.shape(attribution):
        raise ValueError(f"map {np.shape(attribution)} does not match image {pixels.shape[:2]}")
    heat = colourise(attribution).astype(np.float64)
    blended = (pixels.astype(np.float64) * (1.0 - opacity) + heat * opacity).round().astype(np.uint8)
    height, width = pixels.shape[:2]
    size = (width * scale, height * scale)
    overlay = Image.fromarray(blended).resize(size, Image.Resampling.NEAREST)
    if content_box is not None:
        left, top, right, bottom = (v * scale for v in content_box)
        ImageDraw.Draw(overlay).rectangle((left, top, right - 1, bottom - 1), outline=(0, 255, 255))
    if not side_by_side:
        return overlay
    canvas = Image.new("RGB", (size[0] * 2 + scale * 2, size[1]), (255, 255, 255))
    canvas.paste(Image.fromarray(pixels).resize(size, Image.Resampling.NEAREST), (0, 0))
    canvas.paste(overlay, (size[0] + scale * 2, 0))
    return canvas
