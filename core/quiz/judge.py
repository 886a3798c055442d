"""The machine judge: a small real-vs-synthetic CNN, with a scikit-learn-like API.

It reuses the study's reference ``SmallCNN`` (``core.training.model``) as a two-class
model (0 = synthetic, 1 = real) and sees the same served pixels the players see.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

REAL, SYNTHETIC = 1, 0


@dataclass
class JudgeConfig:
    image_px: int = 32  # the served image is shrunk to this before the CNN (multiple of 4)
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    folds: int = 2  # cross-fitting: every quiz image is scored by a judge that never saw it
    max_train_per_source: int = 2000
    random_state: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def pixels_from_image(image: Image.Image, px: int) -> np.ndarray:
    """A served picture -> uint8 (px, px, 3): the judge looks at what players got."""
    rgb = image.convert("RGB")
    if rgb.size != (px, px):
        rgb = rgb.resize((px, px), Image.Resampling.BOX)
    return np.asarray(rgb, dtype=np.uint8).copy()


def pixels_from_bytes(data: bytes, px: int) -> np.ndarray:
    """Served bytes -> uint8 (px, px, 3)."""
    with Image.open(io.BytesIO(data)) as image:
        return pixels_from_image(image, px)


class RealSyntheticJudge:
    """``fit(X, y)`` with X uint8 (N, H, W, 3) and y 1 = real / 0 = synthetic;
    ``predict_proba(X)[:, 1]`` is the probability that an image is real."""

    def __init__(self, config: JudgeConfig | None = None, device: str = "cpu") -> None:
        self.config = config or JudgeConfig()
        self.device = device
        self.model_: nn.Module | None = None

    def _build(self) -> nn.Module:
        from core.training.model import build_model

        return build_model("small", 2, self.config.image_px, conv1=16, conv2=32, hidden=64,
                           dropout=0.3)

    def fit(self, X: np.ndarray, y: np.ndarray, progress=None) -> "RealSyntheticJudge":  # noqa: ANN001
        from core.training.model import to_input

        y = np.asarray(y, dtype=np.int64)
        if len(set(y.tolist())) < 2:
            raise ValueError("the judge needs both real and synthetic images to learn from")
        config = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.random_state)
            model = self._build().to(self.device)
        generator = torch.Generator().manual_seed(config.random_state)
        inputs = to_input(X).to(self.device)
        targets = torch.as_tensor(y, device=self.device)
        counts = np.bincount(y, minlength=2).astype(np.float32)
        # Balanced loss: a pool with 10x more real images must not teach "always real".
        weights = torch.as_tensor(counts.sum() / (2 * np.maximum(counts, 1)), device=self.device)
        loss_fn = nn.CrossEntropyLoss(weight=weights)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        model.train()
        for epoch in range(config.epochs):
            order = torch.randperm(len(targets), generator=generator).to(self.device)
            for start in range(0, len(order), config.batch_size):
                batch = order[start:start + config.batch_size]
                flip = torch.rand(len(batch), generator=generator) < 0.5
                xb = inputs[batch]
                xb = torch.where(flip.to(self.device)[:, None, None, None], xb.flip(-1), xb)
                optimizer.zero_grad()
                loss = loss_fn(model(xb), targets[batch])
                loss.backward()
                optimizer.step()
            if progress is not None:
                progress(epoch + 1, config.epochs)
        model.eval()
        self.model_ = model
        return self

    @torch.no_grad()
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        from core.training.model import to_input

        if self.model_ is None:
            raise RuntimeError("the judge is not fitted")
        out = []
        for start in range(0, len(X), 256):
            logits = self.model_(to_input(X[start:start + 256]).to(self.device))
            out.append(torch.softmax(logits, dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def state_bytes(self) -> bytes:
        from safetensors.torch import save

        assert self.model_ is not None
        state = {k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}
        return save(state, metadata={"config": str(self.config.to_dict())})

    def load_state_bytes(self, data: bytes) -> "RealSyntheticJudge":
        from safetensors.torch import load

        model = self._build()
        model.load_state_dict(load(data))
        self.model_ = model.to(self.device).eval()
        return self
