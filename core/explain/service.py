"""Explaining one image with one trained run: load, preprocess, predict, attribute, cache.

This is the one code path the CLI, the page and the batch job share:

1. ``load_run``: the run's trained model (``core.training.checkpoint.load_trained_model``),
   kept per process so a page rerun does not reload the file.
2. ``prepare_input``: the image through the run's own preprocessing pipeline
   (``core.preprocess.pipeline``), giving the exact pixels the model sees, and the
   letterbox content box (from the pipeline's geometry) that separates content from margins.
3. ``explain``: prediction + captum attribution, cached as a ``.npy`` file plus an
   ``Attribution`` row, so asking again (or the page after a batch job) is instant.
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from torch import nn

from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.db.models import Image
from core.explain.attribution import (AttributionConfig, AttributionError, Box, attribute,
                                      explainable_copy, margin_area_share, margin_mass,
                                      predict_probabilities)
from core.explain.models import Attribution
from core.imageio import ImageRejected, decode_image
from core.store import ImageStore, atomic_write

SOURCE_UPLOAD = "upload"
# How each image is preprocessed before the model sees it:
#   by-source - the run's pipeline for the image's source (real/upload: "real"; synthetic:
#               "synthetic", its random steps seeded with ``input_seed``), as training and
#               evaluation fed it
#   eval      - the deterministic "real" pipeline for every image (no random margins)
INPUT_MODES = ("by-source", "eval")
TARGET_MODES = ("predicted", "true")


class ExplainError(ValueError):
    """A request that cannot be explained (no such run or image, unknown class, ...)."""


# --- runs -------------------------------------------------------------------------------

@dataclass
class LoadedRun:
    run_id: int
    model: nn.Module  # explainable copy: eval mode, no in-place ReLUs
    class_names: list[str]
    pipelines: dict[str, Any]
    image_size: int
    checkpoint: Path
    # One model serves every browser session of the dashboard; captum's layer hooks
    # (Grad-CAM) would catch another thread's forward pass, so attributions take turns.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def class_index(self, name_or_index: str | int) -> int:
        if isinstance(name_or_index, int) or str(name_or_index).isdigit():
            index = int(name_or_index)
            if not 0 <= index < len(self.class_names):
                raise ExplainError(f"class index {index} is out of range (run has {len(self.class_names)} classes)")
            return index
        if name_or_index in self.class_names:
            return self.class_names.index(name_or_index)
        raise ExplainError(f"class {name_or_index!r} is not one of this run's classes: "
                           f"{', '.join(self.class_names)}")


_RUN_CACHE_SIZE = 4
_runs: OrderedDict[tuple[int, str, float, str], LoadedRun] = OrderedDict()
_runs_lock = threading.Lock()


def load_run(run_id: int, settings: Settings | None = None, *, device: str = "cpu") -> LoadedRun:
    """The run's trained model on ``device``, cached per process (keyed by the checkpoint
    file's mtime). The dashboard explains single images on the CPU so the web server holds no
    GPU memory; the batch job passes the worker's device."""
    from core.training.checkpoint import CheckpointError, load_trained_model, trained_model_path

    settings = settings or get_settings()
    try:
        run_id = int(run_id)
    except (TypeError, ValueError) as exc:
        raise ExplainError(f"run id must be a number, not {run_id!r}") from exc
    _require_run_row(run_id, settings)
    path = trained_model_path(run_id, settings)
    if not path.is_file():
        raise ExplainError(f"run {run_id} has no trained model yet ({path} is missing); "
                           "wait until it finishes, or pick a finished run")
    key = (run_id, str(path), path.stat().st_mtime, str(device))
    with _runs_lock:
        if key in _runs:
            _runs.move_to_end(key)
            return _runs[key]
    try:
        model, class_names, pipelines, image_size = load_trained_model(run_id, settings)
    except CheckpointError as exc:
        raise ExplainError(str(exc)) from exc
    if not class_names:
        raise ExplainError(f"run {run_id}'s checkpoint has no class names")
    loaded = LoadedRun(run_id, explainable_copy(model).to(device), list(class_names),
                       dict(pipelines or {}), int(image_size), path)
    with _runs_lock:
        _runs[key] = loaded
        while len(_runs) > _RUN_CACHE_SIZE:
            _runs.popitem(last=False)
    return loaded


def _require_run_row(run_id: int, settings: Settings) -> None:
    from core.training.models import Run

    with session_scope(settings) as session:
        if session.get(Run, run_id) is None:
            raise ExplainError(f"no training run with id {run_id}")


