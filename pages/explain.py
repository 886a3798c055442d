"""Explain: what a trained model looks at, through captum attribution maps.

Pick a finished run and an image (Gallery filters, an upload, or a misclassified test
image); the heatmap is drawn over the exact input the model saw. Compare real and
synthetic images of one class, see per run how much attribution falls on the letterbox
margins, and compute maps for many images as a background job.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core import gallery, jobs
from core.explain.attribution import (BASELINES, METHOD_LABELS, METHODS, AttributionConfig,
                                      AttributionError)
from core.explain.figures import attribution_figure, margin_figure, probabilities_figure
from core.explain.jobs import JOB_KIND, submit_explain_job
from core.explain.overlay import render_overlay
from core.explain.selection import (class_image_ids, compare_sample, eval_predictions,
                                    finished_runs, gallery_images, run_eval_image_ids, run_label)
from core.explain.service import (INPUT_MODES, Explanation, ExplainError, cached_explanation,
                                  explain, load_run, subject_from_bytes, subject_from_image_id)
from core.explain.summary import margin_table
from core.users.permissions import can_modify
from core.wording import plural
from webui import boot, current_identity, error_text, escape_markdown
from webui.jobs import live_fragment, public_text, render_job_list

settings = boot()
identity = current_identity()


def _error(exc: Exception) -> None:
    # Messages can quote user text (an upload's file name): never let it become markdown.
    st.error(error_text(exc))


st.title("Explain")
st.caption("Which pixels drive the model's decision: the fruit, or the margins and backgrounds "
           "that give away where an image came from? Maps are computed with captum on the "
           "exact input the model saw, and cached.")

runs = finished_runs(settings)
if not runs:
    st.info("No finished training run yet. Train a model on the **Train** page (or with "
            "`python -m core train`), then come back here to see what it looks at.")
    st.stop()

run_ids = [r.id for r in runs]
run_names = {r.id: run_label(r) for r in runs}
run_id = st.selectbox("Run", run_ids, format_func=run_names.get, key="x_run")
try:
    run = load_run(run_id, settings)
except ExplainError as exc:
    _error(exc)
    st.stop()
# Menus show the editable display names; the run's own keys stay the values.
class_labels = {c.name: c.display_name for c in gallery.classes(settings)}


def _class_label(key: str | None) -> str:
    return "any" if key is None else class_labels.get(key, key)


st.caption(f"{len(run.class_names)} classes · {run.image_size}×{run.image_size} input · "
           f"model file `{run.checkpoint.name}`")

# --- method and target ------------------------------------------------------------------

with st.container(border=True):
    cols = st.columns([2, 2, 2, 2])
    method = cols[0].selectbox("Method", METHODS, format_func=METHOD_LABELS.get, key="x_method")
    ig_steps, baseline, window, stride = 32, "blurred", 8, 4
    if method == "integrated-gradients":
        ig_steps = cols[1].slider("Steps", 4, 128, 32, step=4, key="x_steps",
                                  help="Points on the path from the baseline to the image.")
    if method == "occlusion":
        window = cols[1].slider("Window (px)", 2, max(2, run.image_size // 2), min(8, run.image_size // 2),
                                key="x_window", help="Side of the square that is covered.")
        stride = cols[1].slider("Stride (px)", 1, max(1, run.image_size // 2), min(4, run.image_size // 2),
                                key="x_stride")
    if method in ("integrated-gradients", "occlusion"):
        baseline = cols[2].selectbox(
            "Baseline", BASELINES, key="x_baseline",
            help="The reference image meaning 'no signal'. Note: black letterbox margins equal a "
                 "black baseline, so they get no attribution from these two methods; use "
                 "blurred or mean to test the margins.")
    target_mode = cols[3].radio("Target class", ["predicted", "true", "any class"], key="x_target",
                                horizontal=True)
    target_class = None
    if target_mode == "any class":
        target_class = cols[3].selectbox("Class", run.class_names, key="x_target_class",
                                         format_func=_class_label)
    cols = st.columns([2, 2, 4])
    input_mode = cols[0].selectbox(
        "Input", INPUT_MODES, key="x_input",
        format_func={"by-source": "as trained (pipeline by source)",
                     "eval": "real pipeline for all"}.get,
        help="How an image is preprocessed before the model sees it.")
    opacity = cols[1].slider("Heatmap opacity", 0.0, 1.0, 0.55, step=0.05, key="x_opacity")

try:
    config = AttributionConfig(method=method, ig_steps=ig_steps, baseline=baseline,
                               occlusion_window=window, occlusion_stride=stride)
except AttributionError as exc:
    _error(exc)
    st.stop()
target = target_class if target_mode == "any class" else target_mode


def _explain(subject, seed: int = 0) -> Explanation | None:  # noqa: ANN001
    try:
        with st.spinner(f"{METHOD_LABELS[method]}..."):
            return explain(run, subject, config, target=target, input_mode=input_mode,
                           input_seed=seed, settings=settings)
    except ExplainError as exc:
        _error(exc)
        return None


def _upscaled(pixels: np.ndarray, side: int = 256) -> Image.Image:
    return Image.fromarray(pixels).resize((side, side), Image.Resampling.NEAREST)


def _show(result: Explanation) -> None:
    left, middle, right = st.columns([1, 2, 1])
    with left:
        st.markdown("**Input the model saw**")
        st.image(_upscaled(result.prepared.pixels), width="stretch",
                 caption=f"{escape_markdown(result.prepared.pipeline_name)} pipeline")
        st.image(result.subject.image, width="stretch", caption="original")
    with middle:
        st.plotly_chart(
            attribution_figure(result.prepared.pixels, result.attribution, opacity=opacity,
                               title=f"{METHOD_LABELS[method]} · target: {result.target_class}",
                               subtitle=config.parameters_text() or None,
                               content_box=result.prepared.content_box if result.prepared.has_margins else None),
            key="x_heatmap")
        st.caption("Hover for each pixel's value. Dotted box: the picture; outside it, the "
                   "letterbox margins." if result.prepared.has_margins else
                   "Hover for each pixel's value. This input has no letterbox margins.")
    with right:
        st.markdown("**Top predictions**")
        st.plotly_chart(probabilities_figure(result.class_names, result.probabilities,
                                             highlight=result.subject.true_class),
                        key="x_probs",
                        # A quarter-width chart of a few bars: its toolbar would wrap onto
                        # two rows over the bars and nothing in it is needed here.
                        config={"displayModeBar": False})
        st.metric("Predicted", result.predicted_class,
                  f"{float(result.probabilities[result.predicted]):.1%}", delta_color="off",
                  delta_arrow="off")
        if result.subject.true_class:
            verdict = "correct" if result.subject.true_class == result.predicted_class else "wrong"
            st.metric("True class", result.subject.true_class, verdict,
                      delta_color="normal" if verdict == "correct" else "inverse")
        if result.margin_mass is not None:
            st.metric("Attribution on margins", f"{result.margin_mass:.1%}",
                      f"margins are {result.margin_area:.0%} of the input", delta_color="off",
                      delta_arrow="off")
        st.caption(("from the cache" if result.cached else f"computed in {result.seconds:.2f} s")
                   + f" · source: {result.subject.source}")


def _cached(image_id: int) -> Explanation | None:
    try:
        return cached_explanation(run, subject_from_image_id(image_id, settings), config,
                                  target=target, input_mode=input_mode, settings=settings)
    except ExplainError:
        return None


def _compare_grid(sample: dict[str, list[int]], results: dict[int, Explanation | None],
                  computing: bool) -> None:
    sides = st.columns(2)
    for side, source in zip(sides, ("real", "synthetic")):
        with side:
            st.markdown(f"**{source.capitalize()}**")
            if not sample[source]:
                st.info(f"No {source} images of this class.")
                continue
            masses = []
            grid = st.columns(2)
            for k, image_id in enumerate(sample[source]):
                result = results.get(image_id)
                if result is None:
                    grid[k % 2].caption(f"#{image_id}: " + ("computing..." if computing else
                                                            "no map (see the job's log)"))
                    continue
                if result.margin_mass is not None:
                    masses.append(result.margin_mass)
                overlay = render_overlay(result.prepared.pixels, result.attribution, opacity=opacity,
                                         scale=4, side_by_side=False,
                                         content_box=result.prepared.content_box
                                         if result.prepared.has_margins else None)
                grid[k % 2].image(overlay, width="stretch", caption=(
                    f"#{image_id}: {escape_markdown(result.predicted_class)} "
                    f"{float(result.probabilities[result.predicted]):.0%}"))
            if masses and not computing:
                st.metric(f"Mean attribution on margins ({source})", f"{np.mean(masses):.1%}")
            elif not computing:
                st.caption("These inputs have no letterbox margins.")


def _compare(sample: dict[str, list[int]], key: tuple) -> None:
    """Maps already cached show at once; the others are computed by a background job
    (36 s here for 4 + 4 occlusion maps: too long to hold the page), shown as they arrive."""
    ids = sample["real"] + sample["synthetic"]
    results = {image_id: _cached(image_id) for image_id in ids}
    missing = [image_id for image_id, result in results.items() if result is None]
    jobs_by_key = st.session_state.setdefault("x_compare_jobs", {})
    job_id = jobs_by_key.get(key)
    submit_now = st.session_state.pop("x_compare_submit", False)
    if missing and submit_now and (job_id is None or jobs.get_job(job_id, settings) is None
                                   or jobs.get_job(job_id, settings).status in jobs.FINAL_STATUSES):
        try:
            job_id = submit_explain_job(
                run.run_id, missing, config, target=target, input_mode=input_mode,
                created_by=identity, settings=settings,
                title=f"Compare real vs synthetic {_class_label(key[1])}: {len(missing)} maps "
                      f"of run #{run.run_id} ({config.describe()})")
        except ExplainError as exc:
            _error(exc)
            return
        jobs_by_key[key] = job_id
    if not missing or job_id is None:
        if missing:
            st.caption(f"{len(missing)} of {len(ids)} maps are not computed yet: press Show.")
        _compare_grid(sample, results, computing=False)
        return

    @live_fragment((JOB_KIND,), 2.0)
    def _follow() -> None:
        job = jobs.get_job(job_id, settings)
        active = job is not None and job.status in jobs.ACTIVE_STATUSES
        now = {image_id: results[image_id] or _cached(image_id) for image_id in ids}
        if active:
            done = sum(1 for image_id in missing if now[image_id] is not None)
            cols = st.columns([4, 1], vertical_alignment="center")
            waiting = " (queued behind other jobs)" if job.status == jobs.QUEUED else ""
            cols[0].progress(done / len(missing),
                             text=f"Job #{job_id}: {done} of {len(missing)} maps{waiting}. You can "
                                  "leave this page; the maps are kept.")
            cols[1].button("Cancel", key=f"x_compare_cancel_{job_id}",
                           on_click=jobs.request_cancel, args=(job_id,),
                           kwargs={"by": identity, "settings": settings})
        elif job is not None and job.status != jobs.DONE:
            st.caption(f"Job #{job_id} {job.status}" + (f": {error_text(public_text(job.error))}"
                                                        if job.error else "."))
        _compare_grid(sample, now, computing=active)

    _follow()


tab_image, tab_compare, tab_margins, tab_batch = st.tabs(
    ["Image", "Compare real vs synthetic", "Margins per run", "Batch job"])

# --- one image --------------------------------------------------------------------------

with tab_image:
    origin = st.radio("Image from", ["Gallery", "Upload", "Misclassified test images"],
                      horizontal=True, key="x_origin")
    subject, seed = None, 0
    if origin == "Gallery":
        cols = st.columns(3)
        f_class = cols[0].selectbox("Class", [None, *class_labels], key="x_f_class",
                                    format_func=_class_label)
        f_source = cols[1].selectbox("Source", [None, "real", "synthetic"], key="x_f_source",
                                     format_func=lambda s: "any" if s is None else s)
        datasets = {d.id: d.name for d in gallery.datasets(settings)}
        f_dataset = cols[2].selectbox("Dataset", [None, *datasets], key="x_f_dataset",
                                      format_func=lambda d: "any" if d is None else datasets[d])
        rows = gallery_images(class_key=f_class, source=f_source, dataset_id=f_dataset,
                              limit=200, settings=settings)
        if not rows:
            st.info("No image matches these filters.")
        else:
            if len(rows) == 200:
                st.caption("The newest 200 matching images; narrow the filters to reach others.")
            labels = {r.id: f"#{r.id} · {r.class_name} · {r.source} · {r.dataset}" for r in rows}
            image_id = st.selectbox("Image", list(labels), format_func=labels.get, key="x_image")
            try:
                subject = subject_from_image_id(image_id, settings)
            except ExplainError as exc:
                _error(exc)
    elif origin == "Upload":
        upload = st.file_uploader("An image file", type=None, key="x_upload")
        if upload is not None:
            try:
                subject = subject_from_bytes(upload.getvalue(), settings, name=upload.name)
            except ExplainError as exc:
                _error(exc)
    else:
        key = f"x_eval_{run.run_id}_{run.checkpoint.stat().st_mtime}"
        if st.button("Find the misclassified test images", key="x_find_wrong") or key in st.session_state:
            if key not in st.session_state:
                with st.spinner("Scoring the run's test images..."):
                    try:
                        st.session_state[key] = eval_predictions(run.run_id, settings)
                    except ExplainError as exc:
                        _error(exc)
                        st.session_state[key] = []
            predictions = st.session_state[key]
            wrong = sorted((p for p in predictions if not p.correct), key=lambda p: -p.confidence)
            st.caption(f"{len(wrong)} of {len(predictions)} evaluation images are misclassified.")
            if wrong:
                by_id = {p.image_id: p for p in wrong}
                image_id = st.selectbox(
                    "Misclassified image", list(by_id), key="x_wrong_image",
                    format_func=lambda i: (f"#{i} · {by_id[i].role} · true {run.class_names[by_id[i].label]}"
                                           f" → {run.class_names[by_id[i].predicted]} "
                                           f"({by_id[i].confidence:.0%})"))
                subject = subject_from_image_id(image_id, settings)
                seed = by_id[image_id].input_seed
    if subject is not None:
        result = _explain(subject, seed)
        if result is not None:
            _show(result)

# --- real vs synthetic -------------------------------------------------------------------

with tab_compare:
    st.caption("The same class, real and synthetic images side by side, with the method above. "
               "If the maps of one source light up the margins or background and the other's "
               "the fruit, the model may be telling sources apart rather than classes.")
    cols = st.columns([2, 1, 1, 2])
    c_class = cols[0].selectbox("Class", run.class_names, key="x_c_class",
                                format_func=_class_label)
    per_source = cols[1].number_input("Images per side", 1, 12, 4, key="x_c_n")
    c_seed = cols[2].number_input("Sample seed", 0, 10_000, 0, key="x_c_seed")
    if cols[3].button("Show", key="x_compare"):
        st.session_state["x_compare_on"] = True
        st.session_state["x_compare_submit"] = True  # this click may queue a job
    if st.session_state.get("x_compare_on"):
        sample = compare_sample(c_class, int(per_source), seed=int(c_seed), settings=settings)
        _compare(sample, (run.run_id, c_class, int(per_source), int(c_seed), config.describe(),
                          str(target), input_mode))

# --- margins per run ---------------------------------------------------------------------

with tab_margins:
    st.caption("Mean share of the attribution that falls on the letterbox margins, per run and "
               "image source, over the cached maps; the outlined bar is how "
               "much of the input the margins cover. A filled bar that overflows its outline: the "
               "model looks at the margins more than their size explains — it may be cheating on "
               "them. Compute maps for many images with the Batch job tab first.")
    same_settings = st.toggle(f"Only maps made with the settings above ({config.describe()})",
                              value=True, key="x_m_same",
                              help="Off: every cached map of the chosen method, whatever its parameters.")
    m_method = method if same_settings else st.selectbox(
        "Method", METHODS, format_func=METHOD_LABELS.get, key="x_m_method", index=METHODS.index(method))
    table = margin_table(run_ids, method=m_method, config=config if same_settings else None,
                         settings=settings)
    rows = [{"label": run_names[row["run_id"]], **row} for row in table
            if row["mean_margin_mass"] is not None]
    if not rows:
        st.info("No cached maps with margins for this method yet.")
    else:
        st.plotly_chart(margin_figure(rows), key="x_margin_chart")
        frame = pd.DataFrame([{"run": row["label"], "source": row["source"], "maps": row["maps"],
                               "with margins": row["with_margins"],
                               "margin mass": row["mean_margin_mass"],
                               "margin area": row["mean_margin_area"], "mass / area": row["ratio"]}
                              for row in rows])
        st.dataframe(frame, hide_index=True, key="x_margin_table",
                     column_config={c: st.column_config.NumberColumn(format="%.3f")
                                    for c in ("margin mass", "margin area", "mass / area")})

# --- batch job ---------------------------------------------------------------------------

with tab_batch:
    st.caption("Compute and cache the maps of many images in the background worker; the "
               "pages above then show them instantly. Closing the browser does not stop it.")
    cols = st.columns([2, 2, 1])
    which = cols[0].selectbox("Images", ["the run's test images", "all images of a class"],
                              key="x_b_which")
    b_class = None
    if which == "all images of a class":
        b_class = cols[1].selectbox("Class", run.class_names, key="x_b_class",
                                    format_func=_class_label)
    b_target = cols[2].selectbox("Target", ["predicted", "true"], key="x_b_target")
    if st.button(f"Compute {METHOD_LABELS[method]} maps in the background", key="x_b_submit"):
        if which == "the run's test images":
            ids = run_eval_image_ids(run.run_id, settings)
        else:
            ids = class_image_ids(b_class, settings)
        try:
            job_id = submit_explain_job(run.run_id, ids, config, target=b_target,
                                        input_mode=input_mode, created_by=identity,
                                        settings=settings)
        except ExplainError as exc:
            _error(exc)
        else:
            st.success(f"Queued job #{job_id} for {plural(len(ids), 'image')}.")
    st.markdown(f"Jobs started by **{escape_markdown(identity.name)}** and others:")
    render_job_list((JOB_KIND,), user=identity.name, limit=5, key="explain-jobs",
                    can_cancel=lambda job: can_modify(identity, job.created_by, "cancel"))
