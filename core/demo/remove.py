"""Remove the demo in one action: exactly what ``core.demo.build`` marked, nothing else.

Order: stop the demo's jobs (a queued one is cancelled at once; a running one is asked to
stop and waited for), then delete rows before files (the DB never points at a missing
file; a crash in between leaves orphan files that ``check --repair`` removes), then the
model folder and the manifest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, or_, select

from core.config import Settings, get_settings
from core.db.engine import init_db, run_write, session_scope
from core.db.models import Dataset, Image, ImageClass, Job
from core.demo.build import (DEMO_GENERATED_DATASET, DEMO_MARK, DemoError, demo_job_ids,
                             manifest_path, model_dir, read_manifest)

DELETE_CHUNK = 500


@dataclass
class RemovalReport:
    images: int = 0
    datasets: int = 0
    classes: int = 0
    jobs: int = 0
    runs: int = 0
    attributions: int = 0
    model_removed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        return (f"removed {self.images} images, {self.datasets} datasets, {self.classes} "
                f"classes, {self.jobs} jobs, {self.runs} training runs, {self.attributions} "
                f"attributions" + (" and the demo model" if self.model_removed else ""))


def remove_demo(settings: Settings | None = None, *, by: Any = None,
                wait_s: float = 60.0) -> RemovalReport:
    """Remove everything the demo added (see the module docstring).

    ``by`` is a name (CLI: trusted) or a ``core.users.identity.Identity`` (pages): with
    sign-in on, only whoever built the demo or an admin may remove it, checked before
    anything is touched (``PermissionDenied``, audited).
    """
    settings = settings or get_settings()
    init_db(settings)
    manifest = read_manifest(settings)
    report = RemovalReport()
    _require_right(settings, manifest, by)
    job_ids: list[int] = []
    while True:  # again if a demo build that was still running queued more jobs meanwhile
        found = sorted(set(demo_job_ids(settings)) | _existing_jobs(settings, manifest["jobs"]))
        if found == job_ids:
            break
        job_ids = found
        _stop_jobs(settings, job_ids, by=by, wait_s=wait_s)
        manifest = read_manifest(settings)

    run_ids = _demo_runs(settings, manifest, job_ids)
    report.runs, report.attributions = _delete_runs(settings, run_ids)
    dataset_ids = _demo_datasets(settings, manifest, job_ids)
    report.images, shas = _delete_images(settings, dataset_ids, job_ids, by=by)
    _prune_preprocess_cache(settings, shas)
    report.jobs = _delete_rows(settings, Job, job_ids)
    report.datasets = _delete_empty_datasets(settings, dataset_ids)
    report.classes = _delete_empty_classes(settings, manifest["classes"])
    report.model_removed = _remove_model(settings, manifest)
    manifest_path(settings).unlink(missing_ok=True)
    return report


def _require_right(settings: Settings, manifest: dict[str, Any], by: Any) -> None:
    from core.users.identity import Identity
    from core.users.permissions import refusals_audited, require_current

    if not isinstance(by, Identity):
        return
    job_ids = set(demo_job_ids(settings)) | set(manifest["jobs"])
    with refusals_audited(settings), session_scope(settings) as session:
        owners = set(session.scalars(select(Job.created_by).where(Job.id.in_(job_ids)))) \
            if job_ids else set()
        dataset_ids = [d for d in session.scalars(select(Dataset.id).where(
            or_(Dataset.notes == DEMO_MARK, Dataset.id.in_(manifest["datasets"]))))]
        if dataset_ids:
            owners |= set(session.scalars(select(Image.added_by)
                                          .where(Image.dataset_id.in_(dataset_ids)).distinct()))
        for owner in sorted(owners, key=str):
            require_current(by, owner, "delete", f"the demo added by {owner or 'nobody'}",
                            session=session)


def _existing_jobs(settings: Settings, ids: list[int]) -> set[int]:
    with session_scope(settings) as session:
        return set(session.scalars(select(Job.id).where(Job.id.in_(ids)))) if ids else set()


def _stop_jobs(settings: Settings, job_ids: list[int], *, by: str | None, wait_s: float) -> None:
    from core.jobs import FINAL_STATUSES, RUNNING, get_job, request_cancel

    for job_id in job_ids:
        request_cancel(job_id, by=by or "demo removal", settings=settings)
    deadline = time.monotonic() + wait_s
    while True:
        running = [job_id for job_id in job_ids
                   if (job := get_job(job_id, settings)) is not None
                   and job.status not in FINAL_STATUSES]
        if not running:
            return
        if time.monotonic() > deadline:
            states = ", ".join(f"#{i} {getattr(get_job(i, settings), 'status', RUNNING)}"
                               for i in running)
            raise DemoError(f"the demo's jobs are still running ({states}); they were asked to "
                            "stop: try again in a moment (is a worker running?)")
        time.sleep(0.5)


def _demo_runs(settings: Settings, manifest: dict[str, Any], job_ids: list[int]) -> list[int]:
    from core.training.models import Run

    with session_scope(settings) as session:
        found = set()
        for run_id, job_id, config in session.execute(select(Run.id, Run.job_id, Run.config)):
            if (run_id in manifest["runs"] or job_id in job_ids
                    or (isinstance(config, dict) and config.get("demo") is True)):
                found.add(run_id)
        return sorted(found)


def _delete_runs(settings: Settings, run_ids: list[int]) -> tuple[int, int]:
    """Delete the runs with their image roles and attributions; rows first, then files."""
    from core.explain.models import Attribution
    from core.explain.service import attributions_dir
    from core.training.checkpoint import run_dir
    from core.training.models import Run, RunImage

    if not run_ids:
        return 0, 0

    def write(session) -> list[str]:  # noqa: ANN001
        paths = list(session.scalars(select(Attribution.path)
                                     .where(Attribution.run_id.in_(run_ids))))
        session.execute(delete(Attribution).where(Attribution.run_id.in_(run_ids)))
        session.execute(delete(RunImage).where(RunImage.run_id.in_(run_ids)))
        session.execute(delete(Run).where(Run.id.in_(run_ids)))
        return paths
    paths = run_write(write, settings)
    folder = attributions_dir(settings)
    for relpath in paths:
        _unlink_inside(folder, relpath)
    for run_id in run_ids:
        shutil.rmtree(run_dir(settings, run_id), ignore_errors=True)
    return len(run_ids), len(paths)


def _unlink_inside(folder: Path, relpath: str) -> None:
    path = (folder / relpath).resolve()
    if folder.resolve() in path.parents:
        path.unlink(missing_ok=True)


def _demo_datasets(settings: Settings, manifest: dict[str, Any], job_ids: list[int]) -> list[int]:
    """The drawn dataset(s) (marked) and the demo generation job's dataset (its origin
    names the job)."""
    origins = tuple(f"job {job_id}:" for job_id in job_ids)
    with session_scope(settings) as session:
        found = set()
        for dataset in session.scalars(select(Dataset)):
            if dataset.notes == DEMO_MARK or dataset.id in manifest["datasets"]:
                found.add(dataset.id)
            elif dataset.name == DEMO_GENERATED_DATASET and (dataset.origin or "").startswith(origins or ("\0",)):
                found.add(dataset.id)
        return sorted(found)


def _delete_images(settings: Settings, dataset_ids: list[int], job_ids: list[int], *,
                   by: str | None) -> tuple[int, set[str]]:
    """Delete the demo's images (rows, then files); (how many, their hashes)."""
    from core.gallery import delete_images

    with session_scope(settings) as session:
        conditions = []
        if dataset_ids:
            conditions.append(Image.dataset_id.in_(dataset_ids))
        if job_ids:
            conditions.append(Image.job_id.in_(job_ids))
        if not conditions:
            return 0, set()
        rows = list(session.execute(select(Image.id, Image.sha256).where(or_(*conditions))))
    image_ids = [image_id for image_id, _ in rows]
    deleted = 0
    for start in range(0, len(image_ids), DELETE_CHUNK):
        deleted += delete_images(image_ids[start:start + DELETE_CHUNK], actor=by,
                                 settings=settings)
    return deleted, {sha for _, sha in rows}


