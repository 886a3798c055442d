"""Experiments: create runs (single, repeated over seeds, data-efficiency sweeps), execute
one run end to end (``core.training.execution``), and aggregate results.

A run is a row in ``training_runs`` created before anything trains (so it shows up as
queued), executed by ``execute_run`` (from a worker job or the CLI), which is resumable:
it re-plans the same data (all choices are seeded), reloads the last checkpoint and
continues. The trained model file is written before the row says ``done``.
"""

from __future__ import annotations

import json
import math
import numbers
import shutil
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select

from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.db.models import utcnow
from core.training.checkpoint import run_dir
from core.training.data import DataSpec, ExperimentData, plan_experiment
from core.training.metrics import aggregate
from core.training.models import (RUN_CANCELLED, RUN_DONE, RUN_FAILED, RUN_QUEUED, RUN_RUNNING, Run,
                                  RunImage)
from core.training.trainer import TrainConfig

DEFAULT_SWEEP_LEVELS: tuple[int | None, ...] = (5, 10, 25, 50, None)  # None: all real images
# A request's seeds: ``repeats`` runs with seeds ``seed`` .. ``seed + repeats - 1``.
REPEATS_MAX = 20
SEED_MAX = 2**31 - 1



@dataclass
class ExperimentRequest:
    """What a user asks for: one experiment, optionally repeated and/or swept."""

    data: DataSpec = field(default_factory=DataSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    repeats: int = 1  # seeds train.seed, train.seed + 1, ...
    name: str = ""
    # Data-efficiency sweep: real images per class levels, each trained with real data only
    # and with ``sweep_synthetic_per_class`` synthetic images per class added.
    sweep_levels: list[int | None] | None = None
    sweep_synthetic_per_class: int = 50
    # The named protocol the options came from (core.training.protocols), for the record.
    protocol: str | None = None

    def __post_init__(self) -> None:
        # The Train page's bounds (its inputs use these constants): every new request, from
        # the page, the CLI or a recipe, is held to them.
        self.train.check_limits()
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, numbers.Integral) \
                or not 1 <= self.repeats <= REPEATS_MAX:
            raise ValueError(f"repeats must be a whole number from 1 to {REPEATS_MAX}, "
                             f"not {self.repeats!r}")
        if self.train.seed > SEED_MAX:
            raise ValueError(f"seed must be a whole number from 0 to {SEED_MAX}, "
                             f"not {self.train.seed!r}")


def _run_name(request: ExperimentRequest, data: DataSpec, seed: int) -> str:
    base = request.name or f"{data.mode} {request.train.model}"
    extra = []
    if data.real_per_class is not None:
        extra.append(f"{data.real_per_class} real/class")
    if data.mode == "mixed":
        extra.append("half of each set" if data.mix_half
                     else f"+{data.synthetic_per_class} synth/class" if data.synthetic_per_class is not None
                     else f"mix {data.mix_ratio}")
    return " ".join([base, *(f"[{e}]" for e in extra), f"seed {seed}"])


def expand_request(request: ExperimentRequest) -> list[tuple[DataSpec, TrainConfig]]:
    """Every (data, train config) pair the request stands for, in execution order."""
    variants: list[DataSpec] = []
    if request.sweep_levels:
        for level in request.sweep_levels:
            base = request.data.to_dict()
            variants.append(DataSpec.from_dict({**base, "mode": "real", "real_per_class": level,
                                                "synthetic_per_class": None, "mix_ratio": None}))
            variants.append(DataSpec.from_dict({**base, "mode": "mixed", "real_per_class": level,
                                                "synthetic_per_class": request.sweep_synthetic_per_class,
                                                "mix_ratio": None}))
    else:
        variants.append(request.data)
    out = []
    for data in variants:
        for repeat in range(request.repeats):
            train = TrainConfig.from_dict({**request.train.to_dict(), "seed": request.train.seed + repeat})
            # Subsampling follows the training seed so repeats also vary which images are kept;
            # the test split stays fixed (split_seed) so every run is tested on the same images.
            out.append((DataSpec.from_dict({**data.to_dict(), "subsample_seed": train.seed}), train))
    return out


