"""Training as jobs and from the CLI: a real worker killed mid-training resumes from its
checkpoint; repeats aggregate over seeds; the CLI prints run ids and test metrics."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.jobs import get_job, job_events
from core.training.checkpoint import LAST_FILE, MODEL_FILE, load_trained_model, run_dir
from core.training.data import DataSpec
from core.training.experiments import (ExperimentRequest, create_runs, data_efficiency, get_run,
                                       list_runs, run_images, summarize)
from core.training.jobs import submit_training
from core.training.trainer import TrainConfig
from core.worker import run_worker
from test_training_fixtures import add_fruit_images

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared 2-core box


def _env(settings) -> dict[str, str]:  # noqa: ANN001
    return dict(os.environ, SYNTHLAB_HOME=str(settings.home_path), OMP_NUM_THREADS="1",
                PYTHONPATH=str(ROOT))


def test_killed_worker_resumes_training_from_the_last_checkpoint(settings, monkeypatch) -> None:
    add_fruit_images(settings, "orchard", per_class=20, seed=1)
    request = ExperimentRequest(data=DataSpec(mode="real"),
                                train=TrainConfig(epochs=30, image_size=16, batch_size=16, patience=0,
                                                  widths={"conv1": 8, "conv2": 16, "hidden": 32}))
    [run_id] = create_runs(request, created_by="tester", settings=settings)
    job_id = submit_training([run_id], title="resume test", created_by="tester", settings=settings)
    worker = subprocess.Popen([sys.executable, "-m", "core", "worker", "--once"], cwd=ROOT,
                              env=_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            run = get_run(run_id, settings)
            if len(run.history or []) >= 1:  # a checkpoint exists: kill as early as possible
                break
            assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
            time.sleep(0.02)
        else:
            pytest.fail("training never got going")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    killed_at = len(get_run(run_id, settings).history)
    assert killed_at < 30, "the run finished before the kill; make it longer"
    assert (run_dir(settings, run_id) / LAST_FILE).is_file()
    assert not (run_dir(settings, run_id) / MODEL_FILE).exists()
    assert get_job(job_id, settings).status == "running"

    # A new worker sees the dead one's job as stale, marks it interrupted and resumes it.
    monkeypatch.setenv("SYNTHLAB_WORKER_STALE_SECONDS", "0.5")
    from core.config import get_settings
    time.sleep(0.6)
    run_worker(get_settings(), once=True)
    job = get_job(job_id, settings)
    assert job.status == "done", job.error
    run = get_run(run_id, settings)
    assert run.status == "done" and run.metrics["_train"]["resumed"] is True
    assert [h["epoch"] for h in run.history] == list(range(1, 31))  # no epoch lost or repeated
    assert run.metrics["real_test"]["accuracy"] >= 0.8
    assert any("resumed" in e.message for e in job_events(job_id, settings=settings))
    model, classes, pipelines, size = load_trained_model(run_id, settings)
    assert classes == ["apple", "banana", "lime", "plum"] and size == 16 and not model.training
    assert pipelines["real"]["steps"][-1]["size"] == 16
    assert {link.role for link in run_images(run_id, settings=settings)} >= {"train_real", "val_real", "test_real"}


def test_cancel_stops_a_running_training_job(settings) -> None:
    import threading

    from core.jobs import request_cancel
    add_fruit_images(settings, "orchard", per_class=8, seed=1)
    ids = create_runs(ExperimentRequest(train=TrainConfig(epochs=200, image_size=16, batch_size=4,
                                                          patience=0), repeats=2), settings=settings)
    job_id = submit_training(ids, title="to cancel while running", settings=settings)

    def cancel_after_first_epoch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not get_run(ids[0], settings).history:
            time.sleep(0.02)
        request_cancel(job_id, by="tester", settings=settings)
    canceller = threading.Thread(target=cancel_after_first_epoch)
    canceller.start()
    run_worker(settings, once=True)
    canceller.join()
    assert get_job(job_id, settings).status == "cancelled"
    runs = list_runs(ids=ids, settings=settings)
    assert {r.status for r in runs} == {"cancelled"}
    first = get_run(ids[0], settings)
    assert 1 <= len(first.history) < 200 and not (run_dir(settings, ids[0]) / MODEL_FILE).exists()


def test_cancel_marks_runs_cancelled(settings) -> None:
    add_fruit_images(settings, "orchard", per_class=6, seed=1)
    ids = create_runs(ExperimentRequest(train=TrainConfig(epochs=1, image_size=16), repeats=2),
                      settings=settings)
    job_id = submit_training(ids, title="to cancel", settings=settings)
    from core.jobs import request_cancel
    request_cancel(job_id, settings=settings)  # queued: cancelled before it starts
    run_worker(settings, once=True)
    assert get_job(job_id, settings).status == "cancelled"


def test_cli_trains_repeats_and_lists_runs(settings, capsys) -> None:
    add_fruit_images(settings, "orchard", per_class=16, seed=1)
    add_fruit_images(settings, "generated", per_class=16, seed=2, source="synthetic", families=8)
    cmd = [sys.executable, "-m", "core", "train", "--train", "mixed", "--synthetic-per-class", "6",
           "--epochs", "5", "--image-size", "16", "--repeats", "2", "--seed", "7", "--json"]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(done.stdout)
    assert len(payload["run_ids"]) == 2
    seeds = [entry["seed"] for entry in payload["runs"]]
    assert seeds == [7, 8]
    for entry in payload["runs"]:
        assert set(entry["real_test"]) == {"n", "ci95", "accuracy", "precision_macro", "recall_macro",
                                           "f1_macro", "precision_weighted", "recall_weighted",
                                           "f1_weighted", "roc_auc"}
        assert entry["real_test"]["accuracy"] >= 0.5  # chance is 0.25
        assert "synthetic_test" in entry
        assert set(entry["seeds"]) == {"train", "split", "subsample", "augment", "bootstrap"}
    [variant] = payload["summary"]  # two seeds of one configuration
    assert variant["n_runs"] == 2
    assert set(variant["metrics"]["real_test"]["accuracy"]) == {"mean", "std", "n"}
    assert {"f1_macro", "f1_weighted"} <= set(variant["metrics"]["real_test"])
    runs = list_runs(ids=payload["run_ids"], settings=settings)
    assert summarize(runs)["real_test"]["accuracy"]["n"] == 2
    assert len({r.group_id for r in runs}) == 1 and runs[0].group_kind == "repeat"

    # The other commands in-process (same parser and code, without another interpreter start).
    from core.cli import main
    capsys.readouterr()
    assert main(["runs", "--json"]) == 0
    assert {r["id"] for r in json.loads(capsys.readouterr().out)} == set(payload["run_ids"])
    assert main(["train", "--train", "real", "--classes", "apple", "durian"]) == 2
    assert "not enough real images for class(es) durian" in capsys.readouterr().err
    assert main(["train", "--train", "mixed"]) == 2
    assert "--synthetic-per-class" in capsys.readouterr().err


def test_data_efficiency_sweep(settings) -> None:
    add_fruit_images(settings, "orchard", per_class=14, seed=1)
    add_fruit_images(settings, "generated", per_class=10, seed=2, source="synthetic")
    request = ExperimentRequest(data=DataSpec(classes=["apple", "lime"]),
                                train=TrainConfig(epochs=2, image_size=16, batch_size=8),
                                sweep_levels=[2, None], sweep_synthetic_per_class=4)
    ids = create_runs(request, settings=settings)
    assert len(ids) == 4
    submit_training(ids, title="sweep", settings=settings)
    run_worker(settings, once=True)
    runs = list_runs(ids=ids, settings=settings)
    assert all(r.status == "done" for r in runs)
    rows = data_efficiency(runs)
    assert {(row["series"], row["real_per_class"]) for row in rows} == {
        ("real only", 2), ("real only", "all"), ("real + 4 synthetic/class", 2),
        ("real + 4 synthetic/class", "all")}
    two = [r for r in runs if r.config["data"]["real_per_class"] == 2]
    assert all(r.counts["train_real"] == 4 for r in two)


def test_pretrain_finetune_and_cross_dataset_evaluation(settings) -> None:
    add_fruit_images(settings, "orchard", per_class=8, seed=1)
    add_fruit_images(settings, "market", per_class=3, seed=3)
    add_fruit_images(settings, "generated", per_class=8, seed=2, source="synthetic")
    [run_id] = create_runs(ExperimentRequest(
        data=DataSpec(mode="pretrain-finetune", real_datasets=["orchard"], cross_datasets=["market"],
                      classes=["apple", "plum"]),
        train=TrainConfig(epochs=2, finetune_epochs=1, image_size=16, batch_size=8)), settings=settings)
    from core.training.experiments import execute_run
    metrics = execute_run(run_id, settings)
    run = get_run(run_id, settings)
    assert [(h["phase"], h["epoch"]) for h in run.history] == [("pretrain", 1), ("pretrain", 2), ("finetune", 1)]
    assert set(metrics) >= {"real_test", "synthetic_test", "cross:market"}
    assert metrics["cross:market"]["n"] == 6
    assert run.counts["train_real"] > 0 and run.counts["train_synthetic"] > 0


def test_runs_of_a_failed_job_do_not_look_alive(settings) -> None:
    add_fruit_images(settings, "orchard", per_class=6, seed=1)
    [run_id] = create_runs(ExperimentRequest(train=TrainConfig(epochs=1, image_size=16)), settings=settings)
    job_id = submit_training([run_id], title="doomed", settings=settings)
    from core.jobs import FAILED, finish
    from core.training.experiments import reconcile_runs
    finish(job_id, FAILED, error="interrupted 3 times; giving up", settings=settings)
    assert reconcile_runs(settings) == 1
    run = get_run(run_id, settings)
    assert run.status == "failed" and "giving up" in run.error
    assert reconcile_runs(settings) == 0


def test_job_says_evaluating_after_its_last_batch_and_reruns_are_identical(settings, monkeypatch) -> None:
    """Issue 15: after the last batch the job shows "evaluating", not "N/N, 0:00:00 left".
    Issue 14: the same seed (and thread count) gives identical metrics run after run."""
    import dataclasses

    from core.jobs import JobContext, claim_next
    from core.training.jobs import run_training_job
    from webui.jobs import _job_line, job_stage

    add_fruit_images(settings, "orchard", per_class=8, seed=1)
    pinned = dataclasses.replace(settings, torch_threads=1)
    request = ExperimentRequest(train=TrainConfig(epochs=2, image_size=16, batch_size=8, seed=5,
                                                  widths={"conv1": 4, "conv2": 8, "hidden": 16}),
                                repeats=1)
    first, second = (create_runs(request, settings=pinned)[0] for _ in range(2))
    job_id = submit_training([first], title="stages", settings=pinned)
    assert claim_next("test", settings=pinned) == job_id
    seen = []

    class Watched(JobContext):
        """The real context; every partial result also snapshots the job row as a panel reads it."""

        def set_result(self, result):  # noqa: ANN001, ANN202
            super().set_result(result)
            job = get_job(self.job_id, pinned)
            seen.append((job.progress_done, job.progress_total, job_stage(job), _job_line(job)))

    run_training_job(Watched(job_id=job_id, kind="train", params={"run_ids": [first]},
                             settings=pinned, worker_id="test"))
    evaluating = [s for s in seen if s[2] == "evaluating"]
    assert len(evaluating) == 1, seen
    done, total, _, line = evaluating[0]
    assert done == total > 0 and "**evaluating**" in line and "left" not in line
    assert seen[-1][2] is None  # the run's result clears the stage
    assert any("evaluating" in e.message for e in job_events(job_id, settings=pinned))
    # The log says the accuracy as people read it ("62.5%"), not as a float prints.
    done_line = next(e.message for e in job_events(job_id, settings=pinned) if " done: " in e.message)
    assert re.fullmatch(rf"run {first} done: real-test accuracy \d{{1,3}}\.\d%", done_line), done_line

    from core.training.execution import execute_run
    again = execute_run(second, pinned)
    one, two = get_run(first, pinned), get_run(second, pinned)
    assert one.config["threads"] == two.config["threads"] == 1 == again["_train"]["threads"]
    assert {k: v for k, v in one.metrics.items() if k != "_train"} == \
        {k: v for k, v in again.items() if k != "_train"}
    untimed = [[{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
                for row in run.history] for run in (one, two)]
    assert untimed[0] == untimed[1]


def test_create_runs_hands_over_the_plans_it_made_so_the_cli_plans_once(settings) -> None:
    from core.training.experiments import plan_for_run

    add_fruit_images(settings, "orchard", per_class=6, seed=3)
    request = ExperimentRequest(data=DataSpec(mode="real"), repeats=2,
                                train=TrainConfig(epochs=1, image_size=16, patience=0))
    plans: dict = {}
    run_ids = create_runs(request, created_by="tester", settings=settings, plans=plans)
    # The first repeat's data was planned to validate the request; the second repeat
    # subsamples with its own seed, so it is planned when it runs.
    assert list(plans) == run_ids[:1]
    assert plans[run_ids[0]] == plan_for_run(get_run(run_ids[0], settings), settings)
