"""The original study's protocol, option by option, and ``reproduce original`` end to end.

Each option must change what it says: validation fraction 0 trains on every image,
``select=last`` keeps the last epoch's weights, Xavier init has Xavier statistics, plain
Adam is Adam; the original preprocessing is pinned on a fixed image; bootstrap intervals
are reproducible from their seed and agree with scikit-learn; and the whole recipe runs on
a small set made by the tiny random-weight diffusion pipeline.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_training_fixtures import add_fruit_images
from tests.tiny_sd import tiny_sd_for_session

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pixels(n: int = 48, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    pixels = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    pixels[labels == 1, :, :, 0] = 250  # class 1 is red: learnable in a few epochs
    return pixels, labels


def test_select_last_keeps_the_last_epochs_weights_and_best_val_the_best():
    from core.training.trainer import Classifier, TrainConfig

    X, y = _pixels()
    # A validation set the model cannot fit (labels flipped): its loss rises as training
    # goes on, so the best validation epoch is an early one and differs from the last.
    validation = (X[:16], 1 - y[:16])
    states = {}
    for select in ("last", "best-val"):
        epochs_seen: list[dict] = []
        model = Classifier(TrainConfig(epochs=5, image_size=16, select=select, patience=0, seed=3),
                           on_epoch=lambda row, _h, seen=epochs_seen: seen.append(dict(row)))
        model.fit(X, y, validation=validation)
        states[select] = {k: v.clone() for k, v in model.model_.state_dict().items()}
        assert len(model.history_) == 5
        if select == "last":
            assert model.best_ == {"val_loss": epochs_seen[-1]["val_loss"], "epoch": 5, "select": "last"}
        else:
            best_epoch = min(epochs_seen, key=lambda row: row["val_loss"])["epoch"]
            assert model.best_["epoch"] == best_epoch < 5
    # Same seed, same data, same batches: only the weights kept at the end differ.
    assert any(not torch.equal(states["last"][k], states["best-val"][k]) for k in states["last"])
    last_again = Classifier(TrainConfig(epochs=5, image_size=16, select="last", patience=0, seed=3))
    last_again.fit(X, y, validation=validation)
    assert all(torch.equal(states["last"][k], v) for k, v in last_again.model_.state_dict().items())


def test_select_last_never_stops_early():
    from core.training.trainer import Classifier, TrainConfig

    X, y = _pixels()
    model = Classifier(TrainConfig(epochs=6, image_size=16, select="last", patience=1, seed=0))
    model.fit(X, y, validation=(X[:16], 1 - y[:16]))
    assert len(model.history_) == 6 and not any(row["early_stop"] for row in model.history_)


def test_xavier_init_has_xavier_statistics_and_zero_biases():
    from core.training.model import build_model, initialise

    torch.manual_seed(0)
    model = initialise(build_model("small", 3, 64), "xavier")
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            weight = module.weight.detach()
            receptive = weight[0, 0].numel() if weight.ndim == 4 else 1
            fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert float(weight.abs().max()) <= bound + 1e-6
            # Uniform(-a, a) has standard deviation a / sqrt(3).
            assert float(weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
            assert torch.count_nonzero(module.bias) == 0
    default = build_model("small", 3, 64)
    first = next(m for m in default.modules() if isinstance(m, torch.nn.Linear))
    assert torch.count_nonzero(first.bias) > 0  # PyTorch's own init is left alone


def test_optimizer_option_picks_adam_or_adamw_and_bad_values_are_refused():
    from core.training.trainer import TrainConfig, make_optimizer

    params = [torch.nn.Parameter(torch.zeros(2))]
    assert type(make_optimizer("adam", params, 1e-3, 0.0)) is torch.optim.Adam
    assert type(make_optimizer("adamw", params, 1e-3, 1e-4)) is torch.optim.AdamW
    for bad in ({"optimizer": "sgd"}, {"init": "he"}, {"select": "best"}, {"weight_decay": -1}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_deterministic_mode_is_switched_on_for_the_fit_only():
    from core.training.trainer import Classifier, TrainConfig

    X, y = _pixels(16)
    for model_name in ("small", "deep"):  # every layer has a deterministic backward
        seen = []
        model = Classifier(TrainConfig(model=model_name, epochs=1, image_size=16, deterministic=True),
                           on_epoch=lambda *_, seen=seen: seen.append(
                               torch.are_deterministic_algorithms_enabled()))
        model.fit(X, y)
        assert seen == [True] and not torch.are_deterministic_algorithms_enabled()
        assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model.model_.modules())


def test_validation_fraction_zero_trains_on_every_image(settings):
    from core.training.data import DataSpec, plan_experiment

    add_fruit_images(settings, "real", classes=["apple", "banana"], per_class=20)
    with_val = plan_experiment(DataSpec(mode="real"), settings)
    without = plan_experiment(DataSpec(mode="real", val_fraction=0.0), settings)
    assert with_val.counts()["val_real"] > 0 and without.counts()["val_real"] == 0
    # The same test set either way; every other image trains.
    assert [r.id for r in without.records("test_real")] == [r.id for r in with_val.records("test_real")]
    assert without.counts()["train_real"] == 40 - without.counts()["test_real"]


def test_mixed_half_of_each_set_and_the_shortfall_note(settings):
    from core.training.data import DataError, DataSpec, plan_experiment

    add_fruit_images(settings, "real", classes=["apple", "banana"], per_class=20)
    add_fruit_images(settings, "synth", classes=["apple", "banana"], per_class=30,
                     source="synthetic", seed=5)
    full = plan_experiment(DataSpec(mode="mixed", synthetic_per_class=1000, val_fraction=0.0), settings)
    half = plan_experiment(DataSpec(mode="mixed", mix_half=True, val_fraction=0.0), settings)
    for role in ("train_real", "train_synthetic"):
        for label in (0, 1):
            available = sum(r.label == label for r in full.records(role))
            assert sum(r.label == label for r in half.records(role)) == (available + 1) // 2
    with pytest.raises(DataError, match="one way to mix"):
        DataSpec(mode="mixed", mix_half=True, mix_ratio=0.5)
    # Mixed validates on real images only: no synthetic image is held out for validation,
    # so 24 of 30 per class (30 less the 6 of the synthetic test set) are there to train.
    enough = plan_experiment(DataSpec(mode="mixed", synthetic_per_class=24), settings)
    assert enough.counts()["val_synthetic"] == 0
    assert not [n for n in enough.notes if "fewer available" in n]
    short = plan_experiment(DataSpec(mode="synthetic", synthetic_per_class=24), settings)
    [note] = [n for n in short.notes if "fewer available" in n]
    assert "apple: 20 of 30 (6 held out for the synthetic test set, 4 for validation)" in note


def test_original_preprocessing_is_pinned_on_a_fixed_image():
    from PIL import Image

    from core.preprocess import default_pipeline
    from core.preprocess.transforms import TrimToLandscape

    real = default_pipeline("original-real", 64)
    synthetic = default_pipeline("original-synthetic", 64)
    assert real.max_side is None and synthetic.max_side is None
    wide = Image.new("RGB", (120, 60), (200, 40, 40))
    out = np.asarray(real.apply(wide))
    assert out.shape == (64, 64, 3)
    assert (out[0, 32] == 255).all() and (out[-1, 32] == 255).all()  # white bars, top and bottom
    assert (out[32, 32] == (200, 40, 40)).all()
    rng = np.random.default_rng(0)
    square = Image.fromarray(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8))
    digests = [hashlib.sha256(synthetic.apply(square, seed=s).tobytes()).hexdigest()[:16]
               for s in range(4)]
    assert digests == PINNED_ORIGINAL_SYNTHETIC
    # The rule itself: about half of square images are trimmed, by 0.2-0.3 x width a side.
    trim = TrimToLandscape()
    cuts = [trim.trim_rows(500, 500, np.random.default_rng([7, i])) for i in range(400)]
    trimmed = [c for c in cuts if c != (0, 0)]
    assert 0.4 < len(trimmed) / len(cuts) < 0.6
    assert all(100 <= top <= 150 and 100 <= bottom <= 150 for top, bottom in trimmed)
    assert trim.trim_rows(640, 480, np.random.default_rng(1)) == (0, 0)  # not square: untouched


# sha256 (16 hex digits) of original-synthetic's output for seeds 0-3 on the fixed image
# above, with Pillow 13.0.0's LANCZOS; a change here changes every original-protocol run.
PINNED_ORIGINAL_SYNTHETIC = ["0077ed7d7450b6ce", "0077ed7d7450b6ce", "300e4f5725d3ae48", "8112ce9469b1d30c"]


def test_bootstrap_intervals_match_sklearn_and_are_reproducible_from_their_seed():
    from core.training.bootstrap import bootstrap_intervals, bootstrap_metrics, resample_counts
    from core.training.metrics import evaluate

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 57)
    proba = rng.dirichlet([1, 1, 1], 57) + np.eye(3)[y] * 0.6
    proba = np.round(proba / proba.sum(1, keepdims=True), 2)  # rounding makes ties
    samples = bootstrap_metrics(y, proba, seed=11, resamples=40)
    counts = resample_counts(57, 40, 11)
    for b in range(6):
        index = np.repeat(np.arange(57), counts[b])
        expected, _ = evaluate(y[index], proba[index], ["a", "b", "c"])
        for key in samples:
            assert samples[key][b] == pytest.approx(expected[key], abs=1e-9), key
    first, info = bootstrap_intervals(y, proba, seed=11)
    again, _ = bootstrap_intervals(y, proba, seed=11)
    other, _ = bootstrap_intervals(y, proba, seed=12)
    assert first == again and first != other
    assert info == {"seed": 11, "resamples": 1000, "level": 0.95,
                    "method": "percentile bootstrap over test images"}
    point, _ = evaluate(y, proba, ["a", "b", "c"])
    for key, (low, high) in first.items():
        assert low <= point[key] <= high, key


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_sd_for_session(tmp_path_factory)


def test_reproduce_original_end_to_end(settings, tiny_model, tmp_path, monkeypatch):
    """Real photos made here, synthetic images from the tiny diffusion pipeline through the
    generate command, then ``reproduce original`` and its report."""
    from core.cli import main
    from core.training.experiments import list_runs, run_images

    env = dict(os.environ, SYNTHLAB_LOCAL_MODELS_DIR=str(tiny_model.parent), OMP_NUM_THREADS="1")
    generated = subprocess.run(
        [sys.executable, "-m", "core", "generate", "--model", "tiny-sd", "--class", "apple",
         "--class", "banana", "--per-class", "12", "--size", "32", "--steps", "2", "--seed", "3",
         "--dataset", "sd-tiny", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert generated.returncode == 0, generated.stderr[-2000:]
    add_fruit_images(settings, "photos", classes=["apple", "banana", "mixed"], per_class=14,
                     size=(48, 36))

    out = tmp_path / "report.html"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code = main(["reproduce", "original", "--real", "photos", "--synthetic", "sd-tiny",
                 "--seeds", "1", "--epochs", "2", "--out", str(out), "--json"])
    assert code == 0
    runs = list_runs(statuses=("done",), settings=settings)
    assert len(runs) == 8 and len({r.group_id for r in runs}) == 1
    assert {r.group_kind for r in runs} == {"reproduce"}
    assert {(r.config["protocol"], r.mode) for r in runs} == {
        (p, m) for p in ("original", "synthlab") for m in ("real", "synthetic", "mixed", "pretrain-finetune")}
    for run in runs:
        assert run.class_names == ["apple", "banana"]  # "mixed" left out, as the study did
        real = run.metrics["real_test"]
        assert {"precision", "precision_weighted", "ci95", "bootstrap"} <= set(real)
        if run.config["protocol"] == "original":
            assert run.config["train"]["optimizer"] == "adam" and run.config["train"]["init"] == "xavier"
            assert run.metrics["_train"]["weights"] == "last"
            assert not run_images(run.id, "val_real", settings) and not run_images(run.id, "val_synthetic", settings)
            assert run.config["pipelines"]["real"]["steps"][0]["fill"] == "white"
        else:
            assert run.config["data"]["real_pipeline"] == "real"
    tests = {frozenset(i.image_id for i in run_images(r.id, "test_real", settings)) for r in runs}
    assert len(tests) == 1  # every configuration is tested on the same real images
    text = out.read_text()
    assert "Original study" in text or "original study" in text
    assert "0.9636" in text  # the published accuracy, beside this run's


def test_reproduce_refuses_unknown_datasets_clearly(settings, capsys):
    from core.cli import main

    add_fruit_images(settings, "photos", classes=["apple", "banana"], per_class=6)
    assert main(["reproduce", "original", "--real", "photos", "--synthetic", "nope"]) == 2
    assert "no synthetic dataset named 'nope'" in capsys.readouterr().err


def test_train_json_summarises_a_sweep_per_level_and_mode(settings):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    add_fruit_images(settings, "real", classes=["apple", "banana"], per_class=16)
    add_fruit_images(settings, "synth", classes=["apple", "banana"], per_class=16,
                     source="synthetic", seed=5)
    done = subprocess.run(
        [sys.executable, "-m", "core", "train", "--train", "mixed", "--sweep", "4", "all",
         "--synthetic-per-class", "4", "--epochs", "1", "--image-size", "16", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)["summary"]
    keys = {(v["mode"], v["real_per_class"]) for v in summary}
    assert keys == {("real", 4), ("mixed", 4), ("real", None), ("mixed", None)}
    assert all(v["n_runs"] == 1 for v in summary)


def test_random_preprocessing_is_drawn_once_or_every_epoch(settings):
    from core.training.data import DataSpec, pipelines_for, plan_experiment
    from core.training.experiments import training_pixels

    add_fruit_images(settings, "real", classes=["apple", "banana"], per_class=6)
    add_fruit_images(settings, "synth", classes=["apple", "banana"], per_class=12,
                     source="synthetic", seed=5, size=(40, 40))
    spec = DataSpec(mode="synthetic", real_pipeline="original-real",
                    synthetic_pipeline="original-synthetic", val_fraction=0.0)
    records = plan_experiment(spec, settings).records("train_synthetic")
    pipelines = pipelines_for(spec, settings, 32)
    once = training_pixels(records, pipelines, settings, seed=1, each_epoch=False)
    assert isinstance(once, np.ndarray) and once.shape == (len(records), 32, 32, 3)
    fresh = training_pixels(records, pipelines, settings, seed=1, each_epoch=True)
    first, second = fresh(1), fresh(2)
    assert not np.array_equal(first, second)  # the trim is redrawn every epoch
    assert np.array_equal(fresh(1), first)  # reproducibly
    # The deterministic real pipeline is one fixed array either way.
    real_records = plan_experiment(DataSpec(mode="real", real_pipeline="original-real"),
                                   settings).records("train_real")
    assert isinstance(training_pixels(real_records, pipelines, settings, seed=1), np.ndarray)
