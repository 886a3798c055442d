"""Which accelerator this host has: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import Settings, get_settings


@dataclass
class GpuInfo:
    index: int
    name: str
    total_memory_gb: float
    free_memory_gb: float | None


@dataclass
class DeviceInfo:
    kind: str  # cuda | mps | cpu
    torch_device: str
    gpus: list[GpuInfo] = field(default_factory=list)
    torch_version: str = ""
    warning: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "cuda" and self.gpus:
            gpu = self.gpus[0]
            extra = f" (+{len(self.gpus) - 1} more)" if len(self.gpus) > 1 else ""
            return f"CUDA: {gpu.name}, {gpu.total_memory_gb:.0f} GB{extra}"
        if self.kind == "mps":
            return "Apple MPS"
        return "CPU only"


def detect_device(settings: Settings | None = None) -> DeviceInfo:
    import torch

    settings = settings or get_settings()
    wanted = settings.device
    info: DeviceInfo
    if wanted in ("auto", "cuda") and torch.cuda.is_available():
        gpus = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            try:
                free, _total = torch.cuda.mem_get_info(index)
                free_gb = free / 2**30
            except RuntimeError:
                free_gb = None
            gpus.append(GpuInfo(index, props.name, props.total_memory / 2**30, free_gb))
        info = DeviceInfo("cuda", "cuda", gpus)
    elif wanted in ("auto", "mps") and getattr(torch.backends, "mps", None) \
            and torch.backends.mps.is_available():
        info = DeviceInfo("mps", "mps")
    else:
        info = DeviceInfo("cpu", "cpu", warning=(
            "No GPU found: generation runs on the CPU and is very slow (minutes per image "
            "for Stable Diffusion). Browsing, preprocessing, training and the quiz work fine."))
        if wanted not in ("auto", "cpu"):
            info.warning = f"SYNTHLAB_DEVICE={wanted} is not available here; using the CPU. " + info.warning
    info.torch_version = torch.__version__
    return info
