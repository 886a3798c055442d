"""The Generate page through ``streamlit.testing.v1.AppTest``."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from tests.tiny_sd import tiny_sd_for_session

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is all overhead; threads only contend
    yield tiny_sd_for_session(tmp_path_factory)
    torch.set_num_threads(previous)


def _page() -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / "generate.py"), default_timeout=90)


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [c.value for c in at.code]
    parts += [e.value for e in at.error] + [e.value for e in at.info] + [e.value for e in at.warning]
    parts += [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def test_page_without_any_model_explains_how_to_get_one(settings):
    at = _page().run()
    assert not at.exception
    text = _texts(at)
    assert "hf download stabilityai/sd-turbo" in text and "No diffusion model" in text
    # The preselected model is the one the advice names (not a second, different download).
    assert at.selectbox(key="gen_model").value.startswith("SD-Turbo")
    assert "stable-diffusion-v1-5" not in text
    assert not at.error  # the advice above is enough: no second, red copy of it
    at.selectbox(key="gen_model").set_value(
        next(o for o in at.selectbox(key="gen_model").options if o.startswith("SDXL-Turbo"))).run()
    assert "hf download stabilityai/sdxl-turbo" in _texts(at)
    assert at.button(key="gen_queue").disabled and at.button(key="gen_preview").disabled


def test_page_previews_and_queues_a_job(settings, tiny_model, monkeypatch):
    from core.db.engine import session_scope
    from core.db.models import ImageClass
    from core.generation.models import ClassPromptConfig
    from core.jobs import get_job, list_jobs
    from core.worker import run_worker

    monkeypatch.setenv("SYNTHLAB_LOCAL_MODELS_DIR", str(tiny_model.parent))
    at = _page().run()
    assert not at.exception
    at.selectbox(key="gen_model").set_value("tiny-sd").run()
    at.text_input(key="gen_new_classes").set_value("Bell Pepper").run()
    at.text_input(key="gen_pname_bell_pepper").set_value("red bell pepper").run()
    at.text_area(key="gen_templates_bell_pepper").set_value("a photo of a {name}, {background}").run()
    assert "a photo of a red bell pepper, on a wooden table" in _texts(at) or \
        any("red bell pepper" in t.value for t in at.text)
    at.number_input(key="gen_per_class").set_value(3)
    at.number_input(key="gen_steps").set_value(2)
    at.number_input(key="gen_guidance").set_value(0.0)
    at.number_input(key="gen_size").set_value(32).run()
    at.button(key="gen_preview").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    # The click returns at once: the preview runs on a thread; the page shows each image as
    # it arrives, with a Cancel button while it runs.
    preview = at.session_state["gen_preview_run"]
    if not preview.finished:
        assert "Making image" in _texts(at) or any(
            p.proto.text.startswith("Making image") for p in at.get("progress"))
        assert at.button(key="gen_preview_cancel")
    assert preview.wait(60) and preview.status == "done"
    at.run()
    assert "Preview (not stored)" in [h.value for h in at.subheader]
    captions = [c for image in at.get("image") for c in image.captions]
    assert len(captions) == 4 and all("seed" in c and "red bell pepper" in c for c in captions)
    at.button(key="gen_queue").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Queued job" in s.value for s in at.success)
    job = list_jobs(kind="generate", settings=settings)[0]
    assert job.params["classes"] == ["Bell Pepper"] and job.params["size"] == 32
    assert job.created_by == "anonymous" and job.progress_total == 3
    with session_scope(settings) as session:
        pepper = session.scalar(select(ImageClass).where(ImageClass.name == "bell_pepper"))
        stored = session.scalar(select(ClassPromptConfig).where(ClassPromptConfig.class_id == pepper.id))
        assert pepper.prompt_name == "red bell pepper"
        assert stored.templates == ["a photo of a {name}, {background}"]
    run_worker(settings, once=True)
    assert get_job(job.id, settings).status == "done"
    at = _page().run()  # a fresh session: prompts come back from the DB, images are shown
    assert not at.exception
    assert "Latest images of job" in _texts(at)
    assert len(at.get("image")) == 3
    at.multiselect(key="gen_classes").set_value(["bell_pepper"]).run()
    assert at.text_input(key="gen_pname_bell_pepper").value == "red bell pepper"
    assert at.text_area(key="gen_templates_bell_pepper").value == "a photo of a {name}, {background}"


def test_add_a_model_from_the_no_model_box_selects_it_and_the_form_is_remembered(settings, tiny_model):
    at = _page().run()
    assert not at.exception
    # A folder that is no model: a clear error, nothing added.
    at.text_input(key="gen_add_source_box").set_value(str(tiny_model.parent / "nope"))
    at.button(key="gen_add_button_box").click().run()
    assert any("not a diffusers model folder" in e.value for e in at.error)
    # The real folder: added, confirmed, selected, ready to use.
    at.text_input(key="gen_add_source_box").set_value(str(tiny_model))
    at.button(key="gen_add_button_box").click().run()
    assert not at.exception
    assert any("to the model list and selected it" in s.value and "tiny-sd" in s.value for s in at.success), (
        [s.value for s in at.success], [e.value for e in at.error])
    assert at.selectbox(key="gen_model").value.startswith("tiny-sd")
    assert not any("No diffusion model" in i.value for i in at.info)  # the box has gone
    at.text_input(key="gen_new_classes").set_value("Kiwi").run()
    at.number_input(key="gen_per_class").set_value(7)
    at.number_input(key="gen_steps").set_value(3)
    at.number_input(key="gen_seed").set_value(42).run()
    assert not at.button(key="gen_queue").disabled
    # The menu's own action is there too (beside the model menu).
    assert at.text_input(key="gen_add_source_menu") is not None

    again = _page().run()  # a new browser session of the same user: the form as it was left
    assert not again.exception
    assert all("Session State" not in w.value for w in again.warning)
    assert again.selectbox(key="gen_model").value.startswith("tiny-sd")
    assert again.text_input(key="gen_new_classes").value == "Kiwi"
    assert (again.number_input(key="gen_per_class").value, again.number_input(key="gen_steps").value,
            again.number_input(key="gen_seed").value) == (7, 3, 42)

    other = _page()
    other.session_state["user_name"] = "bob"
    other.run()  # another user: their own (here: the default) form
    assert other.number_input(key="gen_per_class").value == 50
    assert other.text_input(key="gen_new_classes").value == ""


def test_add_a_model_refuses_what_is_no_hub_id_in_a_sentence(settings):
    """Typed text that is neither a folder nor a Hub id (``owner/name``) is refused, not
    added to everyone's model menu; the page shows core's reason as a sentence."""
    from core.generation.registry import custom_sources

    at = _page().run()
    for typed, reason in (("not a valid id!!", "Not a Hugging Face model id"),
                          ("owner/name/extra", "Not a Hugging Face model id"),
                          ("  ", "Give a Hugging Face model id")):
        at.text_input(key="gen_add_source_box").set_value(typed)
        at.button(key="gen_add_button_box").click().run()
        assert not at.exception
        errors = [e.value for e in at.error]
        assert any(e.startswith(reason) for e in errors), errors
        assert not at.success
    assert custom_sources(settings) == []
    at.text_input(key="gen_add_source_box").set_value("segmind/small-sd")  # a real id: added
    at.button(key="gen_add_button_box").click().run()
    assert any("selected it" in s.value for s in at.success)
    # ... and taken off the list again from the page (not downloaded: nothing else to keep).
    assert at.selectbox(key="gen_model").value.startswith("segmind/small-sd")
    at.button(key="gen_remove_model").click().run()
    assert not at.exception
    assert any("Removed segmind/small-sd from the model list" in s.value for s in at.success)
    assert custom_sources(settings) == []
    assert not any(o.startswith("segmind/small-sd") for o in at.selectbox(key="gen_model").options)
    assert "gen_remove_model" not in [b.key for b in at.button]  # a preset is selected now


def test_the_form_survives_a_visit_to_another_page(settings):
    """Streamlit drops a page's widget values when another page runs: coming back showed
    each number at its minimum (1 step, guidance 0, 16 px), the typed classes gone, and
    saved that over the user's remembered form."""
    from core.users.form_memory import load_form

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.switch_page("pages/generate.py").run()
    at.text_input(key="gen_new_classes").set_value("Kiwi")
    at.number_input(key="gen_per_class").set_value(7)
    at.number_input(key="gen_steps").set_value(3)
    at.number_input(key="gen_guidance").set_value(2.5)
    at.number_input(key="gen_size").set_value(256).run()
    left = (7, 3, 2.5, 256, "Kiwi")
    at.switch_page("pages/import_data.py").run()
    at.switch_page("pages/generate.py").run()
    assert not at.exception
    assert (at.number_input(key="gen_per_class").value, at.number_input(key="gen_steps").value,
            at.number_input(key="gen_guidance").value, at.number_input(key="gen_size").value,
            at.text_input(key="gen_new_classes").value) == left
    saved = load_form("anonymous", "generate", settings)
    assert (saved["gen_per_class"], saved["gen_steps"], saved["gen_guidance"], saved["gen_size"],
            saved["gen_new_classes"]) == left
