"""Train: set up an experiment (real, synthetic, mixed, pretrain-finetune; repeats; a
data-efficiency sweep), submit it to the background worker and watch it learn."""

from __future__ import annotations

import streamlit as st

from core.preprocess import DEFAULT_NAMES, list_presets
from core.training.data import MODES, DataError, DataSpec
from core.training.experiments import (DEFAULT_SWEEP_LEVELS, REPEATS_MAX, SEED_MAX,
                                       ExperimentRequest, create_runs, list_runs, reconcile_runs)
from core.training.figures import history_figure
from core.training.jobs import JOB_KIND, submit_training
from core.training.models import RUN_RUNNING
from core.training.protocols import (INIT_SCHEMES, OPTIMIZERS, ORIGINAL, PROTOCOLS, SELECT_RULES,
                                     SYNTHLAB, get_protocol, protocol_options)
from core.training.recipes import queue_reproduction
from core.wording import plural
from core.training.trainer import (BATCH_SIZE_MAX, EPOCHS_MAX, IMAGE_SIZE_MAX, IMAGE_SIZE_MIN,
                                   LR_MAX, LR_MIN, PATIENCE_MAX, WEIGHT_DECAY_MAX, TrainConfig)
from webui import boot, current_identity, current_user, escape_markdown
from webui.cached import training_choices
from webui.jobs import live_fragment, render_job_list

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

MIX_HELP = {"count": "N synthetic per class added to all real",
            "ratio": "by ratio",
            "half": "half of each set per class (the original study)"}

choices = training_choices(settings)  # cached until the index changes
if len(choices.classes) < 2 or not choices.real_datasets:
    st.info("Training needs real images of at least two classes (the test set is always real). "
            "Import some on the **Import** page, or from the command line with "
            "`python -m core ingest PATH`; generate synthetic ones on the **Generate** page.")
    st.stop()

protocol_name = st.segmented_control(
    "Protocol", list(PROTOCOLS), default=SYNTHLAB.name, key="t_protocol",
    format_func=lambda p: PROTOCOLS[p].title,
    help="Fills the options below; each can still be changed. The run records the protocol.")
