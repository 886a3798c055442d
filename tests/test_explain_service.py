"""Explaining images of a finished run: input, cache, targets, eval predictions, job, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from core import jobs
from core.cli import main as cli_main
from core.db.engine import session_scope
from core.db.models import Image as ImageRow
from core.explain.attribution import AttributionConfig
from core.explain.jobs import submit_explain_job
from core.explain.models import Attribution
from core.explain.selection import (class_image_ids, compare_sample, eval_predictions,
                                    finished_runs, gallery_images, misclassified,
                                    run_eval_image_ids)
from core.explain.service import (ExplainError, attributions_dir, explain, load_run, prepare_input,
                                  subject_from_bytes, subject_from_image_id)
from core.explain.summary import margin_summary
from core.imageio import encode_png
from core.worker import run_worker
from imagemaker import fruit_image
from test_explain_fixtures import IMAGE_SIZE, one_torch_thread, trained, trained_template  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def _rows(settings) -> list[Attribution]:  # noqa: ANN001
    with session_scope(settings) as session:
        return list(session.scalars(select(Attribution).order_by(Attribution.id)))


def test_input_is_the_runs_preprocessing_and_margins_come_from_the_letterbox(trained):
    from core.preprocess import load_pipeline

    settings, info = trained
    run = load_run(info.run_id, settings)
    assert run.class_names == info.class_names and run.image_size == IMAGE_SIZE
    real = subject_from_image_id(info.real_ids[0], settings)
    prepared = prepare_input(run, real)
    expected = load_pipeline(run.pipelines["real"], settings, size=IMAGE_SIZE).apply(real.image, seed=0)
    assert np.array_equal(prepared.pixels, np.asarray(expected))
    # 48x36 letterboxed into 32x32: content rows 4..27, black bars above and below.
    assert prepared.content_box == (0, 4, 32, 28) and prepared.has_margins
    assert prepared.pixels[:3].max() == 0 and prepared.pixels[29:].max() == 0  # resize blurs 1 row
    synthetic = subject_from_image_id(info.synthetic_ids[0], settings)
    assert prepare_input(run, synthetic, input_mode="by-source").pipeline_name == "synthetic"
    assert prepare_input(run, synthetic, input_mode="eval").pipeline_name == "real"


def test_explanations_are_cached_as_a_file_then_a_row(trained):
    settings, info = trained
    subject = subject_from_image_id(info.real_ids[1], settings)
    config = AttributionConfig(method="integrated-gradients", ig_steps=8, baseline="blurred")
    first = explain(info.run_id, subject, config, settings=settings)
    assert not first.cached and first.attribution.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert abs(first.probabilities.sum() - 1) < 1e-5
    assert first.margin_area == pytest.approx(0.25) and 0 <= first.margin_mass <= 1
    (row,) = _rows(settings)
    assert row.image_id == subject.image_id and row.source == "real" and row.method == config.method
    assert row.predicted == first.predicted and row.target == first.predicted
    path = attributions_dir(settings) / row.path
    assert np.array_equal(np.load(path), first.attribution)

    again = explain(info.run_id, subject, config, settings=settings)
    assert again.cached and np.array_equal(again.attribution, first.attribution)
    assert len(_rows(settings)) == 1

    path.unlink()  # a cleaned cache is recomputed, and the row points at the new file
    redone = explain(info.run_id, subject, config, settings=settings)
    assert not redone.cached and path.is_file() and len(_rows(settings)) == 1
    assert np.allclose(redone.attribution, first.attribution, atol=1e-5)

    path.write_bytes(path.read_bytes()[:60])  # a torn file (power cut) is recomputed too
    assert not explain(info.run_id, subject, config, settings=settings).cached
    assert np.array_equal(np.load(path), redone.attribution)

    explain(info.run_id, subject, AttributionConfig(method="integrated-gradients", ig_steps=4),
            settings=settings)
    assert len(_rows(settings)) == 2  # other parameters: another entry


def test_target_class_predicted_true_or_any(trained):
    settings, info = trained
    run = load_run(info.run_id, settings)
    subject = subject_from_image_id(info.real_ids[2], settings)
    config = AttributionConfig(method="gradcam")
    true_index = info.class_names.index(subject.true_class)
    assert explain(run, subject, config, target="true", settings=settings).target == true_index
    other = 1 - true_index
    by_name = explain(run, subject, config, target=info.class_names[other], settings=settings)
    assert by_name.target == other and by_name.target_class == info.class_names[other]
    assert explain(run, subject, config, target=str(other), settings=settings).target == other
    with pytest.raises(ExplainError, match="not one of this run's classes"):
        explain(run, subject, config, target="durian", settings=settings)

    upload = subject_from_bytes(encode_png(fruit_image("banana", 999, (30, 50))), settings, name="x.png")
    assert upload.source == "upload" and upload.image_id is None
    result = explain(run, upload, config, settings=settings)
    assert result.prepared.content_box[0] > 0  # portrait: bars left and right
    with pytest.raises(ExplainError, match="no known class"):
        explain(run, upload, config, target="true", settings=settings)
    # An uploaded copy of an indexed picture is recognised as that image.
    with session_scope(settings) as session:
        row = session.get(ImageRow, info.real_ids[0])
        data = (settings.images_dir / row.path).read_bytes()
    known = subject_from_bytes(data, settings)
    assert known.image_id == info.real_ids[0] and known.true_class is not None
    with pytest.raises(ExplainError, match="not an image"):
        subject_from_bytes(b"definitely not a picture", settings)


def test_eval_predictions_reproduce_the_runs_test_metrics(trained):
    from core.training.experiments import get_run

    settings, info = trained
    assert [r.id for r in finished_runs(settings)] == [info.run_id]
    predictions = eval_predictions(info.run_id, settings)
    metrics = get_run(info.run_id, settings).metrics
    for role, key in (("test_real", "real_test"), ("test_synthetic", "synthetic_test")):
        subset = [p for p in predictions if p.role == role]
        assert subset, role
        accuracy = np.mean([p.correct for p in subset])
        assert accuracy == pytest.approx(metrics[key]["accuracy"])
    wrong = misclassified(info.run_id, settings)
    assert all(not p.correct for p in wrong)
    assert [p.confidence for p in wrong] == sorted((p.confidence for p in wrong), reverse=True)
    # The recorded input seed reproduces the very input that was scored.
    run = load_run(info.run_id, settings)
    sample = next(p for p in predictions if p.role == "test_synthetic")
    result = explain(run, subject_from_image_id(sample.image_id, settings),
                     AttributionConfig(method="saliency"), input_seed=sample.input_seed, settings=settings)
    assert result.predicted == sample.predicted
    assert float(result.probabilities[sample.predicted]) == pytest.approx(sample.confidence, abs=1e-5)


def test_batch_job_computes_caches_and_resumes(trained):
    settings, info = trained
    ids = info.real_ids[:4] + info.synthetic_ids[:3]
    config = AttributionConfig(method="saliency")
    # Two maps exist already (as after an interrupted run of the same job): they are reused.
    for image_id in ids[:2]:
        explain(info.run_id, subject_from_image_id(image_id, settings), config, settings=settings)
    job_id = submit_explain_job(info.run_id, ids + [987654], config, created_by="tester",
                                settings=settings)
    run_worker(settings, once=True)
    job = jobs.get_job(job_id, settings)
    assert job.status == jobs.DONE, job.error
    assert job.progress_done == job.progress_total == len(ids) + 1
    assert job.result["computed"] == 5 and job.result["cached"] == 2 and job.result["failed"] == 1
    assert any("987654" in e.message for e in jobs.job_events(job_id, settings=settings))
    with session_scope(settings) as session:
        count = session.scalar(select(func.count()).select_from(Attribution)
                               .where(Attribution.run_id == info.run_id, Attribution.method == "saliency"))
    assert count == len(ids)
    summary = {row["source"]: row for row in margin_summary(info.run_id, method="saliency", settings=settings)}
    assert summary["real"]["maps"] == 4 and summary["real"]["with_margins"] == 4
    assert summary["real"]["mean_margin_area"] == pytest.approx(0.25)
    assert 0 <= summary["real"]["mean_margin_mass"] <= 1
    assert job.result["margins"] == margin_summary(info.run_id, config=config, settings=settings)
    # Maps made with other parameters are kept apart when asked for one configuration.
    ig = AttributionConfig(method="integrated-gradients", ig_steps=4)
    explain(info.run_id, subject_from_image_id(ids[0], settings), ig, settings=settings)
    only_ig = margin_summary(info.run_id, config=ig, settings=settings)
    assert [(r["source"], r["maps"]) for r in only_ig] == [("real", 1)]
    assert margin_summary(info.run_id, config=AttributionConfig(method="integrated-gradients"),
                          settings=settings) == []

    with pytest.raises(ExplainError, match="at least one image"):
        submit_explain_job(info.run_id, [], config, settings=settings)
    with pytest.raises(ExplainError, match="no training run"):
        submit_explain_job(424242, ids, config, settings=settings)


def test_cli_in_process(trained, tmp_path, capsys):
    settings, info = trained
    out = tmp_path / "overlay.png"
    code = cli_main(["explain", "--run", str(info.run_id), "--image", str(info.real_ids[0]),
                     "--method", "occlusion", "--window", "8", "--stride", "8",
                     "--out", str(out), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["predicted_class"] in info.class_names
    assert set(payload["probabilities"]) == set(info.class_names)
    assert sum(payload["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > image.height

    image_file = tmp_path / "portrait.png"
    fruit_image("apple", 5, (30, 44)).save(image_file)
    code = cli_main(["explain", "--run", str(info.run_id), "--image", str(image_file),
                     "--method", "saliency", "--out", str(tmp_path / "b.png")])
    text = capsys.readouterr().out
    assert code == 0 and "predicted:" in text and "%" in text and "margins" in text

    for argv, message in (
            (["--image", "999999"], "no image with id 999999"),
            (["--image", "no/such/file.png"], "neither an image id nor an existing file"),
            (["--image", str(info.real_ids[0]), "--target", "durian"], "not one of this run's classes")):
        bad_out = tmp_path / "bad.png"
        code = cli_main(["explain", "--run", str(info.run_id), "--method", "gradcam",
                         "--out", str(bad_out), *argv])
        assert code == 2 and message in capsys.readouterr().err
        assert not bad_out.exists()
    code = cli_main(["explain", "--run", "77", "--image", "1", "--method", "gradcam",
                     "--out", str(tmp_path / "c.png")])
    assert code == 2 and "no training run with id 77" in capsys.readouterr().err
    from core.training.data import DataSpec
    from core.training.experiments import ExperimentRequest, create_runs

    (queued,) = create_runs(ExperimentRequest(data=DataSpec(mode="real")), settings=settings)
    code = cli_main(["explain", "--run", str(queued), "--image", "1", "--method", "gradcam",
                     "--out", str(tmp_path / "d.png")])
    assert code == 2 and "has no trained model yet" in capsys.readouterr().err
    code = cli_main(["explain", "--run", str(info.run_id), "--image", "1", "--method", "gradcam",
                     "--out", str(tmp_path / "e.jpg")])
    assert code == 2 and "must be a .png" in capsys.readouterr().err


def test_cli_subprocess(trained, tmp_path):
    settings, info = trained
    out = tmp_path / "cam.png"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "core", "explain", "--run", str(info.run_id), "--image",
         str(info.synthetic_ids[0]), "--method", "gradcam", "--out", str(out), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["image"]["source"] == "synthetic" and payload["method"] == "gradcam"
    assert out.is_file()


def test_concurrent_sessions_get_their_own_maps(trained):
    """Dashboard sessions share one loaded model; Grad-CAM's layer hooks must not mix
    two sessions' images."""
    from concurrent.futures import ThreadPoolExecutor

    settings, info = trained
    run = load_run(info.run_id, settings)
    subjects = [subject_from_image_id(i, settings) for i in info.real_ids[:3] + info.synthetic_ids[:3]]
    config = AttributionConfig(method="gradcam")
    alone = [explain(run, s, config, use_cache=False, settings=settings).attribution for s in subjects]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda s: explain(run, s, config, use_cache=False,
                                                   settings=settings).attribution, subjects * 3))
    for k, result in enumerate(together):
        assert np.allclose(result, alone[k % len(subjects)], atol=1e-6)


