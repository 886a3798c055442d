"""Generate: choose a model, classes, prompts and parameters; preview; queue a job; watch it.

Generation runs in the background worker (``core.generation.jobs``); only the 4-image
preview runs here, because it is short and the user is waiting for it.
"""

from __future__ import annotations

import streamlit as st
from sqlalchemy import select

from core.catalog import class_key
from core.db.engine import session_scope
from core.db.models import ImageClass
from core.generation.generator import (BATCH_SIZE_MAX, GUIDANCE_MAX, PER_CLASS_MAX, SIZE_MAX,
                                       SIZE_MIN, STEPS_MAX, GenerationConfig, GenerationError,
                                       load_prompt_config, save_prompt_config)
from core.generation.jobs import KIND, extend_job, job_hosts, recent_images, submit_generation
from core.generation.loading import SCHEDULERS, ModelNotAvailable, load_tokenizer
from core.generation.preview import CANCELLED, FAILED, PreviewRun
from core.generation.prompts import (DEFAULT_NEGATIVE, PromptConfig, PromptError,
                                     default_prompt_config, expand_prompts, token_warnings)
from core.generation.registry import add_custom_model, list_models, locate, remove_custom_model
from core.generation.seeds import MAX_SEED
from core.jobs import DONE, RUNNING, list_jobs
from core.store import ImageStore
from webui import boot, current_identity, current_user, device_info, error_text, escape_markdown
from webui.forms import RememberedForm, within
from webui.jobs import live_fragment, render_job_list

settings = boot()
user = current_user()

# The form as this user last left it (webui.forms): each value is put back only if its
# widget still accepts it.
FORM_KEYS = ("gen_model", "gen_defaults_for", "gen_classes", "gen_new_classes", "gen_per_class",
             "gen_steps", "gen_guidance", "gen_size", "gen_seed", "gen_batch_size",
             "gen_scheduler", "gen_dataset", "gen_preview_class")
form = RememberedForm("generate", user, FORM_KEYS, settings)


st.title("Generate synthetic images")
device = device_info()
if device.kind == "cpu":
    st.warning(device.warning or "No GPU: generation runs on the CPU and is very slow.")

# --- model ------------------------------------------------------------------------------

st.subheader("Model")


def _model_labels(entries: list) -> dict[str, object]:  # label -> ModelEntry
    labels: dict[str, object] = {}
    for entry in sorted(entries, key=lambda e: not e.available):
        label = entry.label + ("" if entry.available else "  (not downloaded)")
        labels[label if label not in labels else f"{label} [{entry.source}]"] = entry
    return labels


def _add_model(input_key: str) -> None:
    """The add-model button's callback: remember the model, select it, say so. (A callback
    may still set the menu's value: its widget is drawn later in the run.)"""
    source = str(st.session_state.get(input_key) or "").strip()
    try:
        add_custom_model(source, added_by=user, settings=settings)
    except ValueError as exc:
        st.session_state["gen_add_result"] = ("error", str(exc))
        return
    labels = _model_labels(list_models(settings))
    label = next((lb for lb, e in labels.items() if e.source == source and e.kind == "custom"),
                 next((lb for lb, e in labels.items() if source in (e.source, e.location)), None))
    if label is not None:
        st.session_state["gen_model"] = label
    entry = labels.get(label)
    where = "" if entry is None or entry.available else " It is not on this machine yet: see below."
    st.session_state["gen_add_result"] = (
        "success", f"Added {entry.label if entry else source} to the model list and selected it.{where}")
    st.session_state[input_key] = ""


def _default_label(labels: dict[str, object]) -> str | None:
    """The configured default model when it is here, else the first available one; with
    none here, the model the no-model advice recommends (not another one)."""
    here = {label: e for label, e in labels.items() if e.available}
    return (next((label for label, e in here.items()
                  if settings.default_model in (e.source, e.location)), None)
            or next(iter(here), None)
            or next((label for label, e in labels.items() if e.source == "stabilityai/sd-turbo"),
                    None))


