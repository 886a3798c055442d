"""The classifiers of the study: the reference ``SmallCNN`` and a deeper ``DeepCNN``.

Every model takes a float tensor ``(N, 3, H, W)`` made by :func:`to_input` from uint8
RGB pixels: ``x / 255`` then ``(x - 0.5) / 0.5``, i.e. values in ``[-1, 1]``. Training,
evaluation, the explainability code and anything else that feeds a model must use
``to_input`` so they all see the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.training.protocols import INIT_SCHEMES

MODEL_NAMES = ("small", "deep")


def to_input(pixels: np.ndarray | torch.Tensor, device: torch.device | str | None = None, *,
             channels_last: bool = False) -> torch.Tensor:
    """uint8 RGB ``(N, H, W, 3)`` (or one ``(H, W, 3)``) -> normalised float ``(N, 3, H, W)``.

    uint8 input is always channels-last. A float array already shaped ``(N, 3, H, W)`` with
    values in ``[0, 255]`` is accepted too (only the scaling is applied).

    ``channels_last=True`` returns the tensor in the channels-last memory layout (what a
    model moved to ``torch.channels_last`` computes in, 1.36x faster on the CPU here): uint8
    pixels are stored that way already, so the result is made in one conversion and no
    transposing copy. The values are the same either way.
    """
    tensor = torch.as_tensor(pixels)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4:
        raise ValueError(f"expected images (N, H, W, 3), got shape {tuple(tensor.shape)}")
    channels_last_input = tensor.dtype == torch.uint8 or tensor.shape[1] != 3
    if channels_last_input:
        if tensor.shape[-1] != 3:
            raise ValueError(f"expected RGB images (N, H, W, 3), got shape {tuple(tensor.shape)}")
        tensor = tensor.permute(0, 3, 1, 2)
    if device is not None:
        tensor = tensor.to(device, non_blocking=True)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    # A copy (never the caller's own buffer, which must not be scaled) in the wanted
    # layout, then scaled in place: the same operations in the same order as always.
    tensor = tensor.to(torch.float32, copy=True, memory_format=layout)
    return tensor.div_(255.0).sub_(0.5).div_(0.5)


def from_input(tensor: torch.Tensor) -> np.ndarray:
    """The inverse of :func:`to_input`: ``(N, 3, H, W)`` -> uint8 ``(N, H, W, 3)``."""
    pixels = (tensor.detach().float().cpu() * 0.5 + 0.5).clamp(0, 1) * 255.0
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model (stored with every checkpoint)."""

    name: str = "small"
    num_classes: int = 2
    image_size: int = 64
    widths: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SmallCNN(nn.Module):
    """The reference CNN: two conv/ReLU/max-pool blocks, fc 128, dropout 0.5, fc classes.

    With the defaults and a 64x64 input: conv 3->32 (3x3, pad 1), ReLU, pool 2; conv 32->64
    (3x3, pad 1), ReLU, pool 2; flatten (64*16*16); fc -> 128; dropout 0.5; fc -> classes.
    """

    def __init__(self, num_classes: int, image_size: int = 64, conv1: int = 32, conv2: int = 64,
                 hidden: int = 128, dropout: float = 0.5) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, not {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(3, conv1, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(conv1, conv2, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(conv2 * side * side, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2))


class GlobalAvgPool(nn.Module):
    """Average over the spatial dimensions: ``nn.AdaptiveAvgPool2d(1)``'s result, but its
    CUDA backward has a deterministic implementation (AdaptiveAvgPool2d's has none, so
    ``--deterministic`` would refuse to train the deep model on a GPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class DeepCNN(nn.Module):
    """Four conv blocks (64, 128, 256, 512) with batch norm, global average pooling, fc 256."""

    def __init__(self, num_classes: int, image_size: int = 64,
                 widths: tuple[int, ...] = (64, 128, 256, 512), hidden: int = 256,
                 dropout: float = 0.5) -> None:
        super().__init__()
        if image_size < 2 ** len(widths):
            raise ValueError(f"image_size {image_size} is too small for {len(widths)} pooling blocks")
        blocks, c_in = [], 3
        for width in widths:
            blocks.append(_conv_block(c_in, width))
            c_in = width
        self.features = nn.Sequential(*blocks)
        self.pool = GlobalAvgPool()
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def build_model(name: str, num_classes: int, image_size: int = 64, **widths: Any) -> nn.Module:
    """``"small"`` (the reference CNN) or ``"deep"``; ``widths`` go to the constructor
    (small: conv1, conv2, hidden, dropout; deep: widths=(...), hidden, dropout)."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    if name == "small":
        return SmallCNN(num_classes, image_size, **widths)
    if name == "deep":
        if "widths" in widths:
            widths = {**widths, "widths": tuple(widths["widths"])}
        return DeepCNN(num_classes, image_size, **widths)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def initialise(model: nn.Module, scheme: str = "default") -> nn.Module:
    """``default``: PyTorch's own initialisation (Kaiming-uniform, as built). ``xavier``:
    Xavier/Glorot-uniform weights and zero biases in every conv and linear layer, Keras's
    default and so the original study's (fan in/out count the kernel's receptive field)."""
    if scheme == "default":
        return model
    if scheme != "xavier":
        raise ValueError(f"unknown init {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def build_from_spec(spec: ModelSpec | dict[str, Any]) -> nn.Module:
    if isinstance(spec, dict):
        spec = ModelSpec(**spec)
    return build_model(spec.name, spec.num_classes, spec.image_size, **spec.widths)
