"""Quiz tables: rounds, the images each round shows, answers, and the machine judge's runs.

A round's images are known to the browser only by random tokens; the mapping from token to
image, and which one is real, stays here. ``quiz_answers.round_id`` is unique, so a round
is answered once even when several requests race to answer it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db.models import Base, utcnow

MODE_PAIR, MODE_QUAD, MODE_SINGLE = "pair", "quad", "single"
MODES = (MODE_PAIR, MODE_QUAD, MODE_SINGLE)
VIEW_ORIGINAL, VIEW_MODEL = "original", "model"
VIEWS = (VIEW_ORIGINAL, VIEW_MODEL)


class QuizRound(Base):
    __tablename__ = "quiz_rounds"
    __table_args__ = (Index("ix_quiz_rounds_player", "player", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    player: Mapped[str] = mapped_column(String(120))
    mode: Mapped[str] = mapped_column(String(16))
    view: Mapped[str] = mapped_column(String(16), default=VIEW_ORIGINAL)
    # The preprocessing setting, as statistics group it: "original" or the pipelines used.
    view_label: Mapped[str] = mapped_column(String(300), default=VIEW_ORIGINAL)
    # view "model": the pipeline specs per source, kept so the round renders the same later
    # even if a preset is edited.
    pipelines: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id"))
    # The synthetic images' model (one per round, so per-model statistics are clean);
    # None only for a single-image round that shows a real image.
    model: Mapped[str | None] = mapped_column(String(300), default=None)
    # What the player asked for (None: any); kept so "next round" can repeat the choice.
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seed: Mapped[int] = mapped_column(Integer)
    served_format: Mapped[str] = mapped_column(String(8))
    served_px: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    images: Mapped[list["QuizRoundImage"]] = relationship(
        back_populates="round", order_by="QuizRoundImage.position", cascade="all, delete-orphan")
    answer: Mapped["QuizAnswer | None"] = relationship(back_populates="round", uselist=False)


class QuizRoundImage(Base):
    __tablename__ = "quiz_round_images"
    __table_args__ = (UniqueConstraint("round_id", "position", name="uq_quiz_round_position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("quiz_rounds.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    # NULL once the image is deleted from the index: the answers and statistics stay.
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"),
                                                 index=True)
    is_real: Mapped[bool] = mapped_column(Boolean)

    round: Mapped[QuizRound] = relationship(back_populates="images")


class QuizAnswer(Base):
    __tablename__ = "quiz_answers"
    __table_args__ = (Index("ix_quiz_answers_player", "player", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("quiz_rounds.id", ondelete="CASCADE"),
                                          unique=True)
    player: Mapped[str] = mapped_column(String(120))
    # pair/quad: the position the player called real; single: None.
    chosen_position: Mapped[int | None] = mapped_column(Integer, default=None)
    # single: "real" or "synthetic"; pair/quad: None.
    guess: Mapped[str | None] = mapped_column(String(16), default=None)
    correct: Mapped[bool] = mapped_column(Boolean)
    # The player took a synthetic image for real (None when no synthetic image was shown).
    fooled: Mapped[bool | None] = mapped_column(Boolean, default=None)
    seconds_to_answer: Mapped[float] = mapped_column(Float)
    answered_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    round: Mapped[QuizRound] = relationship(back_populates="answer")


class QuizJudgeRun(Base):
    """One training of the machine judge and its verdicts on the answered rounds."""

    __tablename__ = "quiz_judge_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"),
                                               unique=True, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    n_train_images: Mapped[int] = mapped_column(Integer, default=0)
    n_rounds: Mapped[int] = mapped_column(Integer, default=0)
    accuracy: Mapped[float | None] = mapped_column(Float, default=None)

    verdicts: Mapped[list["QuizJudgeVerdict"]] = relationship(
        back_populates="run", cascade="all, delete-orphan")


class QuizJudgeVerdict(Base):
    __tablename__ = "quiz_judge_verdicts"
    __table_args__ = (UniqueConstraint("run_id", "round_id", name="uq_quiz_judge_verdict"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("quiz_judge_runs.id", ondelete="CASCADE"), index=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("quiz_rounds.id", ondelete="CASCADE"))
    chosen_position: Mapped[int | None] = mapped_column(Integer, default=None)
    guess: Mapped[str | None] = mapped_column(String(16), default=None)
    correct: Mapped[bool] = mapped_column(Boolean)
    fooled: Mapped[bool | None] = mapped_column(Boolean, default=None)

    run: Mapped[QuizJudgeRun] = relationship(back_populates="verdicts")