def create_runs(request: ExperimentRequest | list[ExperimentRequest], *,
                created_by: str | None = None, settings: Settings | None = None,
                validate: bool = True, group_kind: str | None = None,
                group_name: str | None = None,
                plans: dict[int, tuple[DataSpec, TrainConfig, ExperimentData]] | None = None,
                ) -> list[int]:
    """Insert queued runs for the request(s) (validating the data first) and return their
    ids. Several requests (a recipe such as ``reproduce original``) make one group.

    ``plans``: filled with ``run id -> what plan_for_run would return now`` for the runs
    whose data the validation planned, so a caller that trains them at once (the CLI) does
    not plan them again (1 to 2 s at 4,400 images)."""
    settings = settings or get_settings()
    requests = request if isinstance(request, list) else [request]
    planned = [(req, data, train) for req in requests for data, train in expand_request(req)]
    validated: dict[str, ExperimentData] = {}
    if validate:
        for req in requests:
            for data, _ in expand_request(req)[:: max(1, req.repeats)]:
                # raises DataError with a clear message
                validated[_spec_key(data)] = plan_experiment(data, settings)
    grouped = len(planned) > 1
    group_id = uuid.uuid4().hex[:12] if grouped else None
    if grouped and group_kind is None:
        group_kind = "sweep" if any(r.sweep_levels for r in requests) else "repeat"

    def write(session) -> list[int]:  # noqa: ANN001
        ids = []
        for req, data, train in planned:
            config = {"data": data.to_dict(), "train": train.to_dict(), "protocol": req.protocol,
                      "sweep_synthetic_per_class": req.sweep_synthetic_per_class
                      if req.sweep_levels else None}
            if group_name:
                config["group_name"] = group_name
            run = Run(name=_run_name(req, data, train.seed)[:300], mode=data.mode,
                      model_name=train.model, config=config,
                      seeds={"train": train.seed, "split": data.split_seed,
                             "subsample": data.subsample_seed, "augment": train.seed,
                             "bootstrap": train.seed},
                      group_id=group_id, group_kind=group_kind if grouped else None,
                      status=RUN_QUEUED, history=[], class_names=[], created_by=created_by)
            session.add(run)
            session.flush()
            ids.append(run.id)
        return ids
    run_ids = run_write(write, settings)
    if plans is not None:
        for run_id, (_, data, train) in zip(run_ids, planned):
            key = _spec_key(data)
            if key in validated:
                # As plan_for_run reads them back from the run's JSON config.
                plans[run_id] = (DataSpec.from_dict(json.loads(key)),
                                 TrainConfig.from_dict(json.loads(json.dumps(train.to_dict()))),
                                 validated[key])
    return run_ids


def _spec_key(data: DataSpec) -> str:
    return json.dumps(data.to_dict(), sort_keys=True)


def attach_job(run_ids: list[int], job_id: int, settings: Settings | None = None) -> None:
    def write(session) -> None:  # noqa: ANN001
        for run in session.scalars(select(Run).where(Run.id.in_(run_ids))):
            run.job_id = job_id
    run_write(write, settings)


def get_run(run_id: int, settings: Settings | None = None) -> Run | None:
    with session_scope(settings) as session:
        return session.get(Run, run_id)


def list_runs(*, statuses: tuple[str, ...] | None = None, group_id: str | None = None,
              ids: list[int] | None = None, limit: int = 200,
              settings: Settings | None = None) -> list[Run]:
    with session_scope(settings) as session:
        query = select(Run).order_by(Run.id.desc()).limit(limit)
        if statuses:
            query = query.where(Run.status.in_(statuses))
        if group_id:
            query = query.where(Run.group_id == group_id)
        if ids is not None:
            query = query.where(Run.id.in_(ids))
        return list(session.scalars(query))


def run_images(run_id: int, role: str | None = None, settings: Settings | None = None) -> list[RunImage]:
    with session_scope(settings) as session:
        query = select(RunImage).where(RunImage.run_id == run_id).order_by(RunImage.id)
        if role:
            query = query.where(RunImage.role == role)
        return list(session.scalars(query))


