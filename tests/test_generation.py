"""Generation on a tiny random-weight Stable Diffusion pipeline, loaded the product's way."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.browser import free_port
from tests.tiny_sd import tiny_sd_for_session

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"size": 32, "steps": 2, "guidance": 0.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_sd_for_session(tmp_path_factory)


def _config(model: Path, **overrides):
    from core.generation.generator import GenerationConfig

    values = dict(model=str(model), classes=["apple", "Bell Pepper"], per_class=3, seed=5,
                  batch_size=2, **SMALL)
    values.update(overrides)
    return GenerationConfig(**values)


def _hashes_by_key(job_id: int, settings) -> dict[tuple[str, int], str]:
    from core.db.engine import session_scope
    from core.db.models import Image, ImageClass
    from core.generation.models import GenerationItem

    with session_scope(settings) as session:
        rows = session.execute(
            select(ImageClass.name, GenerationItem.gen_index, Image.sha256)
            .join(Image, Image.id == GenerationItem.image_id)
            .join(ImageClass, ImageClass.id == GenerationItem.class_id)
            .where(GenerationItem.job_id == job_id))
        return {(name, index): sha for name, index, sha in rows}


def _assert_same_images(job_a: int, job_b: int, settings) -> None:
    """Same (class, index), seeds and prompts, and the same pixels up to float rounding.

    Across processes, CPU kernels may round differently (SIMD paths depend on memory
    alignment), so a pixel can differ by one level; anything more is a real difference.
    """
    import numpy as np

    from core.db.engine import session_scope
    from core.db.models import Image
    from core.generation.models import GenerationItem
    from core.store import ImageStore

    def records(job_id: int) -> dict:
        with session_scope(settings) as session:
            rows = session.execute(select(GenerationItem.class_id, GenerationItem.gen_index, Image)
                                   .join(Image, Image.id == GenerationItem.image_id)
                                   .where(GenerationItem.job_id == job_id))
            return {(c, i): img for c, i, img in rows}
    first, second = records(job_a), records(job_b)
    assert first.keys() == second.keys()
    store = ImageStore(settings)
    for key, image in first.items():
        other = second[key]
        assert (image.seed, image.prompt, image.negative_prompt) == \
            (other.seed, other.prompt, other.negative_prompt)
        if image.sha256 != other.sha256:
            a = np.asarray(store.open_rgb(image.path), dtype=int)
            b = np.asarray(store.open_rgb(other.path), dtype=int)
            assert np.abs(a - b).max() <= 1, f"image {key} differs beyond rounding"


def _assert_store_matches_db(settings) -> None:
    """Every file is indexed and every row's file exists (no orphans either way)."""
    from core.db.engine import session_scope
    from core.db.models import Image
    from core.store import ImageStore

    with session_scope(settings) as session:
        paths = set(session.scalars(select(Image.path)))
    assert set(ImageStore(settings).iter_relpaths()) == paths


def test_seeds_are_stable_distinct_and_fit_int32():
    from core.generation.seeds import MAX_SEED, image_seed

    assert image_seed(5, "apple", 0) == image_seed(5, "apple", 0)
    seeds = {image_seed(5, c, i) for c in ("apple", "lime") for i in range(500)}
    assert len(seeds) == 1000 and all(0 <= s <= MAX_SEED for s in seeds)
    assert image_seed(6, "apple", 0) != image_seed(5, "apple", 0)


def test_prompt_expansion_and_clear_template_errors():
    from core.generation.prompts import PromptConfig, PromptError, expand_prompts

    config = PromptConfig("Bell Pepper", templates=["a photo of a {name}, {background}"],
                          slots={"background": ["on grass", "on a table"]})
    assert expand_prompts(config, 3, base_seed=0, class_key="bell_pepper") == [
        "a photo of a Bell Pepper, on grass", "a photo of a Bell Pepper, on a table",
        "a photo of a Bell Pepper, on grass"]
    config.mode = "random"
    first = expand_prompts(config, 20, base_seed=1, class_key="bell_pepper")
    # A prompt depends on its index only: a longer expansion starts with the shorter one.
    assert expand_prompts(config, 25, base_seed=1, class_key="bell_pepper")[:20] == first
    assert len(set(first)) == 2
    with pytest.raises(PromptError, match="lighting"):
        PromptConfig("x", templates=["a {name} in {lighting}"], slots={}).validate()
    with pytest.raises(PromptError, match="malformed"):
        PromptConfig("x", templates=["a {name"]).validate()


