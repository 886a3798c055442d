"""Classification metrics with scikit-learn, shaped for JSON storage and plotting.

``evaluate(y_true, proba, class_names)`` returns ``(metrics, curves)``: ``metrics`` are the
scalars (accuracy, precision/recall/F1 macro and weighted, one-vs-rest macro ROC-AUC,
the test images per class, and with a bootstrap seed 95% intervals over test images);
``curves`` hold per-class ROC and precision-recall curves, the macro ROC curve,
confusion matrices (counts and row-normalised) and the per-class report.

Classes absent from the evaluation set are handled explicitly: their ROC-AUC is
undefined (``None``), the macro AUC averages over the classes that are present, and
``roc_auc_classes`` says how many that was.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from core.training.bootstrap import DEFAULT_RESAMPLES, bootstrap_intervals

# Curves are thinned to at most this many points so they stay small in the DB.
MAX_CURVE_POINTS = 200


def _clean(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _thin(*arrays: np.ndarray) -> list[list[float]]:
    length = len(arrays[0])
    if length <= MAX_CURVE_POINTS:
        index = np.arange(length)
    else:
        index = np.unique(np.linspace(0, length - 1, MAX_CURVE_POINTS).round().astype(int))
    return [[round(float(v), 6) for v in array[index]] for array in arrays]


def _normalised_rows(proba: np.ndarray) -> np.ndarray:
    clipped = np.clip(proba, 1e-7, None)
    return clipped / clipped.sum(axis=1, keepdims=True)


def roc_auc_ovr(y_true: np.ndarray, proba: np.ndarray) -> tuple[float | None, list[float | None]]:
    """Macro one-vs-rest ROC-AUC over the classes present (with at least one negative too)."""
    from sklearn import metrics as skm  # here, not at import: 1.25 s nothing else needs
    per_class: list[float | None] = []
    for k in range(proba.shape[1]):
        positives = y_true == k
        if positives.all() or not positives.any():
            per_class.append(None)
            continue
        per_class.append(float(skm.roc_auc_score(positives.astype(int), proba[:, k])))
    defined = [v for v in per_class if v is not None]
    return (float(np.mean(defined)) if defined else None), per_class


def evaluate(y_true: np.ndarray | list[int], proba: np.ndarray, class_names: list[str], *,
             bootstrap_seed: int | None = None,
             resamples: int = DEFAULT_RESAMPLES) -> tuple[dict[str, Any], dict[str, Any]]:
    """``bootstrap_seed``: also store 95% bootstrap intervals over the test images
    (``ci95``) and how they were drawn (``bootstrap``)."""
    from sklearn import metrics as skm  # here, not at import (see roc_auc_ovr)

    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    n_classes = len(class_names)
    if proba.ndim != 2 or proba.shape != (len(y_true), n_classes):
        raise ValueError(f"proba must be (n_samples, {n_classes}), got {proba.shape}")
    if len(y_true) == 0:
        raise ValueError("cannot evaluate on an empty set")
    labels = list(range(n_classes))
    y_pred = proba.argmax(axis=1)
    auc_macro, auc_per_class = roc_auc_ovr(y_true, proba)
    present = sorted(set(y_true.tolist()))
    metrics: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "roc_auc": _clean(auc_macro),
        "roc_auc_classes": sum(v is not None for v in auc_per_class),
        # float32 softmax rows sum to 1 only approximately; log_loss insists on exactly.
        "log_loss": _clean(skm.log_loss(y_true, _normalised_rows(proba), labels=labels)),
    }
    # Averages are over the classes present in the evaluation set: a class that is
    # never shown can be neither recalled nor missed.
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=present, average=average, zero_division=0)
        suffix = "" if average == "macro" else "_weighted"
        metrics[f"precision{suffix}"] = float(p)
        metrics[f"recall{suffix}"] = float(r)
        metrics[f"f1{suffix}"] = float(f)

    p, r, f, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0)
    metrics["n_per_class"] = {class_names[k]: int(support[k]) for k in labels}
    if bootstrap_seed is not None:
        metrics["ci95"], metrics["bootstrap"] = bootstrap_intervals(
            y_true, proba, seed=bootstrap_seed, resamples=resamples)
    report = [{"class": class_names[k], "precision": float(p[k]), "recall": float(r[k]),
               "f1": float(f[k]), "support": int(support[k]), "roc_auc": _clean(auc_per_class[k])}
              for k in labels]
    counts = skm.confusion_matrix(y_true, y_pred, labels=labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))

    roc, pr = {}, {}
    grid = np.linspace(0, 1, 101)
    tpr_sum, tpr_count = np.zeros_like(grid), 0
    for k in labels:
        positives = (y_true == k).astype(int)
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = skm.roc_curve(positives, proba[:, k])
        roc[class_names[k]] = dict(zip(("fpr", "tpr"), _thin(fpr, tpr)), auc=auc_per_class[k])
        tpr_sum += np.interp(grid, fpr, tpr)
        tpr_count += 1
        precision, recall, _ = skm.precision_recall_curve(positives, proba[:, k])
        ap = skm.average_precision_score(positives, proba[:, k])
        pr[class_names[k]] = dict(zip(("recall", "precision"), _thin(recall, precision)), ap=float(ap))
    curves: dict[str, Any] = {
        "roc": roc,
        "pr": pr,
        "roc_macro": ({"fpr": [round(float(v), 6) for v in grid],
                       "tpr": [round(float(v), 6) for v in tpr_sum / tpr_count],
                       "auc": _clean(auc_macro)} if tpr_count else None),
        "pr_macro_ap": (float(np.mean([c["ap"] for c in pr.values()])) if pr else None),
        "confusion": counts.tolist(),
        "confusion_normalised": [[round(float(v), 6) for v in row] for row in normalised],
        "report": report,
        "classes_present": [class_names[k] for k in present],
    }
    return metrics, curves


def aggregate(metric_dicts: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean and (sample) standard deviation of every numeric metric over repeated runs."""
    keys = sorted({k for d in metric_dicts for k, v in d.items() if isinstance(v, (int, float))})
    out: dict[str, dict[str, float | None]] = {}
    for key in keys:
        values = [float(d[key]) for d in metric_dicts if isinstance(d.get(key), (int, float))]
        if not values:
            continue
        out[key] = {"mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                    "n": len(values)}
    return out
