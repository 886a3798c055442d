"""Named training protocols: SynthLab's default and the original fruit study's, exactly.

A protocol is a bundle of ordinary options (every one of them is also a field of
``DataSpec`` or ``TrainConfig``, so each can be set on its own); applying one to a request
only fills those fields. The run records the protocol's name in ``config["protocol"]``.

The original study (the one SynthLab grew out of) trained one small CNN on Kaggle's
fruit-images-for-object-detection photos (apple, banana, orange) and 4,400 Stable
Diffusion 1.5 images, with no validation split, the last epoch's weights, Keras-style
Xavier-uniform initialisation with zero biases, plain Adam (lr 1e-3, no weight decay),
batch 32, 10 epochs and cross-entropy; images were letterboxed onto a white square and
LANCZOS-resized to 64x64, and half of the square images were cropped top and bottom so
they looked like the landscape photos, once, before training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The choices of the protocol options (kept here, free of torch, so the CLI parser can list
# them without importing it).
OPTIMIZERS = ("adamw", "adam")
INIT_SCHEMES = ("default", "xavier")
SELECT_RULES = ("best-val", "last")

# The five figures the original study published for its best model, on its 55 real test
# images. Recall equal to accuracy shows that P/R/F1 are support-weighted averages.
ORIGINAL_STUDY_METRICS: dict[str, float] = {
    "accuracy": 0.9636,
    "precision_weighted": 0.9655,
    "recall_weighted": 0.9636,
    "f1_weighted": 0.9630,
    "roc_auc": 0.9865,
}
ORIGINAL_STUDY_TEST_IMAGES = 55
ORIGINAL_STUDY_CLASSES = ("apple", "banana", "orange")

# The built-in preprocessing presets that reproduce the study (see core.preprocess.pipeline).
ORIGINAL_REAL_PIPELINE = "original-real"
ORIGINAL_SYNTHETIC_PIPELINE = "original-synthetic"


@dataclass(frozen=True)
class Protocol:
    """A named set of DataSpec and TrainConfig values."""

    name: str
    title: str
    description: str
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


SYNTHLAB = Protocol(
    name="synthlab",
    title="SynthLab default",
    description="15% of the training images held out for validation; the weights of the best "
                "validation epoch (early stop after 3 epochs without improvement); PyTorch's "
                "default initialisation; AdamW (lr 1e-3, weight decay 1e-4); black letterbox; "
                "random margins on synthetic images redrawn every epoch.",
    data={"val_fraction": 0.15, "real_pipeline": "real", "synthetic_pipeline": "synthetic",
          "augment_each_epoch": True},
    train={"optimizer": "adamw", "weight_decay": 1e-4, "init": "default", "select": "best-val",
           "patience": 3, "lr": 1e-3, "batch_size": 32, "epochs": 10},
)

ORIGINAL = Protocol(
    name="original",
    title="Original study",
    description="As the original fruit study: no validation split (every training image is "
                "used), the last epoch's weights, Xavier-uniform weights with zero biases, "
                "plain Adam (lr 1e-3, no weight decay), batch 32, 10 epochs, cross-entropy; "
                "white letterbox and LANCZOS resize to 64x64; half of the square images cropped "
                "top and bottom once, before training; mixed = half of each set per class.",
    data={"val_fraction": 0.0, "real_pipeline": ORIGINAL_REAL_PIPELINE,
          "synthetic_pipeline": ORIGINAL_SYNTHETIC_PIPELINE, "augment_each_epoch": False},
    train={"optimizer": "adam", "weight_decay": 0.0, "init": "xavier", "select": "last",
           "patience": 0, "lr": 1e-3, "batch_size": 32, "epochs": 10, "image_size": 64},
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (SYNTHLAB, ORIGINAL)}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}") from None


def protocol_options(name: str | None, data: dict[str, Any] | None = None,
                     train: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The protocol's DataSpec and TrainConfig values (SynthLab's when ``name`` is None),
    with every value given in ``data``/``train`` that is not None taking precedence."""
    protocol = get_protocol(name or SYNTHLAB.name)
    chosen_data = {**protocol.data, **{k: v for k, v in (data or {}).items() if v is not None}}
    chosen_train = {**protocol.train, **{k: v for k, v in (train or {}).items() if v is not None}}
    return chosen_data, chosen_train


def compare_with_original(metrics: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows ``{"metric", "original", "this run", "difference"}`` for a run's real-test metrics."""
    values = metrics or {}
    rows = []
    for key, published in ORIGINAL_STUDY_METRICS.items():
        mine = values.get(key)
        rows.append({"metric": key, "original study": published,
                     "this run": mine,
                     "difference": None if mine is None else round(float(mine) - published, 4)})
    rows.append({"metric": "n (test images)", "original study": ORIGINAL_STUDY_TEST_IMAGES,
                 "this run": values.get("n"), "difference": None})
    return rows
