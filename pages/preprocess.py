"""Preprocess (the Compare page): real and synthetic images side by side through their
pipelines, every step shown, the pipelines editable and saved as presets."""

from __future__ import annotations

import dataclasses

import numpy as np
import streamlit as st
from sqlalchemy import select

from core.db.engine import session_scope
from core.db.models import SOURCE_REAL, SOURCE_SYNTHETIC, Dataset
from core.preprocess import (BUILTIN_DESCRIPTIONS, DEFAULT_NAMES, Pipeline, PipelineError,
                             list_presets, load_pipeline)
from core.preprocess.compare import aspect_figure, image_choices, random_image_id
from core.preprocess.presets import delete_preset, get_preset, save_preset
from core.preprocess.stats import ImageFilter, random_margin_from_dataset
from core.preprocess.transforms import (LETTERBOX_FILLS, RESAMPLING, RandomMargin, Transform,
                                        TransformError, transform_types)
from core.users.permissions import PermissionDenied, can_modify
from webui import boot, current_identity, error_text, escape_markdown
from webui.cached import aspect_comparison, preprocess_class_options, stage_previews

settings = boot()
identity = current_identity()

st.title("Preprocess")
st.caption("Diffusion models make square pictures; real photos are not square. Plain resizing "
           "stretches them differently, and a model can learn that difference instead of the "
           "object. Here you shape both sets alike: pick a real and a synthetic image, edit the "
           "two pipelines, watch every step, and check that the aspect ratios meet.")

# Slider ranges per parameter name: (min, max, step).
FLOAT_RANGES = {
    "min_aspect": (0.2, 5.0, 0.01), "max_aspect": (0.2, 5.0, 0.01), "p": (0.0, 1.0, 0.05),
    "sigma": (0.0, 64.0, 1.0), "max_degrees": (0.0, 45.0, 1.0), "brightness": (0.0, 0.9, 0.05),
    "contrast": (0.0, 0.9, 0.05), "saturation": (0.0, 0.9, 0.05), "hue": (0.0, 0.5, 0.01),
    "size_fraction": (0.05, 1.0, 0.05), "max_fraction": (0.0, 0.45, 0.01),
}
PAIR_RANGES = {"scale": (0.05, 1.0, 0.05), "ratio": (0.25, 4.0, 0.05)}
CHOICES = {"fill": LETTERBOX_FILLS, "resample": tuple(RESAMPLING), "position": ("random", "center")}
NO_STEP = "(add a step)"
# Parameters that only matter for some values of another: hidden (kept as they are) otherwise.
SHOWN_WHEN = {
    ("letterbox", "colour"): lambda values: values.get("fill") == "colour",
    ("coloured_margins", "colour"): lambda values: not values.get("random_colour"),
}


def _hex(colour) -> str:  # noqa: ANN001
    return "#{:02x}{:02x}{:02x}".format(*colour)


def _rgb(text: str) -> tuple[int, int, int]:
    return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _field_widget(cls: type[Transform], field: dataclasses.Field, value, key: str):  # noqa: ANN001, ANN202
    label = field.name.replace("_", " ").capitalize()
    kind = str(field.type)
    if field.name in CHOICES:
        options = list(CHOICES[field.name])
        return st.selectbox(label, options, index=options.index(value) if value in options else 0, key=key)
    if kind == "bool":
        return st.checkbox(label, value=bool(value), key=key)
    if kind == "RGB":
        return _rgb(st.color_picker(label, _hex(value), key=key))
    if kind == "int | None":
        return st.number_input(label, min_value=1, max_value=4096, value=value, step=1, key=key,
                               placeholder="same as the image")
    if kind == "int":
        low = 0 if field.name == "count" else 1
        return int(st.number_input(label, min_value=low, max_value=4096, value=int(value), step=1, key=key))
    if field.name in PAIR_RANGES:
        low, high, step = PAIR_RANGES[field.name]
        picked = st.slider(label, low, high, (float(value[0]), float(value[1])), step, key=key)
        return (float(picked[0]), float(picked[1]))
    if kind == "float":
        low, high, step = FLOAT_RANGES.get(field.name, (0.0, 10.0, 0.1))
        return float(st.slider(label, low, high, float(min(max(value, low), high)), step, key=key))
    if field.name == "aspects":
        if value:
            st.caption(f"Aspect ratios measured from a real dataset: {len(value)} values, "
                       f"median {np.median(value):.2f} (the range above is then ignored).")
        return tuple(value or ())
    st.caption(f"{label}: {escape_markdown(value)}")
    return value


