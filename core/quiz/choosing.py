"""Choosing a round's images: one class, one model, the images a player saw least first.

The synthetic images of a round all come from one model, so per-model statistics stay
clean. Images a player has been shown least often are chosen first: nothing repeats for
a player until the pool is used up.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.models import SOURCE_REAL, SOURCE_SYNTHETIC, Dataset, Image, ImageClass
from core.quiz.errors import QuizError
from core.quiz.models import MODE_PAIR, MODE_QUAD, MODE_SINGLE, QuizRound, QuizRoundImage

if TYPE_CHECKING:
    from core.quiz.rounds import RoundRequest

# Synthetic images imported without a generation record still need a model to group by.
UNKNOWN_MODEL = "(unknown model)"
IMAGES_PER_MODE = {MODE_PAIR: 2, MODE_QUAD: 4, MODE_SINGLE: 1}


def model_key(model: str | None) -> str:
    return model or UNKNOWN_MODEL


@dataclass
class Candidate:
    image_id: int
    class_id: int
    source: str
    model: str
    short_side: int


def candidates(session: Session, request: RoundRequest) -> list[Candidate]:
    """The images the request allows (only the columns dealing needs: it runs per round)."""
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
        if source == SOURCE_SYNTHETIC and request.model and model_key(model) != request.model:
            continue
        out.append(Candidate(image_id, class_id, source, model_key(model), min(width, height)))
    return out


def times_shown(session: Session, player: str) -> Counter:
    rows = session.execute(
        select(QuizRoundImage.image_id, func.count())
        .join(QuizRound, QuizRound.id == QuizRoundImage.round_id)
        .where(QuizRound.player == player)
        .group_by(QuizRoundImage.image_id))
    return Counter({image_id: count for image_id, count in rows})


def least_shown(pool: list[int], k: int, shown: Counter, rng: np.random.Generator) -> list[int]:
    """The ``k`` images shown least often to this player, ties broken at random."""
    tie_break = rng.random(len(pool))
    order = sorted(range(len(pool)), key=lambda i: (shown[pool[i]], tie_break[i]))
    return [pool[i] for i in order[:k]]


def freshness(pool: list[int], k: int, shown: Counter) -> int:
    """How often the k-th least shown image was shown: 0 while k unseen images remain."""
    return sorted(shown[i] for i in pool)[k - 1]


@dataclass
class Choice:
    class_id: int
    model: str | None  # None: a single round showing a real image
    images: list[tuple[int, bool]]  # (image id, is real)
    pool_short_side: int  # smallest side over both pools the round drew from


def choose_images(pool: list[Candidate], mode: str, shown: Counter,
                  rng: np.random.Generator) -> Choice:
    real_by_class: dict[int, list[int]] = defaultdict(list)
    synthetic_by_combo: dict[tuple[int, str], list[int]] = defaultdict(list)
    short_real: dict[int, int] = {}
    short_synthetic: dict[tuple[int, str], int] = {}
    for c in pool:
        if c.source == SOURCE_REAL:
            real_by_class[c.class_id].append(c.image_id)
            short_real[c.class_id] = min(short_real.get(c.class_id, c.short_side), c.short_side)
        else:
            combo = (c.class_id, c.model)
            synthetic_by_combo[combo].append(c.image_id)
            short_synthetic[combo] = min(short_synthetic.get(combo, c.short_side), c.short_side)
    need_synthetic = {MODE_PAIR: 1, MODE_QUAD: 3, MODE_SINGLE: 1}[mode]
    combos = [(class_id, model) for (class_id, model), images in synthetic_by_combo.items()
              if len(images) >= need_synthetic and real_by_class.get(class_id)]
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
        real_level = min(freshness(real_by_class[c], 1, shown) for c, _m in combos)
        synthetic_level = min(freshness(synthetic_by_combo[combo], 1, shown) for combo in combos)
        if real_level != synthetic_level:
            show_real = real_level < synthetic_level

    def level(combo: tuple[int, str]) -> int:
        class_id, model = combo
        if mode == MODE_SINGLE:
            return (freshness(real_by_class[class_id], 1, shown) if show_real
                    else freshness(synthetic_by_combo[combo], 1, shown))
        return max(freshness(real_by_class[class_id], 1, shown),
                   freshness(synthetic_by_combo[combo], need_synthetic, shown))

    combos.sort()
    levels = [level(combo) for combo in combos]
    freshest = [combo for combo, lvl in zip(combos, levels) if lvl == min(levels)]
    class_id, model = freshest[int(rng.integers(len(freshest)))]
    short_side = min(short_real[class_id], short_synthetic[(class_id, model)])
    if mode == MODE_SINGLE:
        if show_real:
            return Choice(class_id, None,
                          [(least_shown(real_by_class[class_id], 1, shown, rng)[0], True)], short_side)
        return Choice(class_id, model, [(least_shown(synthetic_by_combo[(class_id, model)], 1,
                                                     shown, rng)[0], False)], short_side)
    chosen = [(least_shown(real_by_class[class_id], 1, shown, rng)[0], True)]
    chosen += [(image_id, False) for image_id in
               least_shown(synthetic_by_combo[(class_id, model)], need_synthetic, shown, rng)]
    return Choice(class_id, model, chosen, short_side)
