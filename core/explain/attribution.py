"""Attribution maps through captum: which input pixels drive a classifier's score.

Four methods, each a real captum attribution: ``saliency`` (|gradient|),
``integrated-gradients`` (path integral from a baseline image), ``gradcam`` (captum's
``LayerGradCam`` on the model's last convolution, upsampled to the input with
``LayerAttribution.interpolate``) and ``occlusion`` (score drop when a window is covered
with the baseline). Every method returns one ``(H, W)`` float map of the input's size, so
the maps can be compared, cached and overlaid the same way.

Models take the float input made by ``core.training.model.to_input`` from uint8 pixels;
baselines are built in pixel space and go through the same function, so "black" means a
black image whatever the model's normalisation is.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

METHODS = ("saliency", "integrated-gradients", "gradcam", "occlusion")
BASELINES = ("blurred", "black", "white", "mean")
METHOD_LABELS = {
    "saliency": "Saliency (|gradient|)",
    "integrated-gradients": "Integrated Gradients",
    "gradcam": "Grad-CAM (last conv layer)",
    "occlusion": "Occlusion",
}
# Which parameters change each method's result (the cache key hashes only these).
METHOD_PARAMS = {
    "saliency": (),
    "integrated-gradients": ("ig_steps", "baseline", "blur_radius"),
    "gradcam": ("gradcam_relu",),
    "occlusion": ("occlusion_window", "occlusion_stride", "baseline", "blur_radius"),
}
# Bump when the way a map is computed changes, so old cache entries are not reused.
ALGORITHM_VERSION = 1

ToInput = Callable[[np.ndarray], torch.Tensor]


class AttributionError(ValueError):
    """A bad attribution request (unknown method, window larger than the image, ...)."""


@dataclass(frozen=True)
class AttributionConfig:
    """One attribution method and its key parameters."""

    method: str = "saliency"
    ig_steps: int = 32  # integrated gradients: points on the path from baseline to input
    # Integrated gradients and occlusion: blurred | black | white | mean. Blurred by default:
    # a black baseline equals black letterbox margins and so can never credit them.
    baseline: str = "blurred"
    blur_radius: float = 6.0  # Gaussian radius (pixels) of the "blurred" baseline
    occlusion_window: int = 8  # side of the square patch that is covered (pixels)
    occlusion_stride: int = 4
    gradcam_relu: bool = True  # keep only evidence *for* the class, as in the Grad-CAM paper

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise AttributionError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.baseline not in BASELINES:
            raise AttributionError(f"unknown baseline {self.baseline!r}; choose one of {', '.join(BASELINES)}")
        if not 1 <= self.ig_steps <= 1000:
            raise AttributionError(f"ig_steps must be between 1 and 1000, not {self.ig_steps}")
        if self.occlusion_window < 1 or self.occlusion_stride < 1:
            raise AttributionError("occlusion window and stride must be at least 1 pixel")
        if self.blur_radius <= 0:
            raise AttributionError("blur_radius must be positive")

    def key_params(self) -> dict[str, Any]:
        """The parameters that matter for this method (what the cache key is made of)."""
        return {"method": self.method, **{name: getattr(self, name) for name in METHOD_PARAMS[self.method]}}

    def params_hash(self, target: int | None = None, extra: dict[str, Any] | None = None) -> str:
        """Cache key of this method's parameters, the target class and ``extra`` (e.g. how
        the input was made)."""
        payload = {**self.key_params(), "target": target, "version": ALGORITHM_VERSION, **(extra or {})}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AttributionConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def parameters_text(self) -> str:
        """The method's parameters, e.g. ``occlusion_window=8, occlusion_stride=4``."""
        return ", ".join(f"{k}={v}" for k, v in self.key_params().items() if k != "method")

    def describe(self) -> str:
        extras = self.parameters_text()
        return METHOD_LABELS[self.method] + (f" ({extras})" if extras else "")


def default_to_input(pixels: np.ndarray) -> torch.Tensor:
    from core.training.model import to_input

    return to_input(pixels)


