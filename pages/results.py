"""Results: compare training runs: whether they are comparable at all (classes, test set,
preprocessing), metrics with n, mean ± std over seeds and 95% intervals, the original
study's figures, ROC/PR curves, confusion matrices, training curves, the data-efficiency
plot, and a self-contained HTML report to download."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.training.comparison import (comparability_warnings, compares_with_original, config_diff,
                                      group_title, original_comparison, setup_table)
from core.training.experiments import data_efficiency, list_runs
from core.training.figures import (MIN_CLASS_IMAGES, MIN_TEST_IMAGES, confusion_figure,
                                   eval_set_label, eval_sets, history_figure, metrics_csv,
                                   metrics_table, pr_figure, roc_figure, small_test_warnings)
from core.training.models import RUN_DONE
from core.training.protocols import ORIGINAL_STUDY_TEST_IMAGES
from core.training.report import render_report
from webui import boot, escape_markdown

settings = boot()

st.title("Results")
st.caption("Can synthetic images enhance or replace the real training set? Every number here "
           "is measured on held-out images the model never trained on. Each plot's camera "
           "icon (top right of the plot) downloads it as a PNG.")

finished = list_runs(statuses=(RUN_DONE,), limit=500, settings=settings)
if not finished:
    st.info("No finished training run yet. Start one on the **Train** page, or from the "
            "command line: `python -m core train --train real --epochs 10`.")
    st.stop()

by_id = {run.id: run for run in finished}
groups: dict[str, list[int]] = {}
for run in finished:
    if run.group_id:
        groups.setdefault(run.group_id, []).append(run.id)


def run_label(run_id: int) -> str:
    run = by_id[run_id]
    return f"#{run.id} {run.name} ({run.created_by or 'anonymous'})"


def group_label(group_id: str) -> str:
    members = sorted(groups[group_id])
    return f"{group_title([by_id[i] for i in members])} (#{members[0]}\u2013#{members[-1]})"


pick_left, pick_right = st.columns([1, 2])
NO_GROUP = ""
group_options = [NO_GROUP, *groups]
# Open on the newest result: its whole repeat/sweep group when it belongs to one.
group_choice = pick_left.selectbox("Repeat / sweep group", group_options,
                                   index=group_options.index(finished[0].group_id or NO_GROUP),
                                   format_func=lambda g: group_label(g) if g else "(none: pick runs)",
                                   key="r_group")
default_ids = sorted(groups[group_choice]) if group_choice else [finished[0].id]
selected_ids = pick_right.multiselect("Runs", list(by_id), default=default_ids, format_func=run_label,
                                      key=f"r_runs_{group_choice}")
runs = [by_id[i] for i in sorted(selected_ids)]
if not runs:
    st.info("Pick one or more runs.")
    st.stop()

sets = eval_sets(runs)
# Radio options render markdown, and a cross-dataset set is named after a user's dataset.
eval_set = st.radio("Evaluated on", sets, format_func=lambda k: escape_markdown(eval_set_label(k)),
                    horizontal=True, key="r_set")

st.subheader("Setup")
# Numbers side by side mean something only for runs set up alike: say loudly when not.
for warning in comparability_warnings(runs, settings):
    st.warning(escape_markdown(warning), icon="⚠️")
st.dataframe(setup_table(runs, settings), hide_index=True, width="stretch", key="r_setup")
if len(runs) > 1:
    diff = config_diff(runs)
    st.markdown("**What differs between the chosen runs**")
    if len(diff.columns) > 1:
        st.dataframe(diff, hide_index=True, width="stretch", key="r_diff")
    else:
        st.caption("No configuration key differs between them.")

st.subheader("Metrics")
small_sets = small_test_warnings(runs, eval_set)
if small_sets:
    st.warning("\n".join(f"- {escape_markdown(warning)}" for warning in small_sets), icon="⚠️")
table = metrics_table(runs, eval_set)
st.dataframe(table, hide_index=True, width="stretch", key="r_metrics")
st.caption("One row per configuration, with n, the test images behind it. Values are the mean "
           "(± standard deviation over seeds when there are several) and, in brackets, the 95% "
           "bootstrap interval over the test images (with several seeds, the mean of their "
           "interval bounds). Macro averages weigh every class in the test set equally; weighted "
           "ones weigh classes by their test images. ROC-AUC is one-vs-rest, macro. Warnings "
           f"flag test sets under {MIN_TEST_IMAGES} images and classes under {MIN_CLASS_IMAGES}.")
download_left, download_right = st.columns(2)
download_left.download_button("Download metrics (CSV)", metrics_csv(runs),
                              file_name="synthlab-metrics.csv", mime="text/csv", key="r_csv")
report_ids = [run.id for run in runs]
report_name = (f"synthlab-report-{group_choice}.html" if group_choice and
               sorted(report_ids) == sorted(groups[group_choice])
               else "synthlab-report-runs-" + "-".join(map(str, report_ids[:5])) + ".html")
# Built only when clicked (the callable): a report embeds plotly.js, several MB.
download_right.download_button("Download report (HTML)",
                               lambda: render_report(report_ids, settings),
                               file_name=report_name, mime="text/html", on_click="ignore",
                               key="r_report",
                               help="One self-contained file with the setup, data, seeds, "
                                    "metrics, warnings and plots; it opens offline.")

if eval_set == "real_test":
    original = any((run.config or {}).get("protocol") == "original" for run in runs)
    title = "Compared with the original study"
    # Prominent when the runs follow the original protocol; one click away otherwise.
    box = st.container(border=True) if original else st.expander(
        title, expanded=compares_with_original(runs))
    with box:
        if original:
            st.markdown(f"**{title}**")
        st.caption(f"The original fruit study's published figures for its best model, on "
                   f"{ORIGINAL_STUDY_TEST_IMAGES} real test images (apple, banana, orange; "
                   "weighted P/R/F1), beside each configuration's real-test mean over seeds and "
                   "its 95% interval. A published figure inside the interval is consistent "
                   "with this study.")
        st.dataframe(original_comparison(runs), hide_index=True, width="stretch", key="r_original")

PLOT_CONFIG = {"toImageButtonOptions": {"format": "png", "scale": 2}, "displaylogo": False}


@st.cache_resource(show_spinner=False, max_entries=256)
def cached_figure(kind: str, key: tuple, _build):  # noqa: ANN001, ANN201 - a plotly Figure
    """A finished run's figure, built once per process: building a dozen plotly figures on
    every click took most of this page's rerun. ``key`` names everything the figure shows
    (the runs' ids and finish times, the test set, the options); a finished run never changes."""
    return _build()


def runs_key(chosen: list) -> tuple:  # noqa: ANN001
    return tuple((run.id, str(run.finished_at)) for run in chosen)


def show(fig, key: str) -> None:  # noqa: ANN001
    st.plotly_chart(fig, key=key, config={**PLOT_CONFIG, "toImageButtonOptions": {
        **PLOT_CONFIG["toImageButtonOptions"], "filename": key}})


efficiency = data_efficiency(runs)
if len({row["real_per_class"] for row in efficiency}) > 1:
    from core.training.figures import data_efficiency_figure

    st.subheader("Data efficiency")
    st.caption("Accuracy on the real test set against real training images per class, with and "
               "without synthetic images added. Where the lines part, synthetic data helps; the "
               "horizontal gap says how much real data it replaces.")
    show(cached_figure("efficiency", runs_key(runs), lambda: data_efficiency_figure(efficiency)),
         "data_efficiency")
    # "all" beside numbers: one text column, so Arrow need not guess a type.
    st.dataframe(pd.DataFrame(efficiency).astype({"real_per_class": str}), hide_index=True,
                 width="stretch")

st.subheader("Training curves")
curve_left, curve_right = st.columns(2)
with curve_left:
    show(cached_figure("loss", runs_key(runs), lambda: history_figure(runs, "loss")),
         "training_loss")
with curve_right:
    show(cached_figure("acc", runs_key(runs), lambda: history_figure(runs, "acc")),
         "training_accuracy")

st.subheader("Per run")
normalised = st.toggle("Normalise the confusion matrices (rows sum to 1)", key="r_norm")
shown = runs[:4]
if len(runs) > 4:
    st.caption(f"Showing the first 4 of {len(runs)} runs side by side; narrow the selection to see others.")
columns = st.columns(len(shown))
for column, run in zip(columns, shown):
    with column:
        st.markdown(f"**#{run.id}** {escape_markdown(run.name)}")
        curves = (run.curves or {}).get(eval_set)
        if not curves:
            st.caption(f"Not evaluated on the {escape_markdown(eval_set_label(eval_set))}.")
            continue
        counts = run.counts or {}
        st.caption(", ".join(f"{role}: {n}" for role, n in counts.items() if n))
        st.caption(f"Metrics on the {escape_markdown(eval_set_label(eval_set))}: n = "
                   f"{((run.metrics or {}).get(eval_set) or {}).get('n', '?')} test images")
        for note in (run.config or {}).get("notes", []):
            if "fewer available" in note or "not enough" in note:
                st.caption(f":orange[{escape_markdown(note)}]")
        key = (*runs_key([run]), eval_set)
        show(cached_figure("roc", key, lambda: roc_figure(curves, f"ROC, run {run.id}")),
             f"roc_{run.id}")
        show(cached_figure("pr", key, lambda: pr_figure(curves, f"Precision-recall, run {run.id}")),
             f"pr_{run.id}")
        show(cached_figure("confusion", (*key, normalised), lambda: confusion_figure(
            curves, run.class_names, normalised=normalised, title=f"Confusion, run {run.id}")),
            f"confusion_{run.id}")
        with st.expander("Per-class report"):
            st.dataframe(pd.DataFrame(curves.get("report", [])), hide_index=True, width="stretch")
        with st.expander("Configuration and seeds"):
            st.json({"seeds": run.seeds, "config": run.config, "job": run.job_id})
