"""The ``ray`` execution backend on a real local Ray cluster (2 CPUs, one per module).

Generation of the tiny random pipeline through Ray actors must store the very images the
local backend stores; an actor killed mid-job and a cancel must leave a consistent set.
A 3-seed repeat group must train through Ray tasks to the local backend's metrics.
Tests that ask for no cluster run without Ray installed (and check nothing imports it).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.tiny_sd import tiny_sd_for_session

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"size": 32, "steps": 2, "guidance": 0.0}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ray_cluster():
    """One private Ray instance for the module, shut down after it (no process left)."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024 * 1024)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_sd_for_session(tmp_path_factory)


@pytest.fixture()
def local_and_ray(settings, monkeypatch, ray_cluster):
    """(local settings, ray settings) over the same data folder and database."""
    from core.config import get_settings
    from core.db.engine import init_db

    # Its own data folder: the store keeps one row per distinct picture, so in a shared one
    # the Ray job's identical images would be the local job's rows.
    monkeypatch.setenv("SYNTHLAB_HOME", str(settings.home_path.parent / "ray-home"))
    monkeypatch.setenv("SYNTHLAB_RAY_ADDRESS", "local")
    monkeypatch.setenv("SYNTHLAB_EXECUTION_BACKEND", "ray")
    on_ray = get_settings()
    assert on_ray.execution_backend == "ray" and on_ray.home_path != settings.home_path
    init_db(on_ray)
    return settings, on_ray


def _config(model: Path, **overrides):
    from core.generation.generator import GenerationConfig

    values = dict(model=str(model), classes=["apple", "lime"], per_class=5, seed=11,
                  batch_size=2, **SMALL)
    values.update(overrides)
    return GenerationConfig(**values)


def _run(config, settings, context_class=None):
    from core.generation.jobs import create_running_job, run_generation_job
    from core.jobs import JobContext

    job_id = create_running_job(config, settings=settings)
    ctx = (context_class or JobContext)(job_id=job_id, kind="generate",
                                        params=config.to_params(), settings=settings,
                                        worker_id="test")
    return job_id, ctx, (lambda: run_generation_job(ctx))


def _records(job_id: int, settings) -> dict:
    from core.db.engine import session_scope
    from core.db.models import Image, ImageClass
    from core.generation.models import GenerationItem

    with session_scope(settings) as session:
        rows = session.execute(
            select(ImageClass.name, GenerationItem.gen_index, Image.sha256, Image.seed,
                   Image.prompt, Image.extra)
            .join(Image, Image.id == GenerationItem.image_id)
            .join(ImageClass, ImageClass.id == GenerationItem.class_id)
            .where(GenerationItem.job_id == job_id))
        records = {}
        for name, index, sha, seed, prompt, extra in rows:
            assert (name, index) not in records, "an image stored twice"
            records[(name, index)] = (sha, seed, prompt, (extra or {}).get("host"))
        return records


def test_ray_generation_survives_a_killed_actor_and_stores_the_local_images(local_and_ray,
                                                                             tiny_model):
    """Same images (pixels, seeds, prompts, indices) as the local backend, each once, with
    one of the two actors killed while batches are in flight on both."""
    import socket

    import ray

    from core.generation.jobs import job_hosts
    from core.jobs import JobContext, job_events

    local, on_ray = local_and_ray
    killed = []

    class KillFirstActorOnce(JobContext):
        def progress(self, done, total=None, message=None, *, force=False):
            if not killed and 0 < done < 8:
                # A batch is stored and others are in flight on both actors: kill one now.
                ray.kill(ray.get_actor(f"synthlab-job{self.job_id}-gen0"))
                killed.append(done)
            super().progress(done, total, message, force=force)

    config = dict(classes=["apple", "lime"], per_class=5, batch_size=1, seed=3)
    reference, _, run_local = _run(_config(tiny_model, **config), local)
    run_local()
    job_id, _, run_ray = _run(_config(tiny_model, **config), on_ray, KillFirstActorOnce)
    result = run_ray()
    assert killed, "the actor was never killed mid-job"
    log = [e.message for e in job_events(job_id, settings=on_ray)]
    assert any(f"synthlab-job{job_id}-gen0 died" in m for m in log), log
    here, there = _records(reference, local), _records(job_id, on_ray)
    assert len(there) == 10
    assert {k: v[:3] for k, v in here.items()} == {k: v[:3] for k, v in there.items()}
    assert {v[3] for v in here.values()} == {None}  # the local backend is unchanged
    assert {v[3] for v in there.values()} == {socket.gethostname()}
    assert result["hosts"] == {socket.gethostname(): 10} == job_hosts(job_id, on_ray)
    assert ray.util.list_named_actors() == []  # the job's actors are gone