def explainable_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy whose ReLUs are not in-place.

    In-place ReLUs overwrite the conv outputs that captum's layer hooks keep, which makes
    Grad-CAM fail or read modified activations; the copy leaves the caller's model alone.
    """
    clone = copy.deepcopy(model).eval()
    for module in clone.modules():
        if isinstance(module, nn.ReLU | nn.ReLU6 | nn.LeakyReLU | nn.ELU | nn.Hardtanh):
            module.inplace = False
    for parameter in clone.parameters():
        parameter.requires_grad_(False)
    return clone


def last_conv_layer(model: nn.Module) -> nn.Conv2d:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            last = module
    if last is None:
        raise AttributionError("Grad-CAM needs a model with at least one Conv2d layer")
    return last


def baseline_pixels(pixels: np.ndarray, kind: str, blur_radius: float = 6.0) -> np.ndarray:
    """The reference image (uint8, like ``pixels``) that "absence of signal" means."""
    if kind == "black":
        return np.zeros_like(pixels)
    if kind == "white":
        return np.full_like(pixels, 255)
    if kind == "mean":
        mean = pixels.reshape(-1, pixels.shape[-1]).mean(axis=0)
        return np.broadcast_to(np.round(mean).astype(np.uint8), pixels.shape).copy()
    if kind == "blurred":
        blurred = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius=blur_radius))
        return np.asarray(blurred, dtype=np.uint8).copy()
    raise AttributionError(f"unknown baseline {kind!r}")


@torch.no_grad()
def predict_probabilities(model: nn.Module, pixels: np.ndarray,
                          to_input: ToInput = default_to_input) -> np.ndarray:
    """Softmax probabilities of one uint8 ``(H, W, 3)`` image."""
    was_training = model.training
    model.eval()
    try:
        device = _model_device(model)
        logits = model(to_input(pixels).to(device))
    finally:
        model.train(was_training)
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()


def attribute(model: nn.Module, pixels: np.ndarray, target: int, config: AttributionConfig,
              *, to_input: ToInput = default_to_input, prepared: bool = False,
              num_classes: int | None = None) -> np.ndarray:
    """The ``(H, W)`` attribution map of ``pixels`` (uint8 ``(H, W, 3)``) for class ``target``.

    ``prepared``: ``model`` already comes from :func:`explainable_copy` (saves a copy per
    call when explaining many images with one model). ``num_classes``: when known, saves
    the forward pass that checks ``target``.
    """
    from captum.attr import (IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion,
                             Saliency)

    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise AttributionError(f"expected an (H, W, 3) uint8 image, got shape {pixels.shape}")
    height, width = pixels.shape[:2]
    net = model if prepared else explainable_copy(model)
    device = _model_device(net)
    inputs = to_input(pixels).to(device)
    if num_classes is None:
        with torch.no_grad():
            num_classes = int(net(inputs).shape[1])
    target = int(target)
    if not 0 <= target < num_classes:
        raise AttributionError(f"target class {target} is out of range for a {num_classes}-class model")

    def baseline() -> torch.Tensor:
        return to_input(baseline_pixels(pixels, config.baseline, config.blur_radius)).to(device)

    method = config.method
    if method == "saliency":
        grads = Saliency(net).attribute(inputs.clone().requires_grad_(True), target=target, abs=True)
        # Simonyan et al.: a pixel's saliency is its largest |gradient| over the colour channels.
        result = grads[0].amax(dim=0)
    elif method == "integrated-gradients":
        attributions = IntegratedGradients(net).attribute(
            inputs.clone().requires_grad_(True), baselines=baseline(), target=target,
            n_steps=config.ig_steps, internal_batch_size=min(config.ig_steps, 64))
        # Summing channels keeps completeness: the map adds up to score(input) - score(baseline).
        result = attributions[0].sum(dim=0)
    elif method == "gradcam":
        layer_map = LayerGradCam(net, last_conv_layer(net)).attribute(
            inputs.clone().requires_grad_(True), target=target, relu_attributions=config.gradcam_relu)
        result = LayerAttribution.interpolate(layer_map, (height, width), interpolate_mode="bilinear")[0, 0]
    elif method == "occlusion":
        window = config.occlusion_window
        if window > min(height, width):
            raise AttributionError(f"occlusion window {window} is larger than the {width}x{height} input")
        attributions = Occlusion(net).attribute(
            inputs, sliding_window_shapes=(3, window, window),
            strides=(3, config.occlusion_stride, config.occlusion_stride),
            baselines=baseline(), target=target, perturbations_per_eval=16)
        # Occlusion gives every channel of a pixel the same value; one channel is the map.
        result = attributions[0].mean(dim=0)
    else:  # pragma: no cover - the config validates the method
        raise AttributionError(f"unknown method {method!r}")
    out = result.detach().float().cpu().numpy().astype(np.float32)
    if out.shape != (height, width):  # pragma: no cover - guarded by the methods above
        raise AttributionError(f"{method} returned a {out.shape} map for a {height}x{width} input")
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _model_device(model: nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


# --- where the attribution falls -------------------------------------------------------

Box = tuple[int, int, int, int]  # left, top, right, bottom (right/bottom exclusive)


def letterbox_content_box(width: int, height: int, size: int) -> Box:
    """Where an image of ``width x height`` lands when letterboxed into ``size x size``.

    Scaled so its long side fills the square, centred; the rest is padding (the margins).
    """
    if width <= 0 or height <= 0 or size <= 0:
        raise AttributionError("image and target sizes must be positive")
    scale = size / max(width, height)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    left, top = (size - new_w) // 2, (size - new_h) // 2
    return left, top, left + new_w, top + new_h


def margin_mask(shape: tuple[int, int], content_box: Box) -> np.ndarray:
    """True on the margin pixels (everything outside ``content_box``)."""
    height, width = shape
    left, top, right, bottom = content_box
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise AttributionError(f"content box {content_box} does not fit a {width}x{height} map")
    mask = np.ones((height, width), dtype=bool)
    mask[top:bottom, left:right] = False
    return mask


def margin_mass(attribution: np.ndarray, content_box: Box) -> float:
    """Share of the absolute attribution mass that lies on the margins (0..1).

    ``nan`` when the map has no mass at all (nothing to share out).
    """
    magnitude = np.abs(np.asarray(attribution, dtype=np.float64))
    total = float(magnitude.sum())
    if not np.isfinite(total) or total <= 0:
        return float("nan")
    return float(magnitude[margin_mask(magnitude.shape, content_box)].sum() / total)


def margin_area_share(shape: tuple[int, int], content_box: Box) -> float:
    """Share of the pixels that are margin: what ``margin_mass`` would be for a flat map."""
    return float(margin_mask(shape, content_box).mean())


def region_mass(attribution: np.ndarray, box: Box) -> float:
    """Share of the absolute attribution mass inside ``box``."""
    magnitude = np.abs(np.asarray(attribution, dtype=np.float64))
    total = float(magnitude.sum())
    if total <= 0:
        return float("nan")
    inside = ~margin_mask(magnitude.shape, box)
    return float(magnitude[inside].sum() / total)
