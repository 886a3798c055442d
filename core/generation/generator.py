"""One generation job: plan the images, run the pipeline in batches, store each batch.

The plan is fixed by the config alone: for each class, indices ``start .. start+N-1``
in batches aligned to ``batch_size`` (index ``i`` is in batch ``i // batch_size``). A batch
is stored in one transaction (files first, then rows), so after a crash a batch is either
fully stored or not at all, and the resumed job re-runs exactly the missing batches with
the same composition: it ends with the same pixels as an uninterrupted run.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.catalog import add_image, class_key, get_or_create_class, get_or_create_dataset
from core.config import Settings
from core.db.engine import run_write, session_scope
from core.db.models import SOURCE_SYNTHETIC, Dataset, ImageClass
from core.generation.loading import SCHEDULERS
from core.generation.models import ClassPromptConfig, GenerationItem
from core.generation.prompts import PromptConfig, default_prompt_config, prompt_for, token_warnings
from core.generation.registry import preset_for
from core.generation.seeds import MAX_SEED, image_seed
from core.imageio import DecodedImage, pixel_hash
from core.store import ImageStore


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


# --- prompt configs as stored in the DB ------------------------------------------------

def load_prompt_config(session: Session, image_class: ImageClass) -> PromptConfig:
    row = session.scalar(select(ClassPromptConfig).where(ClassPromptConfig.class_id == image_class.id))
    if row is None:
        return default_prompt_config(image_class.prompt_name)
    return PromptConfig(prompt_name=image_class.prompt_name, templates=list(row.templates),
                        slots={k: list(v) for k, v in row.slots.items()},
                        negative_prompt=row.negative_prompt, mode=row.mode)


def save_prompt_config(class_name: str, config: PromptConfig, *, user: str | None = None,
                       settings: Settings | None = None) -> None:
    """Persist a class's prompt config (creating the class if needed)."""
    config.validate()

    def write(session: Session) -> None:
        image_class = get_or_create_class(session, class_name)
        image_class.prompt_name = config.prompt_name.strip()
        row = session.scalar(select(ClassPromptConfig).where(ClassPromptConfig.class_id == image_class.id))
        if row is None:
            row = ClassPromptConfig(class_id=image_class.id)
            session.add(row)
        row.templates = [t for t in config.templates if t.strip()]
        row.slots = {k: [v for v in values if v.strip()] for k, values in config.slots.items()}
        row.negative_prompt = config.negative_prompt
        row.mode = config.mode
        row.updated_by = user
    run_write(write, settings)


def snapshot_prompts(config: GenerationConfig, settings: Settings) -> GenerationConfig:
    """Create missing classes and copy their stored prompt configs into the job's params.

    All in one transaction: a prompt that does not validate leaves no new class behind.
    """
    def write(session: Session) -> dict[str, dict[str, Any]]:
        snapshot = {}
        for name in config.classes:
            image_class = get_or_create_class(session, name)
            snapshot[image_class.name] = load_prompt_config(session, image_class).to_dict()
        trial = GenerationConfig.from_params({**config.to_params(),
                                              "prompts": {**snapshot, **config.prompts}})
        for name in config.classes:
            try:
                trial.prompt_config(class_key(name), name).validate()
            except ValueError as exc:
                raise GenerationError(f"class {name}: {exc}") from exc
        return snapshot
    config.prompts = {**run_write(write, settings), **config.prompts}
    return config


# --- the job ----------------------------------------------------------------------------

