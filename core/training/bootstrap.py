"""Bootstrap confidence intervals of test metrics, over test images.

One resample draws ``n`` test images with replacement; the metric is recomputed on it, and
the interval is the 2.5th and 97.5th percentile of the metric over the resamples. The
draws come from ``default_rng(seed)``, and the seed is stored with the interval, so the
same run always reports the same interval.

Recomputing with scikit-learn per resample costs about 5 ms x 1,000 resamples per eval
set; here every resample is a row of a count matrix (how often each test image was drawn)
and the metrics are computed for all rows at once from weighted confusion matrices and a
weighted Mann-Whitney statistic, with the same conventions as ``core.training.metrics``:
P/R/F1 averaged over the classes present in the (resampled) set, one-vs-rest ROC-AUC over
the classes with positives and negatives.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95
INTERVAL_METRICS = ("accuracy", "precision", "recall", "f1", "precision_weighted",
                    "recall_weighted", "f1_weighted", "roc_auc")
# Rows of the count matrix computed at once: bounds memory at large test sets.
_CHUNK_CELLS = 4_000_000


def _count_chunks(n: int, resamples: int, seed: int, rows: int) -> Iterator[np.ndarray]:
    """The rows of ``resample_counts`` in blocks of ``rows``, drawn from one stream, so memory
    stays bounded however many test images there are."""
    rng = np.random.default_rng([int(seed), 8191])
    for start in range(0, resamples, rows):
        block = min(rows, resamples - start)
        draws = rng.integers(0, n, size=(block, n))
        offsets = (np.arange(block)[:, None] * n + draws).ravel()
        yield np.bincount(offsets, minlength=block * n).reshape(block, n)


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n)``: how many times each of ``n`` items is drawn in each resample."""
    return np.concatenate(list(_count_chunks(n, resamples, seed, resamples)))


def _classification(counts: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                    n_classes: int) -> dict[str, np.ndarray]:
    weights = counts.astype(np.float64)
    truth = np.eye(n_classes)[y_true]  # (n, K)
    guess = np.eye(n_classes)[y_pred]
    support = weights @ truth  # (B, K) true images per class
    predicted = weights @ guess
    hits = weights @ (truth * guess)  # true positives per class
    total = weights.sum(axis=1)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    n_present = present.sum(axis=1)
    out = {"accuracy": hits.sum(axis=1) / total}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[name] = np.where(present, values, 0.0).sum(axis=1) / n_present
        out[f"{name}_weighted"] = (values * support).sum(axis=1) / total
    return out


def _weighted_auc(counts: np.ndarray, scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC per resample (NaN where a resample lacks positives or negatives):
    P(score of a positive > score of a negative) + half the ties, images weighted by counts."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    weights = counts[:, order].astype(np.float64)
    pos = weights * positive[order]
    neg = weights - pos
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    group = np.cumsum(np.r_[False, sorted_scores[1:] != sorted_scores[:-1]])
    neg_in_group = np.add.reduceat(neg, starts, axis=1)
    neg_below = np.cumsum(neg_in_group, axis=1) - neg_in_group
    wins = (pos * (neg_below[:, group] + 0.5 * neg_in_group[:, group])).sum(axis=1)
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def bootstrap_metrics(y_true: np.ndarray, proba: np.ndarray, *, seed: int,
                      resamples: int = DEFAULT_RESAMPLES) -> dict[str, np.ndarray]:
    """Every metric of ``INTERVAL_METRICS`` on each resample: ``{metric: (resamples,)}``."""
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    n, n_classes = proba.shape
    if n == 0:
        raise ValueError("cannot bootstrap an empty set")
    y_pred = proba.argmax(axis=1)
    per_chunk = max(1, _CHUNK_CELLS // max(1, n))
    parts: list[dict[str, np.ndarray]] = []
    for chunk in _count_chunks(n, resamples, seed, per_chunk):
        values = _classification(chunk, y_true, y_pred, n_classes)
        aucs = np.stack([_weighted_auc(chunk, proba[:, k], y_true == k) for k in range(n_classes)])
        with np.errstate(invalid="ignore"):
            defined = ~np.isnan(aucs)
            values["roc_auc"] = np.where(defined.any(axis=0),
                                         np.nansum(aucs, axis=0) / np.maximum(defined.sum(axis=0), 1),
                                         np.nan)
        parts.append(values)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def bootstrap_intervals(y_true: np.ndarray, proba: np.ndarray, *, seed: int,
                        resamples: int = DEFAULT_RESAMPLES) -> tuple[dict[str, list[float] | None],
                                                                     dict[str, Any]]:
    """``({metric: [low, high]}, {"seed", "resamples", "level", "method"})``: 95% percentile
    intervals; None for a metric that no resample defines."""
    samples = bootstrap_metrics(y_true, proba, seed=seed, resamples=resamples)
    tail = (1 - LEVEL) / 2 * 100
    intervals: dict[str, list[float] | None] = {}
    for key in INTERVAL_METRICS:
        values = samples[key][~np.isnan(samples[key])]
        intervals[key] = ([round(float(np.percentile(values, tail)), 6),
                           round(float(np.percentile(values, 100 - tail)), 6)]
                          if len(values) else None)
    return intervals, {"seed": int(seed), "resamples": int(resamples), "level": LEVEL,
                       "method": "percentile bootstrap over test images"}