def test_missing_model_gives_the_download_command(settings, capsys):
    from core.cli import main
    from core.generation.jobs import submit_generation
    from core.generation.loading import ModelNotAvailable, load_pipeline

    with pytest.raises(ModelNotAvailable, match=r"hf download stabilityai/sd-turbo"):
        load_pipeline("stabilityai/sd-turbo", settings)
    with pytest.raises(ModelNotAvailable, match=r"hf download stable-diffusion-v1-5/stable-diffusion-v1-5"):
        submit_generation(_config("sd15"), settings=settings)
    with pytest.raises(ModelNotAvailable, match="model_index.json"):
        load_pipeline(str(settings.home_path / "no-such-folder"), settings)
    code = main(["generate", "--model", "stabilityai/sd-turbo", "--class", "apple", "--per-class", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "hf download stabilityai/sd-turbo" in err and "Traceback" not in err


def test_same_job_twice_gives_identical_images_and_extension_adds_new_ones(settings, tiny_model):
    from core.db.engine import session_scope
    from core.db.models import Dataset, Image
    from core.generation.jobs import extend_job, submit_generation
    from core.generation.seeds import image_seed
    from core.jobs import get_job
    from core.worker import run_worker

    first = submit_generation(_config(tiny_model), created_by="ann", settings=settings)
    second = submit_generation(_config(tiny_model), created_by="bob", settings=settings)
    run_worker(settings, once=True)
    assert get_job(first, settings).status == "done" and get_job(second, settings).status == "done"
    hashes = _hashes_by_key(first, settings)
    assert len(hashes) == 6 and len(set(hashes.values())) == 6
    assert _hashes_by_key(second, settings) == hashes  # same seeds, same pixels

    extension = extend_job(first, 2, created_by="ann", settings=settings)
    run_worker(settings, once=True)
    extra = _hashes_by_key(extension, settings)
    assert sorted(extra) == [("apple", 3), ("apple", 4), ("bell_pepper", 3), ("bell_pepper", 4)]
    assert not set(extra.values()) & set(hashes.values())
    with session_scope(settings) as session:
        images = list(session.scalars(select(Image).where(Image.job_id == extension)))
        assert {img.seed for img in images} == {image_seed(5, c, i) for c in ("apple", "bell_pepper")
                                                for i in (3, 4)}
        assert {img.dataset.name for img in images} == {f"generated-job-{first}"}
        record = images[0]
        assert record.source == "synthetic" and record.model == str(tiny_model)
        assert (record.steps, record.gen_width, record.guidance) == (2, 32, 0.0)
        assert "bell pepper" in record.prompt or "apple" in record.prompt
        assert session.scalar(select(func.count()).select_from(Dataset)) == 2
    result = get_job(first, settings).result
    assert result["images"] == 6 and sorted(result["image_ids"]) == sorted(result["image_ids"])
    _assert_store_matches_db(settings)


def test_cancel_stops_a_running_job(settings, tiny_model):
    from core.generation.jobs import job_image_ids, submit_generation
    from core.jobs import claim_next, get_job, request_cancel
    from core.worker import run_job

    job_id = submit_generation(_config(tiny_model, classes=["lime"], per_class=60),
                               settings=settings)
    assert claim_next("test-worker", settings=settings) == job_id
    # The worker's job runner on a thread (the worker loop itself wants the main thread).
    worker = threading.Thread(target=run_job, args=(job_id, settings, "test-worker"))
    worker.start()
    deadline = time.monotonic() + 60
    while not job_image_ids(job_id, settings) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert request_cancel(job_id, by="test", settings=settings)
    worker.join(60)
    job = get_job(job_id, settings)
    assert job.status == "cancelled"
    assert 0 < len(job_image_ids(job_id, settings)) < 60
    _assert_store_matches_db(settings)


def test_oom_halves_the_batch_and_goes_on(settings, tiny_model):
    import torch
    from diffusers import StableDiffusionPipeline

    from core.generation.generator import Generator
    from core.generation.jobs import create_running_job
    from core.generation.loading import load_pipeline
    from core.jobs import JobContext, job_events

    class OutOfMemoryAboveOne(StableDiffusionPipeline):
        @functools.wraps(StableDiffusionPipeline.__call__)
        def __call__(self, *args, **kwargs):
            if len(kwargs["prompt"]) > 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().__call__(*args, **kwargs)

    loaded = load_pipeline(str(tiny_model), settings)
    config = _config(tiny_model, classes=["plum"], per_class=3, batch_size=4)
    job_id = create_running_job(config, settings=settings)
    ctx = JobContext(job_id=job_id, kind="generate", params=config.to_params(), settings=settings,
                     worker_id="test")
    loaded.pipe.__class__ = OutOfMemoryAboveOne
    try:
        generator = Generator(config, settings, job_id=job_id, pipeline=loaded)
        result = generator.run(ctx)
    finally:
        loaded.pipe.__class__ = StableDiffusionPipeline
    assert len(result.image_ids) == 3 and generator.batch_size == 1
    log = [e.message for e in job_events(job_id, settings=settings)]
    assert any("out of memory with a batch of 3: batch size lowered to 2" in m for m in log)
    assert any("batch size lowered to 1" in m for m in log)
    # Batch size 1 from the start gives the very same pixels.
    reference = create_running_job(_config(tiny_model, classes=["plum"], per_class=3, batch_size=1),
                                   settings=settings)
    Generator(_config(tiny_model, classes=["plum"], per_class=3, batch_size=1), settings,
              job_id=reference).run(JobContext(job_id=reference, kind="generate", params={},
                                               settings=settings, worker_id="test"))
    assert _hashes_by_key(reference, settings) == _hashes_by_key(job_id, settings)


def test_long_prompt_is_warned_about(settings, tiny_model):
    from core.generation.jobs import submit_generation
    from core.generation.loading import load_tokenizer
    from core.generation.prompts import token_warnings
    from core.jobs import job_events
    from core.worker import run_worker

    tokenizer = load_tokenizer(str(tiny_model), settings)
    assert tokenizer.model_max_length == 77
    long_prompt = "a photo of a {name} " + "with a quizzical zebra " * 8 + "at the very end"
    warnings = token_warnings(["a photo of an apple", long_prompt.format(name="apple")], tokenizer)
    assert len(warnings) == 1 and warnings[0].limit == 77 and warnings[0].tokens > 77
    assert warnings[0].cut_text.endswith("at the very end")
    job_id = submit_generation(_config(tiny_model, classes=["apple"], per_class=1,
                                       prompt_template=long_prompt), settings=settings)
    run_worker(settings, once=True)
    assert any(e.level == "warning" and "the text encoder reads 77" in e.message
               for e in job_events(job_id, settings=settings))


def test_resume_after_worker_is_killed(settings, tiny_model, monkeypatch):
    """A real worker process killed with SIGKILL mid-job; a new worker finishes the job."""
    from core.generation.jobs import job_image_ids, submit_generation
    from core.jobs import get_job
    from core.worker import run_worker

    monkeypatch.setenv("SYNTHLAB_WORKER_STALE_SECONDS", "1")
    monkeypatch.setenv("SYNTHLAB_WORKER_HEARTBEAT_SECONDS", "0.3")
    from core.config import get_settings

    settings = get_settings()
    config = _config(tiny_model, classes=["banana"], per_class=16, batch_size=2)
    job_id = submit_generation(config, settings=settings)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    worker = subprocess.Popen([sys.executable, "-m", "core", "worker"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(job_image_ids(job_id, settings)) < 2 and time.monotonic() < deadline:
            assert worker.poll() is None, "worker exited early"
            time.sleep(0.02)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    stored_at_kill = len(job_image_ids(job_id, settings))
    assert 2 <= stored_at_kill < 16 and get_job(job_id, settings).status == "running"
    time.sleep(1.5)  # the dead worker's heartbeat goes stale
    run_worker(settings, once=True)
    job = get_job(job_id, settings)
    assert job.status == "done" and job.attempts == 2
    assert len(job_image_ids(job_id, settings)) == 16
    # Exactly the images of an uninterrupted run of the same job.
    reference = submit_generation(_config(tiny_model, classes=["banana"], per_class=16, batch_size=2),
                                  settings=settings)
    run_worker(settings, once=True)
    _assert_same_images(reference, job_id, settings)
    _assert_store_matches_db(settings)


def test_cli_generate_json_and_models(settings, tiny_model, capsys, monkeypatch):
    from core.cli import main
    from core.db.engine import session_scope
    from core.db.models import Image, ImageClass

    env = dict(os.environ, SYNTHLAB_LOCAL_MODELS_DIR=str(tiny_model.parent), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "core", "generate", "--model", "tiny-sd", "--class", "apple",
         "--class", "Dragon Fruit", "--per-class", "2", "--size", "32", "--steps", "2",
         "--seed", "3", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads(proc.stdout)
    assert payload["status"] == "done" and payload["images"] == 4 and len(payload["image_ids"]) == 4
    with session_scope(settings) as session:
        assert session.scalar(select(ImageClass.display_name).where(ImageClass.name == "dragon_fruit")) \
            == "Dragon Fruit"
        rows = list(session.scalars(select(Image).where(Image.id.in_(payload["image_ids"]))))
        assert {r.job_id for r in rows} == {payload["job_id"]} and all(r.seed is not None for r in rows)

    monkeypatch.setenv("SYNTHLAB_LOCAL_MODELS_DIR", str(tiny_model.parent))
    assert main(["models", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    local = [m for m in models if m["kind"] == "local"]
    assert local and local[0]["available"] and local[0]["location"] == str(tiny_model)
    sd15 = next(m for m in models if m["source"] == "stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert not sd15["available"] and "hf download" in sd15["how_to_get"]
    assert sd15["defaults"] == {"size": 512, "steps": 25, "guidance": 7.5}


def test_prompt_configs_persist_and_are_snapshotted(settings, tiny_model):
    from core.generation.generator import save_prompt_config, snapshot_prompts
    from core.generation.prompts import PromptConfig

    save_prompt_config("Bell Pepper", PromptConfig("red bell pepper", templates=["{name} on {bg}"],
                                                   slots={"bg": ["grass"]}, negative_prompt="ugly"),
                       user="ann", settings=settings)
    config = snapshot_prompts(_config(tiny_model), settings)
    assert config.prompts["bell_pepper"]["templates"] == ["{name} on {bg}"]
    assert config.prompts["apple"]["prompt_name"] == "apple"  # defaults for a new class
    batches = __import__("core.generation.generator", fromlist=["Generator"]).Generator(
        config, settings, job_id=0).plan()
    pepper = [item for batch in batches for item in batch if item.class_key == "bell_pepper"]
    assert pepper[0].prompt == "red bell pepper on grass" and pepper[0].negative_prompt == "ugly"


def test_two_processes_split_one_job(settings, tiny_model, monkeypatch):
    """``accelerate launch`` / ``torchrun`` with 2 processes: one job, batches split, same images."""
    from core.generation.jobs import create_running_job, job_image_ids
    from core.generation.generator import Generator
    from core.jobs import JobContext, get_job, job_events, list_jobs

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port()), "-m", "core", "generate",
         "--model", str(tiny_model), "--class", "apple", "--class", "lime", "--per-class", "4",
         "--size", "32", "--steps", "2", "--guidance", "0", "--batch-size", "2", "--seed", "5",
         "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(proc.stdout)
    assert payload["status"] == "done" and payload["images"] == 8
    assert [j.id for j in list_jobs(kind="generate", settings=settings)] == [payload["job_id"]]
    log = [e.message for e in job_events(payload["job_id"], settings=settings)]
    assert sum("2 of 4 batches" in m for m in log) == 2  # each process made half
    config = _config(tiny_model, classes=["apple", "lime"], per_class=4)
    single = create_running_job(config, settings=settings)
    Generator(config, settings, job_id=single).run(
        JobContext(job_id=single, kind="generate", params={}, settings=settings, worker_id="test"))
    assert len(job_image_ids(single, settings)) == 8 and get_job(payload["job_id"], settings).status == "done"
    _assert_same_images(single, payload["job_id"], settings)
    _assert_store_matches_db(settings)


def test_bad_prompt_template_is_refused_and_leaves_nothing(settings, tiny_model):
    from core.db.engine import session_scope
    from core.db.models import ImageClass, Job
    from core.generation.generator import GenerationError
    from core.generation.jobs import submit_generation

    with pytest.raises(GenerationError, match=r"slot \{nowhere\}"):
        submit_generation(_config(tiny_model, classes=["durian"],
                                  prompt_template="a {name} on {nowhere}"), settings=settings)
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(ImageClass)) == 0
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_unknown_scheduler_is_refused_before_a_job_exists(settings, tiny_model):
    from core.db.engine import session_scope
    from core.db.models import Job
    from core.generation.generator import GenerationError
    from core.generation.jobs import submit_generation

    with pytest.raises(GenerationError, match="unknown scheduler 'nosuch'"):
        submit_generation(_config(tiny_model, classes=["durian"], scheduler="nosuch"),
                          settings=settings)
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_model_in_the_hf_cache_is_listed_and_loads_offline_by_id(settings, tiny_model, tmp_path,
                                                                 monkeypatch):
    import shutil

    from huggingface_hub import constants

    from core.generation.loading import load_pipeline
    from core.generation.registry import list_models, models_available

    repo = tmp_path / "hub" / "models--acme--tiny-sd"
    shutil.copytree(tiny_model, repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cached = [e for e in list_models(settings) if e.source == "acme/tiny-sd"]
    assert cached and cached[0].kind == "cached" and cached[0].available
    assert [e.source for e in models_available(settings)] == ["acme/tiny-sd"]
    loaded = load_pipeline("acme/tiny-sd", settings)
    assert type(loaded.pipe).__name__ == "StableDiffusionPipeline"
    assert loaded.location.endswith("a" * 40) and loaded.dtype == "float32"


def test_a_name_slot_puts_the_right_article_before_the_class_name():
    from core.generation.prompts import PromptConfig, expand_prompts, with_article

    assert with_article("apple") == "an apple" and with_article("Banana") == "a Banana"
    config = PromptConfig("apple", templates=["a photo of {a_name}"], slots={})
    assert expand_prompts(config, 1, base_seed=0, class_key="apple") == ["a photo of an apple"]


def test_missing_model_message_for_an_unknown_name_lists_the_presets():
    from core.generation.loading import missing_model_message

    text = missing_model_message("nosuch")
    assert "unknown model 'nosuch'" in text and "sd-turbo" in text and "hf download" not in text
    assert "hf download owner/model" in missing_model_message("owner/model")


def test_a_model_folder_added_by_path_is_listed_by_its_name(settings, tiny_model):
    from core.generation.registry import add_custom_model, list_models

    add_custom_model(str(tiny_model), added_by="erin", settings=settings)
    entry = next(e for e in list_models(settings) if e.source == str(tiny_model))
    assert entry.label == f"{tiny_model.name} (folder)"
    assert entry.available and entry.location == str(tiny_model)


def test_generation_messages_carry_no_rate_of_their_own(settings, tiny_model):
    """The bar's text is the job's message: a rate in it disagreed with the job line's
    (issue 15). The one rate is core.jobs.window_rate's, stored on the job."""
    from core.generation.generator import Generator
    from core.generation.jobs import create_running_job
    from core.jobs import JobContext

    config = _config(tiny_model, classes=["lime"], per_class=2, batch_size=1)
    job_id = create_running_job(config, settings=settings)
    messages: list[str] = []

    class Recording(JobContext):
        def progress(self, done, total=None, message=None, *, force=False):  # noqa: ANN001
            messages.append(message or "")
            super().progress(done, total, message, force=force)

    Generator(config, settings, job_id=job_id).run(
        Recording(job_id, "generate", config.to_params(), settings, "test"))
    assert "1/2 images" in messages and not [m for m in messages if "/s" in m]


def test_preview_images_arrive_one_by_one_and_cancel_stops_it(settings, tiny_model):
    """The Generate page's preview runs on a thread (issue 15): each image is readable as
    soon as it is made, and Cancel stops the run before the next one."""
    from core.generation.preview import CANCELLED, DONE, PreviewRun
    from core.generation.prompts import default_prompt_config

    config = _config(tiny_model, classes=["lime"])
    seen: list[int] = []
    run = PreviewRun(config, "lime", default_prompt_config("lime"), settings, count=4)

    def arrived(count: int) -> None:
        seen.append(len(run.images))
        if count == 2:
            run.cancel()

    run.on_image = arrived
    assert run.start().wait(60)
    assert run.status == CANCELLED and seen == [1, 2] and len(run.images) == 2
    full = PreviewRun(config, "lime", default_prompt_config("lime"), settings, count=2).start()
    assert full.wait(60) and full.status == DONE
    # The job's own first seeds, so the preview shows what the job will make.
    assert [seed for _, _, seed in full.images] == [seed for _, _, seed in run.images]