def _prune_preprocess_cache(settings: Settings, shas: set[str]) -> None:
    """Drop the preprocessing cache's shards that hold only the demo's images (a shard
    shared with other images stays: it is a cache, and rebuilt shards would be the same)."""
    from core.preprocess.cache import _file_lock

    root = settings.cache_dir / "preprocess"
    if not shas or not root.is_dir():
        return
    with session_scope(settings) as session:  # an identical image someone else indexed
        still_indexed = set(session.scalars(select(Image.sha256).where(Image.sha256.in_(list(shas)))))
    shas = shas - still_indexed
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        with _file_lock(folder / ".build.lock"):
            for index_file in sorted(folder.glob("shard-*.json")):
                try:
                    items = json.loads(index_file.read_text())["items"]
                except (OSError, ValueError, KeyError):
                    continue
                if items and all(item[0] in shas for item in items):
                    index_file.unlink(missing_ok=True)  # the index first: the shard turns invisible
                    index_file.with_suffix(".npy").unlink(missing_ok=True)
            empty = not any(folder.glob("shard-*.json"))
        if empty:
            trash = root / f".trash-{folder.name}-{os.getpid()}"
            with contextlib.suppress(OSError):
                os.replace(folder, trash)
                shutil.rmtree(trash, ignore_errors=True)


def _delete_rows(settings: Settings, model: type, ids: list[int]) -> int:
    if not ids:
        return 0

    def write(session) -> int:  # noqa: ANN001
        return session.execute(delete(model).where(model.id.in_(ids))).rowcount or 0
    return run_write(write, settings)


def _delete_empty_datasets(settings: Settings, dataset_ids: list[int]) -> int:
    def write(session) -> int:  # noqa: ANN001
        removed = 0
        for dataset_id in dataset_ids:
            if session.scalar(select(func.count(Image.id)).where(Image.dataset_id == dataset_id)):
                continue  # someone's images were added to it: keep it
            removed += session.execute(delete(Dataset).where(Dataset.id == dataset_id)).rowcount or 0
        return removed
    return run_write(write, settings)


def _delete_empty_classes(settings: Settings, class_ids: list[int]) -> int:
    """The classes the demo created, once no image is in them; quiz rounds played on them
    (demo images only) go with them."""
    from core.quiz.models import QuizRound

    def write(session) -> int:  # noqa: ANN001
        removed = 0
        for class_id in class_ids:
            if session.get(ImageClass, class_id) is None or session.scalar(
                    select(func.count(Image.id)).where(Image.class_id == class_id)):
                continue
            session.execute(delete(QuizRound).where(QuizRound.class_id == class_id))
            removed += session.execute(delete(ImageClass).where(ImageClass.id == class_id)).rowcount or 0
        return removed
    return run_write(write, settings)


def _remove_model(settings: Settings, manifest: dict[str, Any]) -> bool:
    from core.generation.models import CustomModel

    folder = model_dir(settings)
    sources = {str(folder), str(folder.resolve())}
    if manifest.get("model_dir"):
        sources.add(str(manifest["model_dir"]))

    def write(session) -> None:  # noqa: ANN001
        session.execute(delete(CustomModel).where(CustomModel.source.in_(sources)))
    run_write(write, settings)
    if folder.is_dir():
        shutil.rmtree(folder)
        return True
    return False
