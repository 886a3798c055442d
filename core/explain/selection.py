"""Which images to explain: finished runs, index filters, a run's misclassified test images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sqlalchemy import select

from core.config import Settings, get_settings
from core.db.engine import session_scope
from core.db.models import Image, ImageClass
from core.explain.service import ExplainError, LoadedRun, load_run


def finished_runs(settings: Settings | None = None, limit: int = 200) -> list:  # noqa: ANN001 - Run rows
    """Runs with a trained model, newest first."""
    from core.training.experiments import list_runs
    from core.training.models import RUN_DONE

    return list_runs(statuses=(RUN_DONE,), limit=limit, settings=settings)


def run_label(run) -> str:  # noqa: ANN001 - a Run row
    return f"#{run.id} {run.name}"


def gallery_images(*, class_key: str | None = None, source: str | None = None,
                   dataset_id: int | None = None, limit: int = 48,
                   settings: Settings | None = None) -> list:  # noqa: ANN001 - gallery rows
    """Indexed images (not excluded) matching the Gallery's filters, newest first."""
    from core import gallery

    flt = gallery.GalleryFilter(classes=[class_key] if class_key else [],
                                sources=[source] if source else [],
                                datasets=[dataset_id] if dataset_id else [])
    return gallery.page(flt, sort="newest", limit=limit, settings=settings).rows


def compare_sample(class_key: str, per_source: int, *, seed: int = 0,
                   settings: Settings | None = None) -> dict[str, list[int]]:
    """Up to ``per_source`` real and synthetic image ids of one class, drawn with ``seed``."""
    settings = settings or get_settings()
    out: dict[str, list[int]] = {}
    with session_scope(settings) as session:
        for source in ("real", "synthetic"):
            ids = list(session.scalars(
                select(Image.id).join(ImageClass, Image.class_id == ImageClass.id)
                .where(ImageClass.name == class_key, Image.source == source,
                       Image.excluded.is_(False)).order_by(Image.id)))
            rng = np.random.default_rng([int(seed), 0 if source == "real" else 1])
            chosen = rng.choice(len(ids), size=min(per_source, len(ids)), replace=False) if ids else []
            out[source] = sorted(ids[i] for i in chosen)
    return out


def class_image_ids(class_key: str, settings: Settings | None = None, *,
                    limit: int | None = None) -> list[int]:
    """Every indexed (not excluded) image of one class, oldest first."""
    settings = settings or get_settings()
    with session_scope(settings) as session:
        query = (select(Image.id).join(ImageClass, Image.class_id == ImageClass.id)
                 .where(ImageClass.name == class_key, Image.excluded.is_(False)).order_by(Image.id))
        if limit is not None:
            query = query.limit(limit)
        return list(session.scalars(query))


def run_eval_image_ids(run_id: int, settings: Settings | None = None) -> list[int]:
    """Ids of the images a run was evaluated on (its test and cross-dataset sets)."""
    from core.training.experiments import run_images

    return [link.image_id for link in run_images(int(run_id), settings=settings)
            if link.role.startswith("test_") or link.role.startswith("cross:")]


@dataclass(frozen=True)
class EvalPrediction:
    image_id: int
    role: str  # test_real, test_synthetic, cross:<dataset>
    label: int
    predicted: int
    confidence: float
    # The seed the run's evaluation gave this image's random pipeline steps, so the
    # explanation shows exactly the input that was scored.
    input_seed: int

    @property
    def correct(self) -> bool:
        return self.label == self.predicted


def eval_predictions(run_id: int, settings: Settings | None = None, *,
                     roles: tuple[str, ...] | None = None, batch_size: int = 256) -> list[EvalPrediction]:
    """The run's predictions on its evaluation sets, reproduced with its trained model.

    The pixels come from the training code's own ``load_pixels`` with the run's recorded
    split and pipelines and its evaluation seed, so they are the images the metrics scored.
    """
    from core.preprocess import PipelineError, item_seed, load_pipeline
    from core.training.data import load_pixels
    from core.training.experiments import get_run, plan_for_run

    settings = settings or get_settings()
    run_row = get_run(int(run_id), settings)
    if run_row is None:
        raise ExplainError(f"no training run with id {run_id}")
    loaded: LoadedRun = load_run(int(run_id), settings)
    data_spec, _train, data = plan_for_run(run_row, settings)
    try:
        pipelines = {name: load_pipeline(spec, settings, size=loaded.image_size)
                     for name, spec in loaded.pipelines.items()}
    except PipelineError as exc:
        raise ExplainError(f"run {run_id}'s pipelines cannot be rebuilt: {exc}") from exc
    if not {"real", "synthetic"} <= set(pipelines):
        raise ExplainError(f"run {run_id}'s checkpoint does not record its pipelines")
    eval_seed = data_spec.split_seed
    out: list[EvalPrediction] = []
    for role in roles or tuple(data.eval_roles()):
        records = data.records(role)
        if not records:
            continue
        pixels = load_pixels(records, pipelines, settings, seed=eval_seed)
        probabilities = _predict(loaded, pixels, batch_size)
        position_in_source: dict[str, int] = {}
        for record, probs in zip(records, probabilities):
            # load_pixels feeds each source separately: item i of that source gets item_seed(.., i).
            index = position_in_source.get(record.source, 0)
            position_in_source[record.source] = index + 1
            predicted = int(np.argmax(probs))
            out.append(EvalPrediction(record.id, role, int(record.label), predicted,
                                      float(probs[predicted]), item_seed(eval_seed, 0, index)))
    return out


@torch.no_grad()
def _predict(run: LoadedRun, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    from core.training.model import to_input

    device = next(run.model.parameters()).device
    chunks = []
    with run.lock:
        for start in range(0, len(pixels), batch_size):
            logits = run.model(to_input(pixels[start:start + batch_size], device))
            chunks.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, len(run.class_names)))


def misclassified(run_id: int, settings: Settings | None = None) -> list[EvalPrediction]:
    """Evaluation images the run got wrong, most confident mistakes first."""
    wrong = [p for p in eval_predictions(run_id, settings) if not p.correct]
    return sorted(wrong, key=lambda p: -p.confidence)
