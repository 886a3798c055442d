"""Train: set up an experiment (real, synthetic, mixed, pretrain-finetune; repeats; a
data-efficiency sweep), submit it to the background worker and watch it learn."""

from __future__ import annotations

import streamlit as st

from core.training.data import MODES, DataError, DataSpec, available_choices
from core.training.experiments import (DEFAULT_SWEEP_LEVELS, ExperimentRequest, create_runs,
                                       list_runs, reconcile_runs)
from core.training.figures import history_figure
from core.training.jobs import JOB_KIND, submit_training
from core.training.models import RUN_RUNNING
from core.training.trainer import TrainConfig
from webui import boot, current_user, escape_markdown
from webui_jobs import live_fragment, render_job_list

settings = boot()
user = current_user()

st.title("Train")
st.caption("Train a classifier on real, synthetic or mixed images and test it on held-out real "
           "images (and held-out synthetic ones). Runs go to the background worker: you can "
           "leave this page, and everyone sees their progress.")

MODE_HELP = {
    "real": "real images only (the baseline)",
    "synthetic": "synthetic images only: can they replace the real set?",
    "mixed": "all real images plus synthetic ones: can they enhance it?",
    "pretrain-finetune": "pretrain on synthetic images, then fine-tune on real ones",
}

choices = available_choices(settings)
if len(choices.classes) < 2 or not choices.real_datasets:
    st.info("Training needs real images of at least two classes (the test set is always real). "
            "Import some on the **Import** page, or from the command line with "
            "`python -m core ingest PATH`; generate synthetic ones on the **Generate** page.")
    st.stop()

with st.form("train_form", enter_to_submit=False):
    mode = st.radio("Train on", MODES, format_func=lambda m: f"{m}: {MODE_HELP[m]}", key="t_mode")
    left, right = st.columns(2)
    with left:
        real_datasets = st.multiselect(
            "Real datasets (train and test; empty: all)", list(choices.real_datasets),
            default=list(choices.real_datasets),
            format_func=lambda d: f"{d} ({choices.real_datasets[d]})", key="t_real")
        synthetic_datasets = st.multiselect(
            "Synthetic datasets (empty: all)", list(choices.synthetic_datasets),
            default=list(choices.synthetic_datasets),
            format_func=lambda d: f"{d} ({choices.synthetic_datasets[d]})", key="t_synth")
        cross_datasets = st.multiselect(
            "Also test on (cross-dataset: train on the datasets above, test on these)",
            list(choices.real_datasets), key="t_cross")
    with right:
        classes = st.multiselect(
            "Classes (empty: all with real images)", list(choices.classes),
            format_func=lambda c: f"{c} ({choices.classes[c]['real']} real, "
                                  f"{choices.classes[c]['synthetic']} synthetic)", key="t_classes")
        synthetic_per_class = st.number_input(
            "Synthetic images per class (mixed: added to all real; others: a cap, 0 = all)",
            min_value=0, value=50, step=10, key="t_spc")
        mix_ratio = st.slider("Mixed by ratio instead: synthetic share of training (0 = use the "
                              "number above)", 0.0, 0.9, 0.0, 0.05, key="t_ratio")
        real_per_class = st.number_input("Real training images per class (0 = all)", min_value=0,
                                         value=0, step=5, key="t_rpc")
    st.subheader("Model and training")
    c1, c2, c3, c4 = st.columns(4)
    model = c1.selectbox("Model", ("small", "deep"), key="t_model",
                         format_func=lambda m: {"small": "reference CNN (small)", "deep": "deep CNN"}[m])
    epochs = c2.number_input("Epochs", 1, 500, 10, key="t_epochs")
    lr = c3.number_input("Learning rate", 1e-6, 1.0, 1e-3, format="%.5f", key="t_lr")
    batch_size = c4.number_input("Batch size", 1, 1024, 32, key="t_batch")
    c5, c6, c7, c8 = st.columns(4)
    seed = c5.number_input("Seed", 0, 2**31 - 1, 0, key="t_seed")
    repeats = c6.number_input("Repeat with N seeds", 1, 20, 1, key="t_repeats")
    patience = c7.number_input("Early-stopping patience (0 = off)", 0, 100, 3, key="t_patience")
    image_size = c8.number_input("Image size", 16, 512, int(settings.image_size), step=16, key="t_size")
    sweep = st.checkbox("Data-efficiency sweep: train at several numbers of real images per "
                        "class, each with and without the synthetic images above", key="t_sweep")
    levels_text = st.text_input("Sweep levels (real images per class; 'all' for every image)",
                                ", ".join("all" if v is None else str(v) for v in DEFAULT_SWEEP_LEVELS),
                                key="t_levels")
    name = st.text_input("Name (optional)", key="t_name", max_chars=120)
    submitted = st.form_submit_button("Start training", type="primary")


def _levels(text: str) -> list[int | None]:
    levels: list[int | None] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part == "all":
            levels.append(None)
        elif part.isdigit() and int(part) > 0:
            levels.append(int(part))
        else:
            raise ValueError(f"sweep level {part!r} is not a positive number or 'all'")
    if not levels:
        raise ValueError("give at least one sweep level")
    return levels


if submitted:
    try:
        use_ratio = mode == "mixed" and mix_ratio > 0
        data = DataSpec(
            mode=mode, classes=classes or None, real_datasets=real_datasets or None,
            synthetic_datasets=synthetic_datasets or None, cross_datasets=cross_datasets,
            real_per_class=int(real_per_class) or None,
            synthetic_per_class=None if use_ratio or (mode != "mixed" and not synthetic_per_class)
            else int(synthetic_per_class),
            mix_ratio=mix_ratio if use_ratio else None)
        train = TrainConfig(model=model, epochs=int(epochs), lr=float(lr), batch_size=int(batch_size),
                            seed=int(seed), patience=int(patience), image_size=int(image_size),
                            device=settings.device)
        request = ExperimentRequest(data=data, train=train, repeats=int(repeats), name=name.strip(),
                                    sweep_levels=_levels(levels_text) if sweep else None,
                                    sweep_synthetic_per_class=int(synthetic_per_class) or 50)
        run_ids = create_runs(request, created_by=user, settings=settings)
        title = (name.strip() or f"{mode} {model}") + (f" ({len(run_ids)} runs)" if len(run_ids) > 1 else "")
        job_id = submit_training(run_ids, title=title, created_by=user, settings=settings)
    except (DataError, ValueError) as exc:
        st.error(f"Cannot start: {exc}")
    else:
        st.success(f"Queued job {job_id} with {len(run_ids)} run(s): "
                   f"{', '.join(str(i) for i in run_ids)}. Results appear on the **Results** page.")

st.subheader("Training jobs")
render_job_list(kinds=(JOB_KIND,), user=user, key="train_jobs")


@live_fragment((JOB_KIND,), 2.0)
def live_curves() -> None:
    reconcile_runs(settings)
    running = list_runs(statuses=(RUN_RUNNING,), limit=5, settings=settings)
    if not running:
        st.caption("No run is training right now.")
        return
    for run in running:
        st.markdown(f"**Run {run.id}**: {escape_markdown(run.name)} "
                    f"(epoch {len(run.history or [])})")
        if run.history:
            left, right = st.columns(2)
            left.plotly_chart(history_figure([run], "loss"), key=f"live_loss_{run.id}")
            right.plotly_chart(history_figure([run], "acc"), key=f"live_acc_{run.id}")


st.subheader("Live curves")
live_curves()