class Generator:
    """Makes and stores the images of one job; resumable, batched, OOM-tolerant."""

    def __init__(self, config: GenerationConfig, settings: Settings, *, job_id: int,
                 created_by: str | None = None, pipeline: Any = None) -> None:
        config.validate()
        self.config = config
        self.settings = settings
        self.job_id = job_id
        self.created_by = created_by
        self.store = ImageStore(settings)
        self._pipeline = pipeline  # a LoadedPipeline; loaded lazily when None
        self.batch_size = config.batch_size  # halves on out-of-memory
        self._runner: PipelineRunner | None = None

    # planning

    def plan(self) -> list[list[WorkItem]]:
        """Every batch of the job, in order, whether done or not."""
        batches: list[list[WorkItem]] = []
        with session_scope(self.settings) as session:
            names = {c.name: c.prompt_name for c in session.scalars(
                select(ImageClass).where(ImageClass.name.in_([class_key(c) for c in self.config.classes])))}
        for name in self.config.classes:
            key = class_key(name)
            prompt_config = self.config.prompt_config(key, names.get(key, name))
            start, stop = self.config.start_index, self.config.start_index + self.config.per_class
            size = self.config.batch_size
            for first in range((start // size) * size, stop, size):
                indices = [i for i in range(first, first + size) if start <= i < stop]
                batches.append([WorkItem(key, i, image_seed(self.config.seed, key, i),
                                         prompt_for(prompt_config, i, base_seed=self.config.seed, class_key=key),
                                         prompt_config.negative_prompt) for i in indices])
        return batches

    def done_keys(self) -> set[tuple[str, int]]:
        with session_scope(self.settings) as session:
            rows = session.execute(
                select(ImageClass.name, GenerationItem.gen_index)
                .join(ImageClass, ImageClass.id == GenerationItem.class_id)
                .where(GenerationItem.job_id == self.job_id))
            return {(name, index) for name, index in rows}

    def pending_batches(self) -> list[list[WorkItem]]:
        done = self.done_keys()
        pending = []
        for batch in self.plan():
            left = [item for item in batch if (item.class_key, item.index) not in done]
            if left:
                pending.append(left)
        return pending

    def stored_count(self) -> int:
        with session_scope(self.settings) as session:
            return int(session.scalar(select(func.count()).select_from(GenerationItem)
                                      .where(GenerationItem.job_id == self.job_id)) or 0)

    def image_ids(self) -> list[int]:
        with session_scope(self.settings) as session:
            return list(session.scalars(select(GenerationItem.image_id)
                                        .where(GenerationItem.job_id == self.job_id)
                                        .order_by(GenerationItem.id)))

    # running

    @property
    def runner(self) -> PipelineRunner:
        if self._runner is None:
            self._runner = PipelineRunner(self.pipeline, self.config, self.batch_size)
        return self._runner

    def use_pipeline(self, loaded: Any) -> None:
        """Run with this already-loaded pipeline (e.g. on a given device)."""
        self._pipeline = loaded
        self._runner = None

    @property
    def pipeline(self) -> Any:
        if self._pipeline is None:
            from core.generation.loading import load_pipeline

            self._pipeline = load_pipeline(self.config.model, self.settings,
                                           scheduler=self.config.scheduler)
        return self._pipeline

    def run(self, reporter: Reporter, batches: list[list[WorkItem]] | None = None) -> GenerationResult:
        """Generate ``batches`` (default: all pending ones) and store them as they finish."""
        total = self.config.total
        if batches is None:
            batches = self.pending_batches()
        done = self.stored_count()
        if done:
            reporter.log(f"resuming: {done} of {total} images already stored")
        reporter.progress(done, total, f"{done}/{total} images", force=True)
        if not batches:
            return GenerationResult(self.image_ids(), 0, total)
        self.ensure_dataset()
        loaded = self.pipeline
        from core.generation.loading import prepare_for_batch, set_scheduler

        set_scheduler(loaded, self.config.scheduler)
        prepare_for_batch(loaded, self.batch_size, self.config.size)
        self._warn_long_prompts(loaded, batches, reporter)
        if loaded.device == "cpu":
            reporter.log("running on the CPU: this is slow for real models", level="warning")
        made = 0
        for batch in batches:
            reporter.check_cancelled()
            images = self._generate(batch, reporter)
            self._store(batch, images)
            made += len(batch)
            done = self.stored_count()
            # No rate in the message: the job's rate is core.jobs.window_rate's, shown
            # beside it (a second one here disagreed with it, issue 15).
            reporter.progress(done, total, f"{done}/{total} images")
        reporter.progress(self.stored_count(), total, "finished", force=True)
        return GenerationResult(self.image_ids(), made, total)

    def _warn_long_prompts(self, loaded: Any, batches: list[list[WorkItem]], reporter: Reporter) -> None:
        tokenizer = loaded.tokenizer
        if tokenizer is None:
            return
        prompts = [item.prompt for batch in batches for item in batch]
        prompts += [item.negative_prompt for batch in batches for item in batch if item.negative_prompt]
        for warning in token_warnings(prompts, tokenizer)[:5]:
            reporter.log(warning.message(), level="warning")

    def _generate(self, batch: list[WorkItem], reporter: Reporter) -> list[Any]:
        images = self.runner.generate(batch, reporter)
        self.batch_size = self.runner.batch_size
        return images

    def _store(self, batch: list[WorkItem], images: list[Any]) -> None:
        """Files first, then every row of the batch in one transaction."""
        config = self.config
        decoded = []
        for image in images:
            rgb = image.convert("RGB") if image.mode != "RGB" else image
            decoded.append(DecodedImage(image=rgb, original_format="PNG", original_mode="RGB",
                                        sha256=pixel_hash(rgb), was_converted=False))
        for item in decoded:
            self.store.put(item)

        def write(session: Session) -> None:
            dataset = self._dataset(session)
            classes: dict[str, ImageClass] = {}
            for item, image in zip(batch, decoded):
                image_class = classes.get(item.class_key) or get_or_create_class(session, item.class_key)
                classes[item.class_key] = image_class
                exists = session.scalar(select(GenerationItem.id).where(
                    GenerationItem.job_id == self.job_id, GenerationItem.class_id == image_class.id,
                    GenerationItem.gen_index == item.index))
                if exists is not None:  # another process of a multi-GPU run got there first
                    continue
                result = add_image(
                    session, self.store, image, image_class=image_class, dataset=dataset,
                    source=SOURCE_SYNTHETIC, added_by=self.created_by,
                    original_name=f"job{self.job_id}-{item.class_key}-{item.index}.png",
                    generation={"job_id": self.job_id, "gen_index": item.index,
                                "prompt": item.prompt, "negative_prompt": item.negative_prompt,
                                "seed": item.seed, "model": config.model,
                                "scheduler": config.scheduler, "steps": config.steps,
                                "guidance": config.guidance, "gen_width": config.size,
                                "gen_height": config.size},
                    extra={"base_seed": config.seed})
                session.flush()
                session.add(GenerationItem(job_id=self.job_id, class_id=image_class.id,
                                           gen_index=item.index, seed=item.seed,
                                           image_id=result.image.id))
        run_write(write, self.settings)

    def ensure_dataset(self) -> None:
        """Create the job's dataset up front (before several processes store into it)."""
        run_write(self._dataset, self.settings)

    def dataset_name(self) -> str:
        return self.config.dataset_name or f"generated-job-{self.job_id}"

    def _dataset(self, session: Session) -> Dataset:
        dataset = get_or_create_dataset(session, self.dataset_name(), source=SOURCE_SYNTHETIC,
                                        origin=f"job {self.job_id}: {self.config.model}",
                                        created_by=self.created_by)
        if dataset.source != SOURCE_SYNTHETIC:
            raise GenerationError(f"dataset {dataset.name!r} holds real images; choose another name")
        return dataset


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
