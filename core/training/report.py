"""A self-contained HTML report of a group of training runs, or of chosen runs.

One file a reader can trust without SynthLab: the protocol and the data (images per class
and role, every preprocessing spec, every seed), the metrics with macro and weighted
averages labelled, n and 95% bootstrap intervals, whether the runs are comparable at all
and how their configurations differ, the original study's figures where they apply, and
the plots. plotly.js is embedded once, inline, and nothing refers to an outside resource,
so the file opens offline and still opens in ten years. Every piece of user text (run
names, class names, notes) is HTML-escaped.

    html = render_report("3f2a9c1b7d4e", settings)       # a group id
    write_report([12, 13, 14], Path("report.html"))      # or run ids
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from core.config import Settings, get_settings
from core.training.comparison import (class_role_counts, comparability_warnings,
                                      compares_with_original, config_diff, group_title,
                                      original_comparison, protocol_label, run_pipelines,
                                      setup_table)
from core.training.experiments import data_efficiency, group_by_variant, list_runs
from core.training.figures import (MIN_CLASS_IMAGES, MIN_TEST_IMAGES, confusion_figure,
                                   data_efficiency_figure, eval_set_label, eval_sets,
                                   history_figure, metrics_table, pr_figure, roc_figure,
                                   runs_text, small_test_warnings)
from core.training.models import RUN_DONE, Run
from core.training.protocols import (ORIGINAL_STUDY_CLASSES, ORIGINAL_STUDY_TEST_IMAGES, PROTOCOLS)
from core.wording import plural

# Per-run plots (ROC, PR, confusion) for at most this many configurations: a reproduce
# group of 40 runs would otherwise make a 120-plot file nobody scrolls through.
MAX_RUN_FIGURES = 12
PLOT_CONFIG = {"displaylogo": False, "responsive": True,
               "toImageButtonOptions": {"format": "png", "scale": 2}}

Target = str | int | Sequence[int]


class ReportError(ValueError):
    """The report cannot be made (unknown group, no such run, nothing finished)."""


def _e(text: Any) -> str:  # noqa: ANN401
    return html.escape(str(text), quote=True)


def resolve_runs(target: Target, settings: Settings | None = None) -> tuple[list[Run], list[Run]]:
    """(finished runs, other runs) of a group id or of run ids, oldest first."""
    if isinstance(target, str):
        runs = list_runs(group_id=target, limit=100_000, settings=settings)
        if not runs:
            raise ReportError(f"no training runs in group {target!r} (group ids are listed by "
                              "python -m core runs --json)")
    else:
        ids = [int(target)] if isinstance(target, int) else [int(i) for i in target]
        if not ids:
            raise ReportError("no runs given")
        runs = list_runs(ids=ids, limit=len(ids), settings=settings)
        missing = sorted(set(ids) - {run.id for run in runs})
        if missing:
            raise ReportError(f"no training run with id {', '.join(map(str, missing))}")
    runs = sorted(runs, key=lambda r: r.id)
    finished = [run for run in runs if run.status == RUN_DONE]
    if not finished:
        raise ReportError(f"none of {runs_text([r.id for r in runs])} has finished "
                          f"({', '.join(sorted({r.status for r in runs}))})")
    return finished, [run for run in runs if run.status != RUN_DONE]


def report_title(runs: list[Run]) -> str:
    groups = {run.group_id for run in runs}
    if len(groups) == 1 and None not in groups:
        return group_title(runs)
    if len(runs) == 1:
        return f"run {runs[0].id}: {runs[0].name}"
    return f"{runs_text([r.id for r in runs])}"


class _Figures:
    """Plotly figures as divs; the library itself goes once into the page's head."""

    def __init__(self) -> None:
        self.count = 0

    def html(self, fig: go.Figure, height: int = 420) -> str:
        self.count += 1
        fig.update_layout(height=height)
        return ('<div class="figure">' + fig.to_html(
            full_html=False, include_plotlyjs=False, include_mathjax=False, config=PLOT_CONFIG,
            div_id=f"figure-{self.count}") + "</div>")


def _table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return '<p class="muted">(nothing to show)</p>'
    return ('<div class="scroll">'
            + frame.to_html(index=False, escape=True, border=0, classes="data", na_rep="")
            + "</div>")


def _warnings(items: list[str]) -> str:
    return "".join(f'<div class="warning" role="alert">\u26a0 {_e(item)}</div>' for item in items)


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{_e(anchor)}"><h2>{_e(title)}</h2>{body}</section>'