# --- images -----------------------------------------------------------------------------

@dataclass
class Subject:
    """One image to explain: an indexed image or an upload."""

    image: PILImage.Image
    sha256: str
    source: str  # real | synthetic | upload
    image_id: int | None = None
    true_class: str | None = None  # class key, when known
    label: str = ""


def subject_from_row(row: Image, settings: Settings | None = None) -> Subject:
    store = ImageStore(settings or get_settings())
    try:
        picture = store.open_rgb(row.path)
    except OSError as exc:
        raise ExplainError(f"image {row.id}'s file cannot be read ({row.path}): {exc}") from exc
    return Subject(picture, row.sha256, row.source, row.id, row.image_class.name,
                   row.original_name or f"image {row.id}")


def subject_from_image_id(image_id: int, settings: Settings | None = None) -> Subject:
    settings = settings or get_settings()
    with session_scope(settings) as session:
        row = session.get(Image, int(image_id))
        if row is None:
            raise ExplainError(f"no image with id {image_id}")
        return subject_from_row(row, settings)


def subject_from_bytes(data: bytes, settings: Settings | None = None, *, name: str = "upload") -> Subject:
    """An uploaded/on-disk file; if the same picture is indexed, its record (class, source) is used."""
    settings = settings or get_settings()
    try:
        decoded = decode_image(data, max_pixels=settings.max_image_pixels, name=name)
    except ImageRejected as exc:
        raise ExplainError(f"{name}: {exc}") from exc
    with session_scope(settings) as session:
        row = session.scalar(select(Image).where(Image.sha256 == decoded.sha256))
        if row is not None:
            return Subject(decoded.image, row.sha256, row.source, row.id, row.image_class.name,
                           row.original_name or name)
    return Subject(decoded.image, decoded.sha256, SOURCE_UPLOAD, None, None, name)


def subject_from_reference(reference: str, settings: Settings | None = None) -> Subject:
    """``IMAGE_ID_OR_PATH`` of the CLI: an existing file wins over an id."""
    path = Path(reference).expanduser()
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ExplainError(f"cannot read {path}: {exc.strerror or exc}") from exc
        return subject_from_bytes(data, settings, name=path.name)
    if reference.strip().isdigit():
        return subject_from_image_id(int(reference), settings)
    raise ExplainError(f"{reference!r} is neither an image id nor an existing file")


# --- what the model sees ----------------------------------------------------------------

@dataclass
class PreparedInput:
    pixels: np.ndarray  # uint8 (size, size, 3): exactly what the model is fed
    content_box: Box  # where the picture is; the rest (if any) is letterbox margin
    pipeline_name: str
    pipeline_description: str

    @property
    def has_margins(self) -> bool:
        left, top, right, bottom = self.content_box
        height, width = self.pixels.shape[:2]
        return (left, top, right, bottom) != (0, 0, width, height)


def pipeline_for(run: LoadedRun, source: str, input_mode: str = "by-source"):  # noqa: ANN201 - Pipeline
    from core.preprocess import PipelineError, default_pipeline, load_pipeline

    if input_mode not in INPUT_MODES:
        raise ExplainError(f"input mode must be one of {INPUT_MODES}, not {input_mode!r}")
    role = "synthetic" if input_mode == "by-source" and source == "synthetic" else "real"
    spec = run.pipelines.get(role) or run.pipelines.get("real")
    try:
        if spec:
            return role, load_pipeline(spec, get_settings(), size=run.image_size)
        # A run without a recorded pipeline was trained on the built-in default.
        return role, default_pipeline(role, run.image_size)
    except PipelineError as exc:
        raise ExplainError(f"run {run.run_id}'s {role} pipeline cannot be rebuilt: {exc}") from exc


def prepare_input(run: LoadedRun, subject: Subject, *, input_mode: str = "by-source",
                  input_seed: int = 0) -> PreparedInput:
    role, pipeline = pipeline_for(run, subject.source, input_mode)
    processed = pipeline.apply(subject.image, seed=input_seed)
    size = run.image_size
    if processed.size != (size, size):
        # Pipelines end with a resize to the run's size; guard anyway so the model never
        # gets a shape it was not built for.
        processed = processed.resize((size, size), PILImage.Resampling.BILINEAR)
    pixels = np.asarray(processed.convert("RGB"), dtype=np.uint8).copy()
    geometry = pipeline.geometry(subject.image.width, subject.image.height, seed=input_seed)
    return PreparedInput(pixels, content_box_from_geometry(geometry, size), role, pipeline.describe())