def test_image_selection_helpers(trained):
    settings, info = trained
    rows = gallery_images(class_key="apple", source="synthetic", settings=settings)
    assert rows and all(r.class_name == "apple" and r.source == "synthetic" for r in rows)
    sample = compare_sample("banana", 3, seed=1, settings=settings)
    assert len(sample["real"]) == 3 and len(sample["synthetic"]) == 3
    assert sample == compare_sample("banana", 3, seed=1, settings=settings)  # seeded
    assert set(sample["real"]) <= set(info.real_ids) and set(sample["synthetic"]) <= set(info.synthetic_ids)
    assert class_image_ids("apple", settings) == sorted(
        i for i in info.real_ids + info.synthetic_ids
        if subject_from_image_id(i, settings).true_class == "apple")
    evaluated = run_eval_image_ids(info.run_id, settings)
    assert sorted(evaluated) == sorted(p.image_id for p in eval_predictions(info.run_id, settings))


def test_batch_job_stops_when_cancelled(trained):
    from core.worker import run_job

    settings, info = trained
    job_id = submit_explain_job(info.run_id, info.real_ids, AttributionConfig(method="gradcam"),
                                settings=settings)
    worker = jobs.worker_identity()
    assert jobs.claim_next(worker, settings=settings) == job_id
    assert jobs.request_cancel(job_id, by="tester", settings=settings)  # while it runs
    assert run_job(job_id, settings, worker) == jobs.CANCELLED
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Attribution)) == 0


def test_cache_housekeeping_after_a_deleted_run(trained, capsys):
    from core.explain.cache import inspect_cache
    from core.training.experiments import delete_run

    settings, info = trained
    config = AttributionConfig(method="saliency")
    for image_id in info.real_ids[:3]:
        explain(info.run_id, subject_from_image_id(image_id, settings), config, settings=settings)
    report = inspect_cache(settings)
    assert (report.rows, report.files, report.rows_without_file, report.files_without_row) == (3, 3, 0, 0)
    first = _rows(settings)[0]
    (attributions_dir(settings) / first.path).unlink()
    assert inspect_cache(settings).rows_without_file == 1

    delete_run(info.run_id, settings)  # its rows go with it (foreign key cascade)...
    assert _rows(settings) == []
    assert inspect_cache(settings).files_without_row == 0  # ...its files are too new to touch
    report = inspect_cache(settings, prune=True, min_age_seconds=0)
    assert report.removed_files == 2 and inspect_cache(settings).files == 0
    assert cli_main(["explain-cache", "--prune", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 0
