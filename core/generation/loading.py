"""Loading a diffusers text-to-image pipeline: offline, on the best device, cached per process.

``load_pipeline`` goes through ``AutoPipelineForText2Image.from_pretrained`` with
``local_files_only=True``: a model is loaded from a local folder or the Hugging Face cache,
never fetched behind the user's back. A model that is not on this machine raises
``ModelNotAvailable`` whose message is the exact command to fetch it.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Settings, get_settings
from core.generation.registry import download_command, locate, looks_like_path, preset_for

log = logging.getLogger("synthlab.generation")

# Scheduler names offered to users -> diffusers class names. "default" keeps the model's own.
SCHEDULERS = {
    "default": None,
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "pndm": "PNDMScheduler",
}


class ModelNotAvailable(RuntimeError):
    """The model is not on this machine; ``str(exc)`` says exactly how to get it."""


class ModelLoadError(RuntimeError):
    """The model files are there but do not load as a text-to-image pipeline."""


@dataclass
class LoadedPipeline:
    pipe: Any  # a diffusers DiffusionPipeline
    source: str  # what the user asked for (id or path)
    location: str  # the folder it was loaded from
    device: str  # cuda | mps | cpu
    dtype: str  # float16 | bfloat16 | float32
    base_scheduler_config: dict[str, Any]
    base_scheduler_class: str
    scheduler: str = "default"

    @property
    def tokenizer(self) -> Any:
        return getattr(self.pipe, "tokenizer", None)

    def call_accepts(self, name: str) -> bool:
        return name in inspect.signature(self.pipe.__call__).parameters


def missing_model_message(source: str) -> str:
    if looks_like_path(source):
        return (f"model folder {source} not found or not a diffusers model (it needs a "
                f"model_index.json). Download one into it with e.g. "
                f"`hf download stabilityai/sd-turbo --local-dir {source}`")
    preset = preset_for(source)
    if preset is None and "/" not in source.strip():
        from core.generation.registry import PRESETS

        return (f"unknown model {source!r}: not a preset key "
                f"({', '.join(p.key for p in PRESETS)}), a model folder or a Hugging Face id "
                "(owner/name). `python -m core models` lists what this machine has.")
    repo_id = preset.repo_id if preset else source
    steps = ""
    if preset and preset.gated:
        steps = (f"accept the licence on https://huggingface.co/{repo_id}, run `hf auth login`, "
                 f"then ")
    return (f"model {repo_id} is not on this machine (SynthLab loads models offline). "
            f"To get it, {steps}run:  {download_command(repo_id)}  "
            f"(older huggingface_hub: huggingface-cli download {repo_id}); "
            f"or put a diffusers folder in SYNTHLAB_HOME/models/ and choose it by path.")


def pick_dtype(device: str, source: str) -> str:
    if device == "cuda":
        import torch

        # FLUX is trained in bf16 and overflows in fp16; SD-family models are fine in fp16.
        wants_bf16 = "flux" in source.lower()
        if wants_bf16 and torch.cuda.is_bf16_supported():
            return "bfloat16"
        return "float16"
    if device == "mps":
        return "float16"
    return "float32"


_cache_lock = threading.Lock()
_cached: dict[tuple, LoadedPipeline] = {}


def clear_pipeline_cache() -> None:
    with _cache_lock:
        _cached.clear()
    _free_device_memory()


def _free_device_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def load_pipeline(source: str, settings: Settings | None = None, *, device: str | None = None,
                  scheduler: str = "default") -> LoadedPipeline:
    """The pipeline for ``source`` on ``device``; one is kept per process and reused."""
    settings = settings or get_settings()
    location = locate(source, settings)
    if location is None:
        raise ModelNotAvailable(missing_model_message(source))
    if device is None:
        from core.device import detect_device

        device = detect_device(settings).torch_device
    dtype = pick_dtype(device.split(":")[0], source)
    key = (str(location), device, dtype, bool(settings.safety_checker))
    with _cache_lock:
        loaded = _cached.get(key)
        if loaded is None:
            # One big model at a time: drop the previous one before loading the next.
            _cached.clear()
            _free_device_memory()
            loaded = _load(source, location, device, dtype, settings)
            _cached[key] = loaded
    set_scheduler(loaded, scheduler)
    return loaded


def _load(source: str, location: Path, device: str, dtype: str, settings: Settings) -> LoadedPipeline:
    import torch
    from diffusers import AutoPipelineForText2Image

    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": getattr(torch, dtype)}
    index = _model_index(location)
    if "safety_checker" in index and not settings.safety_checker:
        # The checker blacks out harmless fruit photos as false positives; off unless asked.
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if dtype == "float16" and _has_fp16_variant(location):
        kwargs["variant"] = "fp16"
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(str(location), **kwargs)
    except (OSError, EnvironmentError) as exc:
        raise ModelNotAvailable(f"{missing_model_message(source)} (loader said: {exc})") from exc
    except ValueError as exc:
        raise ModelLoadError(f"{source} is not a text-to-image pipeline diffusers can load: {exc}") from exc
    pipe = pipe.to(device)
    _use_sdpa(pipe)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    log.info("loaded %s from %s on %s (%s)", source, location, device, dtype)
    return LoadedPipeline(pipe=pipe, source=source, location=str(location), device=device,
                          dtype=dtype, base_scheduler_config=dict(pipe.scheduler.config),
                          base_scheduler_class=type(pipe.scheduler).__name__)


def _model_index(location: Path) -> dict[str, Any]:
    try:
        return json.loads((location / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{location}/model_index.json is unreadable: {exc}") from exc


def _has_fp16_variant(location: Path) -> bool:
    unet = location / "unet"
    folder = unet if unet.is_dir() else location / "transformer"
    return folder.is_dir() and any(".fp16." in p.name for p in folder.iterdir())


def _use_sdpa(pipe: Any) -> None:
    """PyTorch scaled-dot-product attention in UNet models (transformers bring their own)."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = getattr(pipe, "unet", None)
    if isinstance(unet, UNet2DConditionModel):
        unet.set_attn_processor(AttnProcessor2_0())


def set_scheduler(loaded: LoadedPipeline, name: str | None) -> None:
    """Swap the sampler; always rebuilt from the model's own config, so choices never stack."""
    import diffusers

    name = name or "default"
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    if name == loaded.scheduler:
        return
    if name == "default":
        cls = getattr(diffusers, loaded.base_scheduler_class)
    else:
        if loaded.base_scheduler_class.startswith("FlowMatch"):
            raise ValueError(f"{loaded.source} samples with flow matching; only its default "
                             f"scheduler works with it")
        cls = getattr(diffusers, SCHEDULERS[name])
    loaded.pipe.scheduler = cls.from_config(loaded.base_scheduler_config)
    loaded.scheduler = name


def prepare_for_batch(loaded: LoadedPipeline, batch_size: int, size: int) -> None:
    """VAE slicing for big batches and tiling for big images, on accelerators only."""
    vae = getattr(loaded.pipe, "vae", None)
    if vae is None or loaded.device == "cpu":
        return
    if batch_size > 1 and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    if size >= 1024 and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()


def load_tokenizer(source: str, settings: Settings | None = None) -> Any | None:
    """Only the tokenizer (cheap), for the token-limit warning before a model is loaded."""
    settings = settings or get_settings()
    location = locate(source, settings)
    if location is None or not (location / "tokenizer").is_dir():
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(location / "tokenizer"), local_files_only=True)
    except Exception:  # noqa: BLE001 - no warning is better than a broken page
        log.warning("could not load the tokenizer of %s", source, exc_info=True)
        return None