def test_cancel_stops_the_actors_and_resume_stores_only_the_rest(local_and_ray, tiny_model):
    import ray

    from core.jobs import JobCancelled, JobContext, request_cancel

    _, on_ray = local_and_ray
    on_ray = dataclasses.replace(on_ray, ray_actors=1)  # one actor start is enough here

    class CancelAfterFirstBatch(JobContext):
        def progress(self, done, total=None, message=None, *, force=False):
            if 0 < done < 16:
                request_cancel(self.job_id, by="tester", settings=self.settings)
                force = True  # read the request now, not at the next rate-limited write
            super().progress(done, total, message, force=force)

    config = _config(tiny_model, classes=["pear"], per_class=16, batch_size=2, seed=4)
    job_id, _, run_ray = _run(config, on_ray, CancelAfterFirstBatch)
    with pytest.raises(JobCancelled):
        run_ray()
    stored = _records(job_id, on_ray)
    assert 0 < len(stored) < 16
    assert ray.util.list_named_actors() == []
    # The same job resumed (a new worker after a crash would do the same): only the rest.
    from core.db.engine import run_write
    from core.db.models import Job
    from core.generation.jobs import run_generation_job

    def clear_cancel(session):
        session.get(Job, job_id).cancel_requested = False
    run_write(clear_cancel, on_ray)
    result = run_generation_job(JobContext(job_id=job_id, kind="generate",
                                           params=config.to_params(), settings=on_ray,
                                           worker_id="test"))
    assert result["made_this_run"] == 16 - len(stored)
    final = _records(job_id, on_ray)
    assert sorted(final) == [("pear", i) for i in range(16)]
    assert all(final[key] == value for key, value in stored.items())


