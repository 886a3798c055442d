"""Calling a loaded pipeline on planned images: per-image seeds, OOM back-off, cancel checks.

Used by the local generator, by each Ray generation actor (core.generation.distributed)
and by the Generate page's preview (core.generation.preview).
"""

from __future__ import annotations

import io
import time
from typing import Any

from core.generation.config import GenerationConfig, GenerationError, Reporter, WorkItem


class PipelineRunner:
    """Calls a loaded pipeline on work items: per-image seeds, OOM back-off, cancel checks."""

    def __init__(self, loaded: Any, config: GenerationConfig, batch_size: int | None = None) -> None:
        self.loaded = loaded
        self.config = config
        self.batch_size = batch_size or config.batch_size

    def generate(self, batch: list[WorkItem], reporter: Reporter) -> list[Any]:
        """Images of ``batch``; on out-of-memory, halve the batch and go on."""
        import torch

        images: list[Any] = []
        position = 0
        while position < len(batch):
            part = batch[position:position + self.batch_size]
            try:
                images.extend(self._call_pipeline(part, reporter))
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                # CUDA raises OutOfMemoryError; MPS a RuntimeError saying "out of memory".
                if not _is_out_of_memory(exc):
                    raise
                if self.batch_size == 1:
                    raise GenerationError(
                        f"out of GPU memory even at batch size 1 ({self.config.size} px): lower "
                        f"the size, close other GPU programs or use a smaller model") from exc
                self._empty_device_cache()
                self.batch_size = max(1, self.batch_size // 2)
                reporter.log(f"out of memory with a batch of {len(part)}: batch size lowered to "
                             f"{self.batch_size}", level="warning")
                continue
            position += len(part)
        return images

    @staticmethod
    def _empty_device_cache() -> None:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _call_pipeline(self, part: list[WorkItem], reporter: Reporter) -> list[Any]:
        import torch

        loaded = self.loaded
        kwargs: dict[str, Any] = {
            "prompt": [item.prompt for item in part],
            "num_inference_steps": self.config.steps,
            "guidance_scale": self.config.guidance,
            "height": self.config.size, "width": self.config.size,
            # CPU generators: the same seed gives the same image on any device.
            "generator": [torch.Generator("cpu").manual_seed(item.seed) for item in part],
            "output_type": "pil",
        }
        if loaded.call_accepts("negative_prompt") and any(item.negative_prompt for item in part):
            kwargs["negative_prompt"] = [item.negative_prompt for item in part]
        if loaded.call_accepts("callback_on_step_end"):
            kwargs["callback_on_step_end"] = _CancelCheck(reporter)
        with torch.inference_mode():
            output = loaded.pipe(**kwargs)
        return list(output.images)


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class _CancelCheck:
    """A diffusers step callback that checks for a cancel request every few seconds."""

    def __init__(self, reporter: Reporter, every_seconds: float = 2.0) -> None:
        self.reporter = reporter
        self.every_seconds = every_seconds
        self.last = time.monotonic()

    def __call__(self, _pipe: Any, _step: int, _timestep: Any, callback_kwargs: dict) -> dict:
        now = time.monotonic()
        if now - self.last >= self.every_seconds:
            self.last = now
            self.reporter.check_cancelled()
        return callback_kwargs


def encode_png(image: Any) -> bytes:  # noqa: ANN401 - a PIL image
    """Lossless bytes of a generated image, for the trip through Ray's object store: the
    store's own PNG encoding, so the worker keeps these bytes as the file (no re-encoding)
    and the file is the one the local backend writes."""
    from core.imageio import encode_png as store_png

    return store_png(image.convert("RGB") if image.mode != "RGB" else image)


def decode_png(data: bytes) -> Any:  # noqa: ANN401 - a PIL image
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