def _remove_model(source: str) -> None:
    """The remove button's callback: off everyone's list (files untouched), said either way."""
    from core.users.permissions import PermissionDenied

    try:
        removed = remove_custom_model(source, by=current_identity(), settings=settings)
    except PermissionDenied as exc:
        st.session_state["gen_add_result"] = ("error", str(exc))
        return
    # The menu shows the default model again: set, not just dropped, or the browser keeps
    # showing the removed one while the page goes on with the default.
    fallback = _default_label(_model_labels(list_models(settings)))
    if fallback is None:
        st.session_state.pop("gen_model", None)
    else:
        st.session_state["gen_model"] = fallback
    st.session_state["gen_add_result"] = (
        ("success", f"Removed {source} from the model list; its files are untouched.")
        if removed else ("error", f"{source} was already off the list."))


def _add_model_action(where: str) -> None:
    """A visible "add a model" action (beside the menu, and in the no-model box)."""
    with st.popover("Add a model from a folder or Hub id", key=f"gen_add_{where}"):
        st.text_input("Hugging Face id or folder path", key=f"gen_add_source_{where}",
                      placeholder="segmind/small-sd or /models/my-sd")
        st.button("Add and select", key=f"gen_add_button_{where}", type="primary",
                  on_click=_add_model, args=(f"gen_add_source_{where}",))


entries = list_models(settings)
available = [e for e in entries if e.available]
if not available:
    with st.container(border=True):
        st.info("No diffusion model is on this machine yet, so images cannot be generated; the "
                "rest of SynthLab works. The quickest start is SD-Turbo (about 5 GB), then reload "
                "this page:")
        st.code("hf download stabilityai/sd-turbo", language="bash")
        st.caption("Or copy a diffusers model folder (with a model_index.json) into "
                   f"`{settings.home_path / 'models'}` or the folder set by "
                   "SYNTHLAB_LOCAL_MODELS_DIR, or add one you already have:")
        _add_model_action("box")

labels = _model_labels(entries)
default_label = _default_label(labels)
options = list(labels)
if default_label:
    options.insert(0, options.pop(options.index(default_label)))
form.recall("gen_model", lambda v: v in options)
cols = st.columns([3, 2], vertical_alignment="bottom")
choice = cols[0].selectbox("Model", options, key="gen_model")
with cols[1]:
    _add_model_action("menu")
added = st.session_state.pop("gen_add_result", None)
if added is not None:
    if added[0] == "success":
        st.success(escape_markdown(added[1]))
    else:
        st.error(error_text(added[1]))
model_entry = labels.get(choice)
model_source = model_entry.source if model_entry else ""
model_ready = bool(model_source) and locate(model_source, settings) is not None
if model_entry is not None and not model_entry.available:
    if not available and model_entry.source == "stabilityai/sd-turbo":
        st.caption(f"{escape_markdown(model_entry.label)} is not downloaded yet: see the command above.")
    else:
        st.error(f"{escape_markdown(model_entry.label)} is not on this machine. Get it with:")
        st.code(model_entry.how_to_get or f"hf download {model_entry.source}", language="bash")
elif model_entry is not None and model_entry.preset:
    st.caption(f"{model_entry.preset.notes}. Loads from `{model_entry.location}`.")
elif model_entry is not None and model_entry.location:
    st.caption(f"Loads from `{model_entry.location}`.")
if model_entry is not None and model_entry.kind == "custom":
    st.button("Remove this model from the list", key="gen_remove_model",
              help="Takes it off everyone's model menu; its files and the jobs that used it stay.",
              on_click=_remove_model, args=(model_entry.source,))

# Parameters follow the chosen model's preset until the user changes them.
defaults = model_entry.defaults() if model_entry else {"size": 512, "steps": 25, "guidance": 7.5}
form.recall("gen_defaults_for", lambda v: isinstance(v, str))
form.recall("gen_steps", within(1, STEPS_MAX))
form.recall("gen_guidance", within(0.0, GUIDANCE_MAX, float))
form.recall("gen_size", within(SIZE_MIN, SIZE_MAX))
if st.session_state.get("gen_defaults_for") != model_source:
    st.session_state["gen_defaults_for"] = model_source
    st.session_state["gen_steps"] = int(defaults["steps"])
    st.session_state["gen_guidance"] = float(defaults["guidance"])
    st.session_state["gen_size"] = int(defaults["size"])

