"""What the Compare (Preprocess) page shows, without Streamlit: image choices, the side by
side stages, and the aspect-ratio histograms before and after the pipelines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.engine import session_scope
from core.db.models import SOURCE_REAL, SOURCE_SYNTHETIC, Image, ImageClass
from core.gallery_sql import class_source_counts
from core.preprocess.pipeline import Pipeline
from core.preprocess.stats import ImageFilter, aspect_ratios_after, image_sizes, log_aspect_distance
from core.preprocess.transforms import Resize
from core.store import ImageStore

# Enough images for a smooth histogram; the geometry of each costs microseconds.
HISTOGRAM_SAMPLE = 5000


@dataclass(frozen=True)
class ClassOption:
    name: str
    display_name: str
    real: int
    synthetic: int


@dataclass(frozen=True)
class ImageChoice:
    id: int
    label: str


def class_options(session: Session) -> list[ClassOption]:
    """Classes with their count of usable real and synthetic images (from the trigger-kept
    count table: its few rows summed, not the images counted)."""
    rows = class_source_counts(session)
    counts: dict[str, dict[str, int | str]] = {}
    for name, display, source, count in rows:
        entry = counts.setdefault(name, {"display": display, SOURCE_REAL: 0, SOURCE_SYNTHETIC: 0})
        entry[source] = int(count)
    return [ClassOption(name, str(c["display"]), int(c[SOURCE_REAL]), int(c[SOURCE_SYNTHETIC]))
            for name, c in counts.items()]


def _filtered(query, class_name: str | None, source: str):  # noqa: ANN001, ANN202 - select
    query = query.where(Image.source == source, Image.excluded.is_(False))
    if class_name:
        query = query.join(ImageClass, ImageClass.id == Image.class_id).where(ImageClass.name == class_name)
    return query


def image_choices(session: Session, class_name: str | None, source: str, *,
                  limit: int = 300) -> list[ImageChoice]:
    """The first ``limit`` images of a class and source, labelled for a select box."""
    query = _filtered(select(Image.id, Image.original_name, Image.width, Image.height), class_name, source)
    rows = session.execute(query.order_by(Image.id).limit(limit)).all()
    return [ImageChoice(row.id, " ".join(part for part in (f"#{row.id}", row.original_name,
                                                          f"({row.width}x{row.height})") if part))
            for row in rows]


def random_image_id(session: Session, class_name: str | None, source: str, seed: int) -> int | None:
    """A reproducible random pick among all matching images (not just the listed ones)."""
    query = _filtered(select(func.count(Image.id)), class_name, source)
    count = session.scalar(query) or 0
    if not count:
        return None
    offset = int(np.random.default_rng(seed).integers(count))
    pick = _filtered(select(Image.id), class_name, source).order_by(Image.id).offset(offset).limit(1)
    return session.scalar(pick)


def open_image(settings: Settings, image_id: int) -> tuple[PILImage.Image, Image] | None:
    """The stored picture and its row, or None if it is gone (deleted meanwhile)."""
    with session_scope(settings) as session:
        row = session.get(Image, image_id)
    if row is None:
        return None
    try:
        return ImageStore(settings).open_rgb(row.path), row
    except OSError:
        return None


# The longest side of a stage as the page shows it (columns are narrower than this).
PREVIEW_SIDE = 384


@dataclass(frozen=True)
class StagePreviews:
    """One image through a pipeline, as the page shows it: every stage shrunk for display."""

    image_id: int
    width: int
    height: int
    stages: tuple[tuple[str, int, int, PILImage.Image], ...]  # (name, width, height, preview)


def stage_previews(settings: Settings, image_id: int, pipeline: Pipeline, seed: int,
                   size: int) -> StagePreviews | None:
    """``pipeline.apply_steps`` on the stored picture plus the plain stretched resize, each
    stage as (name, its real size, a preview at most ``PREVIEW_SIDE`` px); None if the image
    is gone. The stages are computed at full size (a 12 MP photo letterboxed whole takes
    about a second), so pages cache this rather than call it on every click."""
    opened = open_image(settings, image_id)
    if opened is None:
        return None
    image, row = opened
    shown = pipeline.apply_steps(image, seed=seed) + [("Plain resize (stretched)", stretched(image, size))]
    previews = []
    for name, stage in shown:
        preview = stage.copy() if max(stage.size) > PREVIEW_SIDE else stage
        preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        previews.append((name, stage.width, stage.height, preview))
    return StagePreviews(row.id, row.width, row.height, tuple(previews))


def stretched(image: PILImage.Image, size: int) -> PILImage.Image:
    """What plain resizing does: the whole picture squeezed to ``size`` x ``size``."""
    return Resize(size).apply(image.convert("RGB"))


@dataclass
class AspectComparison:
    real_before: np.ndarray
    synthetic_before: np.ndarray
    real_after: np.ndarray
    synthetic_after: np.ndarray

    @property
    def distance_before(self) -> float:
        return log_aspect_distance(self.real_before, self.synthetic_before)

    @property
    def distance_after(self) -> float:
        return log_aspect_distance(self.real_after, self.synthetic_after)


def sample_sizes(session: Session, *, class_name: str | None = None, seed: int = 0,
                 sample: int = HISTOGRAM_SAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """``(real, synthetic)`` (width, height) arrays, at most ``sample`` rows each, drawn with
    ``seed`` from all the class's usable images (no file is opened)."""
    rng = np.random.default_rng(seed)
    real = _subsample(image_sizes(session, ImageFilter(source=SOURCE_REAL, class_name=class_name)), sample, rng)
    synth = _subsample(image_sizes(session, ImageFilter(source=SOURCE_SYNTHETIC, class_name=class_name)),
                       sample, rng)
    return real, synth


