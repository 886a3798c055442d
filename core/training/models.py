"""Tables of the training area: experiment runs and which images each run used where."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models import Base, utcnow

RUN_QUEUED, RUN_RUNNING, RUN_DONE, RUN_FAILED, RUN_CANCELLED = (
    "queued", "running", "done", "failed", "cancelled")


class Run(Base):
    """One training run: a model trained once with one seed, then evaluated.

    ``group_id`` ties together the runs of one "repeat with N seeds" or one
    data-efficiency sweep (``group_kind``), so results can be aggregated.
    """

    __tablename__ = "training_runs"
    __table_args__ = (Index("ix_training_runs_group", "group_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"),
                                               default=None, index=True)
    name: Mapped[str] = mapped_column(String(300))
    mode: Mapped[str] = mapped_column(String(40))  # real | synthetic | mixed | pretrain-finetune
    model_name: Mapped[str] = mapped_column(String(40), default="small")
    # The whole experiment: data selection, TrainConfig, preprocessing pipelines.
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Every random step's seed: training, data split, subsampling, augmentation.
    seeds: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    group_id: Mapped[str | None] = mapped_column(String(64), default=None)
    group_kind: Mapped[str | None] = mapped_column(String(20), default=None)  # repeat | sweep
    status: Mapped[str] = mapped_column(String(20), default=RUN_QUEUED, index=True)
    # Per-epoch list of {"epoch", "phase", "loss", "acc", "val_loss", "val_acc", "seconds"}.
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # {"real_test": {...}, "synthetic_test": {...}, "cross:<dataset>": {...}}
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Per eval set: ROC and PR curves per class, confusion matrices, per-class report.
    curves: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # images per role
    class_names: Mapped[list[Any]] = mapped_column(JSON, default=list)
    checkpoint_path: Mapped[str | None] = mapped_column(Text, default=None)  # relative to runs_dir
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[str | None] = mapped_column(String(120), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, default=None)


class RunImage(Base):
    """Which image a run used, and in which role (train, val, real_test, ...)."""

    __tablename__ = "training_run_images"
    __table_args__ = (Index("ix_training_run_images_role", "run_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(60))
    label: Mapped[int] = mapped_column(Integer)  # index into the run's class_names