def _restructure(side: str, pipeline: Pipeline) -> None:
    """Store the current values as the new defaults and rebuild the widgets."""
    st.session_state[f"pp_{side}_spec"] = pipeline.to_dict()
    st.session_state[f"pp_{side}_ver"] = st.session_state.get(f"pp_{side}_ver", 0) + 1


def pipeline_editor(side: str, names: list[str], real_datasets: list[str]) -> Pipeline | None:
    """Widgets for every parameter of every step; returns the edited pipeline (None if invalid)."""
    chosen = st.selectbox("Start from", names, index=names.index(side), key=f"pp_{side}_base",
                          help="a built-in default or a saved preset")
    if chosen in BUILTIN_DESCRIPTIONS and chosen not in {p.name for p in presets}:
        st.caption(BUILTIN_DESCRIPTIONS[chosen])
    if st.session_state.get(f"pp_{side}_loaded") != chosen:
        try:
            base = load_pipeline(chosen, settings)
        except PipelineError as exc:
            st.error(error_text(exc))
            base = load_pipeline(side, settings)
        _restructure(side, base)
        st.session_state[f"pp_{side}_loaded"] = chosen
    spec = st.session_state[f"pp_{side}_spec"]
    version = st.session_state[f"pp_{side}_ver"]
    types = transform_types()
    steps: list[Transform] = []
    valid = True
    action: tuple[str, int, str] | None = None
    for index, step_spec in enumerate(spec["steps"]):
        cls = types[step_spec["type"]]
        with st.expander(f"{index + 1}. {cls.label}", expanded=False):
            values: dict = {}
            for f in dataclasses.fields(cls):
                shown = SHOWN_WHEN.get((cls.type_name, f.name), lambda _values: True)(values)
                current = step_spec.get(f.name)
                values[f.name] = (_field_widget(cls, f, current, f"pp_{side}_{version}_{index}_{f.name}")
                                  if shown else (tuple(current) if isinstance(current, list) else current))
            try:
                steps.append(cls(**values))
            except (TransformError, TypeError) as exc:
                st.error(error_text(exc))
                valid = False
            if cls is RandomMargin and real_datasets:
                dataset = st.selectbox("Measure the aspect ratios of", real_datasets,
                                       key=f"pp_{side}_{version}_{index}_dataset")
                if st.button("Use this dataset's aspect ratios", key=f"pp_{side}_{version}_{index}_measure"):
                    action = ("measure", index, dataset)
            if st.button("Remove this step", key=f"pp_{side}_{version}_{index}_remove"):
                action = ("remove", index, "")
    labels = {cls.label: name for name, cls in types.items() if name != "downscale"}
    added = st.selectbox("Add a step", [NO_STEP] + sorted(labels), key=f"pp_{side}_{version}_add")
    capped = st.checkbox("Shrink big pictures first (faster; the original study did not)",
                         value=spec.get("max_side") is not None, key=f"pp_{side}_{version}_capped")
    max_side = st.number_input("Working size cap (longer side, px)", 16, 4096,
                               int(spec.get("max_side") or 256), 16, key=f"pp_{side}_{version}_cap",
                               help="images are first shrunk to this; the cache keeps this size",
                               disabled=not capped)
    if not valid:
        return None
    pipeline = Pipeline(tuple(steps), max_side=int(max_side) if capped else None, name=chosen)
    if action and action[0] == "remove":
        _restructure(side, Pipeline(pipeline.steps[:action[1]] + pipeline.steps[action[1] + 1:],
                                    pipeline.max_side, chosen))
        st.rerun()
    if action and action[0] == "measure":
        with session_scope(settings) as session:
            try:
                measured = random_margin_from_dataset(
                    session, ImageFilter(source=SOURCE_REAL, dataset_name=action[2]),
                    position=steps[action[1]].position)  # type: ignore[attr-defined]
            except ValueError as exc:
                st.error(error_text(exc))
                return pipeline
        changed = list(pipeline.steps)
        changed[action[1]] = measured
        _restructure(side, Pipeline(tuple(changed), pipeline.max_side, chosen))
        st.rerun()
    if added != NO_STEP:
        _restructure(side, Pipeline(pipeline.steps + (types[labels[added]](),), pipeline.max_side, chosen))
        st.rerun()
    return pipeline