def compare_sizes(real: np.ndarray, synth: np.ndarray, real_pipeline: Pipeline,
                  synthetic_pipeline: Pipeline, *, seed: int = 0) -> AspectComparison:
    """The aspect ratios of ``sample_sizes``'s rows before and after each pipeline."""
    return AspectComparison(
        real_before=real[:, 0] / real[:, 1] if len(real) else np.empty(0),
        synthetic_before=synth[:, 0] / synth[:, 1] if len(synth) else np.empty(0),
        real_after=aspect_ratios_after(real, real_pipeline, seed),
        synthetic_after=aspect_ratios_after(synth, synthetic_pipeline, seed))


def compare_aspects(session: Session, real_pipeline: Pipeline, synthetic_pipeline: Pipeline, *,
                    class_name: str | None = None, seed: int = 0,
                    sample: int = HISTOGRAM_SAMPLE) -> AspectComparison:
    real, synth = sample_sizes(session, class_name=class_name, seed=seed, sample=sample)
    return compare_sizes(real, synth, real_pipeline, synthetic_pipeline, seed=seed)


def _subsample(sizes: np.ndarray, sample: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``sample`` rows drawn from all of them (the first rows may be one dataset)."""
    if len(sizes) <= sample:
        return sizes
    return sizes[np.sort(rng.choice(len(sizes), size=sample, replace=False))]


def aspect_figure(comparison: AspectComparison) -> go.Figure:
    """Two panels (before, after), real and synthetic overlaid, on a log aspect axis."""
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True,
                           subplot_titles=("Before preprocessing", "After the pipelines (content)"))
    bins = dict(start=np.log2(0.25), end=np.log2(4.0), size=0.05)
    series = ((1, "Real", comparison.real_before, "#1f77b4", True),
              (1, "Synthetic", comparison.synthetic_before, "#ff7f0e", True),
              (2, "Real", comparison.real_after, "#1f77b4", False),
              (2, "Synthetic", comparison.synthetic_after, "#ff7f0e", False))
    for col, name, values, colour, legend in series:
        values = values[np.isfinite(values) & (values > 0)]
        figure.add_trace(go.Histogram(x=np.log2(values), name=name, marker_color=colour, opacity=0.6,
                                      xbins=bins, histnorm="probability", showlegend=legend,
                                      legendgroup=name), row=1, col=col)
    ticks = [0.25, 0.5, 0.75, 1.0, 1.333, 2.0, 4.0]
    labels = ["1:4", "1:2", "3:4", "1:1", "4:3", "2:1", "4:1"]
    for col in (1, 2):
        figure.update_xaxes(tickvals=list(np.log2(ticks)), ticktext=labels, title_text="width : height",
                            row=1, col=col)
    figure.update_yaxes(title_text="share of images", row=1, col=1)
    figure.update_layout(barmode="overlay", height=360, margin=dict(l=40, r=20, t=64, b=40))
    return figure
