"""Plotly figures and tables of training results (no Streamlit here: pages just show them)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from core.training.experiments import HEADLINE, group_by_variant, summarize
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


def metrics_table(runs: list[Run], eval_set: str = "real_test",
                  metrics: tuple[str, ...] = HEADLINE) -> pd.DataFrame:
    """One row per variant (runs that differ only by seed): mean +- std of each metric."""
    rows = []
    for group in group_by_variant([r for r in runs if r.metrics and eval_set in r.metrics]):
        summary = summarize(group).get(eval_set, {})
        row: dict[str, Any] = {"runs": ", ".join(str(r.id) for r in group),
                               "name": group[0].name.rsplit(" seed ", 1)[0], "mode": group[0].mode,
                               "model": group[0].model_name, "seeds": len(group),
                               "n test": int(summary.get("n", {}).get("mean", 0))}
        for metric in metrics:
            stats = summary.get(metric)
            row[metric] = (f"{stats['mean']:.3f} ± {stats['std']:.3f}" if stats and stats["n"] > 1
                           else f"{stats['mean']:.3f}" if stats else "n/a")
        rows.append(row)
    return pd.DataFrame(rows)


def metrics_csv(runs: list[Run]) -> str:
    """Every metric of every run and evaluation set, one row per (run, set): for download."""
    rows = []
    for run in runs:
        for eval_set, values in (run.metrics or {}).items():
            if eval_set.startswith("_"):
                continue
            rows.append({"run_id": run.id, "name": run.name, "mode": run.mode, "model": run.model_name,
                         "group_id": run.group_id, "seed": (run.seeds or {}).get("train"),
                         "split_seed": (run.seeds or {}).get("split"),
                         "real_per_class": (run.config.get("data") or {}).get("real_per_class"),
                         "synthetic_per_class": (run.config.get("data") or {}).get("synthetic_per_class"),
                         "eval_set": eval_set, **{k: v for k, v in values.items()
                                                  if isinstance(v, (int, float)) or v is None}})
    return pd.DataFrame(rows).to_csv(index=False)


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white",
                      legend={"orientation": "h", "y": -0.2}, margin={"t": 50, "l": 10, "r": 10})
    return fig


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
    if macro_ap is not None:
        title = f"{title} (macro AP {macro_ap:.3f})"
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, title, "recall", "precision")


def confusion_figure(curves: dict[str, Any], class_names: list[str], *, normalised: bool = False,
                     title: str = "Confusion matrix") -> go.Figure:
    matrix = curves.get("confusion_normalised" if normalised else "confusion", [])
    text = [[f"{v:.2f}" if normalised else str(v) for v in row] for row in matrix]
    fig = go.Figure(go.Heatmap(z=matrix, x=class_names, y=class_names, text=text,
                               texttemplate="%{text}", colorscale="Blues", showscale=True,
                               zmin=0, zmax=1 if normalised else None))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title + (" (row-normalised)" if normalised else " (counts)"),
                   "predicted", "true")


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
                   "cross-entropy" if metric == "loss" else "accuracy")


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
                   "real training images per class (log scale)", f"{metric} on the real test set")
