"""The offline demo: build (twice: nothing doubles), run its training and attribution jobs,
remove it, and everything that was not the demo's survives. Small sizes: 8 pictures per
class, one epoch; the generation job stays queued (its removal is a queued job's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.imagemaker import make_imagefolder

ROOT = Path(__file__).resolve().parent.parent
SMALL = (32, 24)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _own_data(settings, tmp_path):
    """A user's image, class, dataset and job, there before the demo."""
    from core import jobs
    from core.ingest import ImportOptions, import_dataset

    import_dataset(make_imagefolder(tmp_path / "mine", ["apple"], 2, size=SMALL), settings,
                   ImportOptions(dataset="mine", added_by="ann"))
    return jobs.submit("generate", {"model": "x", "classes": ["apple"]}, title="ann's job",
                       created_by="ann", settings=settings)


def _snapshot(settings):
    from core.db.engine import session_scope
    from core.db.models import Dataset, Image, ImageClass, Job

    with session_scope(settings) as session:
        return {"images": {(i.sha256, i.path) for i in session.scalars(select(Image))},
                "classes": set(session.scalars(select(ImageClass.name))),
                "datasets": set(session.scalars(select(Dataset.name))),
                "jobs": set(session.scalars(select(Job.id)))}


def test_demo_builds_once_runs_and_is_removed_leaving_the_rest(settings, tmp_path):
    from core.db.engine import session_scope
    from core.db.models import Image
    from core.demo import DEMO_MODEL_LABEL, build_demo, model_dir, remove_demo
    from core.explain.models import Attribution
    from core.generation.registry import list_models
    from core.jobs import get_job
    from core.store import ImageStore
    from core.training.models import Run
    from core.worker import run_worker

    own_job = _own_data(settings, tmp_path)
    before = _snapshot(settings)

    first = build_demo(settings, per_class=8, generated_per_class=2, epochs=1)
    assert first.images == 24 and first.added == 24
    assert set(first.jobs) == {"generate", "train", "explain"}
    demo_entry = [e for e in list_models(settings) if e.label == DEMO_MODEL_LABEL]
    assert len(demo_entry) == 1 and demo_entry[0].available
    assert (model_dir(settings) / "model_index.json").is_file()
    for job_id in first.jobs.values():
        assert get_job(job_id, settings).params["demo"] is True

    again = build_demo(settings, per_class=8, generated_per_class=2, epochs=1)
    assert again.added == 0 and again.images == 24
    assert again.jobs == first.jobs and sorted(again.reused_jobs) == ["explain", "generate", "train"]
    assert len([e for e in list_models(settings) if e.label == DEMO_MODEL_LABEL]) == 1

    # The training run and the attribution that waits for it, as the worker runs them.
    assert run_worker(settings, kinds=["train", "explain"], once=True) == 0
    assert get_job(first.jobs["train"], settings).status == "done"
    explain_job = get_job(first.jobs["explain"], settings)
    assert explain_job.status == "done", explain_job.error
    with session_scope(settings) as session:
        assert session.scalar(select(func.count(Attribution.id))) == 6
        demo_paths = [p for p in session.scalars(select(Image.path))
                      if p not in {path for _, path in before["images"]}]
    assert len(demo_paths) == 24

    report = remove_demo(settings, wait_s=5)
    assert (report.images, report.jobs, report.runs, report.attributions) == (24, 3, 1, 6)
    assert report.datasets == 1 and report.classes == 3 and report.model_removed
    assert _snapshot(settings) == before  # the user's image, class, dataset and job survive
    assert get_job(own_job, settings).status == "queued"
    store = ImageStore(settings)
    assert not any(store.abspath(p).exists() for p in demo_paths)
    assert all(store.abspath(p).exists() for _, p in before["images"])
    assert not model_dir(settings).exists()
    assert not (settings.home_path / "demo" / "manifest.json").exists()
    assert not any(settings.runs_dir.iterdir())
    assert not any((settings.cache_dir / "attributions").rglob("*.npy"))
    assert not list((settings.cache_dir / "preprocess").rglob("shard-*"))
    with session_scope(settings) as session:
        assert session.scalar(select(func.count(Run.id))) == 0
    assert not [e for e in list_models(settings) if e.label == DEMO_MODEL_LABEL]
    assert remove_demo(settings).images == 0  # removing twice is harmless