def content_box_from_geometry(geometry: Any, size: int) -> Box:
    """The content box of a letterboxed output: the content is centred on the canvas.

    ``geometry`` is the pipeline's ``Geometry`` (canvas and content sizes, in canvas
    pixels); it is scaled to the model's ``size`` x ``size`` input.
    """
    sx = size / geometry.canvas_w
    sy = size / geometry.canvas_h
    content_w = min(size, max(1, round(geometry.content_w * sx)))
    content_h = min(size, max(1, round(geometry.content_h * sy)))
    left, top = (size - content_w) // 2, (size - content_h) // 2
    return left, top, left + content_w, top + content_h


# --- explaining, with the cache -----------------------------------------------------------

@dataclass
class Explanation:
    run_id: int
    subject: Subject
    prepared: PreparedInput
    config: AttributionConfig
    class_names: list[str]
    probabilities: np.ndarray
    predicted: int
    target: int
    attribution: np.ndarray  # (size, size) float32
    margin_mass: float | None  # None: the input has no margins
    margin_area: float | None
    cached: bool
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def predicted_class(self) -> str:
        return self.class_names[self.predicted]

    @property
    def target_class(self) -> str:
        return self.class_names[self.target]

    def top_predictions(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(self.class_names[i], float(self.probabilities[i])) for i in order]

    def summary(self) -> dict[str, Any]:
        """What the CLI prints with ``--json``."""
        return {
            "run_id": self.run_id,
            "image": {"id": self.subject.image_id, "sha256": self.subject.sha256,
                      "source": self.subject.source, "true_class": self.subject.true_class},
            "method": self.config.method,
            "params": self.config.key_params(),
            "predicted_class": self.predicted_class,
            "probabilities": {name: round(float(p), 6) for name, p in zip(self.class_names, self.probabilities)},
            "target_class": self.target_class,
            "margin_mass": self.margin_mass,
            "margin_area": self.margin_area,
            "content_box": list(self.prepared.content_box),
            "pipeline": self.prepared.pipeline_name,
            "cached": self.cached,
        }


def attributions_dir(settings: Settings) -> Path:
    return settings.cache_dir / "attributions"


def resolve_target(run: LoadedRun, subject: Subject, target: str | int, predicted: int) -> int:
    """``predicted``, ``true`` (the image's own class) or a class name/index."""
    if target == "predicted":
        return predicted
    if target == "true":
        if subject.true_class is None:
            raise ExplainError("this image has no known class (an upload); choose 'predicted' or a class")
        if subject.true_class not in run.class_names:
            raise ExplainError(f"the image's class {subject.true_class!r} is not one the run was "
                               f"trained on ({', '.join(run.class_names)})")
        return run.class_names.index(subject.true_class)
    return run.class_index(target)


def cache_key(config: AttributionConfig, target: int, input_mode: str, input_seed: int) -> str:
    return config.params_hash(target, extra={"input_mode": input_mode, "input_seed": int(input_seed)})


def _predict_and_key(run: LoadedRun, subject: Subject, config: AttributionConfig, target: str | int,
                     input_mode: str, input_seed: int):  # noqa: ANN202 - a tuple
    prepared = prepare_input(run, subject, input_mode=input_mode, input_seed=input_seed)
    with run.lock:
        probabilities = predict_probabilities(run.model, prepared.pixels)
    predicted = int(np.argmax(probabilities))
    target_index = resolve_target(run, subject, target, predicted)
    return prepared, probabilities, predicted, target_index, cache_key(
        config, target_index, input_mode, input_seed)


def cached_explanation(run: LoadedRun | int, subject: Subject, config: AttributionConfig, *,
                       target: str | int = "predicted", input_mode: str = "by-source",
                       input_seed: int = 0, settings: Settings | None = None) -> Explanation | None:
    """``explain``'s result when its map is already cached (a prediction only), else None:
    for pages that show maps a background job is computing, as they arrive."""
    settings = settings or get_settings()
    if not isinstance(run, LoadedRun):
        run = load_run(run, settings)
    started = time.perf_counter()
    prepared, probabilities, predicted, target_index, key = _predict_and_key(
        run, subject, config, target, input_mode, input_seed)
    hit = _cached_map(run.run_id, subject.sha256, config.method, key, attributions_dir(settings),
                      settings)
    if hit is None or hit[1].shape != prepared.pixels.shape[:2]:
        return None
    return _explanation(run, subject, prepared, config, probabilities, predicted, target_index,
                        hit[1], cached=True, seconds=time.perf_counter() - started)


