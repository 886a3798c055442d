"""Build the offline demo: drawn fruit, a tiny noise-making diffusion model, three jobs.

Everything the demo adds is marked as the demo's, never recognised by its name alone:

* the demo's datasets carry ``Dataset.notes == DEMO_MARK``;
* its jobs carry ``params["demo"] = True`` and its training runs ``config["demo"] = True``;
* its model lives in ``<data>/models/demo-tiny-sd`` and is registered under that path;
* ``<data>/demo/manifest.json`` lists the ids of all of these and of the classes the demo
  created (a class that existed before the demo is never the demo's).

``core.demo.remove`` removes exactly these. Building twice adds nothing twice: the drawn
pictures are seeded (the second import finds them all indexed, and is skipped when the
dataset is complete), the model folder is reused, and a job kind the demo already queued
(and that did not fail) is not queued again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm.attributes import flag_modified

from core.config import Settings, get_settings
from core.db.engine import init_db, run_write, session_scope
from core.db.models import SOURCE_REAL, Dataset, Image, ImageClass, Job
from core.demo.drawing import DEMO_CLASSES, draw_dataset

DEMO_MARK = "synthlab-demo"  # Dataset.notes of the demo's datasets
DEMO_DATASET = "demo: drawn fruit"
DEMO_GENERATED_DATASET = "demo: generated noise"
DEMO_MODEL_DIRNAME = "demo-tiny-sd"
DEMO_MODEL_LABEL = "demo model: makes noise, for trying the flow"
DEMO_JOB_KINDS = ("demo", "generate", "train", "explain")  # "demo": the build itself
DEFAULT_EXPLAINED_PER_CLASS = 2

ProgressFn = Callable[[str], None]


class DemoError(RuntimeError):
    """The demo cannot be built or removed now; the message says why."""


@dataclass
class DemoReport:
    dataset: str
    images: int  # images in the demo's drawn dataset
    added: int  # of which this call added
    model_dir: str
    jobs: dict[str, int] = field(default_factory=dict)  # kind -> job id
    reused_jobs: list[str] = field(default_factory=list)  # kinds already queued earlier
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the manifest ---------------------------------------------------------------------

def manifest_path(settings: Settings) -> Path:
    return settings.home_path / "demo" / "manifest.json"


def model_dir(settings: Settings) -> Path:
    return settings.home_path / "models" / DEMO_MODEL_DIRNAME


def read_manifest(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(manifest_path(settings).read_text())
    except (OSError, ValueError):
        data = {}
    for key in ("datasets", "classes", "jobs", "runs"):
        data.setdefault(key, [])
    return data


def write_manifest(settings: Settings, manifest: dict[str, Any]) -> None:
    path = manifest_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part-{os.getpid()}")
    part.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(part, path)


def _remember(manifest: dict[str, Any], key: str, *ids: int) -> None:
    manifest[key] = sorted(set(manifest[key]) | {int(i) for i in ids})


def is_demo_present(settings: Settings | None = None) -> bool:
    """Whether anything of the demo is here (for the Home page's Remove button)."""
    settings = settings or get_settings()
    if manifest_path(settings).is_file() or model_dir(settings).is_dir() or demo_job_ids(settings):
        return True
    with session_scope(settings) as session:
        return session.scalar(select(func.count(Dataset.id))
                              .where(Dataset.notes == DEMO_MARK)) > 0


# --- building -------------------------------------------------------------------------

def build_demo(settings: Settings | None = None, *, per_class: int | None = None,
               generated_per_class: int | None = None, epochs: int | None = None,
               seed: int = 0, queue_jobs: bool = True, created_by: str | None = None,
               progress: ProgressFn | None = None) -> DemoReport:
    """Build (or complete) the demo and queue its jobs; see the module docstring.

    The sizes default to ``Settings.demo_images_per_class``, ``demo_generated_per_class``
    and ``demo_epochs``.
    """
    settings = settings or get_settings()
    per_class = per_class or settings.demo_images_per_class
    generated_per_class = generated_per_class or settings.demo_generated_per_class
    epochs = epochs or settings.demo_epochs
    if per_class < 4:
        raise DemoError("the demo needs at least 4 pictures per class (training splits them)")
    say = progress or (lambda _message: None)
    started = time.monotonic()
    init_db(settings)
    settings.ensure_dirs()
    manifest = read_manifest(settings)
    manifest["seed"] = seed

    _remember(manifest, "classes", *_create_classes(settings))
    write_manifest(settings, manifest)  # now: whatever fails next, they are known as the demo's
    say(f"drawing and importing {per_class} pictures per class")
    dataset_id, images, added = _import_drawn(settings, manifest, per_class, seed, created_by)
    _remember(manifest, "datasets", dataset_id)
    write_manifest(settings, manifest)

    report = DemoReport(DEMO_DATASET, images, added, str(model_dir(settings)))
    existing = _live_demo_jobs(settings) if queue_jobs else {}
    if queue_jobs:
        # Training first: a running worker trains while this process builds the model.
        say("queueing the training run")
        run_ids = _train_job(settings, existing, report, epochs=epochs, seed=seed,
                             created_by=created_by)
        _remember(manifest, "runs", *run_ids)
        _remember(manifest, "jobs", *report.jobs.values())
        write_manifest(settings, manifest)

    say("building the tiny demo diffusion model")
    folder = _install_model(settings, created_by)
    manifest["model_dir"] = str(folder)
    write_manifest(settings, manifest)

    if queue_jobs:
        say("queueing a generation and an attribution job")
        _generate_and_explain_jobs(settings, existing, report, run_ids, folder=folder, seed=seed,
                                   generated_per_class=generated_per_class,
                                   created_by=created_by)
        _remember(manifest, "jobs", *report.jobs.values())
        write_manifest(settings, manifest)
    report.seconds = round(time.monotonic() - started, 2)
    return report


def _create_classes(settings: Settings) -> list[int]:
    """The demo's classes that do not exist yet (their ids: the demo made them)."""
    def write(session) -> list[int]:  # noqa: ANN001
        created = []
        for demo_class in DEMO_CLASSES:
            if session.scalar(select(ImageClass).where(ImageClass.name == demo_class.key)) is None:
                row = ImageClass(name=demo_class.key, display_name=demo_class.display_name,
                                 prompt_name=demo_class.prompt_name)
                session.add(row)
                session.flush()
                created.append(row.id)
        return created
    return run_write(write, settings)


def _dataset_images(settings: Settings, name: str) -> tuple[int | None, int]:
    with session_scope(settings) as session:
        dataset = session.scalar(select(Dataset).where(Dataset.name == name))
        if dataset is None:
            return None, 0
        count = session.scalar(select(func.count(Image.id)).where(Image.dataset_id == dataset.id))
        return dataset.id, int(count or 0)


def _import_drawn(settings: Settings, manifest: dict[str, Any], per_class: int, seed: int,
                  created_by: str | None) -> tuple[int, int, int]:
    """Draw the pictures into a scratch folder and import them; (dataset id, images, added)."""
    from core.ingest.importer import ImportOptions, import_dataset

    dataset_id, count = _dataset_images(settings, DEMO_DATASET)
    if dataset_id is not None:
        _check_is_demo(settings, dataset_id, manifest)
    if dataset_id is not None and count >= per_class * len(DEMO_CLASSES):
        return dataset_id, count, 0
    scratch = Path(tempfile.mkdtemp(prefix="demo-drawn-", dir=settings.tmp_dir))
    try:
        draw_dataset(scratch, per_class, seed)
        report = import_dataset(scratch, settings, ImportOptions(
            dataset=DEMO_DATASET, source=SOURCE_REAL, added_by=created_by))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    dataset_id = report.dataset_id
    if dataset_id is None:
        raise DemoError(f"the demo pictures were not imported: {report.summary}")

    def mark(session) -> None:  # noqa: ANN001
        dataset = session.get(Dataset, dataset_id)
        dataset.notes = DEMO_MARK
        dataset.origin = f"python -m core demo (pictures drawn with PIL, seed {seed})"
    run_write(mark, settings)
    return dataset_id, _dataset_images(settings, DEMO_DATASET)[1], report.added


def _check_is_demo(settings: Settings, dataset_id: int, manifest: dict[str, Any]) -> None:
    """A dataset of the demo's name that the demo did not make is a user's: never add to
    it, never take it for the demo's."""
    with session_scope(settings) as session:
        dataset = session.get(Dataset, dataset_id)
        ours = (dataset.notes == DEMO_MARK or dataset_id in manifest["datasets"]
                # an import of the demo that stopped before its mark was set
                or (dataset.notes is None and _is_scratch(settings, dataset.origin or "")))
    if not ours:
        raise DemoError(f"a dataset named {DEMO_DATASET!r} exists and is not the demo's; "
                        "rename it first")


def _is_scratch(settings: Settings, origin: str) -> bool:
    return Path(origin).name.startswith("demo-drawn-") and Path(origin).parent == settings.tmp_dir


def _install_model(settings: Settings, created_by: str | None) -> Path:
    """Build the tiny pipeline into the models folder and list it under the demo label."""
    from core.generation.models import CustomModel
    from core.generation.registry import add_custom_model
    from core.generation.tiny import build_tiny_sd

    folder = build_tiny_sd(model_dir(settings))

    def relabel(session) -> None:  # noqa: ANN001
        row = session.scalar(select(CustomModel).where(CustomModel.source == str(folder)))
        if row is not None and row.label != DEMO_MODEL_LABEL:
            row.label = DEMO_MODEL_LABEL
    add_custom_model(str(folder), label=DEMO_MODEL_LABEL, added_by=created_by, settings=settings)
    run_write(relabel, settings)
    return folder


# --- the jobs -------------------------------------------------------------------------

def demo_job_ids(settings: Settings) -> dict[int, tuple[str, str]]:
    """Every job marked as the demo's: id -> (kind, status)."""
    with session_scope(settings) as session:
        rows = session.execute(select(Job.id, Job.kind, Job.status, Job.params)
                               .where(Job.kind.in_(DEMO_JOB_KINDS)))
        return {job_id: (kind, status) for job_id, kind, status, params in rows
                if isinstance(params, dict) and params.get("demo") is True}


def _mark_job(settings: Settings, job_id: int) -> None:
    def write(session) -> None:  # noqa: ANN001
        job = session.get(Job, job_id)
        job.params = {**(job.params or {}), "demo": True}
        flag_modified(job, "params")
    run_write(write, settings)


def _live_demo_jobs(settings: Settings) -> dict[str, int]:
    """The newest demo job of each kind that did not fail and was not cancelled."""
    from core.jobs import CANCELLED, FAILED

    existing: dict[str, int] = {}
    for job_id, (kind, status) in sorted(demo_job_ids(settings).items()):
        if status not in (FAILED, CANCELLED):
            existing[kind] = job_id
    return existing


def _train_job(settings: Settings, existing: dict[str, int], report: DemoReport, *,
               epochs: int, seed: int, created_by: str | None) -> list[int]:
    """Queue the training (unless queued earlier and its runs are still there); its runs."""
    run_ids = _runs_of_job(settings, existing["train"]) if "train" in existing else []
    if run_ids:
        report.jobs["train"] = existing["train"]
        report.reused_jobs.append("train")
    else:
        run_ids, report.jobs["train"] = _queue_training(settings, [c.key for c in DEMO_CLASSES],
                                                        epochs, seed, created_by)
    return run_ids


def _generate_and_explain_jobs(settings: Settings, existing: dict[str, int], report: DemoReport,
                               run_ids: list[int], *, folder: Path, seed: int,
                               generated_per_class: int, created_by: str | None) -> None:
    if "generate" in existing:
        report.jobs["generate"] = existing["generate"]
        report.reused_jobs.append("generate")
    else:
        report.jobs["generate"] = _queue_generation(settings, folder, [c.key for c in DEMO_CLASSES],
                                                    generated_per_class, seed, created_by)
    if "explain" in existing and "train" in report.reused_jobs:
        report.jobs["explain"] = existing["explain"]
        report.reused_jobs.append("explain")
    else:
        report.jobs["explain"] = _queue_explain(settings, run_ids[0], report.jobs["train"],
                                                created_by)


def _queue_generation(settings: Settings, folder: Path, keys: list[str], per_class: int,
                      seed: int, created_by: str | None) -> int:
    from core.generation.generator import GenerationConfig
    from core.generation.jobs import submit_generation
    from core.generation.tiny import TINY_SIZE, TINY_STEPS

    config = GenerationConfig(model=str(folder), classes=keys, per_class=per_class,
                              steps=TINY_STEPS, guidance=7.5, size=TINY_SIZE, seed=seed,
                              batch_size=8, dataset_name=DEMO_GENERATED_DATASET)
    job_id = submit_generation(config, created_by=created_by, settings=settings)
    _mark_job(settings, job_id)
    return job_id


def _queue_training(settings: Settings, keys: list[str], epochs: int, seed: int,
                    created_by: str | None) -> tuple[list[int], int]:
    from core.training.data import DataSpec
    from core.training.experiments import ExperimentRequest, create_runs
    from core.training.jobs import submit_training
    from core.training.models import Run
    from core.training.trainer import TrainConfig

    request = ExperimentRequest(
        data=DataSpec(mode="real", classes=keys, real_datasets=[DEMO_DATASET], split_seed=seed),
        train=TrainConfig(epochs=epochs, image_size=32, batch_size=32, patience=0, seed=seed),
        name="demo: drawn fruit")
    run_ids = create_runs(request, created_by=created_by, settings=settings)

    def mark(session) -> None:  # noqa: ANN001
        for run in session.scalars(select(Run).where(Run.id.in_(run_ids))):
            run.config = {**(run.config or {}), "demo": True}
            flag_modified(run, "config")
    run_write(mark, settings)
    job_id = submit_training(run_ids, title="Train demo: drawn fruit (real images)",
                             created_by=created_by, settings=settings)
    _mark_job(settings, job_id)
    return run_ids, job_id


def _runs_of_job(settings: Settings, job_id: int) -> list[int]:
    from core.training.models import Run

    with session_scope(settings) as session:
        return list(session.scalars(select(Run.id).where(Run.job_id == job_id).order_by(Run.id)))


def _queue_explain(settings: Settings, run_id: int, train_job: int, created_by: str | None) -> int:
    from core.explain.attribution import AttributionConfig
    from core.explain.jobs import submit_explain_job

    with session_scope(settings) as session:
        dataset_id = session.scalar(select(Dataset.id).where(Dataset.name == DEMO_DATASET))
        image_ids = []
        for demo_class in DEMO_CLASSES:
            image_ids += list(session.scalars(
                select(Image.id).join(ImageClass, Image.class_id == ImageClass.id)
                .where(Image.dataset_id == dataset_id, ImageClass.name == demo_class.key)
                .order_by(Image.id).limit(DEFAULT_EXPLAINED_PER_CLASS)))
    job_id = submit_explain_job(run_id, image_ids, AttributionConfig(method="gradcam"),
                                created_by=created_by, settings=settings, after_job=train_job)
    _mark_job(settings, job_id)
    return job_id


def wait_for_jobs(job_ids: list[int], settings: Settings | None = None, *,
                  timeout_s: float = 600.0, poll_s: float = 0.5) -> dict[int, str]:
    """Wait until every job has finished (or ``timeout_s`` passed); id -> final status."""
    from core.jobs import FINAL_STATUSES, get_job

    deadline = time.monotonic() + timeout_s
    statuses: dict[int, str] = {}
    while True:
        for job_id in job_ids:
            job = get_job(job_id, settings)
            statuses[job_id] = job.status if job is not None else "missing"
        if all(s in (*FINAL_STATUSES, "missing") for s in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            return statuses
        time.sleep(poll_s)

