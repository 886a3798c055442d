"""What a player can choose to be quizzed on: classes, datasets, models, preprocessing."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select

from core.config import Settings, get_settings
from core.db.engine import session_scope
from core.db.models import SOURCE_REAL, SOURCE_SYNTHETIC, Dataset, Image, ImageClass
from core.quiz.choosing import model_key
from core.quiz.serving import model_view_status


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
        models = sorted({model_key(m) for m in session.scalars(
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