def json_safe(value: Any) -> Any:
    """NaN and infinities become None: PostgreSQL's JSON (unlike SQLite's) refuses them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _update_run(run_id: int, settings: Settings, **values: Any) -> None:
    def write(session) -> None:  # noqa: ANN001
        run = session.get(Run, run_id)
        if run is not None:
            for key, value in values.items():
                setattr(run, key, json_safe(value))
    run_write(write, settings)


def mark_runs(run_ids: list[int], status: str, settings: Settings, error: str | None = None,
              only_unfinished: bool = True) -> None:
    def write(session) -> None:  # noqa: ANN001
        for run in session.scalars(select(Run).where(Run.id.in_(run_ids))):
            if only_unfinished and run.status in (RUN_DONE, RUN_FAILED, RUN_CANCELLED):
                continue
            run.status = status
            run.error = error
            run.finished_at = utcnow()
    run_write(write, settings)


def reconcile_runs(settings: Settings | None = None) -> int:
    """Runs left queued/running by a job that ended (failed, cancelled, gave up after
    repeated crashes) take the job's final status, so no run looks alive forever."""
    from core.db.models import Job
    from core.jobs import FINAL_STATUSES

    settings = settings or get_settings()
    orphaned = (select(Run, Job).join(Job, Run.job_id == Job.id)
                .where(Run.status.in_((RUN_QUEUED, RUN_RUNNING)), Job.status.in_(FINAL_STATUSES)))
    # A cheap read first: pages call this every few seconds and must not take the write lock.
    with session_scope(settings) as session:
        if session.execute(orphaned.limit(1)).first() is None:
            return 0

    def write(session) -> int:  # noqa: ANN001
        rows = session.execute(orphaned).all()
        for run, job in rows:
            run.status = RUN_CANCELLED if job.status == "cancelled" else RUN_FAILED
            run.error = run.error or job.error or f"its job {job.id} ended ({job.status})"
            run.finished_at = utcnow()
        return len(rows)
    return run_write(write, settings)


def _record_roles(run_id: int, data: ExperimentData, settings: Settings) -> None:
    def write(session) -> None:  # noqa: ANN001
        session.execute(delete(RunImage).where(RunImage.run_id == run_id))
        # One executemany, not an ORM object per image (2.6 s for 1,200 images under load).
        rows = [{"run_id": run_id, "image_id": r.id, "role": role, "label": r.label}
                for role, records in data.roles.items() for r in records]
        if rows:
            session.execute(insert(RunImage), rows)
    run_write(write, settings)


def plan_for_run(run: Run, settings: Settings) -> tuple[DataSpec, TrainConfig, ExperimentData]:
    """The run's data: as recorded when it first started (so a resumed run trains on the
    same images even if the index changed since), else planned now."""
    data_spec = DataSpec.from_dict(run.config["data"])
    train = TrainConfig.from_dict(run.config["train"])
    recorded = _recorded_data(run, data_spec, settings)
    return data_spec, train, recorded or plan_experiment(data_spec, settings)


def _recorded_data(run: Run, spec: DataSpec, settings: Settings) -> ExperimentData | None:
    if not run.class_names:
        return None
    from core.db.models import Image
    from core.training.data import ImageRecord, check_no_leakage, family_key

    with session_scope(settings) as session:
        rows = session.execute(select(RunImage, Image).join(Image, RunImage.image_id == Image.id)
                               .where(RunImage.run_id == run.id).order_by(RunImage.id)).all()
        roles: dict[str, list[ImageRecord]] = {}
        for link, image in rows:
            roles.setdefault(link.role, []).append(ImageRecord(
                image.id, image.sha256, image.path, link.label, image.source, image.dataset.name,
                family_key(image)))
    if not rows:
        return None
    data = ExperimentData(spec, list(run.class_names), roles,
                          list(run.config.get("notes", [])) + ["resumed with the recorded split"])
    check_no_leakage(data)
    return data


def delete_run(run_id: int, settings: Settings | None = None) -> None:
    """Remove a finished run: row first (so nothing points at a deleted file), then files."""
    settings = settings or get_settings()

    def write(session) -> None:  # noqa: ANN001
        run = session.get(Run, run_id)
        if run is None:
            raise ValueError(f"no run with id {run_id}")
        if run.status in (RUN_QUEUED, RUN_RUNNING):
            raise ValueError(f"run {run_id} is {run.status}; cancel its job first")
        session.execute(delete(RunImage).where(RunImage.run_id == run_id))
        session.delete(run)
    run_write(write, settings)
    shutil.rmtree(run_dir(settings, run_id), ignore_errors=True)