def test_demo_refuses_a_users_dataset_of_its_name(settings, tmp_path):
    from core.demo import DEMO_DATASET, DemoError, build_demo
    from core.ingest import ImportOptions, import_dataset

    import_dataset(make_imagefolder(tmp_path / "x", ["apple"], 1, size=SMALL), settings,
                   ImportOptions(dataset=DEMO_DATASET))
    with pytest.raises(DemoError, match="not the demo's"):
        build_demo(settings, per_class=4, queue_jobs=False)


def test_demo_command_builds_and_removes(settings, capsys):
    from core.cli import main

    assert main(["demo", "--per-class", "4", "--no-jobs", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["images"] == 12 and built["jobs"] == {}
    assert main(["demo", "--remove"]) == 0
    out = capsys.readouterr().out
    assert "removed 12 images" in out and "the demo model" in out
    assert main(["stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 0


def test_home_demo_button_on_an_empty_index(settings, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.config import get_settings
    from core.demo import demo_job_ids
    from core.worker import run_worker

    monkeypatch.setenv("SYNTHLAB_DEMO_IMAGES_PER_CLASS", "4")
    at = AppTest.from_file(str(ROOT / "pages" / "home.py"), default_timeout=60).run()
    assert not at.exception
    at.button(key="demo-build").click().run()
    assert not at.exception, at.exception
    assert any("Demo queued as job" in s.value for s in at.success)
    assert any("being built" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "demo-build"]  # one click queues one build
    # The worker builds it (the page never waits for the drawing and the model) ...
    assert run_worker(get_settings(), kinds=["demo"], once=True) == 0
    assert sorted(kind for kind, _ in demo_job_ids(settings).values()) == [
        "demo", "explain", "generate", "train"]
    at.run()
    assert at.metric[0].value == "12"
    at.button(key="demo-remove").click().run()  # ... and one click takes it away
    assert not at.exception
    assert any("removed 12 images" in s.value for s in at.success)
    assert at.metric[0].value == "0"
    assert [b for b in at.button if b.key == "demo-build"]


def test_an_attribution_waiting_for_a_failed_training_fails_clearly(settings):
    from core import jobs
    from core.explain.attribution import AttributionConfig
    from core.explain.jobs import submit_explain_job
    from core.worker import run_worker

    train_job = jobs.submit("train", {"run_ids": []}, settings=settings)
    jobs.finish(train_job, jobs.FAILED, error="boom", settings=settings)
    job_id = submit_explain_job(12345, [1], AttributionConfig(), after_job=train_job,
                                settings=settings)  # no run yet: checked when it runs
    assert run_worker(settings, kinds=["explain"], once=True) == 0
    job = jobs.get_job(job_id, settings)
    assert job.status == "failed" and f"job {train_job}" in job.error and "ended failed" in job.error


def test_with_sign_in_only_the_builder_or_an_admin_removes_the_demo(settings):
    from core.demo import build_demo, remove_demo
    from core.users import accounts
    from core.users.identity import Identity
    from core.users.permissions import PermissionDenied

    accounts.add_user("ann", "anns-password", settings=settings)
    accounts.add_user("bob", "bobs-password", settings=settings)
    build_demo(settings, per_class=4, queue_jobs=False, created_by="ann")
    bob = Identity("bob", auth_mode="password", verified=True)
    with pytest.raises(PermissionDenied, match="may not delete the demo added by ann"):
        remove_demo(settings, by=bob)
    assert _snapshot(settings)["images"]  # refused before anything was touched
    assert remove_demo(settings, by=Identity("ann", auth_mode="password", verified=True)).images == 12