def _counts_section(runs: list[Run], settings: Settings | None) -> str:
    """Images per class and role; runs with identical tables share one."""
    counts = class_role_counts(runs, settings)
    tables: dict[str, tuple[list[int], pd.DataFrame]] = {}
    for run in runs:
        roles = counts.get(run.id)
        if not roles:
            frame = pd.DataFrame([{"role": role, "images": n}
                                  for role, n in (run.counts or {}).items()])
        else:
            classes = list(run.class_names or []) or sorted({c for r in roles.values() for c in r})
            frame = pd.DataFrame([{"role": role, **{c: roles[role].get(c, 0) for c in classes},
                                   "total": sum(roles[role].values())}
                                  for role in sorted(roles)])
        key = frame.to_json()
        tables.setdefault(key, ([], frame))[0].append(run.id)
    parts = []
    for ids, frame in tables.values():
        parts.append(f"<h4>{_e(runs_text(ids).capitalize())}</h4>{_table(frame)}")
    return "".join(parts)


def _pipelines_section(runs: list[Run], settings: Settings | None) -> str:
    memo: dict = {}
    seen: dict[str, dict[str, Any]] = {}
    for run in runs:
        for role, info in run_pipelines(run, settings, memo).items():
            if role == "synthetic" and not any("synthetic" in k and n for k, n in (run.counts or {}).items()):
                continue
            entry = seen.setdefault(info.key, {"info": info, "uses": {}})
            entry["uses"].setdefault(role, []).append(run.id)
    parts = []
    for entry in seen.values():
        info = entry["info"]
        uses = "; ".join(f"{role} images of {runs_text(ids)}" for role, ids in entry["uses"].items())
        spec = (f"<pre>{_e(_spec_json(info.spec))}</pre>" if info.spec
                else '<p class="muted">No spec was recorded with these runs: this is the preset '
                     'as defined when the report was made.</p>')
        parts.append(f'<div class="pipeline"><p><strong>{_e(info.text)}</strong></p>'
                     f"<p>Used for: {_e(uses)}</p>{spec}</div>")
    return "".join(parts)


def _spec_json(spec: dict[str, Any]) -> str:
    """The spec as JSON with one step per line: readable, and still valid JSON to copy."""
    head = {k: v for k, v in spec.items() if k != "steps"}
    steps = list(spec.get("steps") or [])
    opening = json.dumps(head, sort_keys=True)[:-1] + (", " if head else "") + '"steps": ['
    lines = [f"  {json.dumps(step, sort_keys=True)}{',' if i < len(steps) - 1 else ''}"
             for i, step in enumerate(steps)]
    return "\n".join([opening, *lines, "]}"])


