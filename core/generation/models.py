"""Tables of the generation capability (migration 0002_generation)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models import Base, utcnow


class ClassPromptConfig(Base):
    """How a class is prompted; the Generate page loads and saves it, jobs snapshot it."""

    __tablename__ = "generation_prompt_configs"

    id: Mapped[int] = mapped_column(primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"), unique=True)
    templates: Mapped[list[Any]] = mapped_column(JSON, default=list)
    slots: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    mode: Mapped[str] = mapped_column(String(20), default="combinations")
    updated_by: Mapped[str | None] = mapped_column(String(120), default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class GenerationItem(Base):
    """Image ``gen_index`` of a class in a job, stored as ``image_id``.

    The resume key: a (job, class, index) row exists only once its image is in the store,
    written in the same transaction as the image row. Kept apart from ``images`` because a
    re-run of a job makes pixel-identical images that the store deduplicates.
    """

    __tablename__ = "generation_items"
    __table_args__ = (UniqueConstraint("job_id", "class_id", "gen_index", name="uq_generation_item"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"))
    gen_index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)


class CustomModel(Base):
    """A model id or folder a user added to the model list."""

    __tablename__ = "generation_custom_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(500), unique=True)
    label: Mapped[str | None] = mapped_column(String(200), default=None)
    added_by: Mapped[str | None] = mapped_column(String(120), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
