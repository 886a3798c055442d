"""Quiz rounds: choosing the images, serving them by token, and recording answers.

A round shows 2 or 4 images of one class, exactly one real (``pair``/``quad``), or one
image to call real or generated (``single``). The synthetic images of a round all come
from one model, so per-model statistics stay clean. Images a player has been shown least
often are chosen first: nothing repeats for a player until the pool is used up.
Tokens are random per round; only the database maps them to images.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.db.models import SOURCE_REAL, SOURCE_SYNTHETIC, Dataset, Image, ImageClass, utcnow
from core.quiz.models import (MODE_PAIR, MODE_QUAD, MODE_SINGLE, MODES, VIEW_MODEL, VIEW_ORIGINAL,
                              VIEWS, QuizAnswer, QuizRound, QuizRoundImage)
from core.quiz.serving import (SERVED_FORMATS, ModelViewUnavailable, model_view_status,
                               pipelines_label, render_bytes, resolve_pipelines)
from core.store import ImageStore

# Synthetic images imported without a generation record still need a model to group by.
UNKNOWN_MODEL = "(unknown model)"
IMAGES_PER_MODE = {MODE_PAIR: 2, MODE_QUAD: 4, MODE_SINGLE: 1}
GUESSES = ("real", "synthetic")
MAX_PLAYER_NAME = 120
# Served images are never smaller than this (tiny originals are enlarged, on both sides).
MIN_SERVED_PX = 64


class QuizError(ValueError):
    """A request the quiz cannot serve; ``str(exc)`` is the message for the player."""


class AlreadyAnswered(QuizError):
    """The round already has an answer (a double click, a second tab, a race)."""


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
    answered: bool
    filters: dict[str, Any] = field(default_factory=dict)
    missing_images: bool = False  # an image was deleted since the round was dealt


@dataclass
class RevealedImage:
    position: int
    token: str
    is_real: bool
    dataset: str
    prompt: str | None
    model: str | None
    seed: int | None


@dataclass
class Reveal:
    round_token: str
    correct: bool
    fooled: bool | None
    real_position: int | None  # None in a single round showing a synthetic image
    chosen_position: int | None
    guess: str | None
    seconds_to_answer: float
    images: list[RevealedImage]


def check_player_name(name: str) -> str:
    """The cleaned player name; ``QuizError`` when it cannot be used."""
    name = (name or "").strip()
    if not name:
        raise QuizError("a player name is needed")
    if len(name) > MAX_PLAYER_NAME:
        raise QuizError(f"player names are at most {MAX_PLAYER_NAME} characters")
    return name


def _model_key(model: str | None) -> str:
    return model or UNKNOWN_MODEL


# --- choosing the images ----------------------------------------------------------------

@dataclass
class _Candidate:
    image_id: int
    class_id: int
    source: str
    model: str
    short_side: int


def _candidates(session: Session, request: RoundRequest) -> list[_Candidate]:
    query = (select(Image.id, Image.class_id, Image.source, Image.model, Image.dataset_id,
                    Image.width, Image.height)
             .where(Image.excluded.is_(False)))
    if request.class_name:
        class_id = session.scalar(select(ImageClass.id).where(ImageClass.name == request.class_name))
        if class_id is None:
            raise QuizError(f"no class named {request.class_name!r}")
        query = query.where(Image.class_id == class_id)
    dataset_ids: dict[str, int | None] = {}
    for source, name in ((SOURCE_REAL, request.real_dataset),
                         (SOURCE_SYNTHETIC, request.synthetic_dataset)):
        if name:
            dataset_id = session.scalar(select(Dataset.id).where(Dataset.name == name))
            if dataset_id is None:
                raise QuizError(f"no dataset named {name!r}")
            dataset_ids[source] = dataset_id
    out = []
    for image_id, class_id, source, model, dataset_id, width, height in session.execute(query):
        if source in dataset_ids and dataset_id != dataset_ids[source]:
            continue
        if source == SOURCE_SYNTHETIC and request.model and _model_key(model) != request.model:
            continue
        out.append(_Candidate(image_id, class_id, source, _model_key(model), min(width, height)))
    return out


def _times_shown(session: Session, player: str) -> Counter:
    rows = session.execute(
        select(QuizRoundImage.image_id, func.count())
        .join(QuizRound, QuizRound.id == QuizRoundImage.round_id)
        .where(QuizRound.player == player)
        .group_by(QuizRoundImage.image_id))
    return Counter({image_id: count for image_id, count in rows})


def _least_shown(pool: list[int], k: int, shown: Counter, rng: np.random.Generator) -> list[int]:
    """The ``k`` images shown least often to this player, ties broken at random."""
    tie_break = rng.random(len(pool))
    order = sorted(range(len(pool)), key=lambda i: (shown[pool[i]], tie_break[i]))
    return [pool[i] for i in order[:k]]


def _freshness(pool: list[int], k: int, shown: Counter) -> int:
    """How often the k-th least shown image was shown: 0 while k unseen images remain."""
    return sorted(shown[i] for i in pool)[k - 1]


@dataclass
class _Choice:
    class_id: int
    model: str | None  # None: a single round showing a real image
    images: list[tuple[int, bool]]  # (image id, is real)
    pool_short_side: int  # smallest side over both pools the round drew from


def _choose_images(candidates: list[_Candidate], mode: str, shown: Counter,
                   rng: np.random.Generator) -> _Choice:
    real_by_class: dict[int, list[int]] = defaultdict(list)
    synthetic_by_combo: dict[tuple[int, str], list[int]] = defaultdict(list)
    short_real: dict[int, int] = {}
    short_synthetic: dict[tuple[int, str], int] = {}
    for c in candidates:
        if c.source == SOURCE_REAL:
            real_by_class[c.class_id].append(c.image_id)
            short_real[c.class_id] = min(short_real.get(c.class_id, c.short_side), c.short_side)
        else:
            combo = (c.class_id, c.model)
            synthetic_by_combo[combo].append(c.image_id)
            short_synthetic[combo] = min(short_synthetic.get(combo, c.short_side), c.short_side)
    need_synthetic = {MODE_PAIR: 1, MODE_QUAD: 3, MODE_SINGLE: 1}[mode]
    combos = [(class_id, model) for (class_id, model), pool in synthetic_by_combo.items()
              if len(pool) >= need_synthetic and real_by_class.get(class_id)]
    if not combos:
        raise QuizError(
            "no images for this choice: a round needs real images and at least "
            f"{need_synthetic} synthetic image(s) of the same class (and model). Import real "
            "images, generate synthetic ones, or widen the class/dataset/model filters.")
    show_real = True
    if mode == MODE_SINGLE:
        show_real = bool(rng.random() < 0.5)
        # A side whose images were all shown already yields to one with fresh images:
        # a repeated image gives its answer away.
        real_level = min(_freshness(real_by_class[c], 1, shown) for c, _m in combos)
        synthetic_level = min(_freshness(synthetic_by_combo[combo], 1, shown) for combo in combos)
        if real_level != synthetic_level:
            show_real = real_level < synthetic_level

    def freshness(combo: tuple[int, str]) -> int:
        class_id, model = combo
        if mode == MODE_SINGLE:
            return (_freshness(real_by_class[class_id], 1, shown) if show_real
                    else _freshness(synthetic_by_combo[combo], 1, shown))
        return max(_freshness(real_by_class[class_id], 1, shown),
                   _freshness(synthetic_by_combo[combo], need_synthetic, shown))

    combos.sort()
    levels = [freshness(combo) for combo in combos]
    freshest = [combo for combo, level in zip(combos, levels) if level == min(levels)]
    class_id, model = freshest[int(rng.integers(len(freshest)))]
    short_side = min(short_real[class_id], short_synthetic[(class_id, model)])
    if mode == MODE_SINGLE:
        if show_real:
            return _Choice(class_id, None,
                           [(_least_shown(real_by_class[class_id], 1, shown, rng)[0], True)], short_side)
        return _Choice(class_id, model, [(_least_shown(synthetic_by_combo[(class_id, model)], 1,
                                                       shown, rng)[0], False)], short_side)
    chosen = [(_least_shown(real_by_class[class_id], 1, shown, rng)[0], True)]
    chosen += [(image_id, False) for image_id in
               _least_shown(synthetic_by_combo[(class_id, model)], need_synthetic, shown, rng)]
    return _Choice(class_id, model, chosen, short_side)


# --- rounds -------------------------------------------------------------------------------

def _view_of(session: Session, rnd: QuizRound) -> RoundView:
    image_class = session.get(ImageClass, rnd.class_id)
    answered = session.scalar(select(QuizAnswer.id).where(QuizAnswer.round_id == rnd.id)) is not None
    return RoundView(token=rnd.token, player=rnd.player, mode=rnd.mode, view=rnd.view,
                     class_name=image_class.name,
                     class_display=image_class.display_name,
                     image_tokens=[img.token for img in sorted(rnd.images, key=lambda i: i.position)],
                     created_at=rnd.created_at, answered=answered, filters=dict(rnd.filters or {}),
                     missing_images=any(img.image_id is None for img in rnd.images))


def new_round(player: str, request: RoundRequest, settings: Settings | None = None) -> RoundView:
    """Choose and record a new round for ``player``; raises ``QuizError`` when none fits."""
    settings = settings or get_settings()
    player = check_player_name(player)
    request.validate()
    fmt = settings.quiz_image_format.upper()
    if fmt not in SERVED_FORMATS:
        raise QuizError(f"SYNTHLAB_QUIZ_IMAGE_FORMAT must be one of {sorted(SERVED_FORMATS)}")
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
        candidates = _candidates(session, request)
        choice = _choose_images(candidates, request.mode, _times_shown(session, player), rng)
        class_id, model, chosen = choice.class_id, choice.model, choice.images
        positions = rng.permutation(len(chosen))
        served_px = settings.quiz_image_px
        if request.view == VIEW_ORIGINAL:
            # Never enlarge one side only: a blown-up small photo beside a downsized
            # generation looks softer. The size comes from both pools, not from the images
            # shown, so in single-image rounds it does not tell the source either.
            served_px = max(MIN_SERVED_PX, min(served_px, choice.pool_short_side))
        rnd = QuizRound(token=secrets.token_urlsafe(18), player=player, mode=request.mode,
                        view=request.view, view_label=view_label, pipelines=pipelines,
                        class_id=class_id, model=model,
                        filters=request.filters(), seed=int(seed), served_format=fmt,
                        served_px=served_px, created_at=utcnow())
        session.add(rnd)
        session.flush()
        for (image_id, is_real), position in zip(chosen, positions):
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


def image_seed(round_seed: int, position: int) -> int:
    """The seed of one image's preprocessing, derived from the round's recorded seed."""
    return (round_seed * 1_000_003 + position * 7_919) % (2**31 - 1)


def served_image(image_token: str, settings: Settings | None = None) -> tuple[bytes, str]:
    """(bytes, mime type) of one served image, by its opaque token."""
    settings = settings or get_settings()
    with session_scope(settings) as session:
        row = session.execute(
            select(QuizRoundImage, QuizRound, Image)
            .join(QuizRound, QuizRound.id == QuizRoundImage.round_id)
            .join(Image, Image.id == QuizRoundImage.image_id)
            .where(QuizRoundImage.token == image_token)).first()
        if row is None:
            raise QuizError("unknown image, or it was deleted since the round was dealt")
        round_image, rnd, image = row
    data = render_bytes(ImageStore(settings), image.path, image.source, rnd.view,
                        image_seed(rnd.seed, round_image.position), rnd.served_px,
                        rnd.served_format, settings, rnd.pipelines)
    return data, SERVED_FORMATS[rnd.served_format]


def round_images(round_token: str, settings: Settings | None = None) -> list[bytes]:
    view = get_round(round_token, settings)
    return [served_image(token, settings)[0] for token in view.image_tokens]


# --- answers -------------------------------------------------------------------------------

def _reveal(session: Session, rnd: QuizRound, answer: QuizAnswer) -> Reveal:
    images = []
    real_position = None
    for round_image in sorted(rnd.images, key=lambda i: i.position):
        if round_image.is_real:
            real_position = round_image.position
        image = session.get(Image, round_image.image_id) if round_image.image_id else None
        if image is None:  # deleted from the index since; the answer still counts
            images.append(RevealedImage(position=round_image.position, token=round_image.token,
                                        is_real=round_image.is_real, dataset="(deleted)",
                                        prompt=None, model=None if round_image.is_real else rnd.model,
                                        seed=None))
            continue
        dataset = session.get(Dataset, image.dataset_id)
        images.append(RevealedImage(
            position=round_image.position, token=round_image.token, is_real=round_image.is_real,
            dataset=dataset.name if dataset else "",
            prompt=None if round_image.is_real else image.prompt,
            model=None if round_image.is_real else _model_key(image.model),
            seed=None if round_image.is_real else image.seed))
    return Reveal(round_token=rnd.token, correct=answer.correct, fooled=answer.fooled,
                  real_position=real_position, chosen_position=answer.chosen_position,
                  guess=answer.guess, seconds_to_answer=answer.seconds_to_answer, images=images)


def judge_answer(mode: str, images: list[tuple[int, bool]], *, position: int | None = None,
                 guess: str | None = None) -> tuple[bool, bool | None]:
    """(correct, fooled) of an answer; ``images`` are (position, is_real). Used for humans
    and for the machine judge alike."""
    if mode == MODE_SINGLE:
        if guess not in GUESSES:
            raise QuizError("answer 'real' or 'synthetic'")
        is_real = images[0][1]
        correct = (guess == "real") == is_real
        return correct, (None if is_real else guess == "real")
    positions = {p: real for p, real in images}
    if position not in positions:
        raise QuizError(f"choose one of the positions {sorted(positions)}")
    correct = positions[position]
    return correct, not correct


def answer_round(player: str, round_token: str, *, position: int | None = None,
                 guess: str | None = None, settings: Settings | None = None) -> Reveal:
    """Record the player's answer once and reveal the round; raises ``AlreadyAnswered``."""
    player = check_player_name(player)

    def write(session: Session) -> Reveal:
        rnd = session.scalar(select(QuizRound).where(QuizRound.token == round_token))
        if rnd is None:
            raise QuizError("unknown round")
        if rnd.player != player:
            raise QuizError("this round was dealt to another player")
        if session.scalar(select(QuizAnswer.id).where(QuizAnswer.round_id == rnd.id)) is not None:
            raise AlreadyAnswered("this round is already answered")
        if any(img.image_id is None for img in rnd.images):
            raise QuizError("an image of this round was deleted since it was dealt; deal a new round")
        correct, fooled = judge_answer(rnd.mode, [(i.position, i.is_real) for i in rnd.images],
                                       position=position, guess=guess)
        now = utcnow()
        answer = QuizAnswer(round_id=rnd.id, player=player,
                            chosen_position=None if rnd.mode == MODE_SINGLE else position,
                            guess=guess if rnd.mode == MODE_SINGLE else None,
                            correct=correct, fooled=fooled, answered_at=now,
                            seconds_to_answer=max(0.0, (now - rnd.created_at).total_seconds()))
        session.add(answer)
        session.flush()  # the unique round_id turns a lost race into IntegrityError here
        return _reveal(session, rnd, answer)

    try:
        return run_write(write, settings)
    except IntegrityError as exc:
        raise AlreadyAnswered("this round is already answered") from exc


