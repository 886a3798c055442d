"""Quiz rounds: dealing a round, and finding it again.

A round shows 2 or 4 images of one class, exactly one real (``pair``/``quad``), or one
image to call real or generated (``single``). Which images: ``core.quiz.choosing``.
Tokens are random per round; only the database maps them to images. Serving the images:
``core.quiz.delivery``; answers, skips and reveals: ``core.quiz.answers``; what can be
chosen: ``core.quiz.options``. This module also re-exports their public names, so
``from core.quiz import rounds`` gives the whole game.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.db.models import ImageClass, utcnow
from core.quiz.answers import (GUESSES, SKIPPED, Reveal, RevealedImage, answer_round,
                               judge_answer, reveal_round, skip_round)
from core.quiz.choosing import IMAGES_PER_MODE, UNKNOWN_MODEL, choose_images
from core.quiz.delivery import (ServedImage, ServedRound, image_seed, round_images,
                                serve_round, served_image)
from core.quiz.errors import (MAX_PLAYER_NAME, AlreadyAnswered, QuizError,
                              check_player_name)
from core.quiz.models import (MODE_PAIR, MODES, VIEW_MODEL, VIEW_ORIGINAL, VIEWS,
                              QuizAnswer, QuizRound, QuizRoundImage)
from core.quiz.options import QuizOptions, quiz_options
from core.quiz.serving import (SERVED_FORMAT, ModelViewUnavailable, model_view_status,
                               pipelines_label, resolve_pipelines)

# The whole game under one name (pages, CLI and tests use ``rounds.<name>``).
__all__ = [
    "GUESSES", "IMAGES_PER_MODE", "MAX_PLAYER_NAME", "SKIPPED", "UNKNOWN_MODEL",
    "AlreadyAnswered", "QuizError", "QuizOptions", "Reveal", "RevealedImage", "RoundRequest",
    "RoundView", "ServedImage", "ServedRound", "answer_round", "check_player_name",
    "get_round", "image_seed", "judge_answer", "new_round", "open_round", "quiz_options",
    "reveal_round", "round_images", "serve_round", "served_image", "skip_round",
]


@dataclass
class RoundRequest:
    """What the player asked for; ``None`` filters mean "any"."""

    mode: str = MODE_PAIR
    class_name: str | None = None
    real_dataset: str | None = None
    synthetic_dataset: str | None = None
    model: str | None = None
    view: str = VIEW_ORIGINAL
    # view "model": the preprocessing presets each side goes through (as in training).
    real_pipeline: str = "real"
    synthetic_pipeline: str = "synthetic"
    seed: int | None = None  # None: drawn at random and recorded on the round

    def validate(self) -> None:
        if self.mode not in MODES:
            raise QuizError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.view not in VIEWS:
            raise QuizError(f"view must be one of {', '.join(VIEWS)}, not {self.view!r}")
        if self.view == VIEW_MODEL:
            reason = model_view_status()
            if reason:
                raise QuizError(reason)

    def filters(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("seed")
        return data


@dataclass
class RoundView:
    """A round as the player may see it before answering: tokens only."""

    token: str
    player: str
    mode: str
    view: str
    class_name: str
    class_display: str
    image_tokens: list[str]
    created_at: dt.datetime
    answered: bool  # answered with a guess (a skipped round is not)
    filters: dict[str, Any] = field(default_factory=dict)
    missing_images: bool = False  # an image was deleted since the round was dealt
    skipped: bool = False
    view_label: str = VIEW_ORIGINAL


def _view_of(session: Session, rnd: QuizRound) -> RoundView:
    image_class = session.get(ImageClass, rnd.class_id)
    guess = session.execute(select(QuizAnswer.id, QuizAnswer.guess)
                            .where(QuizAnswer.round_id == rnd.id)).first()
    skipped = guess is not None and guess.guess == SKIPPED
    return RoundView(token=rnd.token, player=rnd.player, mode=rnd.mode, view=rnd.view,
                     class_name=image_class.name,
                     class_display=image_class.display_name,
                     image_tokens=[img.token for img in sorted(rnd.images, key=lambda i: i.position)],
                     created_at=rnd.created_at, answered=guess is not None and not skipped,
                     filters=dict(rnd.filters or {}),
                     missing_images=any(img.image_id is None for img in rnd.images),
                     skipped=skipped, view_label=rnd.view_label)


def new_round(player: str, request: RoundRequest, settings: Settings | None = None) -> RoundView:
    """Choose and record a new round for ``player``; raises ``QuizError`` when none fits."""
    settings = settings or get_settings()
    player = check_player_name(player)
    request.validate()
    seed = request.seed if request.seed is not None else secrets.randbelow(2**31 - 1)
    pipelines, view_label = None, VIEW_ORIGINAL
    if request.view == VIEW_MODEL:
        try:
            pipelines = resolve_pipelines(request.real_pipeline, request.synthetic_pipeline, settings)
            view_label = pipelines_label(pipelines)
        except ModelViewUnavailable as exc:
            raise QuizError(str(exc)) from exc

    def write(session: Session) -> RoundView:
        rng = np.random.default_rng(seed)
        choice = choose_images(session, request, player, rng,
                               max_age_s=settings.quiz_census_seconds)
        positions = rng.permutation(len(choice.images))
        # The picture's resolution: the size cap, but never above the smallest image of
        # either pool, so no side is ever enlarged by resampling (a blown-up small photo
        # beside a downsized generation looks softer). It comes from both pools, not from
        # the images shown, so in single-image rounds it does not tell the source either.
        # (The model view ignores it: the model's input size is fixed.) Small pictures are
        # enlarged for display with nearest-neighbour, see core.quiz.serving.
        served_px = max(1, min(settings.quiz_image_px, choice.pool_short_side))
        rnd = QuizRound(token=secrets.token_urlsafe(18), player=player, mode=request.mode,
                        view=request.view, view_label=view_label, pipelines=pipelines,
                        class_id=choice.class_id, model=choice.model,
                        filters=request.filters(), seed=int(seed), served_format=SERVED_FORMAT,
                        served_px=served_px, created_at=utcnow())
        session.add(rnd)
        session.flush()
        for (image_id, is_real), position in zip(choice.images, positions):
            rnd.images.append(QuizRoundImage(position=int(position), image_id=image_id,
                                             is_real=is_real, token=secrets.token_urlsafe(18)))
        session.flush()
        return _view_of(session, rnd)

    return run_write(write, settings)


def get_round(round_token: str, settings: Settings | None = None) -> RoundView:
    with session_scope(settings) as session:
        rnd = session.scalar(select(QuizRound).where(QuizRound.token == round_token))
        if rnd is None:
            raise QuizError("unknown round")
        return _view_of(session, rnd)


def open_round(player: str, settings: Settings | None = None) -> RoundView | None:
    """The player's newest unanswered round (so a reload does not skip or re-deal it)."""
    player = check_player_name(player)
    with session_scope(settings) as session:
        rnd = session.scalar(
            select(QuizRound).outerjoin(QuizAnswer, QuizAnswer.round_id == QuizRound.id)
            .where(QuizRound.player == player, QuizAnswer.id.is_(None))
            .order_by(QuizRound.id.desc()).limit(1))
        view = None if rnd is None else _view_of(session, rnd)
    return None if view is None or view.missing_images else view
