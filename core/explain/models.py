"""The attribution cache: one row per (run, image, method, parameters) with its map file.

The map itself is a ``.npy`` file under ``settings.cache_dir/attributions``; the row keeps
what the page lists without opening files (prediction, probabilities, margin share). The
file is written before the row, so a row never points at a missing file.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models import Base, utcnow


class Attribution(Base):
    __tablename__ = "explain_attributions"
    __table_args__ = (
        UniqueConstraint("run_id", "image_sha256", "method", "params_hash",
                         name="uq_explain_attributions_key"),
        Index("ix_explain_attributions_run", "run_id", "method", "source"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"))
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    # None for an uploaded image that is not in the index.
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"),
                                                 default=None)
    source: Mapped[str] = mapped_column(String(16))  # real | synthetic | upload
    method: Mapped[str] = mapped_column(String(40))
    # Hash of the method's key parameters and the target class (AttributionConfig.params_hash).
    params_hash: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    target: Mapped[int] = mapped_column(Integer)
    true_label: Mapped[int | None] = mapped_column(Integer, default=None)
    predicted: Mapped[int] = mapped_column(Integer)
    probabilities: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Relative to ``settings.cache_dir / "attributions"``.
    path: Mapped[str] = mapped_column(Text)
    # Letterbox content box (left, top, right, bottom) in input pixels; margins lie outside.
    content_box: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    margin_mass: Mapped[float | None] = mapped_column(Float, default=None)
    margin_area: Mapped[float | None] = mapped_column(Float, default=None)
    seconds: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
