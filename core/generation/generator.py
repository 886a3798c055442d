"""One generation job: plan the images, run the pipeline in batches, store each batch.

The plan is fixed by the config alone: for each class, indices ``start .. start+N-1``
in batches aligned to ``batch_size`` (index ``i`` is in batch ``i // batch_size``). A batch
is stored in one transaction (files first, then rows), so after a crash a batch is either
fully stored or not at all, and the resumed job re-runs exactly the missing batches with
the same composition: it ends with the same pixels as an uninterrupted run.

The config lives in core.generation.config and the pipeline calls in
core.generation.runner (re-exported here: callers import them from this module).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.catalog import add_image, class_key, get_or_create_class, get_or_create_dataset
from core.config import Settings
from core.db.engine import run_write, session_scope
from core.db.models import SOURCE_SYNTHETIC, Dataset, ImageClass
from core.generation.config import (BATCH_SIZE_MAX, GUIDANCE_MAX, PER_CLASS_MAX,  # noqa: F401
                                    SIZE_MAX, SIZE_MIN, STEPS_MAX, GenerationConfig,
                                    GenerationError, GenerationResult, Reporter, WorkItem)
from core.generation.models import ClassPromptConfig, GenerationItem
from core.generation.prompts import PromptConfig, default_prompt_config, prompt_for, token_warnings
from core.generation.runner import PipelineRunner  # noqa: F401
from core.generation.seeds import image_seed
from core.imageio import DecodedImage, pixel_hash
from core.store import ImageStore

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
        from core.cluster import uses_ray

        if uses_ray(self.settings):
            return self._run_on_ray(reporter, batches)
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

    def _run_on_ray(self, reporter: Reporter, batches: list[list[WorkItem]]) -> GenerationResult:
        from types import SimpleNamespace

        from core.generation.distributed import run_on_ray
        from core.generation.loading import load_tokenizer

        # The token-limit warning as on the local path, from the tokenizer alone (cheap);
        # none when the model is only on the cluster's hosts.
        self._warn_long_prompts(SimpleNamespace(
            tokenizer=load_tokenizer(self.config.model, self.settings)), batches, reporter)
        stats = run_on_ray(self, reporter, batches)
        total = self.config.total
        reporter.progress(self.stored_count(), total, "finished", force=True)
        reporter.log(f"Ray: made {stats.made} image(s) on {dict(stats.hosts)}"
                     + (f"; {stats.actor_deaths} actor(s) died, {stats.retried_batches} "
                        f"batch(es) retried" if stats.actor_deaths else ""))
        return GenerationResult(self.image_ids(), stats.made, total)

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

    def _store(self, batch: list[WorkItem], images: list[Any],
               host: dict[str, str] | None = None, raw: list[bytes] | None = None) -> int:
        """Files first, then every row of the batch in one transaction; returns the rows
        added. Idempotent by (job, class, index): an image already stored (by another
        process of a multi-GPU run, or by a retried Ray batch) is skipped. ``host`` (the
        Ray node that made the batch) is recorded in each image's ``extra``; ``raw``: the
        images' PNG bytes as received from it, kept as the files (core.generation.runner)."""
        config = self.config
        added = [0]
        extra: dict[str, Any] = {"base_seed": config.seed}
        if host:
            extra.update(host=host.get("hostname"), node_ip=host.get("ip"))
        decoded = []
        for image in images:
            rgb = image.convert("RGB") if image.mode != "RGB" else image
            decoded.append(DecodedImage(image=rgb, original_format="PNG", original_mode="RGB",
                                        sha256=pixel_hash(rgb), was_converted=False))
        for item, data in zip(decoded, raw or [None] * len(decoded)):
            self.store.put(item, data)

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
                    extra=dict(extra))
                session.flush()
                added[0] += 1
                session.add(GenerationItem(job_id=self.job_id, class_id=image_class.id,
                                           gen_index=item.index, seed=item.seed,
                                           image_id=result.image.id))
        run_write(write, self.settings)
        return added[0]

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