def reveal_round(round_token: str, settings: Settings | None = None) -> Reveal | None:
    """The reveal of an answered round (None while unanswered: nothing leaks before)."""
    with session_scope(settings) as session:
        rnd = session.scalar(select(QuizRound).where(QuizRound.token == round_token))
        if rnd is None:
            raise QuizError("unknown round")
        answer = session.scalar(select(QuizAnswer).where(QuizAnswer.round_id == rnd.id))
        return None if answer is None else _reveal(session, rnd, answer)


# --- what can be chosen -------------------------------------------------------------------

@dataclass
class QuizOptions:
    """The choices a player has: only classes that have both real and synthetic images."""

    classes: list[tuple[str, str]]  # (key, display name)
    real_datasets: list[str]
    synthetic_datasets: list[str]
    models: list[str]
    pipelines: list[str]  # preprocessing presets (and the built-in defaults)
    model_view_unavailable: str | None  # why the model view cannot be offered, if it cannot


def quiz_options(settings: Settings | None = None) -> QuizOptions:
    settings = settings or get_settings()
    with session_scope(settings) as session:
        counts = session.execute(
            select(Image.class_id, Image.source, func.count())
            .where(Image.excluded.is_(False)).group_by(Image.class_id, Image.source)).all()
        sources_by_class: dict[int, set[str]] = defaultdict(set)
        for class_id, source, _count in counts:
            sources_by_class[class_id].add(source)
        playable = [cid for cid, sources in sources_by_class.items()
                    if {SOURCE_REAL, SOURCE_SYNTHETIC} <= sources]
        classes = [(c.name, c.display_name) for c in session.scalars(
            select(ImageClass).where(ImageClass.id.in_(playable)).order_by(ImageClass.display_name))]
        datasets = session.execute(
            select(Dataset.name, Image.source).join(Image, Image.dataset_id == Dataset.id)
            .where(Image.excluded.is_(False)).distinct().order_by(Dataset.name)).all()
        models = sorted({_model_key(m) for m in session.scalars(
            select(Image.model).where(Image.source == SOURCE_SYNTHETIC,
                                      Image.excluded.is_(False)).distinct())})
    reason = model_view_status()
    pipelines: list[str] = []
    if reason is None:
        from core.preprocess import DEFAULT_NAMES, list_presets

        pipelines = list(DEFAULT_NAMES) + [p.name for p in list_presets(settings)
                                           if p.name not in DEFAULT_NAMES]
    return QuizOptions(classes=classes,
                       real_datasets=[name for name, source in datasets if source == SOURCE_REAL],
                       synthetic_datasets=[name for name, source in datasets
                                           if source == SOURCE_SYNTHETIC],
                       models=models, pipelines=pipelines, model_view_unavailable=reason)
