"""Execute one run end to end: plan its data, train (resuming from its last checkpoint),
evaluate on its test sets and write the trained model before the row says ``done``.

Split from ``core.training.experiments`` (which still exposes these names).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from core.config import Settings, get_settings
from core.db.models import utcnow
from core.training.checkpoint import LAST_FILE, MODEL_FILE, run_dir, save_checkpoint
from core.training.data import DataSpec, ExperimentData, load_pixels, pipelines_for
from core.training.experiments import _record_roles, _update_run, get_run, plan_for_run
from core.training.models import RUN_DONE, RUN_RUNNING
from core.training.trainer import Classifier, TrainConfig

ProgressCallback = Callable[[int, int, str], None]
StageCallback = Callable[[str], None]
# The stage a run reports once its last batch is done: the last validation, the test-set
# evaluation (bootstrap intervals included) and the trained model's file take seconds more.
STAGE_EVALUATING = "evaluating"


def training_units(train: TrainConfig, data: ExperimentData) -> int:
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


def execute_run(run_id: int, settings: Settings | None = None, *,
                on_progress: ProgressCallback | None = None, progress_offset: int = 0,
                progress_total: int | None = None,
                on_stage: StageCallback | None = None,
                planned: tuple[DataSpec, TrainConfig, ExperimentData] | None = None) -> dict[str, Any]:
    """Train and evaluate one run; resumes from its last checkpoint. Returns its metrics.

    ``on_stage(STAGE_EVALUATING)`` is called once the training batches are done (what
    follows has no batches to count). ``planned``: what ``plan_for_run`` just returned for
    this run (the caller planned it to count the job's units), so it is not planned twice."""
    from core.training.speed import choose_threads, warm_optimizer_imports

    warm_optimizer_imports()  # overlaps the data planning and loading below
    settings = settings or get_settings()
    run = get_run(run_id, settings)
    if run is None:
        raise ValueError(f"no run with id {run_id}")
    if run.status == RUN_DONE:
        return dict(run.metrics or {})
    data_spec, train, data = planned or plan_for_run(run, settings)
    folder = run_dir(settings, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    resuming = (folder / LAST_FILE).is_file()
    _record_roles(run_id, data, settings)
    pipelines = pipelines_for(data_spec, settings, train.image_size)
    # The resolved pipelines, not just their preset names: a preset edited later must not
    # change what this run says it trained on.
    # The thread count changes float sums in the last bits (so, over epochs, the weights):
    # a resumed run keeps the count it started with, and the run records it.
    recorded_threads = (run.config or {}).get("threads") if resuming else None
    threads = int(recorded_threads) if recorded_threads else \
        choose_threads(settings.torch_threads, fixed=train.deterministic)
    _update_run(run_id, settings, status=RUN_RUNNING, class_names=data.class_names,
                counts=data.counts(), error=None,
                config={**run.config, "notes": data.notes, "threads": threads,
                        "pipelines": {k: p.to_dict() for k, p in pipelines.items()}})
    from core.preprocess import PreprocessedCache

    cache = PreprocessedCache(settings)
    eval_seed = data_spec.split_seed  # random pipeline steps on eval sets: one fixed draw

    def fixed(role: str) -> np.ndarray:
        return load_pixels(data.records(role), pipelines, settings, seed=eval_seed, cache=cache)

    def source(records: list) -> Any:  # noqa: ANN401
        return training_pixels(records, pipelines, settings, seed=train.seed,
                               each_epoch=data_spec.augment_each_epoch, cache=cache)

    units_total = progress_total if progress_total is not None else training_units(train, data)
    state = {"offset": progress_offset, "phase_images": 0, "phase_start": progress_offset,
             "last_phase": False, "stage": None}

    def enter_stage(stage: str) -> None:
        if on_stage is not None and state["stage"] != stage:
            state["stage"] = stage
            on_stage(stage)

    def on_batch(done_batches: int, total_batches: int) -> None:
        if on_progress is not None:
            images = min(done_batches * train.batch_size, state["phase_images"])
            on_progress(state["phase_start"] + images, units_total, run.name)
        if done_batches == total_batches and state["last_phase"]:
            enter_stage(STAGE_EVALUATING)

    def on_epoch(row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        _update_run(run_id, settings, history=list(history))

    classifier = Classifier(
        train, class_names=data.class_names, checkpoint_dir=folder, tmp_dir=settings.tmp_dir,
        info={"run_id": run_id, "pipelines": {k: p.to_dict() for k, p in pipelines.items()},
              "data_spec": data_spec.to_dict()},
        on_epoch=on_epoch, on_batch=on_batch, threads=threads)

    def phase(name: str, train_roles: tuple[str, ...], val_role: str, epochs: int,
              lr: float | None = None, warm: bool = False, last: bool = True) -> None:
        state["last_phase"] = last
        records = [r for role in train_roles for r in data.records(role)]
        if not records:
            raise ValueError(f"no training images for phase {name}")
        state["phase_images"] = len(records) * epochs
        labels = np.array([r.label for r in records], dtype=np.int64)
        val = (fixed(val_role), data.labels(val_role)) if data.records(val_role) else None
        classifier.fit(source(records), labels, validation=val, phase=name, epochs=epochs,
                       lr=lr, warm_start=warm)
        state["phase_start"] += state["phase_images"]

    started = time.perf_counter()
    if data_spec.mode == "pretrain-finetune":
        phase("pretrain", ("train_synthetic",), "val_synthetic", train.epochs, last=False)
        phase("finetune", ("train_real",), "val_real", train.finetune_epochs or train.epochs,
              lr=train.finetune_lr or train.lr / 3, warm=True)
    elif data_spec.mode == "synthetic":
        phase("train", ("train_synthetic",), "val_synthetic", train.epochs)
    else:
        phase("train", ("train_real", "train_synthetic"), "val_real", train.epochs)

    enter_stage(STAGE_EVALUATING)  # also after an early stop, which skips the last batches
    from core.training.metrics import evaluate  # sklearn: imported where it is used

    metrics: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    bootstrap_seed = int((run.seeds or {}).get("bootstrap", train.seed))
    for role in data.eval_roles():
        key = {"test_real": "real_test", "test_synthetic": "synthetic_test"}.get(role, role)
        proba = classifier.predict_proba(fixed(role))
        metrics[key], curves[key] = evaluate(data.labels(role), proba, data.class_names,
                                             bootstrap_seed=bootstrap_seed)
    metrics["_train"] = {"seconds": round(time.perf_counter() - started, 2), "resumed": resuming,
                         "epochs_run": len(classifier.history_),
                         "best_epoch": classifier.best_.get("epoch"),
                         "best_val_loss": classifier.best_.get("val_loss"),
                         "weights": classifier.best_.get("select"),
                         "deterministic": train.deterministic,
                         "threads": classifier.threads}
    model_path = folder / MODEL_FILE
    save_checkpoint(model_path, classifier.model_.cpu(),
                    {**classifier._checkpoint_info("final", len(classifier.history_), {}),
                     "metrics": {k: v for k, v in metrics.items() if not k.startswith("_")}},
                    tmp_dir=settings.tmp_dir)
    _update_run(run_id, settings, status=RUN_DONE, metrics=metrics, curves=curves,
                history=classifier.history_, checkpoint_path=f"{run_id}/{MODEL_FILE}",
                finished_at=utcnow())
    if on_progress is not None:
        on_progress(state["phase_start"], units_total, run.name)
    return metrics
