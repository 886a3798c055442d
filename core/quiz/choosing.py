"""Choosing a round's images: one class, one model, the images a player saw least first.

The synthetic images of a round all come from one model, so per-model statistics stay
clean. Images a player has been shown least often are chosen first: nothing repeats for
a player until the pool is used up.

Dealing never loads the pool: at 50,000 images that took a second per round. SQL counts
the pool per class and model (one GROUP BY) and reads how often this player saw each image
of it (their history: at most a few images per round played); the freshest class and model
follow from those counts alone, and each image is then one indexed lookup of the r-th
unseen image (r drawn from the round's seeded generator), which picks uniformly among the
unseen ones, as sorting the whole pool with random tie-breaks did.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from core.db.models import SOURCE_REAL, Dataset, Image, ImageClass
from core.quiz.errors import QuizError
from core.quiz.models import MODE_PAIR, MODE_QUAD, MODE_SINGLE, QuizRound, QuizRoundImage
from core.users.models import AuditEntry

if TYPE_CHECKING:
    from core.quiz.rounds import RoundRequest

# Synthetic images imported without a generation record still need a model to group by.
UNKNOWN_MODEL = "(unknown model)"
IMAGES_PER_MODE = {MODE_PAIR: 2, MODE_QUAD: 4, MODE_SINGLE: 1}


def model_key(model: str | None) -> str:
    return model or UNKNOWN_MODEL


@dataclass
class Group:
    """One side of a possible round: the real images of a class, or the synthetic images of
    a class from one model, with how often this player saw the ones they saw."""

    size: int
    short_side: int
    shown: dict[int, int] = field(default_factory=dict)  # image id -> times shown (> 0)

    def freshness(self, k: int) -> int:
        """How often the k-th least shown image was shown: 0 while k unseen images remain."""
        unseen = self.size - len(self.shown)
        if unseen >= k:
            return 0
        return sorted(self.shown.values())[k - 1 - unseen]


@dataclass
class Pool:
    """The request's pool, counted: real groups by class, synthetic by (class, model)."""

    real: dict[int, Group]
    synthetic: dict[tuple[int, str], Group]
    where: list[Any]  # the request's filters, for fetching images


def _model_clause(model: str):  # noqa: ANN202 - a SQL expression
    if model == UNKNOWN_MODEL:
        return or_(Image.model.is_(None), Image.model.in_(["", UNKNOWN_MODEL]))
    return Image.model == model


def _filters(session: Session, request: RoundRequest) -> list[Any]:
    """WHERE clauses for the images the request allows."""
    where: list[Any] = [Image.excluded.is_(False)]
    if request.class_name:
        class_id = session.scalar(select(ImageClass.id).where(ImageClass.name == request.class_name))
        if class_id is None:
            raise QuizError(f"no class named {request.class_name!r}")
        where.append(Image.class_id == class_id)
    real_side: list[Any] = [Image.source == SOURCE_REAL]
    synthetic_side: list[Any] = [Image.source != SOURCE_REAL]
    for side, name in ((real_side, request.real_dataset), (synthetic_side, request.synthetic_dataset)):
        if name:
            dataset_id = session.scalar(select(Dataset.id).where(Dataset.name == name))
            if dataset_id is None:
                raise QuizError(f"no dataset named {name!r}")
            side.append(Image.dataset_id == dataset_id)
    if request.model:
        synthetic_side.append(_model_clause(request.model))
    if len(real_side) + len(synthetic_side) > 2:  # a side has a filter of its own
        where.append(or_(and_(*real_side), and_(*synthetic_side)))
    return where


def _player_history(player: str):  # noqa: ANN202 - a SQL subquery
    return (select(QuizRoundImage.image_id).join(QuizRound, QuizRound.id == QuizRoundImage.round_id)
            .where(QuizRound.player == player, QuizRoundImage.image_id.is_not(None)))


# --- the census: the whole index counted per class, source, model and dataset ------------
# Counting the pool is a scan of every image (a second at 100,000 rows on a busy machine),
# so each process keeps the counts and renews them only when the index changed: new
# images (a higher largest id: only the new rows are counted and added) or a curation
# (relabel, exclude, delete: each writes an audit entry; then everything is recounted).
# Changes that write no audit entry (``check --repair``) are caught by the age limit, and a
# lookup that finds fewer unseen images than counted recounts at once.

