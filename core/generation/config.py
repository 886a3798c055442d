"""What decides a generation job's images: the config, its bounds, and one planned image.

``GenerationConfig`` is stored as the job's params; ``WorkItem`` is one planned image
(class, index, seed, prompt). Both travel to Ray actors as they are (plain dataclasses).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from core.catalog import class_key
from core.generation.loading import SCHEDULERS
from core.generation.prompts import PromptConfig, default_prompt_config
from core.generation.registry import preset_for
from core.generation.seeds import MAX_SEED


class Reporter(Protocol):
    """What a running generation tells the outside world (``core.jobs.JobContext`` fits)."""

    def progress(self, done: int, total: int | None = None, message: str | None = None,
                 *, force: bool = False) -> None: ...

    def log(self, message: str, level: str = "info") -> None: ...

    def check_cancelled(self, refresh: bool = True) -> None: ...


class GenerationError(RuntimeError):
    """A generation job cannot go on; the message says why and what to change."""


# The numbers a generation job may take. The Generate page's inputs use these bounds and
# GenerationConfig refuses anything outside them, so the page, the CLI and a stored job
# agree; NaN and infinities are refused too (an infinite guidance stored black images).
PER_CLASS_MAX = 100_000
STEPS_MAX = 200
GUIDANCE_MAX = 30.0
SIZE_MIN, SIZE_MAX = 16, 2048
BATCH_SIZE_MAX = 64


def _check_whole(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not low <= value <= high:
        raise GenerationError(f"{name} must be a whole number from {low} to {high}, not {value!r}")


@dataclass
class GenerationConfig:
    """Everything that decides a job's images (stored as the job's params)."""

    model: str
    classes: list[str]
    per_class: int
    steps: int | None = None  # None: the model preset's default
    guidance: float | None = None
    size: int | None = None  # width = height, pixels
    seed: int = 0
    batch_size: int = 4
    scheduler: str = "default"
    start_index: int = 0  # > 0 when extending an earlier job
    dataset_name: str | None = None  # None: "generated-job-<id>"
    prompt_template: str | None = None  # overrides every class's templates
    negative_prompt: str | None = None  # overrides every class's negative prompt
    # Snapshot of each class's prompt config taken at submit time, keyed by class key.
    prompts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        preset = preset_for(self.model)
        defaults = {"steps": 25, "guidance": 7.5, "size": 512}
        if preset:
            defaults = {"steps": preset.steps, "guidance": preset.guidance, "size": preset.size}
        self.steps = int(self.steps if self.steps is not None else defaults["steps"])
        self.guidance = float(self.guidance if self.guidance is not None else defaults["guidance"])
        self.size = int(self.size if self.size is not None else defaults["size"])
        self.classes = [c for c in (str(c).strip() for c in self.classes) if c]
        # Here, not only in validate(): no config with impossible numbers exists at all,
        # whichever way it was made (page, CLI, a stored job's params).
        self.check_numbers()

    def check_numbers(self) -> None:
        """Refuse numbers outside the Generate page's bounds, with one clear sentence."""
        _check_whole("images per class", self.per_class, 1, PER_CLASS_MAX)
        _check_whole("steps", self.steps, 1, STEPS_MAX)
        if not (math.isfinite(self.guidance) and 0 <= self.guidance <= GUIDANCE_MAX):
            raise GenerationError(f"guidance must be a number from 0 to {GUIDANCE_MAX:g}, "
                                  f"not {self.guidance!r}")
        _check_whole("size", self.size, SIZE_MIN, SIZE_MAX)
        if self.size % 8:
            raise GenerationError(f"size must be a multiple of 8 pixels, not {self.size}")
        _check_whole("batch size", self.batch_size, 1, BATCH_SIZE_MAX)
        _check_whole("seed", self.seed, 0, MAX_SEED)
        if self.start_index < 0:
            raise GenerationError("start index must not be negative")

    def validate(self) -> None:
        if not self.model.strip():
            raise GenerationError("choose a model")
        if not self.classes:
            raise GenerationError("choose at least one class")
        self.check_numbers()  # again: per_class may have been changed (extension_config)
        if len({class_key(c) for c in self.classes}) != len(self.classes):
            raise GenerationError("a class is listed twice")
        if (self.scheduler or "default") not in SCHEDULERS:
            raise GenerationError(f"unknown scheduler {self.scheduler!r}; choose one of "
                                  f"{', '.join(SCHEDULERS)}")

    @property
    def total(self) -> int:
        return self.per_class * len(self.classes)

    def to_params(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "GenerationConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in params.items() if k in known})

    def prompt_config(self, key: str, prompt_name: str) -> PromptConfig:
        stored = self.prompts.get(key)
        config = PromptConfig.from_dict(stored) if stored else default_prompt_config(prompt_name)
        if self.prompt_template:
            config.templates = [self.prompt_template]
        if self.negative_prompt is not None:
            config.negative_prompt = self.negative_prompt
        return config


@dataclass(frozen=True)
class WorkItem:
    class_key: str
    index: int
    seed: int
    prompt: str
    negative_prompt: str


@dataclass
class GenerationResult:
    image_ids: list[int]
    made: int  # images generated by this run (not counting resumed ones)
    total: int