# --- classes and prompts ----------------------------------------------------------------

st.subheader("Classes and prompts")
with session_scope(settings) as session:
    existing = {c.name: c for c in session.scalars(select(ImageClass).order_by(ImageClass.name))}
form.recall("gen_classes", lambda v: isinstance(v, list) and set(v) <= set(existing))
form.recall("gen_new_classes", lambda v: isinstance(v, str))
cols = st.columns(2)
picked = cols[0].multiselect("Classes", list(existing), key="gen_classes",
                             format_func=lambda k: existing[k].display_name)
new_text = cols[1].text_input("New classes (comma-separated)", key="gen_new_classes",
                              placeholder="Bell Pepper, Dragon Fruit")
class_names = [existing[k].display_name for k in picked]
for name in (n.strip() for n in new_text.split(",")):
    if name and name not in class_names:
        try:
            class_key(name)
            class_names.append(name)
        except ValueError:
            st.error(f"Not a usable class name: {escape_markdown(repr(name))}")


def _stored_config(name: str) -> PromptConfig:
    key = class_key(name)
    if key in existing:
        with session_scope(settings) as session:
            return load_prompt_config(session, session.get(ImageClass, existing[key].id))
    return default_prompt_config(name)


def _parse_slots(text: str) -> dict[str, list[str]]:
    slots: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if ":" not in line:
            raise PromptError(f"slots line {number}: write `slot: value | value`, got {line!r}")
        slot, values = line.split(":", 1)
        slots[slot.strip()] = [v.strip() for v in values.split("|") if v.strip()]
    return slots


def _prompt_widgets(name: str) -> PromptConfig | None:
    """The editors of one class's prompt config; None (with a message) when invalid."""
    key = class_key(name)
    if f"gen_pname_{key}" not in st.session_state:
        stored = _stored_config(name)
        st.session_state[f"gen_pname_{key}"] = stored.prompt_name
        st.session_state[f"gen_templates_{key}"] = "\n".join(stored.templates)
        st.session_state[f"gen_slots_{key}"] = "\n".join(
            f"{slot}: {' | '.join(values)}" for slot, values in stored.slots.items())
        st.session_state[f"gen_negative_{key}"] = stored.negative_prompt
        st.session_state[f"gen_mode_{key}"] = stored.mode
    with st.expander(f"Prompts for {escape_markdown(name)}"):
        prompt_name = st.text_input("Name in prompts", key=f"gen_pname_{key}",
                                    help="{name} in the templates, e.g. 'red bell pepper'")
        templates = st.text_area("Templates, one per line ({name}, {a_name} = with its article, and your slots)",
                                 key=f"gen_templates_{key}")
        slots = st.text_area("Slot values, one slot per line: `slot: value | value`",
                             key=f"gen_slots_{key}")
        negative = st.text_input("Negative prompt", key=f"gen_negative_{key}",
                                 placeholder=DEFAULT_NEGATIVE)
        mode = st.radio("Expansion", ["combinations", "random"], key=f"gen_mode_{key}",
                        horizontal=True, help="combinations: cycle through every template and "
                                              "slot value; random: seeded random draws")
        try:
            config = PromptConfig(prompt_name=prompt_name, templates=templates.splitlines(),
                                  slots=_parse_slots(slots), negative_prompt=negative, mode=mode)
            config.validate()
        except PromptError as exc:
            st.error(error_text(exc))
            return None
        examples = expand_prompts(config, 6, base_seed=int(st.session_state.get("gen_seed", 0)),
                                  class_key=key)
        st.caption(f"{config.combination_count()} combinations. First prompts:")
        st.text("\n".join(examples))
        tokenizer = _tokenizer(model_source) if model_ready else None
        if tokenizer is not None:
            for warning in token_warnings(examples + [config.negative_prompt], tokenizer):
                st.warning(escape_markdown(warning.message()))
        return config


@st.cache_resource(show_spinner=False, max_entries=2)
def _tokenizer(source: str):  # noqa: ANN202 - a transformers tokenizer or None
    return load_tokenizer(source, settings)


prompt_configs: dict[str, PromptConfig | None] = {name: _prompt_widgets(name) for name in class_names}
prompts_ok = all(config is not None for config in prompt_configs.values())

