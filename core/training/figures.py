"""Plotly figures and tables of training results (no Streamlit here: pages just show them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.figure_layout import readable
from core.training.experiments import LABELLED_METRICS, group_by_variant, summarize
from core.training.models import Run

EVAL_SET_LABELS = {"real_test": "real test set", "synthetic_test": "synthetic test set"}


def eval_set_label(key: str) -> str:
    if key.startswith("cross:"):
        return f"cross-dataset: {key.split(':', 1)[1]}"
    return EVAL_SET_LABELS.get(key, key)


def eval_sets(runs: list[Run]) -> list[str]:
    keys: list[str] = []
    for run in runs:
        for key in (run.metrics or {}):
            if not key.startswith("_") and key not in keys:
                keys.append(key)
    return sorted(keys, key=lambda k: (k != "real_test", k != "synthetic_test", k))


# What the tables show, in order, with labels that say which average each one is: the
# original study published support-weighted P/R/F1, SynthLab leads with macro averages, and
# an unlabelled "precision" invites comparing the two.
TABLE_METRICS: tuple[str, ...] = ("accuracy", "precision", "precision_weighted", "recall",
                                  "recall_weighted", "f1", "f1_weighted", "roc_auc")
METRIC_LABELS: dict[str, str] = {
    "accuracy": "accuracy",
    "precision": "precision (macro)", "precision_weighted": "precision (weighted)",
    "recall": "recall (macro)", "recall_weighted": "recall (weighted)",
    "f1": "F1 (macro)", "f1_weighted": "F1 (weighted)",
    "roc_auc": "ROC-AUC (macro, one-vs-rest)", "log_loss": "log loss",
}
# Machine-friendly CSV names: the labelled names every CLI output uses (the stored keys of
# the macro averages carry no suffix).
CSV_NAMES: dict[str, str] = dict(LABELLED_METRICS)
N_LABEL = "n (test images)"
# Below these, a test set gives intervals too wide for small differences to mean anything.
MIN_TEST_IMAGES = 30
MIN_CLASS_IMAGES = 5


def metric_label(key: str) -> str:
    return METRIC_LABELS.get(key, key)


def runs_text(ids: list[int]) -> str:
    """"run 3", "runs 3 and 7", "runs 3-6, 9 and 12": consecutive ids collapse to ranges."""
    ids = sorted(set(ids))
    if not ids:
        return "no runs"
    parts: list[str] = []
    start = prev = ids[0]
    for value in [*ids[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(f"{start}" if start == prev else f"{start}\u2013{prev}" if prev > start + 1
                     else f"{start}, {prev}")
        if value is not None:
            start = prev = value
    text = ", ".join(parts)
    if len(ids) == 1:
        return f"run {text}"
    head, _, tail = text.rpartition(", ")
    return f"runs {head} and {tail}" if head else f"runs {text}"


def mean_interval(runs: list[Run], eval_set: str, metric: str) -> tuple[float, float] | None:
    """The runs' 95% bootstrap intervals (``ci95``) of ``metric``, bounds averaged over
    seeds: the typical test-set uncertainty of one run. None when no run has one (runs
    from before intervals were stored)."""
    bounds = [interval for run in runs
              if isinstance(interval := ((run.metrics or {}).get(eval_set) or {})
                            .get("ci95", {}).get(metric), (list, tuple))
              and len(interval) == 2 and None not in interval]
    if not bounds:
        return None
    return (float(np.mean([b[0] for b in bounds])), float(np.mean([b[1] for b in bounds])))


def format_metric(stats: dict[str, Any] | None, interval: tuple[float, float] | None) -> str:
    """"0.912", "0.912 ± 0.020" over several seeds, then "[0.850, 0.960]" when known."""
    if not stats:
        return "n/a"
    text = (f"{stats['mean']:.3f} ± {stats['std']:.3f}" if stats.get("n", 1) > 1
            else f"{stats['mean']:.3f}")
    if interval is not None:
        text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    return text


def variant_name(group: list[Run]) -> str:
    return group[0].name.rsplit(" seed ", 1)[0]


def metrics_table(runs: list[Run], eval_set: str = "real_test",
                  metrics: tuple[str, ...] = TABLE_METRICS) -> pd.DataFrame:
    """One row per variant (runs that differ only by seed): for each metric the mean (±
    std over seeds when there are several) and, in brackets, its 95% bootstrap interval
    over test images. Columns say macro or weighted; ``n (test images)`` sits beside."""
    rows = []
    for group in group_by_variant([r for r in runs if r.metrics and eval_set in r.metrics]):
        summary = summarize(group).get(eval_set, {})
        n_values = sorted({int(r.metrics[eval_set].get("n") or 0) for r in group})
        row: dict[str, Any] = {"runs": ", ".join(str(r.id) for r in group),
                               "name": variant_name(group), "mode": group[0].mode,
                               "model": group[0].model_name, "seeds": len(group),
                               # Seeds of one variant share the test split, so one n; a range
                               # says the split moved and the rows are not comparable.
                               N_LABEL: (str(n_values[0]) if len(n_values) == 1
                                         else f"{n_values[0]}\u2013{n_values[-1]}")}
        for metric in metrics:
            row[metric_label(metric)] = format_metric(summary.get(metric),
                                                      mean_interval(group, eval_set, metric))
        rows.append(row)
    return pd.DataFrame(rows)


def class_supports(run: Run, eval_set: str) -> dict[str, int]:
    """Test images per class of one evaluation set (``n_per_class`` when stored, else the
    per-class report's support)."""
    values = (run.metrics or {}).get(eval_set) or {}
    stored = values.get("n_per_class")
    if isinstance(stored, dict) and stored:
        return {str(k): int(v) for k, v in stored.items()}
    report = ((run.curves or {}).get(eval_set) or {}).get("report") or []
    return {str(row["class"]): int(row.get("support") or 0) for row in report if "class" in row}


def small_test_warnings(runs: list[Run], eval_set: str = "real_test") -> list[str]:
    """Readable warnings for test sets under 30 images and classes under 5 test images;
    runs with the same problem share one warning."""
    small: dict[int, list[int]] = {}
    thin: dict[tuple[tuple[str, int], ...], list[int]] = {}
    for run in runs:
        values = (run.metrics or {}).get(eval_set)
        if not values:
            continue
        n = int(values.get("n") or 0)
        if n < MIN_TEST_IMAGES:
            small.setdefault(n, []).append(run.id)
        few = tuple((name, support) for name, support in class_supports(run, eval_set).items()
                    if support < MIN_CLASS_IMAGES)
        if few:
            thin.setdefault(few, []).append(run.id)
    where = eval_set_label(eval_set)
    out = [f"{runs_text(ids).capitalize()}: the {where} has only {n} images (under "
           f"{MIN_TEST_IMAGES}); its intervals are wide and differences of a few points mean little."
           for n, ids in sorted(small.items())]
    for few, ids in sorted(thin.items(), key=lambda kv: min(kv[1])):
        if len(few) == 1:
            name, support = few[0]
            what = (f"class \u201c{name}\u201d has {'no' if support == 0 else f'only {support}'} "
                    f"image{'s' if support != 1 else ''}")
        else:
            what = ("classes " + ", ".join(f"\u201c{name}\u201d ({support})" for name, support in few)
                    + " have only that many images")
        out.append(f"{runs_text(ids).capitalize()}: {what} in the {where} (under "
                   f"{MIN_CLASS_IMAGES}); per-class figures, and the macro averages that include "
                   "them, rest on very few images.")
    return out


def metrics_csv(runs: list[Run]) -> str:
    """Every metric of every run and evaluation set, one row per (run, set): for download.

    P/R/F1 appear as ``*_macro`` and ``*_weighted``; each metric with a bootstrap interval
    gets ``*_ci95_low`` and ``*_ci95_high``."""
    rows = []
    for run in runs:
        for eval_set, values in (run.metrics or {}).items():
            if eval_set.startswith("_") or not isinstance(values, dict):
                continue
            supports = class_supports(run, eval_set)
            row: dict[str, Any] = {
                "run_id": run.id, "name": run.name, "mode": run.mode, "model": run.model_name,
                "group_id": run.group_id, "group_kind": run.group_kind,
                "protocol": (run.config or {}).get("protocol"),
                "seed": (run.seeds or {}).get("train"), "split_seed": (run.seeds or {}).get("split"),
                "real_per_class": (run.config.get("data") or {}).get("real_per_class"),
                "synthetic_per_class": (run.config.get("data") or {}).get("synthetic_per_class"),
                "eval_set": eval_set, "n": values.get("n"),
                "min_class_n": min(supports.values()) if supports else None}
            for key in TABLE_METRICS:
                row[CSV_NAMES.get(key, key)] = values.get(key)
            for key, value in values.items():
                if key not in TABLE_METRICS and key != "n" and (
                        isinstance(value, (int, float)) or value is None):
                    row[CSV_NAMES.get(key, key)] = value
            for key, interval in (values.get("ci95") or {}).items():
                low, high = interval if isinstance(interval, (list, tuple)) else (None, None)
                row[f"{CSV_NAMES.get(key, key)}_ci95_low"] = low
                row[f"{CSV_NAMES.get(key, key)}_ci95_high"] = high
            bootstrap = values.get("bootstrap") or {}
            row["bootstrap_seed"] = bootstrap.get("seed")
            row["bootstrap_resamples"] = bootstrap.get("resamples")
            rows.append(row)
    return pd.DataFrame(rows).to_csv(index=False)


def _layout(fig: go.Figure, title: str, x: str, y: str, *, subtitle: str | None = None,
            width_px: int = 300) -> go.Figure:
    """``width_px``: the narrowest column the figure is drawn in (Results draws per-run
    charts up to four to a row, ~300 px each), for wrapping its title."""
    fig.update_layout(xaxis_title=x, yaxis_title=y, template="plotly_white",
                      legend={"orientation": "h", "y": -0.2})
    return readable(fig, title, subtitle=subtitle, width_px=width_px, margin={"b": 40})


def roc_figure(curves: dict[str, Any], title: str = "ROC curves") -> go.Figure:
    fig = go.Figure()
    for name, curve in curves.get("roc", {}).items():
        auc = curve.get("auc")
        fig.add_trace(go.Scatter(x=curve["fpr"], y=curve["tpr"], mode="lines",
                                 name=f"{name} (AUC {auc:.3f})" if auc is not None else name))
    macro = curves.get("roc_macro")
    if macro:
        fig.add_trace(go.Scatter(x=macro["fpr"], y=macro["tpr"], mode="lines",
                                 line={"width": 3, "dash": "dash", "color": "black"},
                                 name=f"macro (AUC {macro['auc']:.3f})" if macro.get("auc") is not None else "macro"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"},
                             name="chance", showlegend=False))
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, title, "false positive rate", "true positive rate")


