"""Table of saved preprocessing pipelines (presets), on the shared ``Base``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import DateTime, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db.models import Base, utcnow


class PreprocessPreset(Base):
    """A named pipeline spec (``Pipeline.to_dict()``); the name ``real`` or ``synthetic``
    overrides the built-in default of that name until it is deleted."""

    __tablename__ = "preprocess_presets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column()
    pipeline_hash: Mapped[str] = mapped_column(String(32))
    notes: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[str | None] = mapped_column(String(120), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(120), default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