protocol = get_protocol(protocol_name or SYNTHLAB.name)
st.caption(protocol.description)
pdata, ptrain = protocol_options(protocol.name)
# Widget keys carry the protocol, so switching it resets the options to its values.
pk = protocol.name
pipeline_names = list(DEFAULT_NAMES) + [p.name for p in list_presets(settings)
                                        if p.name not in DEFAULT_NAMES]

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
        mix_how = st.radio("Mixed: how to mix", list(MIX_HELP), format_func=MIX_HELP.get,
                           index=2 if protocol is ORIGINAL else 0, key=f"t_mix_{pk}",
                           horizontal=True)
        synthetic_per_class = st.number_input(
            "Synthetic images per class (mixed: added to all real; others: a cap, 0 = all)",
            min_value=0, value=50, step=10, key="t_spc")
        mix_ratio = st.slider("Mix ratio: synthetic share of the training set", 0.05, 0.9, 0.5,
                              0.05, key="t_ratio")
        real_per_class = st.number_input("Real training images per class (0 = all)", min_value=0,
                                         value=0, step=5, key="t_rpc")
    st.subheader("Preprocessing")
    p_left, p_right = st.columns(2)
    real_pipeline = p_left.selectbox(
        "Real images", pipeline_names, index=pipeline_names.index(pdata["real_pipeline"]),
        key=f"t_real_pipeline_{pk}", help="a built-in pipeline or a preset saved on Preprocess")
    synthetic_pipeline = p_right.selectbox(
        "Synthetic images", pipeline_names, index=pipeline_names.index(pdata["synthetic_pipeline"]),
        key=f"t_synth_pipeline_{pk}")
    augment_each_epoch = st.toggle("Redraw random preprocessing steps every epoch (augmentation); "
                                   "off: one draw per image, as the original study",
                                   value=pdata["augment_each_epoch"], key=f"t_augment_{pk}")
    st.subheader("Model and training")
    c1, c2, c3, c4 = st.columns(4)
    model = c1.selectbox("Model", ("small", "deep"), key="t_model",
                         format_func=lambda m: {"small": "reference CNN (small)", "deep": "deep CNN"}[m])
    # The bounds are core's (TrainConfig refuses anything outside them, from any caller).
    epochs = c2.number_input("Epochs", 1, EPOCHS_MAX, int(ptrain["epochs"]), key="t_epochs")
    lr = c3.number_input("Learning rate", LR_MIN, LR_MAX, float(ptrain["lr"]), format="%.5f",
                         key=f"t_lr_{pk}")
    batch_size = c4.number_input("Batch size", 1, BATCH_SIZE_MAX, int(ptrain["batch_size"]),
                                 key=f"t_batch_{pk}")
    c5, c6, c7, c8 = st.columns(4)
    optimizer = c5.selectbox("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index(ptrain["optimizer"]),
                             key=f"t_optimizer_{pk}",
                             format_func={"adamw": "AdamW", "adam": "Adam (plain)"}.get)
    weight_decay = c6.number_input("Weight decay", 0.0, WEIGHT_DECAY_MAX, float(ptrain["weight_decay"]),
                                   format="%.5f", key=f"t_wd_{pk}")
    init = c7.selectbox("Initial weights", INIT_SCHEMES, index=INIT_SCHEMES.index(ptrain["init"]),
                        key=f"t_init_{pk}", format_func={
                            "default": "PyTorch default", "xavier": "Xavier uniform, zero biases"}.get)
    image_size = c8.number_input("Image size", IMAGE_SIZE_MIN, IMAGE_SIZE_MAX,
                                 int(ptrain.get("image_size", settings.image_size)),
                                 step=16, key=f"t_size_{pk}")
    c9, c10, c11, c12 = st.columns(4)
    val_fraction = c9.number_input("Validation share (0 = none: every image trains)", 0.0, 0.9,
                                   float(pdata["val_fraction"]), 0.05, key=f"t_val_{pk}")
    select = c10.selectbox("Weights kept", SELECT_RULES, index=SELECT_RULES.index(ptrain["select"]),
                           key=f"t_select_{pk}", format_func={
                               "best-val": "best validation epoch", "last": "last epoch"}.get)
    patience = c11.number_input("Early-stopping patience (0 = off)", 0, PATIENCE_MAX, int(ptrain["patience"]),
                                key=f"t_patience_{pk}")
    deterministic = c12.checkbox("Deterministic kernels", key="t_deterministic",
                                 help="PyTorch's deterministic algorithms and cuDNN without "
                                      "autotuning: the same seed gives the same weights on a GPU "
                                      "too, somewhat slower. Recorded with the run.")
    c13, c14 = st.columns(2)
    seed = c13.number_input("Seed", 0, SEED_MAX, 0, key="t_seed")
    repeats = c14.number_input("Repeat with N seeds", 1, REPEATS_MAX, 1, key="t_repeats")
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
        mixing = mode == "mixed" and not sweep
        data = DataSpec(
            mode=mode, classes=classes or None, real_datasets=real_datasets or None,
            synthetic_datasets=synthetic_datasets or None, cross_datasets=cross_datasets,
            real_per_class=int(real_per_class) or None,
            synthetic_per_class=None if (mixing and mix_how != "count")
            or (mode != "mixed" and not synthetic_per_class) else int(synthetic_per_class),
            mix_ratio=float(mix_ratio) if mixing and mix_how == "ratio" else None,
            mix_half=mixing and mix_how == "half", val_fraction=float(val_fraction),
            real_pipeline=real_pipeline, synthetic_pipeline=synthetic_pipeline,
            augment_each_epoch=bool(augment_each_epoch))
        train = TrainConfig(model=model, epochs=int(epochs), lr=float(lr), batch_size=int(batch_size),
                            seed=int(seed), patience=int(patience), image_size=int(image_size),
                            optimizer=optimizer, weight_decay=float(weight_decay), init=init,
                            select=select, deterministic=bool(deterministic), device=settings.device)
        request = ExperimentRequest(data=data, train=train, repeats=int(repeats), name=name.strip(),
                                    sweep_levels=_levels(levels_text) if sweep else None,
                                    sweep_synthetic_per_class=int(synthetic_per_class) or 50,
                                    protocol=protocol.name)
        run_ids = create_runs(request, created_by=user, settings=settings)
        title = (name.strip() or f"{mode} {model}") + (f" ({len(run_ids)} runs)" if len(run_ids) > 1 else "")
        job_id = submit_training(run_ids, title=title, created_by=current_identity(),
                                 settings=settings)
    except (DataError, ValueError) as exc:
        st.error(f"Cannot start: {escape_markdown(exc)}")
    else:
        st.success(f"Queued job {job_id} with {plural(len(run_ids), 'run')}: "
                   f"{', '.join(str(i) for i in run_ids)}. Results appear on the **Results** page.")

st.subheader("Recipe: reproduce the original study")
with st.form("reproduce_form", enter_to_submit=False):
    st.caption("Real-only, synthetic-only, mixed and pretrain-finetune, each under the original "
               "study's protocol and under SynthLab's default, with several seeds, all tested on "
               "the same held-out real images; the Results page then compares them with each "
               "other and with the study's published figures. The same as "
               "`python -m core reproduce original --real DATASET --synthetic DATASET`.")
    r1, r2, r3 = st.columns([2, 2, 1])
    recipe_real = r1.selectbox("Real dataset", list(choices.real_datasets), key="rp_real")
    recipe_synthetic = r2.selectbox("Synthetic dataset", list(choices.synthetic_datasets) or ["(none)"],
                                    key="rp_synth", disabled=not choices.synthetic_datasets)
    recipe_seeds = r3.number_input("Seeds", 1, REPEATS_MAX, 5, key="rp_seeds")
    queue_recipe = st.form_submit_button("Queue the reproduction (8 configurations x seeds)")
if queue_recipe and not choices.synthetic_datasets:
    # Said here, not raised: the page names are markdown, and error messages are escaped.
    st.error("Cannot start: no synthetic dataset yet. Generate one on **Generate**, or import "
             "the study's set on **Import**.")
elif queue_recipe:
    try:
        plan = queue_reproduction(recipe_real, recipe_synthetic, seeds=int(recipe_seeds),
                                  created_by=user, settings=settings)
        job_id = submit_training(plan.run_ids, title=f"reproduce original ({len(plan.run_ids)} runs)",
                                 created_by=current_identity(), settings=settings)
    except (DataError, ValueError) as exc:
        st.error(f"Cannot start: {escape_markdown(exc)}")
    else:
        notes = "".join(f" Note: {escape_markdown(n)}." for n in plan.notes)
        st.success(f"Queued job {job_id}: {len(plan.run_ids)} runs on "
                   f"{escape_markdown(', '.join(plan.classes))}.{notes} Follow it below; the "
                   "Results page shows the group as it finishes.")

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