def pr_figure(curves: dict[str, Any], title: str = "Precision-recall curves") -> go.Figure:
    fig = go.Figure()
    for name, curve in curves.get("pr", {}).items():
        fig.add_trace(go.Scatter(x=curve["recall"], y=curve["precision"], mode="lines",
                                 name=f"{name} (AP {curve['ap']:.3f})"))
    macro_ap = curves.get("pr_macro_ap")
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, title, "recall", "precision",
                   subtitle=None if macro_ap is None else f"macro AP {macro_ap:.3f}")


def confusion_figure(curves: dict[str, Any], class_names: list[str], *, normalised: bool = False,
                     title: str = "Confusion matrix") -> go.Figure:
    matrix = curves.get("confusion_normalised" if normalised else "confusion", [])
    text = [[f"{v:.2f}" if normalised else str(v) for v in row] for row in matrix]
    fig = go.Figure(go.Heatmap(z=matrix, x=class_names, y=class_names, text=text,
                               texttemplate="%{text}", colorscale="Blues", showscale=True,
                               zmin=0, zmax=1 if normalised else None))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, "predicted", "true",
                   subtitle="row-normalised" if normalised else "counts")


def history_figure(runs: list[Run], metric: str = "loss") -> go.Figure:
    """Training curves: ``loss`` (train and validation loss) or ``acc``."""
    fig = go.Figure()
    for run in runs:
        history = run.history or []
        if not history:
            continue
        x = list(range(1, len(history) + 1))  # epochs across phases (pretrain then finetune)
        label = f"#{run.id}"
        fig.add_trace(go.Scatter(x=x, y=[h.get(metric) for h in history], mode="lines+markers",
                                 name=f"{label} train"))
        if any(h.get(f"val_{metric}") is not None for h in history):
            fig.add_trace(go.Scatter(x=x, y=[h.get(f"val_{metric}") for h in history],
                                     mode="lines+markers", line={"dash": "dash"}, name=f"{label} validation"))
        phases = [h.get("phase") for h in history]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                fig.add_vline(x=i + 0.5, line_dash="dot", annotation_text=str(phases[i]))
    # Epochs are whole numbers: no 1.5 ticks on short runs.
    longest = max((len(run.history or []) for run in runs), default=0)
    fig.update_xaxes(tickformat="d", dtick=1 if longest <= 20 else None)
    return _layout(fig, "Training " + ("loss" if metric == "loss" else "accuracy"), "epoch",
                   "cross-entropy" if metric == "loss" else "accuracy", width_px=500)


def data_efficiency_figure(rows: list[dict[str, Any]], metric: str = "accuracy") -> go.Figure:
    """The key plot: real-test metric against real training images per class."""
    fig = go.Figure()
    for series in sorted({row["series"] for row in rows}):
        points = sorted((r for r in rows if r["series"] == series), key=lambda r: r["real_per_class_actual"])
        fig.add_trace(go.Scatter(
            x=[p["real_per_class_actual"] for p in points], y=[p[metric] for p in points],
            error_y={"type": "data", "array": [p["std"] for p in points], "visible": True},
            mode="lines+markers", name=series,
            text=[f"{p['real_per_class']} real/class, {p['n_runs']} run(s)" for p in points],
            hovertemplate="%{text}<br>" + metric + " %{y:.3f}<extra>%{fullData.name}</extra>"))
    fig.update_xaxes(type="log")
    return _layout(fig, f"Real-test {metric} vs real training images per class",
                   "real training images per class (log scale)", f"{metric} on the real test set",
                   width_px=700)