# --- parameters --------------------------------------------------------------------------

st.subheader("Parameters")
cols = st.columns(4)
# The bounds are core's (GenerationConfig refuses anything outside them, from any caller).
# Defaults through session state (not the widgets' value argument), so a remembered value
# put there first is not overridden, nor warned about by Streamlit.
form.recall("gen_per_class", within(1, PER_CLASS_MAX))
form.recall("gen_seed", within(0, MAX_SEED))
form.recall("gen_batch_size", within(1, BATCH_SIZE_MAX))
st.session_state.setdefault("gen_per_class", 50)
st.session_state.setdefault("gen_seed", 0)
st.session_state.setdefault("gen_batch_size", settings.generation_batch_size)
form.recall("gen_scheduler", lambda v: v in SCHEDULERS)
form.recall("gen_dataset", lambda v: isinstance(v, str))
per_class = cols[0].number_input("Images per class", 1, PER_CLASS_MAX, key="gen_per_class")
steps = cols[1].number_input("Steps", 1, STEPS_MAX, key="gen_steps")
guidance = cols[2].number_input("Guidance", 0.0, GUIDANCE_MAX, step=0.5, key="gen_guidance")
size = cols[3].number_input("Size (px)", SIZE_MIN, SIZE_MAX, step=8, key="gen_size")
cols = st.columns(4)
seed = cols[0].number_input("Base seed", 0, MAX_SEED, key="gen_seed")
batch_size = cols[1].number_input("Batch size", 1, BATCH_SIZE_MAX,
                                  key="gen_batch_size", help="halved by itself on GPU out-of-memory")
scheduler = cols[2].selectbox("Scheduler", list(SCHEDULERS), key="gen_scheduler")
dataset_name = cols[3].text_input("Dataset name", key="gen_dataset",
                                  placeholder="generated-job-<id>")


def _config() -> GenerationConfig:
    return GenerationConfig(
        model=model_source, classes=class_names, per_class=int(per_class), steps=int(steps),
        guidance=float(guidance), size=int(size), seed=int(seed), batch_size=int(batch_size),
        scheduler=scheduler, dataset_name=dataset_name.strip() or None,
        prompts={class_key(n): c.to_dict() for n, c in prompt_configs.items() if c is not None})


ready = model_ready and bool(class_names) and prompts_ok
if not class_names:
    st.caption("Pick or type at least one class.")

# --- preview and queue -------------------------------------------------------------------

form.recall("gen_preview_class", lambda v: v in class_names)
cols = st.columns([2, 1, 1])
preview_class = cols[0].selectbox("Preview class", class_names or ["-"], key="gen_preview_class")
if cols[1].button("Preview 4 images", key="gen_preview", disabled=not ready):
    if device.kind == "cpu" and model_entry is not None and model_entry.preset:
        st.warning("On the CPU a real model takes minutes for 4 images.")
    previous = st.session_state.pop("gen_preview_run", None)
    if previous is not None:
        previous.cancel()  # a new preview replaces one still running
    try:
        config = _config()
        # On a thread: the page stays usable, each image shows as it arrives (below).
        st.session_state["gen_preview_run"] = PreviewRun(
            config, preview_class, prompt_configs[preview_class], settings, count=4).start()
    except (GenerationError, PromptError, ValueError) as exc:
        st.error(error_text(exc))

def _queue_job(config: GenerationConfig, configs: dict[str, PromptConfig | None]) -> None:
    """Runs as the button's callback: a click is handled even if a live-panel refresh
    interrupts the rerun that follows it (seen under load with ``if st.button(...)``)."""
    try:
        for name, prompt_config in configs.items():
            save_prompt_config(name, prompt_config, user=user, settings=settings)
        job_id = submit_generation(config, created_by=current_identity(), settings=settings)
        st.session_state["gen_queue_result"] = ("success", (
            f"Queued job #{job_id}: {config.total} images. It runs in the background; "
            "you can close this page."))
    except (ModelNotAvailable, GenerationError, PromptError, ValueError) as exc:
        st.session_state["gen_queue_result"] = ("error", str(exc))


