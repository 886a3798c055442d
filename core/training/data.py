"""Which images a run trains, validates and is tested on: selection, splits, subsampling.

``plan_experiment(spec, settings)`` reads the index (chosen datasets and classes, images
not excluded) and returns an ``ExperimentData``: image records per role

    train_real, train_synthetic, val_real, val_synthetic, test_real, test_synthetic,
    cross:<dataset name> ...

Rules that make the comparison honest:

* The real test set is always held out: images tagged ``split='test'`` on import when
  the chosen real datasets have any, otherwise a stratified split drawn with
  ``split_seed``. It never depends on ``real_per_class`` or the mode, so every run of a
  study with the same ``split_seed`` is tested on the same images.
* No leakage: an image (content hash) is in exactly one role; synthetic images of the
  same (prompt, seed) family go to the same side of every split, and so do near-duplicates
  (resized, re-encoded, cropped copies: ``core.training.families``).
* The validation set (early stopping) is split off before any subsampling, so it is the
  same for every point of the data-efficiency curve.

``load_pixels`` turns records into uint8 arrays through the preprocessing cache, with the
``real`` pipeline for real images and the ``synthetic`` pipeline for synthetic ones.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from core.config import Settings, get_settings
from core.db.engine import session_scope
from core.db.models import SOURCE_REAL, SOURCE_SYNTHETIC, Dataset, Image, ImageClass, ImageCount
from core.gallery_sql import class_source_counts
from core.neardup import Limits
from core.training.families import (merge_near_duplicate_families, near_duplicates_across,
                                    pin_to_real_split, without_near_duplicates_of)

MODES = ("real", "synthetic", "mixed", "pretrain-finetune")
TEST_TAGS = ("test",)
FITTING_ROLES = ("train_real", "train_synthetic", "val_real", "val_synthetic")
VAL_TAGS = ("val", "valid", "validation")


class DataError(ValueError):
    """The chosen data cannot make this experiment; the message says what is missing."""


@dataclass
class DataSpec:
    """What to train and test on. Every random choice takes its seed from here."""

    mode: str = "real"
    classes: list[str] | None = None  # class keys; None: every class with real images
    real_datasets: list[str] | None = None  # dataset names; None: every real dataset
    synthetic_datasets: list[str] | None = None  # None: every synthetic dataset
    # Evaluate also on each of these real datasets (train on A, test on B).
    cross_datasets: list[str] = field(default_factory=list)
    # Data-efficiency: keep this many real training images per class (None: all).
    real_per_class: int | None = None
    # Synthetic images per class in the training set (mixed: "all real + N per class";
    # synthetic / pretrain-finetune: a cap). None: all available.
    synthetic_per_class: int | None = None
    # Mixed by ratio: the fraction of the training set that is synthetic (0 < r < 1).
    mix_ratio: float | None = None
    # Mixed as the original study meant it: half of the real and half of the synthetic
    # training images of each class (drawn with ``subsample_seed``).
    mix_half: bool = False
    test_fraction: float = 0.2  # of real images, when no imported test split exists
    val_fraction: float = 0.15
    synthetic_test_fraction: float = 0.2
    split_seed: int = 0
    subsample_seed: int = 0
    real_pipeline: str = "real"
    synthetic_pipeline: str = "synthetic"
    # Random preprocessing steps (margins, crops) drawn anew every epoch (augmentation), or
    # once per image before training, as the original study did.
    augment_each_epoch: bool = True

    def __post_init__(self) -> None:
        if self.mix_half and self.mode != "mixed":
            raise DataError("mix_half only applies to the mixed mode")
        if self.mix_half and (self.mix_ratio is not None or self.synthetic_per_class is not None):
            raise DataError("choose one way to mix: half of each set, a ratio, or N synthetic "
                            "per class")
        if self.mode not in MODES:
            raise DataError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        for name in ("test_fraction", "val_fraction", "synthetic_test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise DataError(f"{name} must be in [0, 1)")
        if self.mix_ratio is not None and not 0 < self.mix_ratio < 1:
            raise DataError("mix_ratio must be between 0 and 1 (the synthetic share of training)")
        if self.real_per_class is not None and self.real_per_class < 1:
            raise DataError("real_per_class must be at least 1")
        if self.synthetic_per_class is not None and self.synthetic_per_class < 0:
            raise DataError("synthetic_per_class must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DataSpec":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def uses_real_training(self) -> bool:
        return self.mode in ("real", "mixed", "pretrain-finetune")

    @property
    def uses_synthetic_training(self) -> bool:
        return self.mode in ("synthetic", "mixed", "pretrain-finetune")


@dataclass(frozen=True)
class ImageRecord:
    id: int
    sha256: str
    path: str
    label: int
    source: str
    dataset: str
    family: str  # images of one family always land on the same side of a split
    # Near-duplicate signatures (core.neardup): near-duplicates share a family.
    phash: int | None = None
    colour_sig: str | None = None


@dataclass
class ExperimentData:
    spec: DataSpec
    class_names: list[str]
    roles: dict[str, list[ImageRecord]]
    notes: list[str] = field(default_factory=list)

    def records(self, role: str) -> list[ImageRecord]:
        return self.roles.get(role, [])

    def labels(self, role: str) -> np.ndarray:
        return np.array([r.label for r in self.records(role)], dtype=np.int64)

    def counts(self) -> dict[str, int]:
        return {role: len(records) for role, records in self.roles.items()}

    def eval_roles(self) -> list[str]:
        return [role for role in self.roles
                if (role.startswith("test_") or role.startswith("cross:")) and self.roles[role]]


def family_key(image: Image) -> str:
    if image.source == SOURCE_SYNTHETIC and image.prompt is not None and image.seed is not None:
        return f"gen:{image.prompt}\x1f{image.seed}"
    group = (image.extra or {}).get("group") if isinstance(image.extra, dict) else None
    return f"group:{group}" if group else f"sha:{image.sha256}"


def _query_images(settings: Settings, source: str, datasets: list[str] | None,
                  classes: list[str] | None) -> list[Image]:
    with session_scope(settings) as session:
        query = (select(Image).join(Dataset, Image.dataset_id == Dataset.id)
                 .join(ImageClass, Image.class_id == ImageClass.id)
                 .where(Image.excluded.is_(False), Image.source == source).order_by(Image.id))
        if datasets is not None:
            known = set(session.scalars(select(Dataset.name).where(Dataset.name.in_(datasets))))
            missing = [d for d in datasets if d not in known]
            if missing:
                raise DataError(f"no dataset named {', '.join(missing)}")
            query = query.where(Dataset.name.in_(datasets))
        if classes is not None:
            query = query.where(ImageClass.name.in_(classes))
        return list(session.scalars(query))


def _group_split(records: list[ImageRecord], fraction: float, rng: np.random.Generator,
                 ) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Stratified by class, grouped by family: returns (kept, held_out)."""
    if fraction <= 0:
        return list(records), []
    kept, held = [], []
    by_class: dict[int, dict[str, list[ImageRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        by_class[record.label][record.family].append(record)
    for label in sorted(by_class):
        families = sorted(by_class[label])
        rng.shuffle(families)
        total = sum(len(by_class[label][f]) for f in families)
        target = int(round(total * fraction))
        if total >= 2:
            target = min(max(target, 1), total - 1)  # both sides get something
        taken = 0
        for fam in families:
            members = by_class[label][fam]
            if taken < target:
                held.extend(members)
                taken += len(members)
            else:
                kept.extend(members)
    return sorted(kept, key=lambda r: r.id), sorted(held, key=lambda r: r.id)


def _per_class(records: list[ImageRecord], count: int | None, rng: np.random.Generator,
               counts: dict[int, int] | None = None) -> list[ImageRecord]:
    """At most ``count`` (or ``counts[label]``) records per class, drawn with ``rng``."""
    if count is None and counts is None:
        return list(records)
    by_class: dict[int, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_class[record.label].append(record)
    out = []
    for label in sorted(by_class):
        members = by_class[label]
        want = counts.get(label, 0) if counts is not None else count
        order = rng.permutation(len(members))
        out.extend(members[i] for i in order[:want])
    return sorted(out, key=lambda r: r.id)


def _count_by_label(records: list[ImageRecord]) -> dict[int, int]:
    counts: dict[int, int] = defaultdict(int)
    for record in records:
        counts[record.label] += 1
    return counts


def _halves(records: list[ImageRecord], n_classes: int) -> dict[int, int]:
    """Half of each class's images (rounded up, so a class of one keeps its image)."""
    counts = _count_by_label(records)
    return {k: (counts[k] + 1) // 2 for k in range(n_classes)}


def _shortfall_note(wanted: int, class_names: list[str], synthetic: list[ImageRecord],
                    pool: dict[int, int], test: list[ImageRecord],
                    val: list[ImageRecord]) -> list[str]:
    """A note for each class whose training pool (what is left after the synthetic test and
    validation sets are held out) has fewer than ``wanted`` images, with the arithmetic."""
    total, tested, validated = (_count_by_label(r) for r in (synthetic, test, val))
    short = [k for k in range(len(class_names)) if pool[k] < wanted]
    if not short:
        return []
    detail = "; ".join(f"{class_names[k]}: {pool[k]} of {total[k]} ({tested[k]} held out for "
                       f"the synthetic test set, {validated[k]} for validation)" for k in short)
    return [f"{wanted} synthetic training images per class asked for, fewer available for "
            f"{', '.join(class_names[k] for k in short)}; used all available ({detail})"]


def _records(images: list[Image], class_index: dict[str, int]) -> list[ImageRecord]:
    return [ImageRecord(img.id, img.sha256, img.path, class_index[img.image_class.name], img.source,
                        img.dataset.name, family_key(img), img.phash, img.colour_sig)
            for img in images if img.image_class.name in class_index]


def plan_experiment(spec: DataSpec, settings: Settings | None = None) -> ExperimentData:
    settings = settings or get_settings()
    real_images = _query_images(settings, SOURCE_REAL, spec.real_datasets, spec.classes)
    synthetic_images = _query_images(settings, SOURCE_SYNTHETIC, spec.synthetic_datasets, spec.classes)
    if spec.classes:
        class_names = sorted(spec.classes)
    else:
        pool = real_images if spec.uses_real_training or not synthetic_images else synthetic_images
        class_names = sorted({img.image_class.name for img in pool})
    if len(class_names) < 2 and spec.classes:
        raise DataError(f"a classifier needs at least 2 classes; only {', '.join(class_names)} "
                        "was chosen. Choose another class, or none to use them all.")
    if len(class_names) < 2:
        raise DataError("a classifier needs at least 2 classes with images; found "
                        f"{len(class_names)} ({', '.join(class_names) or 'none'}). Import images first.")
    class_index = {name: k for k, name in enumerate(class_names)}
    real = _records(real_images, class_index)
    synthetic = _records(synthetic_images, class_index)
    notes: list[str] = []
    real, synthetic, near_notes = merge_near_duplicate_families(real, synthetic, settings,
                                                                class_names)

    def require(records: list[ImageRecord], what: str, minimum: int = 2) -> None:
        per_class = defaultdict(int)
        for r in records:
            per_class[r.label] += 1
        thin = [name for k, name in enumerate(class_names) if per_class[k] < minimum]
        if thin:
            raise DataError(f"not enough {what} images for class(es) {', '.join(thin)} "
                            f"(need at least {minimum} each)")

    # The real test set exists in every mode: the question is always "how well on real?".
    require(real, "real")
    split_rng = np.random.default_rng([spec.split_seed, 1])
    tagged_test = [r for r, img in zip(real, _matching(real_images, real)) if img.split in TEST_TAGS]
    if tagged_test:
        test_ids = {r.id for r in tagged_test}
        families = {r.family for r in tagged_test}
        pool = [r for r in real if r.id not in test_ids and r.family not in families]
        test_real = sorted(tagged_test, key=lambda r: r.id)
        notes.append(f"real test set: {len(test_real)} images tagged 'test' on import")
        if len(real) - len(test_real) - len(pool):
            notes.append(f"{len(real) - len(test_real) - len(pool)} untagged images left out of "
                         "training: near-duplicates (or import-group members) of test images")
    else:
        pool, test_real = _group_split(real, spec.test_fraction or 0.2, split_rng)
        notes.append(f"real test set: stratified {spec.test_fraction:.0%} split, seed {spec.split_seed}")
    notes.extend(near_notes)
    tagged_val = {r.id for r, img in zip(real, _matching(real_images, real)) if img.split in VAL_TAGS}
    if tagged_val:
        val_real = [r for r in pool if r.id in tagged_val]
        train_real = [r for r in pool if r.id not in tagged_val]
    else:
        train_real, val_real = _group_split(pool, spec.val_fraction, split_rng)
    subsample_rng = np.random.default_rng([spec.subsample_seed, 2])
    train_real = _per_class(train_real, spec.real_per_class, subsample_rng)

    synth_rng = np.random.default_rng([spec.split_seed, 3])
    synth_free, synth_to_test, synth_to_fit = pin_to_real_split(synthetic, test_real, pool)
    synth_pool, test_synthetic = _group_split(synth_free, spec.synthetic_test_fraction, synth_rng)
    synth_pool = sorted(synth_pool + synth_to_fit, key=lambda r: r.id)
    test_synthetic = sorted(test_synthetic + synth_to_test, key=lambda r: r.id)
    # Mixed training validates on real images only: holding synthetic ones out for a
    # validation set nobody uses would just shrink the training pool.
    synth_val_fraction = 0.0 if spec.mode == "mixed" else spec.val_fraction
    synth_train, val_synthetic = _group_split(synth_pool, synth_val_fraction, synth_rng)
    if spec.uses_synthetic_training:
        require(synthetic, "synthetic")
        pool_counts = _count_by_label(synth_train)
        if spec.mix_half:
            train_real = _per_class(train_real, None, subsample_rng,
                                    counts=_halves(train_real, len(class_names)))
            synth_train = _per_class(synth_train, None, subsample_rng,
                                     counts=_halves(synth_train, len(class_names)))
            notes.append("mixed as the original study: half of the real and half of the "
                         "synthetic training images of each class")
        elif spec.mode == "mixed" and spec.mix_ratio is not None and spec.synthetic_per_class is None:
            real_counts = _count_by_label(train_real)
            ratio = spec.mix_ratio / (1 - spec.mix_ratio)
            wanted = {k: int(round(ratio * real_counts[k])) for k in range(len(class_names))}
            synth_train = _per_class(synth_train, None, subsample_rng, counts=wanted)
            short = [class_names[k] for k, n in wanted.items() if pool_counts[k] < n]
            if short:
                notes.append(f"mix ratio {spec.mix_ratio}: not enough synthetic images for "
                             f"{', '.join(short)}; used all available")
        else:
            synth_train = _per_class(synth_train, spec.synthetic_per_class, subsample_rng)
            if spec.synthetic_per_class:
                notes.extend(_shortfall_note(spec.synthetic_per_class, class_names, synthetic,
                                             pool_counts, test_synthetic, val_synthetic))
    roles: dict[str, list[ImageRecord]] = {
        "train_real": train_real if spec.uses_real_training else [],
        "train_synthetic": synth_train if spec.uses_synthetic_training else [],
        "val_real": val_real,
        "val_synthetic": val_synthetic if spec.uses_synthetic_training else [],
        "test_real": test_real,
        "test_synthetic": test_synthetic,
    }
    if spec.mode == "synthetic":
        roles["val_real"] = []  # early stopping must not peek at real data
    used = {r.sha256 for records in roles.values() for r in records}
    for name in spec.cross_datasets:
        cross_images = _query_images(settings, SOURCE_REAL, [name], class_names)
        records = [r for r in _records(cross_images, class_index) if r.sha256 not in used]
        records, dropped = without_near_duplicates_of(
            records, [r for role in FITTING_ROLES for r in roles[role]], settings)
        if dropped:
            notes.append(f"cross:{name}: {dropped} near-duplicates of training images left out")
        if not records:
            raise DataError(f"dataset {name!r} has no images of the chosen classes for cross-dataset evaluation")
        roles[f"cross:{name}"] = records
    data = ExperimentData(spec, class_names, roles, notes)
    if not roles["train_real"] and not roles["train_synthetic"]:
        raise DataError("no training images after splitting; import more images")
    check_no_leakage(data, settings)
    return data


def _matching(images: list[Image], records: list[ImageRecord]) -> list[Image]:
    by_id = {img.id: img for img in images}
    return [by_id[r.id] for r in records]


def check_no_leakage(data: ExperimentData, settings: Settings | None = None) -> None:
    """Raise if an image, a family or a pair of near-duplicates (``core.neardup``, with the
    limits of ``settings``) is on both sides (train/val vs test)."""
    seen: dict[str, str] = {}
    for role, records in data.roles.items():
        for record in records:
            if record.sha256 in seen and not role.startswith("cross:"):
                raise AssertionError(f"image {record.sha256[:12]} is in both {seen[record.sha256]} and {role}")
            seen.setdefault(record.sha256, role)
    fitting = {r.family for role in ("train_real", "train_synthetic", "val_real", "val_synthetic")
               for r in data.records(role)}
    for role in data.eval_roles():
        shared = fitting & {r.family for r in data.records(role)}
        if shared:
            raise AssertionError(f"{len(shared)} image families are in both training and {role}")
    limits = Limits.of(settings or get_settings())
    fitting_records = [r for role in FITTING_ROLES for r in data.records(role)]
    for role in data.eval_roles():
        close = near_duplicates_across(fitting_records, data.records(role), limits)
        if close:
            fit, held, distance = close[0]
            raise AssertionError(f"{len(close)} near-duplicate pairs straddle training and {role} "
                                 f"(e.g. images {fit.id} and {held.id}, {distance} bits apart)")


def pipelines_for(spec: DataSpec, settings: Settings, image_size: int) -> dict[str, Any]:
    from core.preprocess import load_pipeline

    return {"real": load_pipeline(spec.real_pipeline, settings, size=image_size),
            "synthetic": load_pipeline(spec.synthetic_pipeline, settings, size=image_size)}


def load_pixels(records: list[ImageRecord], pipelines: dict[str, Any], settings: Settings, *,
                seed: int, epoch: int = 0, cache: Any = None) -> np.ndarray:
    """uint8 ``(N, S, S, 3)`` in the order of ``records``; each source through its pipeline."""
    from core.preprocess import PreprocessedCache

    cache = cache or PreprocessedCache(settings)
    if not records:
        size = pipelines["real"].output_size or settings.image_size
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    out: np.ndarray | None = None
    for source in (SOURCE_REAL, SOURCE_SYNTHETIC):
        index = [i for i, r in enumerate(records) if r.source == source]
        if not index:
            continue
        pixels = cache.load([(records[i].sha256, records[i].path) for i in index],
                            pipelines[source], seed, epoch=epoch)
        if out is None:
            out = np.empty((len(records),) + pixels.shape[1:], dtype=np.uint8)
        out[index] = pixels
    assert out is not None
    return out


@dataclass
class Choices:
    """What the index offers for an experiment (for forms): names with image counts."""

    real_datasets: dict[str, int]
    synthetic_datasets: dict[str, int]
    classes: dict[str, dict[str, int]]  # class key -> {"real": n, "synthetic": n}


def available_choices(settings: Settings | None = None) -> Choices:
    from sqlalchemy import func

    settings = settings or get_settings()
    # From the trigger-kept count table (exact): summing its few rows, not counting images.
    usable = ImageCount.excluded == False  # noqa: E712 - SQL
    with session_scope(settings) as session:
        per_dataset = session.execute(
            select(Dataset.name, ImageCount.source, func.sum(ImageCount.n))
            .join(ImageCount, ImageCount.dataset_id == Dataset.id).where(usable)
            .group_by(Dataset.name, ImageCount.source)).all()
        per_class = [(name, source, n) for name, _display, source, n
                     in class_source_counts(session)]
    real = {name: int(n) for name, source, n in per_dataset if source == SOURCE_REAL}
    synthetic = {name: int(n) for name, source, n in per_dataset if source == SOURCE_SYNTHETIC}
    classes: dict[str, dict[str, int]] = {}
    for name, source, n in per_class:
        classes.setdefault(name, {"real": 0, "synthetic": 0})[source] = int(n)
    return Choices(dict(sorted(real.items())), dict(sorted(synthetic.items())), dict(sorted(classes.items())))