def _seeds_table(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        seeds = run.seeds or {}
        bootstrap = ((run.metrics or {}).get("real_test") or {}).get("bootstrap") or {}
        train = (run.metrics or {}).get("_train") or {}
        rows.append({"run": run.id, "name": run.name, "mode": run.mode, "model": run.model_name,
                     "protocol": protocol_label(run),
                     "seed (training)": seeds.get("train"), "split seed": seeds.get("split"),
                     "subsample seed": seeds.get("subsample"), "augment seed": seeds.get("augment"),
                     "bootstrap seed": bootstrap.get("seed", seeds.get("bootstrap")),
                     "bootstrap resamples": bootstrap.get("resamples"),
                     "epochs run": train.get("epochs_run"),
                     "finished": run.finished_at.strftime("%Y-%m-%d %H:%M") if run.finished_at else ""})
    return pd.DataFrame(rows).astype(str).replace({"None": ""})


def _notes(runs: list[Run]) -> list[str]:
    notes: dict[str, list[int]] = {}
    for run in runs:
        for note in (run.config or {}).get("notes", []):
            notes.setdefault(str(note), []).append(run.id)
    return [f"{runs_text(ids).capitalize()}: {note}" for note, ids in notes.items()]


def _metrics_section(runs: list[Run]) -> str:
    resamples = sorted({int(b["resamples"]) for run in runs for key, values in (run.metrics or {}).items()
                        if not key.startswith("_") and isinstance(values, dict)
                        and isinstance(b := values.get("bootstrap"), dict) and b.get("resamples")})
    drawn = (f"{'/'.join(f'{n:,}' for n in resamples)} resamples of the test set" if resamples
             else "runs from before intervals were stored show none")
    parts = []
    for eval_set in eval_sets(runs):
        parts.append(f"<h3>{_e(eval_set_label(eval_set).capitalize())}</h3>")
        parts.append(_warnings(small_test_warnings(runs, eval_set)))
        parts.append(_table(metrics_table(runs, eval_set)))
    parts.append(
        '<p class="muted">One row per configuration (runs that differ only by seed). Each value '
        "is the mean, \u00b1 the standard deviation over training seeds when there are several; "
        "in brackets the 95% bootstrap interval over the test images ("
        f"{drawn}; with several seeds, the mean of the seeds' interval bounds). Macro averages "
        "weigh every class present in the test set equally; weighted averages weigh each class "
        "by its test images (the original study published weighted ones). ROC-AUC is one-vs-rest, "
        f"averaged over classes. Test sets under {MIN_TEST_IMAGES} images or classes under "
        f"{MIN_CLASS_IMAGES} test images are flagged.</p>")
    return "".join(parts)


def _original_section(runs: list[Run]) -> str:
    frame = original_comparison(runs)
    intro = (f"<p>The original fruit study published these figures for its best model on "
             f"{ORIGINAL_STUDY_TEST_IMAGES} real test images of "
             f"{_e(', '.join(ORIGINAL_STUDY_CLASSES))}; its precision, recall and F1 are "
             "support-weighted averages. Beside them: each configuration's real-test mean over "
             "seeds with its 95% bootstrap interval. A published figure inside the interval is "
             "consistent with this study; with a test set this small, intervals several points "
             "wide are expected.</p>")
    return intro + _table(frame)


def _figures_section(runs: list[Run], figures: _Figures) -> str:
    parts = []
    efficiency = data_efficiency(runs)
    if len({row["real_per_class"] for row in efficiency}) > 1:
        parts.append("<h3>Data efficiency</h3><p>Accuracy on the real test set against real "
                     "training images per class, with and without synthetic images added "
                     "(error bars: standard deviation over seeds).</p>")
        parts.append(figures.html(data_efficiency_figure(efficiency)))
        parts.append(_table(pd.DataFrame(efficiency)))
    variants = group_by_variant(runs)
    representatives = [group[0] for group in variants][:MAX_RUN_FIGURES]
    curve_runs = runs if len(runs) <= MAX_RUN_FIGURES else representatives
    parts.append("<h3>Training curves</h3>")
    if curve_runs is not runs:
        parts.append(f"<p class=\"muted\">The first seed of each configuration "
                     f"({_e(runs_text([r.id for r in curve_runs]))}).</p>")
    parts.append('<div class="grid">' + figures.html(history_figure(curve_runs, "loss"))
                 + figures.html(history_figure(curve_runs, "acc")) + "</div>")
    parts.append("<h3>Per run</h3>")
    if len(variants) > 1 or len(runs) > len(representatives):
        omitted = len(variants) - len(representatives)
        parts.append(f'<p class="muted">ROC, precision-recall and confusion of the first seed of '
                     f"each configuration ({_e(runs_text([r.id for r in representatives]))})"
                     + (f"; {omitted} more configuration(s) left out" if omitted > 0 else "")
                     + ".</p>")
    for run in representatives:
        eval_set = "real_test" if "real_test" in (run.curves or {}) else next(iter(run.curves or {}), None)
        curves = (run.curves or {}).get(eval_set) if eval_set else None
        parts.append(f"<h4>Run {run.id}: {_e(run.name)}</h4>")
        if not curves:
            parts.append('<p class="muted">No curves were stored for this run.</p>')
            continue
        parts.append(f'<p class="muted">Evaluated on the {_e(eval_set_label(eval_set))}.</p>')
        parts.append('<div class="grid">'
                     + figures.html(roc_figure(curves, f"ROC, run {run.id}"))
                     + figures.html(pr_figure(curves, f"Precision-recall, run {run.id}"))
                     + figures.html(confusion_figure(curves, list(run.class_names or []),
                                                     title=f"Confusion, run {run.id}"))
                     + "</div>")
        report = pd.DataFrame(curves.get("report") or [])
        if not report.empty:
            parts.append("<h5>Per class</h5>" + _table(report.map(
                lambda v: f"{v:.3f}" if isinstance(v, float) else v)))
    return "".join(parts)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5rem; color: #1f2430; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #d0d4dc; padding-bottom: 0.2rem;
margin-top: 2.2rem; } .muted { color: #5b6270; font-size: 0.92rem; }
table.data { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0 1rem; }
table.data th, table.data td { border: 1px solid #d0d4dc; padding: 0.25rem 0.5rem;
text-align: left; vertical-align: top; max-width: 32rem; } table.data th { background: #f1f3f6; }
.scroll { overflow-x: auto; max-width: 100%; }
.warning { background: #fff4e0; border-left: 4px solid #e89b0c; padding: 0.5rem 0.8rem;
margin: 0.5rem 0; } .ok { background: #e9f6ec; border-left: 4px solid #2e9b4f;
padding: 0.5rem 0.8rem; margin: 0.5rem 0; }
pre { background: #f6f7f9; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 0.8rem; }
.figure { min-width: 0; } nav a { margin-right: 1rem; }
"""


def render_report(group_id_or_run_ids: Target, settings: Settings | None = None) -> str:
    """The report as one complete, self-contained HTML document (see the module doc)."""
    import plotly.offline

    settings = settings or get_settings()
    runs, unfinished = resolve_runs(group_id_or_run_ids, settings)
    title = report_title(runs)
    figures = _Figures()
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    groups = sorted({run.group_id for run in runs if run.group_id})
    meta = [f"Generated {now} by SynthLab from {plural(len(runs), 'finished run')}: "
            f"{runs_text([r.id for r in runs])}."]
    if groups:
        meta.append(f"Group{'s' if len(groups) > 1 else ''}: {', '.join(groups)}.")
    if unfinished:
        meta.append("Left out, not finished: " + "; ".join(
            f"run {r.id} ({r.status})" for r in unfinished) + ".")

    warnings = comparability_warnings(runs, settings)
    diff = config_diff(runs)
    comparability = (_warnings(warnings) if warnings else
                     '<div class="ok">The runs share their classes, their real test images and '
                     "their preprocessing: their numbers are comparable.</div>"
                     if len(runs) > 1 else '<p class="muted">One run: nothing to compare.</p>')
    comparability += ("<h3>Configuration differences</h3>"
                      + ('<p class="muted">The keys whose values differ between the runs.</p>'
                         + _table(diff) if len(diff.columns) > 1 else
                         '<p class="muted">No configuration key differs between the runs.</p>'))

    protocols = sorted({(run.config or {}).get("protocol") for run in runs} - {None})
    protocol_text = "".join(
        f"<p><strong>{_e(PROTOCOLS[name].title)}</strong>: {_e(PROTOCOLS[name].description)}</p>"
        for name in protocols if name in PROTOCOLS)
    notes = _notes(runs)
    data = ("<h3>Protocol and preprocessing per run</h3>" + protocol_text
            + _table(setup_table(runs, settings))
            + "<h3>Images per class and role</h3>" + _counts_section(runs, settings)
            + "<h3>Preprocessing pipelines</h3>" + _pipelines_section(runs, settings)
            + "<h3>Seeds</h3>" + _table(_seeds_table(runs))
            + ("<h3>Notes from data planning</h3><ul>"
               + "".join(f"<li>{_e(note)}</li>" for note in notes) + "</ul>" if notes else ""))

    sections = [
        ("comparability", "Comparability", comparability),
        ("data", "Protocol and data", data),
        ("metrics", "Metrics", _metrics_section(runs)),
    ]
    if compares_with_original(runs):
        sections.append(("original", "Compared with the original study", _original_section(runs)))
    sections.append(("figures", "Figures", _figures_section(runs, figures)))
    nav = "".join(f'<a href="#{_e(anchor)}">{_e(name)}</a>' for anchor, name, _ in sections)
    body = "".join(_section(name, content, anchor) for anchor, name, content in sections)
    # plotly.js inline, once: the file must open with no network (no CDN).
    script = plotly.offline.get_plotlyjs()
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>SynthLab report: {_e(title)}</title><style>{STYLE}</style>"
            "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
            f"<script type=\"text/javascript\">{script}</script></head><body>"
            f"<h1>SynthLab report</h1><p class=\"subtitle\"><strong>{_e(title)}</strong></p>"
            f"<p class=\"muted\">{_e(' '.join(meta))}</p><nav>{nav}</nav>{body}"
            "<footer><p class=\"muted\">Self-contained: the plots are drawn by the plotly.js "
            "embedded in this file; nothing is loaded from the network.</p></footer>"
            "</body></html>\n")


def write_report(group_id_or_run_ids: Target, out: Path, settings: Settings | None = None) -> Path:
    """Render and write the report (whole or not at all: a temporary file, then renamed)."""
    document = render_report(group_id_or_run_ids, settings)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(document)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