queue_config: GenerationConfig | None = None
if ready:
    try:
        queue_config = _config()
    except (GenerationError, PromptError, ValueError) as exc:
        st.error(error_text(exc))
cols[2].button("Queue job", key="gen_queue", type="primary", disabled=queue_config is None,
               on_click=_queue_job, args=(queue_config, prompt_configs))
queue_result = st.session_state.pop("gen_queue_result", None)
if queue_result is not None:
    if queue_result[0] == "success":
        st.success(escape_markdown(queue_result[1]))
    else:
        st.error(error_text(queue_result[1]))



def _draw_preview(run: PreviewRun) -> None:
    images = list(run.images)  # the preview's thread appends to it
    st.subheader("Preview (not stored)")
    if not run.finished:
        cols = st.columns([4, 1], vertical_alignment="center")
        cols[0].progress(len(images) / run.count,
                         text=f"Making image {len(images) + 1} of {run.count}...")
        cols[1].button("Cancel preview", key="gen_preview_cancel", on_click=run.cancel)
    elif run.status == CANCELLED:
        st.caption(f"Preview cancelled after {len(images)} of {run.count} images.")
    elif run.status == FAILED:
        st.error(error_text(run.error))
    if images:
        grid = st.columns(run.count)
        for column, (image, prompt, image_seed) in zip(grid, images):
            # Image captions render markdown too: a prompt is user text.
            column.image(image, caption=f"seed {image_seed}: {escape_markdown(prompt)}",
                         width="stretch")


@st.fragment(run_every=5.0)
def _preview_panel() -> None:
    """The preview, redrawn twice a second while it runs (a nested fragment whose timer
    stops once this one, every few seconds, finds the run over; see webui.jobs.live_fragment)."""
    run = st.session_state.get("gen_preview_run")
    if run is None:
        return
    if run.finished:
        _draw_preview(run)
        return

    @st.fragment(run_every=0.5)
    def follow() -> None:
        _draw_preview(run)

    follow()


if "gen_preview_run" in st.session_state:
    _preview_panel()

# --- jobs --------------------------------------------------------------------------------

st.subheader("Generation jobs")
render_job_list(kinds=(KIND,), user=user, key="gen_jobs")

finished = [j for j in list_jobs(kind=KIND, statuses=(DONE,), limit=20, settings=settings)]
if finished:
    with st.expander("Extend a finished job with more images"):
        cols = st.columns([3, 1, 1])
        base = cols[0].selectbox("Job", [j.id for j in finished], key="gen_extend_job",
                                 format_func=lambda i: next(f"#{j.id} {j.title}" for j in finished if j.id == i))
        more = cols[1].number_input("More per class", 1, PER_CLASS_MAX, 10, key="gen_extend_more")
        if cols[2].button("Queue extension", key="gen_extend"):
            try:
                new_id = extend_job(int(base), int(more), created_by=current_identity(),
                                    settings=settings)
                st.success(f"Queued job #{new_id}: the next {int(more)} images of each class.")
            except GenerationError as exc:
                st.error(error_text(exc))


@live_fragment((KIND,), 3.0)
def _latest_images() -> None:
    """The newest images of the running (or last) job, as they are stored."""
    jobs = list_jobs(kind=KIND, limit=10, settings=settings)
    job = next((j for j in jobs if j.status == RUNNING), None) or next(
        (j for j in jobs if j.progress_done), None)
    if job is None:
        return
    images = recent_images(job.id, limit=8, settings=settings)
    if not images:
        return
    st.caption(f"Latest images of job #{job.id} ({job.status})")
    hosts = job_hosts(job.id, settings)
    if hosts:  # made on a Ray cluster (SYNTHLAB_EXECUTION_BACKEND=ray): say where
        st.caption("Made on " + ", ".join(f"{escape_markdown(host)} ({count})"
                                          for host, count in hosts.items()))
    store = ImageStore(settings)
    grid = st.columns(8)
    for column, image in zip(grid, images):
        try:
            column.image(str(store.thumbnail_path(image.relpath)),
                         caption=escape_markdown(image.class_name),
                         width="stretch")
        except OSError:
            column.caption("(file missing)")


_latest_images()


# Remember the form for this user's next session.
form.save()
