"""SQLAlchemy 2 ORM models of the foundation: users, datasets, classes, images, jobs.

Later capabilities keep their tables in their own modules (``core/<area>/models.py``)
on the same ``Base`` and add an Alembic migration of their own under
``core/db/migrations/versions``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


SOURCE_REAL = "real"
SOURCE_SYNTHETIC = "synthetic"
SOURCES = (SOURCE_REAL, SOURCE_SYNTHETIC)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Dataset(Base):
    """A named source of images: one import of real images, or one generation job."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(String(16), default=SOURCE_REAL)
    origin: Mapped[str | None] = mapped_column(Text, default=None)  # path, hub id or job
    layout: Mapped[str | None] = mapped_column(String(40), default=None)
    created_by: Mapped[str | None] = mapped_column(String(120), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    notes: Mapped[str | None] = mapped_column(Text, default=None)


class ImageClass(Base):
    """A label. ``name`` is the stable key (``bell_pepper``); the others are editable."""

    __tablename__ = "classes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    prompt_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Job(Base):
    """A background job (generation, training, attribution, ...) run by a worker process."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True, default="queued")
    title: Mapped[str | None] = mapped_column(String(300), default=None)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_by: Mapped[str | None] = mapped_column(String(120), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, default=None)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime, default=None)
    worker_id: Mapped[str | None] = mapped_column(String(120), default=None)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    # What progress counts ("images", "files", "samples"...), shown beside the numbers.
    progress_unit: Mapped[str | None] = mapped_column(String(24), default=None)
    rate: Mapped[float | None] = mapped_column(Float, default=None)  # units per second
    message: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    events: Mapped[list["JobEvent"]] = relationship(back_populates="job", cascade="all, delete-orphan",
                                                    order_by="JobEvent.id")


class JobEvent(Base):
    """One line of a job's log (append-only, so the worker never rewrites a big text)."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(10), default="info")
    message: Mapped[str] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="events")


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("sha256", name="uq_images_sha256"),
        # Each gallery filter's equality columns, then ``id``: a filtered "newest first"
        # page is read in index order and stops after LIMIT rows (migration 0011).
        Index("ix_images_excluded_id", "excluded", "id"),
        Index("ix_images_class_excluded_id", "class_id", "excluded", "id"),
        Index("ix_images_class_source_split", "class_id", "source", "split", "excluded", "id"),
        Index("ix_images_source_id", "excluded", "source", "id"),
        Index("ix_images_dataset_excluded_id", "dataset_id", "excluded", "id"),
        Index("ix_images_dataset_class", "dataset_id", "excluded", "class_id", "id"),
        Index("ix_images_job", "job_id", "gen_index"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    # Near-duplicate signatures (core.neardup): the 64-bit perceptual hash, signed so both
    # SQLite and PostgreSQL hold it, and the quarters' mean colours (24 hex digits). NULL
    # for rows indexed before they existed, until ``python -m core rehash``.
    phash: Mapped[int | None] = mapped_column(BigInteger, default=None, index=True)
    colour_sig: Mapped[str | None] = mapped_column(String(24), default=None)
    # Relative to ``Settings.images_dir`` so a data folder can be moved.
    path: Mapped[str] = mapped_column(String(300))
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id"))
    source: Mapped[str] = mapped_column(String(16), default=SOURCE_REAL)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    split: Mapped[str | None] = mapped_column(String(16), default=None)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))  # the original file's format
    original_name: Mapped[str | None] = mapped_column(Text, default=None)
    added_by: Mapped[str | None] = mapped_column(String(120), default=None)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    # Generation record (synthetic images only).
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    gen_index: Mapped[int | None] = mapped_column(Integer, default=None)
    prompt: Mapped[str | None] = mapped_column(Text, default=None)
    negative_prompt: Mapped[str | None] = mapped_column(Text, default=None)
    seed: Mapped[int | None] = mapped_column(Integer, default=None)
    model: Mapped[str | None] = mapped_column(String(300), default=None)
    scheduler: Mapped[str | None] = mapped_column(String(120), default=None)
    steps: Mapped[int | None] = mapped_column(Integer, default=None)
    guidance: Mapped[float | None] = mapped_column(Float, default=None)
    gen_width: Mapped[int | None] = mapped_column(Integer, default=None)
    gen_height: Mapped[int | None] = mapped_column(Integer, default=None)
    # Anything else worth keeping (VOC box, HF row index, ...).
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    image_class: Mapped[ImageClass] = relationship(lazy="joined")
    dataset: Mapped[Dataset] = relationship(lazy="joined")


class ImageCount(Base):
    """How many images share one (class, source, dataset, split, excluded): the gallery's
    counts, split list and per-class charts read this small table instead of counting
    images. Database triggers (migration 0011) keep it in the same transaction as every
    insert, update and delete on ``images``; nothing in Python writes it. On PostgreSQL a
    transaction's changes land at its commit, in key order (migration 0012: concurrent
    writers cannot deadlock on these rows)."""

    __tablename__ = "image_counts"

    class_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    split: Mapped[str] = mapped_column(String(16), primary_key=True)  # '' = no split
    excluded: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