def _pick_random(key: str, class_name: str | None, source: str) -> None:
    seed = int(np.random.default_rng().integers(2**31))
    with session_scope(settings) as session:
        picked = random_image_id(session, class_name, source, seed)
    if picked is not None:
        st.session_state[key] = picked


def image_picker(source: str, class_name: str | None) -> int | None:
    key = f"pp_pick_{source}_{class_name}"
    with session_scope(settings) as session:
        choices = image_choices(session, class_name, source)
    if not choices:
        return None
    labels = {c.id: c.label for c in choices}
    if key in st.session_state and st.session_state[key] not in labels:
        labels[st.session_state[key]] = f"#{st.session_state[key]} (random pick)"
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    with left:
        picked = st.selectbox(f"{source.capitalize()} image", list(labels), format_func=labels.get, key=key)
    with right:
        st.button("Random", key=f"{key}_random", on_click=_pick_random, args=(key, class_name, source))
    return picked


def show_stages(source: str, image_id: int | None, pipeline: Pipeline | None, seed: int) -> None:
    if image_id is None or pipeline is None:
        return
    shown = stage_previews(settings, image_id, pipeline, seed, pipeline.output_size or settings.image_size)
    if shown is None:
        st.warning(f"Image #{image_id} is no longer available.")
        return
    st.markdown(f"**{source.capitalize()}** · image #{shown.image_id} · {shown.width}x{shown.height} · seed {seed}")
    columns = st.columns(len(shown.stages))
    for column, (name, width, height, preview) in zip(columns, shown.stages):
        with column:
            st.image(preview, caption=f"{name} · {width}x{height}", width="stretch")


# --- what to look at ----------------------------------------------------------------------

classes = preprocess_class_options(settings)  # cached until the index changes
with session_scope(settings) as session:
    real_datasets = list(session.scalars(
        select(Dataset.name).where(Dataset.source == SOURCE_REAL).order_by(Dataset.name)))
presets = list_presets(settings)
preset_names = list(DEFAULT_NAMES) + [p.name for p in presets if p.name not in DEFAULT_NAMES]

top_left, top_right = st.columns([3, 1])
with top_left:
    class_labels = {None: f"All classes ({sum(c.real for c in classes)} real, "
                          f"{sum(c.synthetic for c in classes)} synthetic)"}
    class_labels.update({c.name: f"{c.display_name} ({c.real} real, {c.synthetic} synthetic)" for c in classes})
    class_name = st.selectbox("Class", list(class_labels), format_func=class_labels.get, key="pp_class")
with top_right:
    seed = int(st.number_input("Seed of the random steps", 0, 2**31 - 1, 0, 1, key="pp_seed"))

total_real = sum(c.real for c in classes)
total_synthetic = sum(c.synthetic for c in classes)
if not classes:
    st.info("No images yet. Import real images on the Import page and generate synthetic ones "
            "on the Generate page; the pipelines below can be edited and saved meanwhile.")

pick_real, pick_synthetic = st.columns(2)
with pick_real:
    real_id = image_picker(SOURCE_REAL, class_name) if classes else None
    if classes and real_id is None:
        st.info("No real images in this class.")
with pick_synthetic:
    synthetic_id = image_picker(SOURCE_SYNTHETIC, class_name) if classes else None
    if classes and synthetic_id is None:
        st.info("No synthetic images in this class yet: generate some on the Generate page. "
                "The real side works on its own.")

# The previews are drawn above the editors (so a slider's effect is in view) but computed
# after them, from the edited pipelines.
stages_area = st.container()

# --- the two pipelines ----------------------------------------------------------------------

edit_real, edit_synthetic = st.columns(2)
with edit_real:
    with st.container(border=True):
        st.subheader("Real pipeline")
        st.caption("Open a step to change it; the previews above follow.")
        real_pipeline = pipeline_editor("real", preset_names, real_datasets)
with edit_synthetic:
    with st.container(border=True):
        st.subheader("Synthetic pipeline")
        st.caption("Open a step to change it; the previews above follow.")
        synthetic_pipeline = pipeline_editor("synthetic", preset_names, real_datasets)

# --- side by side ----------------------------------------------------------------------------

