"""Home: what is in the index, what is running, what this machine can do."""

from __future__ import annotations

import importlib.util

import streamlit as st

from core import demo, gallery
from core.figure_layout import readable
from webui import boot, current_identity, current_user, device_info, escape_markdown
from webui.cached import index_overview
from webui.jobs import render_job_list

settings = boot()


def build_demo_now() -> None:
    from core.demo.jobs import submit_demo_build

    job_id = submit_demo_build(created_by=current_user(), settings=settings)
    st.session_state["demo_message"] = (
        f"Demo queued as job #{job_id}: the worker draws the pictures, builds the demo model "
        "and then runs a generation, a training and an attribution job (see Recent jobs).")
    st.rerun()


def remove_demo_now() -> None:
    from core.users.permissions import PermissionDenied

    with st.spinner("Removing the demo ..."):
        try:
            report = demo.remove_demo(settings, by=current_identity())
        except (demo.DemoError, PermissionDenied) as exc:
            st.error(f"Could not remove the demo: {escape_markdown(exc)}")
            return
    st.session_state["demo_message"] = f"Demo {report.summary}."
    st.rerun()

st.title("SynthLab")
st.caption("Can images made by a text-to-image diffusion model enhance or replace a real "
           "training set?")

# One read of the totals (cached until the database changes): the chart's counts come with it.
stats = index_overview(settings)
total_cols = st.columns(4)
total_cols[0].metric("Images", f"{stats['images']:,}")
total_cols[1].metric("Real", f"{stats['by_source'].get('real', 0):,}")
total_cols[2].metric("Synthetic", f"{stats['by_source'].get('synthetic', 0):,}")
total_cols[3].metric("Excluded", f"{stats['excluded']:,}")

st.subheader("Images per class and source")
counts = stats["chart"]
if counts:
    import plotly.express as px  # only with images to chart (it loads pandas too)

    figure = px.bar(counts, x="display_name", y="count", color="source", barmode="group",
                    labels={"display_name": "class", "count": "images"},
                    color_discrete_map={"real": "#2e7d32", "synthetic": "#7b1fa2"})
    figure.update_layout(height=360)
    readable(figure)  # a strip at the top for plotly's toolbar, clear of the bars
    st.plotly_chart(figure, width="stretch")
else:
    st.info("No images yet. Import a dataset on the **Import** page, or from a shell: "
            "`python -m core ingest PATH`.")

if "demo_message" in st.session_state:
    st.success(st.session_state.pop("demo_message"))
demo_present = demo.is_demo_present(settings)
if not stats["images"] and not demo_present:
    st.markdown("**Try it offline:** build a small demo (drawn fruit pictures, a tiny demo "
                "model that makes noise, and one generation, training and attribution job). "
                "It downloads nothing, and one click removes it again.")
    if st.button("Build the demo", key="demo-build", type="primary"):
        build_demo_now()
elif demo_present:
    from core.demo.jobs import active_build_job

    building = active_build_job(settings)
    if building is not None:
        st.info(f"The demo is being built (job #{building}); its pictures appear here as "
                "soon as they are imported.")
    st.caption("The demo is here (datasets named `demo: ...`, the model labelled "
               f"\"{demo.DEMO_MODEL_LABEL}\").")
    if st.button("Remove the demo", key="demo-remove",
                 help="Removes the demo's datasets, images, model, jobs, runs and "
                      "attributions, and nothing else"):
        remove_demo_now()

left, right = st.columns(2)
with left:
    st.subheader("Recent imports")
    recent = gallery.datasets(settings)[:8]
    if recent:
        per_dataset = stats["per_dataset"]
        st.dataframe([{
            "dataset": d.name, "source": d.source, "layout": d.layout or "-",
            "images": per_dataset.get(d.name, 0), "by": d.created_by or "-",
            "when": d.created_at.strftime("%Y-%m-%d %H:%M")} for d in recent],
            hide_index=True, width="stretch")
    else:
        st.caption("Nothing imported yet.")
with right:
    st.subheader("Recent jobs")
    render_job_list(None, user=current_user(), limit=5, key="home-jobs")

st.subheader("This machine")
device = device_info()
if device.kind == "cuda":
    for gpu in device.gpus:
        free = f", {gpu.free_memory_gb:.1f} GB free" if gpu.free_memory_gb is not None else ""
        st.success(f"CUDA GPU {gpu.index}: {gpu.name}, {gpu.total_memory_gb:.1f} GB{free}")
elif device.kind == "mps":
    st.success("Apple MPS (Metal) GPU")
else:
    st.warning(device.warning or "CPU only")
st.caption(f"torch {device.torch_version} · data folder `{settings.home_path}`")

st.subheader("Diffusion models on this machine")
if importlib.util.find_spec("core.generation.registry") is None:
    st.info("The generation module is not installed in this copy of SynthLab, so no "
            "diffusion models can be listed.")
else:
    from webui.cached import diffusion_models

    try:
        entries = diffusion_models(settings)
    except Exception as exc:  # noqa: BLE001 - a broken model folder must not break Home
        st.error(f"Could not list the models: {escape_markdown(exc)}")
        entries = []
    available = [e for e in entries if e.available]
    if available:
        st.dataframe([{"model": e.label, "kind": e.kind, "folder": e.location}
                      for e in available], hide_index=True, width="stretch")
    else:
        st.warning("No diffusion model is available locally, so images cannot be generated "
                   "yet. Everything else works.")
    missing = [e for e in entries if not e.available]
    if missing:
        with st.expander(f"How to get the other {len(missing)} models"):
            for entry in missing:
                st.markdown(f"**{entry.label}** (`{entry.source}`)")
                if entry.how_to_get:
                    st.code(entry.how_to_get, language=None)