def test_core_and_worker_do_not_import_ray():
    code = ("import sys; import core.worker, core.jobs, core.cluster, core.generation.jobs, "
            "core.generation.distributed, core.training.jobs, core.explain.jobs, core.cli; "
            "import core.jobs as j; j.load_handlers(); "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_repeat_group_trains_and_explains_on_ray_as_locally(settings, ray_cluster):
    """3 seeds as 3 parallel Ray tasks: the same metrics as the local backend's, and the
    worker wrote every run's checkpoint, history and model file. Then an explain job's
    attribution batches on Ray: the same maps as the local backend's."""
    from core.jobs import JobContext
    from core.training.checkpoint import LAST_FILE, MODEL_FILE, run_dir
    from core.training.data import DataSpec
    from core.training.experiments import ExperimentRequest, create_runs, get_run
    from core.training.jobs import run_training_job, submit_training
    from core.training.trainer import TrainConfig
    from test_training_fixtures import add_fruit_images

    add_fruit_images(settings, "orchard", per_class=12, seed=1)
    request = ExperimentRequest(data=DataSpec(mode="real"), repeats=3,
                                train=TrainConfig(epochs=2, image_size=16, batch_size=16,
                                                  widths={"conv1": 4, "conv2": 8, "hidden": 16}))
    # The torch thread count changes float sums in their last bits, so two runs compare
    # bit for bit only at the same count: pin it (by default each run picks it from the
    # cores free at its start, and records it).
    settings = dataclasses.replace(settings, torch_threads=1)
    on_ray = dataclasses.replace(settings, execution_backend="ray", ray_address="local")
    metrics, trained = {}, {}
    for name, backend in (("local", settings), ("ray", on_ray)):
        run_ids = create_runs(request, created_by="tester", settings=settings)
        job_id = submit_training(run_ids, title=name, created_by="tester", settings=settings)
        result = run_training_job(JobContext(job_id=job_id, kind="train",
                                             params={"run_ids": run_ids}, settings=backend,
                                             worker_id="test"))
        assert sorted(result["runs"]) == sorted(map(str, run_ids))
        runs = [get_run(run_id, settings) for run_id in run_ids]
        assert [run.status for run in runs] == ["done"] * 3
        for run in runs:
            assert (run_dir(settings, run.id) / MODEL_FILE).is_file()
            assert (run_dir(settings, run.id) / LAST_FILE).is_file()
            assert len(run.history) == 2
        metrics[name] = [({k: v for k, v in run.metrics.items() if k != "_train"},
                          [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
                           for row in run.history], run.seeds) for run in runs]
        trained[name] = run_ids[0]
    assert metrics["ray"] == metrics["local"]
    assert len({str(m[0]) for m in metrics["ray"]}) > 1  # three seeds, three different models

    # Attribution batches: the same maps from the two (identical) first models.
    import numpy as np

    from core.db.engine import session_scope
    from core.db.models import Image
    from core.explain.attribution import AttributionConfig
    from core.explain.jobs import run_explain_job, submit_explain_job
    from core.jobs import get_job
    from core.explain.models import Attribution
    from core.explain.service import attributions_dir

    with session_scope(settings) as session:
        image_ids = list(session.scalars(select(Image.id).order_by(Image.id).limit(20)))
    config = AttributionConfig(method="integrated-gradients", ig_steps=4)
    maps = {}
    for name, backend in (("local", settings), ("ray", on_ray)):
        job_id = submit_explain_job(trained[name], image_ids, config, input_mode="eval",
                                    settings=settings)
        result = run_explain_job(JobContext(job_id=job_id, kind="explain",
                                            params=get_job(job_id, settings).params,
                                            settings=backend, worker_id="test"))
        assert result["computed"] == 20 and result["failed"] == 0
        with session_scope(settings) as session:
            rows = session.execute(select(Attribution.image_id, Attribution.path)
                                   .where(Attribution.run_id == trained[name])).all()
        maps[name] = {image_id: np.load(attributions_dir(settings) / path)
                      for image_id, path in rows}
    assert sorted(maps["ray"]) == sorted(maps["local"]) == sorted(image_ids)
    for image_id in image_ids:
        np.testing.assert_array_equal(maps["ray"][image_id], maps["local"][image_id])


def _kill_ray_workers_running(class_name: str) -> list[int]:
    """SIGKILL this test's Ray worker processes titled ``ray::<class_name>...`` (Ray names a
    worker after what it runs); returns their PIDs. Only our own descendants: other Ray
    instances on the machine are not ours to touch. All of them: one an earlier test killed
    may still be on its way out."""
    import signal

    import psutil

    killed = []
    for process in psutil.Process().children(recursive=True):
        try:
            title = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if title.startswith(f"ray::{class_name}"):
            os.kill(process.pid, signal.SIGKILL)
            killed.append(process.pid)
    assert killed, f"no Ray worker runs {class_name}"
    return killed


def _scratch_folders(run_id: int) -> list[Path]:
    import tempfile

    return list(Path(tempfile.gettempdir()).glob(f"synthlab-run{run_id}-*"))


@pytest.mark.slow
def test_a_run_whose_ray_worker_dies_resumes_from_its_last_checkpoint(settings, ray_cluster):
    """The Ray worker process training a run is killed once the SynthLab worker holds an
    epoch's checkpoint: the run starts again on another Ray worker from that checkpoint (not
    epoch 0) and ends with the metrics and history of an uninterrupted run."""
    from core.jobs import JobContext, job_events
    from core.training.checkpoint import LAST_FILE, load_checkpoint, run_dir
    from core.training.data import DataSpec
    from core.training.experiments import ExperimentRequest, create_runs, get_run
    from core.training.jobs import run_training_job, submit_training
    from core.training.trainer import TrainConfig
    from test_training_fixtures import add_fruit_images

    add_fruit_images(settings, "orchard", per_class=8, seed=2)
    request = ExperimentRequest(data=DataSpec(mode="real"), repeats=1,
                                train=TrainConfig(epochs=4, patience=0, image_size=16,
                                                  batch_size=8,
                                                  widths={"conv1": 4, "conv2": 8, "hidden": 16}))
    settings = dataclasses.replace(settings, torch_threads=1)  # bit-equal only at one count
    on_ray = dataclasses.replace(settings, execution_backend="ray", ray_address="local")
    killed: list[dict] = []

    class KillTheRunsWorkerAfterAnEpoch(JobContext):
        def progress(self, done, total=None, message=None, *, force=False):
            run = get_run(self.params["run_ids"][0], self.settings)
            if not killed and run.history:
                # The worker has just written this epoch's checkpoint; the Ray worker goes on.
                held = load_checkpoint(run_dir(self.settings, run.id) / LAST_FILE).epoch
                killed.append({"epoch": held, "pids": _kill_ray_workers_running("RunTrainer")})
            super().progress(done, total, message, force=force)

    scratch_before = set(_scratch_folders(2))  # the Ray run's id: the second run here
    outcome = {}
    for name, backend, context in (("local", settings, JobContext),
                                   ("ray", on_ray, KillTheRunsWorkerAfterAnEpoch)):
        run_ids = create_runs(request, created_by="tester", settings=settings)
        job_id = submit_training(run_ids, title=name, created_by="tester", settings=settings)
        run_training_job(context(job_id=job_id, kind="train", params={"run_ids": run_ids},
                                 settings=backend, worker_id="test"))
        run = get_run(run_ids[0], settings)
        assert run.status == "done"
        outcome[name] = (run, [e.message for e in job_events(job_id, settings=settings)])
    (local, _), (resumed, log) = outcome["local"], outcome["ray"]
    assert killed and 1 <= killed[0]["epoch"] < 4, killed
    assert any("its Ray worker died" in line for line in log), log
    train = resumed.metrics["_train"]
    # Resumed from the checkpoint the worker held at the kill (it asks for the next epoch
    # only after writing one), not from epoch 0.
    assert train["resumed"] is True and local.metrics["_train"]["resumed"] is False
    assert train["resumed_from"] == {"epoch": killed[0]["epoch"]}
    assert train["epochs_run"] == 4 == len(resumed.history)
    # The killed worker's scratch folder went with the restart (the finished one's at the end).
    assert resumed.id == 2 and set(_scratch_folders(resumed.id)) <= scratch_before

    def comparable(run):
        return ({k: v for k, v in run.metrics.items() if k != "_train"},
                [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
                 for row in run.history], run.seeds)
    assert comparable(resumed) == comparable(local)


def test_cluster_report_lists_this_node(settings, ray_cluster):
    from core.cluster import cluster_report, format_report

    on_ray = dataclasses.replace(settings, execution_backend="ray", ray_address="local")
    report = cluster_report(on_ray)
    assert [(node["alive"], node["cpus"], node["gpus"]) for node in report["nodes"]] == \
        [(True, 2.0, 0)]
    assert "1 node(s), 0 GPU(s)" in format_report(report)


def test_admin_cluster_tab_says_the_backend_without_ray(settings):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages" / "admin.py"), default_timeout=60).run()
    assert not at.exception
    assert any("Execution backend: **local**" in info.value for info in at.info)