with stages_area:
    st.subheader("Step by step")
    if real_id is None and synthetic_id is None:
        st.caption("Pick an image above to see each step.")
    show_stages(SOURCE_REAL, real_id, real_pipeline, seed)
    show_stages(SOURCE_SYNTHETIC, synthetic_id, synthetic_pipeline, seed)

st.subheader("Aspect ratios, before and after")
if real_pipeline is None or synthetic_pipeline is None:
    st.caption("Fix the pipeline errors above to see the histograms.")
elif total_real + total_synthetic == 0:
    st.caption("No images to measure yet.")
else:
    comparison = aspect_comparison(settings, real_pipeline, synthetic_pipeline, class_name, seed)
    st.plotly_chart(aspect_figure(comparison), key="pp_aspects")
    if len(comparison.real_before) and len(comparison.synthetic_before):
        st.caption(f"Distance between the real and synthetic distributions (mean log-ratio gap, "
                   f"0 = identical): {comparison.distance_before:.3f} before, "
                   f"{comparison.distance_after:.3f} after.")
    else:
        missing = "synthetic" if not len(comparison.synthetic_before) else "real"
        st.caption(f"There are no {missing} images here to compare with.")

# --- presets ---------------------------------------------------------------------------------

st.subheader("Presets")
if "pp_flash" in st.session_state:  # the outcome of the last save or delete, before its rerun
    st.success(escape_markdown(st.session_state.pop("pp_flash")))
saved_by_name = {p.name: p for p in presets}
# A built-in name saved as a preset changes every user's later runs: admins only (core
# refuses it too). Said up front, next to the field, rather than after the click.
may_override = can_modify(identity, None, "override_builtin_preset")
name_help = ("Saving as 'real' or 'synthetic' changes the default used by training." if may_override
             else f"Only admins can save over the built-in presets ({', '.join(DEFAULT_NAMES)}); "
                  "pick another name. Presets made by others are theirs to change.")
with st.form("pp_save_preset"):
    which = st.radio("Save which pipeline", ["real", "synthetic"], horizontal=True)
    name = st.text_input("Preset name", placeholder="e.g. synthetic, measured from VOC",
                         help=name_help)
    notes = st.text_input("Notes (optional)")
    if st.form_submit_button("Save preset"):
        pipeline = real_pipeline if which == "real" else synthetic_pipeline
        existing = get_preset(name.strip(), settings) if name.strip() else None
        try:
            if pipeline is None:
                raise PipelineError("that pipeline has errors; fix them first")
            # Core checks the identity as it is now (owner, built-in names) and audits.
            saved = save_preset(name, pipeline, identity, settings=settings, notes=notes or None)
        except (PipelineError, PermissionDenied) as exc:
            st.error(error_text(exc))
        else:
            # Rerun so every preset menu on the page lists the new one.
            st.session_state["pp_flash"] = f"Saved preset “{saved.name}” ({len(pipeline.steps)} steps)."
            st.rerun()
if presets:
    st.dataframe([{"name": p.name, "steps": Pipeline.from_dict(p.spec).describe(), "by": p.updated_by,
                   "updated": p.updated_at, "notes": p.notes} for p in presets], hide_index=True)
    # Only presets this user may delete are offered; none: the button is disabled, with why.
    deletable = [p.name for p in presets if can_modify(identity, p.created_by, "delete")
                 and (p.name not in DEFAULT_NAMES or may_override)]
    with st.form("pp_delete_preset"):
        doomed = st.selectbox("Preset", deletable)
        if st.form_submit_button(
                "Delete preset", disabled=not deletable,
                help=None if deletable else "Only a preset's maker or an admin can delete it, "
                "and only an admin a built-in one."):
            try:
                delete_preset(doomed, settings, actor=identity)
            except PermissionDenied as exc:
                st.error(error_text(exc))
            else:
                st.session_state["pp_flash"] = f"Deleted preset “{doomed}”." + (
                    " The built-in default is back." if doomed in DEFAULT_NAMES else "")
                st.rerun()
else:
    st.caption("No saved presets: training uses the built-in `real` and `synthetic` pipelines.")
with st.expander("Built-in pipelines"):
    st.dataframe([{"name": name, "what it does": BUILTIN_DESCRIPTIONS[name],
                   "overridden by a saved preset": name in saved_by_name} for name in DEFAULT_NAMES],
                 hide_index=True)