CensusKey = tuple[int, str, "str | None", int]  # class id, source, model, dataset id


@dataclass
class Census:
    marker: tuple[int, int]  # (largest image id, largest audit id) when counted
    counted_at: float
    rows: dict[CensusKey, list[int]]  # -> [images, smallest side]


_censuses: dict[str, Census] = {}
_census_lock = threading.Lock()


def _census_marker(session: Session) -> tuple[int, int]:
    return (session.scalar(select(func.max(Image.id))) or 0,
            session.scalar(select(func.max(AuditEntry.id))) or 0)


def _count(session: Session, rows: dict[CensusKey, list[int]], after_id: int = 0) -> None:
    for class_id, source, model, dataset_id, size, short in session.execute(
            select(Image.class_id, Image.source, Image.model, Image.dataset_id, func.count(),
                   func.min(case((Image.width < Image.height, Image.width), else_=Image.height)))
            .where(Image.excluded.is_(False), Image.id > after_id)
            .group_by(Image.class_id, Image.source, Image.model, Image.dataset_id)):
        known = rows.setdefault((class_id, source, model, dataset_id), [0, short])
        known[0] += size
        known[1] = min(known[1], short)


def census(session: Session, max_age_s: float, *, renew: bool = False) -> Census:
    """The index's counts as of now (kept per process, see above)."""
    url = str(session.get_bind().url)
    marker = _census_marker(session)
    with _census_lock:
        known = _censuses.get(url)
        fresh = (known is not None and not renew and known.marker[1] == marker[1]
                 and time.monotonic() - known.counted_at < max_age_s)
        if fresh and known.marker[0] == marker[0]:
            return known
        rows = {key: list(value) for key, value in known.rows.items()} if fresh else {}
        _count(session, rows, after_id=known.marker[0] if fresh else 0)
        made = Census(marker, known.counted_at if fresh else time.monotonic(), rows)
        _censuses[url] = made
        return made


def count_pool(session: Session, request: RoundRequest, player: str, *,
               max_age_s: float = 60.0, renew: bool = False) -> Pool:
    """The pool's groups with their sizes, and what this player saw of them."""
    where = _filters(session, request)
    real: dict[int, Group] = {}
    synthetic: dict[tuple[int, str], Group] = {}
    class_id = None
    if request.class_name:
        class_id = session.scalar(select(ImageClass.id).where(ImageClass.name == request.class_name))
    dataset_ids = {side: session.scalar(select(Dataset.id).where(Dataset.name == name))
                   for side, name in ((True, request.real_dataset), (False, request.synthetic_dataset))
                   if name}

    def group_of(class_id: int, source: str, model: str | None) -> tuple[dict, Any]:
        if source == SOURCE_REAL:
            return real, class_id
        return synthetic, (class_id, model_key(model))

    for (image_class, source, model, dataset_id), (size, short) in census(
            session, max_age_s, renew=renew).rows.items():
        is_real = source == SOURCE_REAL
        if (class_id is not None and image_class != class_id) \
                or dataset_ids.get(is_real, dataset_id) != dataset_id \
                or (not is_real and request.model and model_key(model) != request.model):
            continue
        groups, key = group_of(image_class, source, model)
        if key in groups:  # one class's images over several datasets (or unnamed models)
            groups[key].size += size
            groups[key].short_side = min(groups[key].short_side, short)
        else:
            groups[key] = Group(size, short)
    for image_id, image_class, source, model, times in session.execute(
            select(Image.id, Image.class_id, Image.source, Image.model, func.count())
            .join(QuizRoundImage, QuizRoundImage.image_id == Image.id)
            .join(QuizRound, QuizRound.id == QuizRoundImage.round_id)
            .where(QuizRound.player == player, *where)
            .group_by(Image.id, Image.class_id, Image.source, Image.model)):
        groups, key = group_of(image_class, source, model)
        if key in groups:
            groups[key].shown[image_id] = times
    return Pool(real, synthetic, where)


class _StaleCensus(Exception):
    """The counts promised more unseen images than the index holds now."""


