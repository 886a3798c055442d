"""Executing one training run, in three steps, so the middle one can run anywhere:

1. ``prepare_run`` (the worker: reads the index and the store, writes the run's row) turns
   a run into a ``RunWork``: its configs and its pixels as arrays, nothing that needs the
   data folder or the database;
2. ``train_and_evaluate`` (here, or in a Ray task on another host) trains the phases,
   checkpointing into a folder, evaluates, and writes the final model file there;
3. ``finish_run`` (the worker) records the metrics and says ``done``.

``execute_run`` is the local path (all three in this process, checkpoints in the run's
folder); core.training.distributed runs step 2 on Ray and brings the checkpoints back.
Both run the same code on the same arrays, so their metrics agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.config import Settings, get_settings
from core.db.models import utcnow
from core.training.checkpoint import LAST_FILE, MODEL_FILE, run_dir, save_checkpoint
from core.training.data import DataSpec, ExperimentData, load_pixels, pipelines_for
from core.training.experiments import _record_roles, _update_run, get_run, plan_for_run
from core.training.models import RUN_DONE, RUN_RUNNING
from core.training.trainer import Classifier, TrainConfig

PixelSource = Any  # np.ndarray, or epoch -> np.ndarray (a fresh augmentation draw per epoch)
ProgressCallback = Callable[[int, int, str], None]
StageCallback = Callable[[str], None]
# The stage a run reports once its last batch is done: the last validation, the test-set
# evaluation (bootstrap intervals included) and the trained model's file take seconds more.
STAGE_EVALUATING = "evaluating"


def training_units(train: TrainConfig, data: Any) -> int:  # noqa: ANN401 - ExperimentData
    """Images to push through the model for this run (the job's progress unit)."""
    real, synth = len(data.records("train_real")), len(data.records("train_synthetic"))
    if data.spec.mode == "pretrain-finetune":
        return train.epochs * synth + (train.finetune_epochs or train.epochs) * real
    return train.epochs * (real + synth)


def training_pixels(records: list, pipelines: dict[str, Any], settings: Settings, *, seed: int,
                    each_epoch: bool = True, cache: Any = None,  # noqa: ANN401
                    ) -> np.ndarray | Callable[[int], np.ndarray]:
    """What ``Classifier.fit`` trains on: a fixed array when no pipeline step is random or
    the random steps are drawn once per image (``each_epoch=False``, the original study),
    else ``epoch -> array`` with a fresh draw every epoch."""
    random_pipeline = any(pipelines[s].is_random for s in {r.source for r in records})
    if not random_pipeline or not each_epoch:
        return load_pixels(records, pipelines, settings, seed=seed, cache=cache)  # epoch 0's draw
    return lambda epoch: load_pixels(records, pipelines, settings, seed=seed, epoch=epoch,
                                     cache=cache)


class EpochArrays:
    """``epoch -> array`` drawn in advance, so a remote host needs no store to train."""

    def __init__(self, arrays: dict[int, np.ndarray]) -> None:
        self.arrays = arrays

    def __call__(self, epoch: int) -> np.ndarray:
        return self.arrays[epoch]


@dataclass
class PhaseWork:
    name: str
    pixels: PixelSource
    labels: np.ndarray
    validation: tuple[np.ndarray, np.ndarray] | None
    epochs: int
    lr: float | None = None
    warm: bool = False

    @property
    def images(self) -> int:
        return len(self.labels) * self.epochs


@dataclass
class RunWork:
    """One run's training, self-contained: configs and arrays, no paths into the data folder."""

    run_id: int
    name: str
    train: TrainConfig
    class_names: list[str]
    info: dict[str, Any]
    phases: list[PhaseWork]
    eval_sets: dict[str, tuple[np.ndarray, np.ndarray]]  # "real_test" -> (pixels, labels)
    bootstrap_seed: int
    resuming: bool = False
    notes: list[str] = field(default_factory=list)
    # torch threads for the fit (None: as they are). The count changes float sums in the
    # last bits, so a run records it and a resumed run keeps it.
    threads: int | None = None

    @property
    def units(self) -> int:
        return sum(phase.images for phase in self.phases)

    def materialised(self) -> "RunWork":
        """The same work with every per-epoch draw made now (for a host without the store)."""
        phases = []
        for phase in self.phases:
            pixels = phase.pixels
            if callable(pixels) and not isinstance(pixels, EpochArrays):
                pixels = EpochArrays({e: pixels(e) for e in range(1, phase.epochs + 1)})
            phases.append(PhaseWork(phase.name, pixels, phase.labels, phase.validation,
                                    phase.epochs, phase.lr, phase.warm))
        return RunWork(**{**self.__dict__, "phases": phases})


def prepare_run(run_id: int, settings: Settings, *,
                planned: tuple[DataSpec, TrainConfig, ExperimentData] | None = None) -> RunWork:
    """The worker's part before training: plan (or reload) the data, record it, load pixels.

    ``planned``: what ``plan_for_run`` just returned for this run (the job planned it to
    count its units), so it is not planned twice."""
    from core.training.speed import choose_threads

    run = get_run(run_id, settings)
    if run is None:
        raise ValueError(f"no run with id {run_id}")
    data_spec, train, data = planned or plan_for_run(run, settings)
    folder = run_dir(settings, run_id)
    resuming = (folder / LAST_FILE).is_file()
    _record_roles(run_id, data, settings)
    pipelines = pipelines_for(data_spec, settings, train.image_size)
    recorded_threads = (run.config or {}).get("threads") if resuming else None
    threads = int(recorded_threads) if recorded_threads else \
        choose_threads(settings.torch_threads, fixed=train.deterministic)
    # The resolved pipelines, not just their preset names: a preset edited later must not
    # change what this run says it trained on.
    _update_run(run_id, settings, status=RUN_RUNNING, class_names=data.class_names,
                counts=data.counts(), error=None,
                config={**run.config, "notes": data.notes, "threads": threads,
                        "pipelines": {k: p.to_dict() for k, p in pipelines.items()}})
    from core.preprocess import PreprocessedCache

    cache = PreprocessedCache(settings)
    eval_seed = data_spec.split_seed  # random pipeline steps on eval sets: one fixed draw

    def fixed(role: str) -> np.ndarray:
        return load_pixels(data.records(role), pipelines, settings, seed=eval_seed, cache=cache)

    def phase(name: str, train_roles: tuple[str, ...], val_role: str, epochs: int,
              lr: float | None = None, warm: bool = False) -> PhaseWork:
        records = [r for role in train_roles for r in data.records(role)]
        if not records:
            raise ValueError(f"no training images for phase {name}")
        labels = np.array([r.label for r in records], dtype=np.int64)
        val = (fixed(val_role), data.labels(val_role)) if data.records(val_role) else None
        pixels = training_pixels(records, pipelines, settings, seed=train.seed,
                                 each_epoch=data_spec.augment_each_epoch, cache=cache)
        return PhaseWork(name, pixels, labels, val, epochs, lr, warm)

    if data_spec.mode == "pretrain-finetune":
        phases = [phase("pretrain", ("train_synthetic",), "val_synthetic", train.epochs),
                  phase("finetune", ("train_real",), "val_real",
                        train.finetune_epochs or train.epochs,
                        lr=train.finetune_lr or train.lr / 3, warm=True)]
    elif data_spec.mode == "synthetic":
        phases = [phase("train", ("train_synthetic",), "val_synthetic", train.epochs)]
    else:
        phases = [phase("train", ("train_real", "train_synthetic"), "val_real", train.epochs)]
    eval_sets = {}
    for role in data.eval_roles():
        key = {"test_real": "real_test", "test_synthetic": "synthetic_test"}.get(role, role)
        eval_sets[key] = (fixed(role), np.asarray(data.labels(role)))
    return RunWork(run_id=run_id, name=run.name, train=train, class_names=data.class_names,
                   info={"run_id": run_id,
                         "pipelines": {k: p.to_dict() for k, p in pipelines.items()},
                         "data_spec": data_spec.to_dict()},
                   phases=phases, eval_sets=eval_sets,
                   bootstrap_seed=int((run.seeds or {}).get("bootstrap", train.seed)),
                   resuming=resuming, notes=list(data.notes), threads=threads)


EpochCallback = Callable[[dict[str, Any], list[dict[str, Any]]], None]


def train_and_evaluate(work: RunWork, folder: Path, tmp_dir: Path | None, *,
                       on_epoch: EpochCallback | None = None,
                       on_images: Callable[[int], None] | None = None,
                       on_stage: StageCallback | None = None) -> dict[str, Any]:
    """Train ``work``'s phases (resuming from ``folder``'s last checkpoint), evaluate, and
    write the final model to ``folder / MODEL_FILE``. ``on_images(n)``: images done so far;
    ``on_stage(STAGE_EVALUATING)`` once the training batches are done (what follows has no
    batches to count).

    Returns ``{"metrics", "curves", "history"}``. Reads and writes nothing but ``folder``.
    """
    from core.training.speed import cpu_settings, warm_optimizer_imports

    warm_optimizer_imports()  # overlaps the model's set-up below
    started = time.perf_counter()
    phase_start = [0]
    batch_size = work.train.batch_size
    stage: list[str | None] = [None]

    def enter_stage(name: str) -> None:
        if on_stage is not None and stage[0] != name:
            stage[0] = name
            on_stage(name)

    def on_batch(done_batches: int, total_batches: int) -> None:
        if on_images is not None:
            on_images(phase_start[0] + min(done_batches * batch_size, current[0].images))
        if done_batches == total_batches and current[0] is work.phases[-1]:
            enter_stage(STAGE_EVALUATING)

    current: list[PhaseWork] = [work.phases[0]]
    classifier = Classifier(work.train, class_names=work.class_names, checkpoint_dir=folder,
                            tmp_dir=tmp_dir, info=work.info, on_epoch=on_epoch,
                            on_batch=on_batch, threads=work.threads)
    for phase in work.phases:
        current[0] = phase
        classifier.fit(phase.pixels, phase.labels, validation=phase.validation, phase=phase.name,
                       epochs=phase.epochs, lr=phase.lr, warm_start=phase.warm)
        phase_start[0] += phase.images

    enter_stage(STAGE_EVALUATING)  # also after an early stop, which skips the last batches
    from core.training.metrics import evaluate  # sklearn: imported where it is used

    metrics: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for key, (pixels, labels) in work.eval_sets.items():
        # With the fit's threads and flushed denormals, not torch's default of every core,
        # which a busy host slows as much as it would the fit (speed.py).
        with cpu_settings(classifier.threads):
            proba = classifier.predict_proba(pixels)
        metrics[key], curves[key] = evaluate(labels, proba, work.class_names,
                                             bootstrap_seed=work.bootstrap_seed)
    metrics["_train"] = {"seconds": round(time.perf_counter() - started, 2),
                         "resumed": work.resuming,
                         # {"epoch": N} (or {"phase_done": 1}): where the resumed fit went on
                         "resumed_from": classifier.resumed_from_,
                         "epochs_run": len(classifier.history_),
                         "best_epoch": classifier.best_.get("epoch"),
                         "best_val_loss": classifier.best_.get("val_loss"),
                         "weights": classifier.best_.get("select"),
                         "deterministic": work.train.deterministic,
                         "threads": classifier.threads}
    save_checkpoint(folder / MODEL_FILE, classifier.model_.cpu(),
                    {**classifier._checkpoint_info("final", len(classifier.history_), {}),
                     "metrics": {k: v for k, v in metrics.items() if not k.startswith("_")}},
                    tmp_dir=tmp_dir)
    return {"metrics": metrics, "curves": curves, "history": classifier.history_}


def finish_run(run_id: int, outcome: dict[str, Any], settings: Settings) -> None:
    """The model file is in the run's folder: now the row says ``done``."""
    _update_run(run_id, settings, status=RUN_DONE, metrics=outcome["metrics"],
                curves=outcome["curves"], history=outcome["history"],
                checkpoint_path=f"{run_id}/{MODEL_FILE}", finished_at=utcnow())


def execute_run(run_id: int, settings: Settings | None = None, *,
                on_progress: ProgressCallback | None = None, progress_offset: int = 0,
                progress_total: int | None = None, on_stage: StageCallback | None = None,
                planned: tuple[DataSpec, TrainConfig, ExperimentData] | None = None) -> dict[str, Any]:
    """Train and evaluate one run here; resumes from its last checkpoint. Returns its metrics.

    ``on_stage``, ``planned``: see ``train_and_evaluate`` and ``prepare_run``."""
    settings = settings or get_settings()
    run = get_run(run_id, settings)
    if run is None:
        raise ValueError(f"no run with id {run_id}")
    if run.status == RUN_DONE:
        return dict(run.metrics or {})
    work = prepare_run(run_id, settings, planned=planned)
    folder = run_dir(settings, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    units_total = progress_total if progress_total is not None else work.units

    def on_images(done: int) -> None:
        if on_progress is not None:
            on_progress(progress_offset + done, units_total, work.name)

    def on_epoch(_row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        _update_run(run_id, settings, history=list(history))

    outcome = train_and_evaluate(work, folder, settings.tmp_dir, on_epoch=on_epoch,
                                 on_images=on_images, on_stage=on_stage)
    finish_run(run_id, outcome, settings)
    if on_progress is not None:
        on_progress(progress_offset + work.units, units_total, work.name)
    return outcome["metrics"]