def explain(run: LoadedRun | int, subject: Subject, config: AttributionConfig, *,
            target: str | int = "predicted", input_mode: str = "by-source", input_seed: int = 0,
            use_cache: bool = True, settings: Settings | None = None) -> Explanation:
    """Predict and attribute ``subject`` with the run's model (cached)."""
    settings = settings or get_settings()
    if not isinstance(run, LoadedRun):
        run = load_run(run, settings)
    if use_cache:
        hit = cached_explanation(run, subject, config, target=target, input_mode=input_mode,
                                 input_seed=input_seed, settings=settings)
        if hit is not None:
            return hit
    started = time.perf_counter()
    prepared, probabilities, predicted, target_index, key = _predict_and_key(
        run, subject, config, target, input_mode, input_seed)
    folder = attributions_dir(settings)

    try:
        with run.lock:
            attribution = attribute(run.model, prepared.pixels, target_index, config, prepared=True,
                                    num_classes=len(run.class_names))
    except AttributionError as exc:
        raise ExplainError(str(exc)) from exc
    result = _explanation(run, subject, prepared, config, probabilities, predicted, target_index,
                          attribution, cached=False, seconds=time.perf_counter() - started)
    if use_cache:
        _store(result, key, input_mode, input_seed, folder, settings)
    return result


def _explanation(run: LoadedRun, subject: Subject, prepared: PreparedInput, config: AttributionConfig,
                 probabilities: np.ndarray, predicted: int, target: int, attribution: np.ndarray,
                 *, cached: bool, seconds: float) -> Explanation:
    if prepared.has_margins:
        mass = margin_mass(attribution, prepared.content_box)
        area = margin_area_share(attribution.shape, prepared.content_box)
        mass_value: float | None = None if np.isnan(mass) else mass
    else:
        mass_value, area = None, None
    return Explanation(run.run_id, subject, prepared, config, run.class_names, probabilities,
                       predicted, target, attribution, mass_value, area, cached, seconds)


def _relpath(run_id: int, sha256: str, method: str, key: str) -> str:
    return f"{run_id}/{sha256[:2]}/{sha256}-{method}-{key}.npy"


def _cached_map(run_id: int, sha256: str, method: str, key: str, folder: Path,
                settings: Settings) -> tuple[Attribution, np.ndarray] | None:
    with session_scope(settings) as session:
        row = session.scalar(select(Attribution).where(
            Attribution.run_id == run_id, Attribution.image_sha256 == sha256,
            Attribution.method == method, Attribution.params_hash == key))
    if row is None:
        return None
    try:
        return row, np.load(folder / row.path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        # The file went missing (cache cleaned by hand) or is damaged: recompute it.
        return None


def _store(result: Explanation, key: str, input_mode: str, input_seed: int, folder: Path,
           settings: Settings) -> None:
    relpath = _relpath(result.run_id, result.subject.sha256, result.config.method, key)
    buffer = io.BytesIO()
    np.save(buffer, result.attribution.astype(np.float32), allow_pickle=False)
    # The file first, the row second: a row never points at a missing file.
    # Without fsync: an attribution can always be recomputed, and the flush cost more
    # than computing a saliency map.
    atomic_write(folder / relpath, buffer.getvalue(), settings.tmp_dir, fsync=False)
    subject = result.subject
    true_label = (result.class_names.index(subject.true_class)
                  if subject.true_class in result.class_names else None)
    values = dict(
        image_id=subject.image_id, source=subject.source, params={
            **result.config.key_params(), "target": result.target, "input_mode": input_mode,
            "input_seed": int(input_seed), "pipeline": result.prepared.pipeline_name},
        target=result.target, true_label=true_label, predicted=result.predicted,
        probabilities=[round(float(p), 6) for p in result.probabilities], path=relpath,
        content_box=list(result.prepared.content_box), margin_mass=result.margin_mass,
        margin_area=result.margin_area, seconds=round(result.seconds, 4))

    def write(session: Session) -> None:
        row = session.scalar(select(Attribution).where(
            Attribution.run_id == result.run_id, Attribution.image_sha256 == subject.sha256,
            Attribution.method == result.config.method, Attribution.params_hash == key))
        if row is None:
            session.add(Attribution(run_id=result.run_id, image_sha256=subject.sha256,
                                    method=result.config.method, params_hash=key, **values))
        else:
            for name, value in values.items():
                setattr(row, name, value)
    try:
        run_write(write, settings)
    except IntegrityError:
        pass  # another process cached the same map at the same moment: theirs is as good