# --- aggregation -----------------------------------------------------------------------

# Stored metric keys (precision, recall and f1 are macro averages) and the names every
# output gives them, so macro and weighted averages are never read one for the other.
LABELLED_METRICS = {"accuracy": "accuracy", "precision": "precision_macro", "recall": "recall_macro",
                    "f1": "f1_macro", "precision_weighted": "precision_weighted",
                    "recall_weighted": "recall_weighted", "f1_weighted": "f1_weighted",
                    "roc_auc": "roc_auc"}


def labelled(metrics: dict[str, Any] | None, eval_set: str = "real_test") -> dict[str, Any]:
    """An eval set's headline metrics under their labelled names, with its size and its
    bootstrap intervals."""
    values = (metrics or {}).get(eval_set) or {}
    out: dict[str, Any] = {"n": values.get("n")}
    out.update({label: values.get(key) for key, label in LABELLED_METRICS.items()})
    if values.get("ci95"):
        out["ci95"] = {LABELLED_METRICS[k]: v for k, v in values["ci95"].items() if k in LABELLED_METRICS}
    return out


def summarize(runs: list[Run]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Mean and std of every metric, per evaluation set, over the finished runs given."""
    per_set: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        if run.status != RUN_DONE or not run.metrics:
            continue
        for eval_set, values in run.metrics.items():
            if not eval_set.startswith("_"):
                per_set[eval_set].append(values)
    return {eval_set: aggregate(values) for eval_set, values in per_set.items()}


def variant_key(run: Run) -> tuple:
    """Runs that differ only by seed share this key."""
    data = dict(run.config.get("data", {}))
    train = dict(run.config.get("train", {}))
    data.pop("subsample_seed", None)
    train.pop("seed", None)
    return (run.mode, repr(sorted(data.items())), repr(sorted(train.items())))


def group_by_variant(runs: list[Run]) -> list[list[Run]]:
    groups: dict[tuple, list[Run]] = {}
    for run in sorted(runs, key=lambda r: r.id):
        groups.setdefault(variant_key(run), []).append(run)
    return list(groups.values())


def data_efficiency(runs: list[Run], metric: str = "accuracy") -> list[dict[str, Any]]:
    """Rows of the key plot: real images per class vs the real-test metric, per variant."""
    points: dict[tuple, list[float]] = defaultdict(list)
    real_counts: dict[tuple, list[int]] = defaultdict(list)
    for run in runs:
        if run.status != RUN_DONE or not run.metrics or "real_test" not in run.metrics:
            continue
        data = run.config.get("data", {})
        synthetic = data.get("synthetic_per_class") if run.mode == "mixed" else 0
        level = data.get("real_per_class")
        key = (run.mode, synthetic or 0, level)
        value = run.metrics["real_test"].get(metric)
        if value is not None:
            points[key].append(float(value))
            counts = run.counts or {}
            n_classes = max(1, len(run.class_names or []))
            real_counts[key].append(int(round(counts.get("train_real", 0) / n_classes)))
    rows = []
    for (mode, synthetic, level), values in points.items():
        rows.append({"series": "real only" if mode == "real" else f"real + {synthetic} synthetic/class",
                     "mode": mode, "synthetic_per_class": synthetic,
                     "real_per_class": level if level is not None else "all",
                     "real_per_class_actual": float(np.mean(real_counts[(mode, synthetic, level)])),
                     metric: float(np.mean(values)),
                     "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                     "n_runs": len(values)})
    return sorted(rows, key=lambda r: (r["series"], r["real_per_class_actual"]))


# Executing one run lives in core.training.execution (local and on Ray), which imports
# this module; its names are still found here, looked up when first asked for.
_EXECUTION_NAMES = ("execute_run", "training_pixels", "training_units", "ProgressCallback",
                    "StageCallback", "STAGE_EVALUATING")


def __getattr__(name: str) -> Any:  # noqa: ANN401
    if name in _EXECUTION_NAMES:
        from core.training import execution

        return getattr(execution, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