def least_shown(session: Session, pool: Pool, group_where: list[Any], group: Group, k: int,
                player: str, rng: np.random.Generator) -> list[int]:
    """The ``k`` images of a group shown least often to this player, ties broken at random:
    unseen ones first (uniformly among them), then the least shown of those seen."""
    unseen = group.size - len(group.shown)
    take = min(k, unseen)
    where = [*pool.where, *group_where, Image.id.not_in(_player_history(player))]
    chosen = []
    if take == unseen:
        chosen = list(session.scalars(select(Image.id).where(*where).order_by(Image.id).limit(k)))
    else:
        for offset in rng.choice(unseen, size=take, replace=False).tolist():
            found = session.scalar(select(Image.id).where(*where).order_by(Image.id)
                                   .offset(int(offset)).limit(1))
            if found is None:
                raise _StaleCensus
            chosen.append(found)
    if len(chosen) < k:
        seen = sorted(group.shown)
        tie_break = rng.random(len(seen))
        order = sorted(range(len(seen)), key=lambda i: (group.shown[seen[i]], tie_break[i]))
        chosen += [seen[i] for i in order[:k - len(chosen)]]
    return chosen


def _real_where(class_id: int) -> list[Any]:
    return [Image.class_id == class_id, Image.source == SOURCE_REAL]


def _synthetic_where(class_id: int, model: str) -> list[Any]:
    return [Image.class_id == class_id, Image.source != SOURCE_REAL, _model_clause(model)]


@dataclass
class Choice:
    class_id: int
    model: str | None  # None: a single round showing a real image
    images: list[tuple[int, bool]]  # (image id, is real)
    pool_short_side: int  # smallest side over both pools the round drew from


def choose_images(session: Session, request: RoundRequest, player: str,
                  rng: np.random.Generator, *, max_age_s: float = 60.0) -> Choice:
    """The round's class, model and images for ``player`` (see the module doc).

    ``max_age_s``: the oldest census of the index to deal from (``Settings.quiz_census_seconds``).
    """
    try:
        return _choose(session, request, player, rng, count_pool(
            session, request, player, max_age_s=max_age_s))
    except _StaleCensus:
        return _choose(session, request, player, rng, count_pool(
            session, request, player, max_age_s=max_age_s, renew=True))


def _choose(session: Session, request: RoundRequest, player: str, rng: np.random.Generator,
            pool: Pool) -> Choice:
    mode = request.mode
    need_synthetic = {MODE_PAIR: 1, MODE_QUAD: 3, MODE_SINGLE: 1}[mode]
    combos = [combo for combo, group in pool.synthetic.items()
              if group.size >= need_synthetic and combo[0] in pool.real]
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
        real_level = min(pool.real[c].freshness(1) for c, _m in combos)
        synthetic_level = min(pool.synthetic[combo].freshness(1) for combo in combos)
        if real_level != synthetic_level:
            show_real = real_level < synthetic_level

    def level(combo: tuple[int, str]) -> int:
        real, synthetic = pool.real[combo[0]], pool.synthetic[combo]
        if mode == MODE_SINGLE:
            return real.freshness(1) if show_real else synthetic.freshness(1)
        return max(real.freshness(1), synthetic.freshness(need_synthetic))

    combos.sort()
    levels = [level(combo) for combo in combos]
    freshest = [combo for combo, lvl in zip(combos, levels) if lvl == min(levels)]
    class_id, model = freshest[int(rng.integers(len(freshest)))]
    real, synthetic = pool.real[class_id], pool.synthetic[(class_id, model)]
    short_side = min(real.short_side, synthetic.short_side)

    def pick(is_real: bool, k: int) -> list[tuple[int, bool]]:
        group, where = ((real, _real_where(class_id)) if is_real
                        else (synthetic, _synthetic_where(class_id, model)))
        return [(image_id, is_real)
                for image_id in least_shown(session, pool, where, group, k, player, rng)]

    if mode == MODE_SINGLE:
        return Choice(class_id, None if show_real else model, pick(show_real, 1), short_side)
    return Choice(class_id, model, pick(True, 1) + pick(False, need_synthetic), short_side)
