"""Training core: the reference CNN, metrics against hand-computed values, learning on
separable images, chance level on shuffled labels, reproducibility, leak-free splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.training.data import DataError, DataSpec, ExperimentData, ImageRecord, check_no_leakage, plan_experiment
from core.training.metrics import aggregate, evaluate
from core.training.model import DeepCNN, SmallCNN, build_model, from_input, to_input
from core.training.trainer import Classifier, TrainConfig
from imagemaker import fruit_image
from test_training_fixtures import CLASSES, add_fruit_images

torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared 2-core box


def _arrays(per_class: int, offset: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for i in range(per_class):
        for k, label in enumerate(CLASSES):
            images.append(np.asarray(fruit_image(label, offset + i * 10 + k, (size, size))))
            labels.append(k)
    return np.stack(images), np.array(labels)


def test_small_cnn_is_the_reference_architecture() -> None:
    model = build_model("small", num_classes=4)
    layers = [m for m in model.modules() if not isinstance(m, (nn.Sequential, SmallCNN))]
    kinds = [type(m).__name__ for m in layers]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d",
                     "Flatten", "Linear", "ReLU", "Dropout", "Linear"]
    conv1, conv2 = layers[0], layers[3]
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.padding) == (3, 32, (3, 3), (1, 1))
    assert (conv2.in_channels, conv2.out_channels, conv2.kernel_size, conv2.padding) == (32, 64, (3, 3), (1, 1))
    assert (layers[7].in_features, layers[7].out_features) == (64 * 16 * 16, 128)
    assert layers[9].p == 0.5
    assert layers[10].out_features == 4
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 4)
    # Configurable input size and widths.
    narrow = build_model("small", 3, image_size=32, conv1=8, conv2=16, hidden=32)
    assert narrow(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    deep = build_model("deep", 5, image_size=32)
    assert isinstance(deep, DeepCNN)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in deep.modules()) == 4
    assert [m.out_channels for m in deep.modules() if isinstance(m, nn.Conv2d)] == [64, 128, 256, 512]
    assert deep(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("huge", 3)


def test_to_input_normalises_to_minus_one_one_and_round_trips() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    x = to_input(pixels)
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.isclose(to_input(np.full((1, 2, 2, 3), 255, np.uint8)), torch.tensor(1.0)).all()
    assert torch.isclose(to_input(np.zeros((1, 2, 2, 3), np.uint8)), torch.tensor(-1.0)).all()
    np.testing.assert_array_equal(from_input(x), pixels)
    assert to_input(pixels[0]).shape == (1, 3, 8, 8)
    as_float = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
    kept = as_float.clone()
    assert torch.equal(to_input(as_float), x) and torch.equal(as_float, kept)  # caller's tensor untouched


def test_metrics_match_hand_computed_values() -> None:
    # 3 classes, class "c" never appears in the test set.
    y_true = np.array([0, 0, 0, 1, 1])
    proba = np.array([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0],
                      [0.2, 0.8, 0.0], [0.45, 0.55, 0.0]])
    metrics, curves = evaluate(y_true, proba, ["a", "b", "c"])
    # predictions: a, a, b, b, b -> 4 of 5 right
    assert metrics["accuracy"] == pytest.approx(0.8)
    # class a: precision 2/2, recall 2/3; class b: precision 2/3, recall 2/2 (macro over present)
    assert metrics["precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["recall"] == pytest.approx((2 / 3 + 1) / 2)
    f1_a, f1_b = 2 * 1 * (2 / 3) / (1 + 2 / 3), 2 * (2 / 3) * 1 / (2 / 3 + 1)
    assert metrics["f1"] == pytest.approx((f1_a + f1_b) / 2)
    assert metrics["f1_weighted"] == pytest.approx((3 * f1_a + 2 * f1_b) / 5)
    # AUC of class a (scores .9 .6 .3 vs .2 .45): pairs won 5 of 6; class b is the mirror.
    assert metrics["roc_auc"] == pytest.approx(5 / 6)
    assert metrics["roc_auc_classes"] == 2
    assert curves["confusion"] == [[2, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert curves["confusion_normalised"][0] == pytest.approx([2 / 3, 1 / 3, 0])
    report = {row["class"]: row for row in curves["report"]}
    assert report["c"]["support"] == 0 and report["c"]["roc_auc"] is None
    assert set(curves["roc"]) == {"a", "b"} and curves["roc_macro"]["tpr"][-1] == pytest.approx(1.0)
    summary = aggregate([{"accuracy": 0.8}, {"accuracy": 0.6}, {"accuracy": 1.0}])
    assert summary["accuracy"]["mean"] == pytest.approx(0.8)
    assert summary["accuracy"]["std"] == pytest.approx(0.2)
    with pytest.raises(ValueError):
        evaluate([], np.zeros((0, 3)), ["a", "b", "c"])


def test_learns_separable_images_reproducibly_and_stays_at_chance_on_shuffled_labels() -> None:
    X, y = _arrays(24, 0)
    X_test, y_test = _arrays(15, 500_000)
    config = TrainConfig(epochs=5, image_size=32, batch_size=16, seed=3, patience=0)
    model = Classifier(config, class_names=CLASSES).fit(X, y, validation=(X_test[:20], y_test[:20]))
    metrics, _ = evaluate(y_test, model.predict_proba(X_test), CLASSES)
    assert metrics["accuracy"] >= 0.9, metrics
    assert metrics["roc_auc"] >= 0.95
    assert [h["epoch"] for h in model.history_] == [1, 2, 3, 4, 5]
    assert {"loss", "acc", "val_loss", "val_acc"} <= set(model.history_[-1])

    again = Classifier(config, class_names=CLASSES).fit(X, y, validation=(X_test[:20], y_test[:20]))
    np.testing.assert_allclose(again.predict_proba(X_test), model.predict_proba(X_test), atol=1e-6)

    shuffled = np.random.default_rng(0).permutation(y)
    noise = Classifier(config, class_names=CLASSES).fit(X, shuffled)
    chance, _ = evaluate(y_test, noise.predict_proba(X_test), CLASSES)
    assert chance["accuracy"] < 0.5, chance  # 4 classes: chance is 0.25


def test_early_stopping_keeps_the_best_epoch() -> None:
    X, y = _arrays(6, 0, size=16)
    X_val, y_val = _arrays(4, 900_000, size=16)
    y_val_wrong = (y_val + 1) % 4  # the better it learns, the worse this validation gets
    model = Classifier(TrainConfig(epochs=30, image_size=16, batch_size=8, patience=2, lr=3e-3),
                       class_names=CLASSES).fit(X, y, validation=(X_val, y_val_wrong))
    assert len(model.history_) < 30 and model.history_[-1]["early_stop"]


def _plan_db(settings) -> None:  # noqa: ANN001
    add_fruit_images(settings, "orchard", per_class=12, seed=1)
    add_fruit_images(settings, "orchard-test", per_class=4, seed=2, split="test")
    add_fruit_images(settings, "market", per_class=5, seed=3)
    # 24 synthetic images per class in families of 4 (same prompt and seed).
    add_fruit_images(settings, "generated", per_class=24, seed=4, source="synthetic", families=6)


def test_splits_never_leak_images_or_synthetic_families(settings) -> None:
    _plan_db(settings)
    spec = DataSpec(mode="mixed", real_datasets=["orchard", "orchard-test"], synthetic_per_class=8,
                    cross_datasets=["market"], split_seed=5)
    data = plan_experiment(spec, settings)
    counts = data.counts()
    # The imported 'test' tag wins over a random split.
    assert counts["test_real"] == 16 and {r.dataset for r in data.records("test_real")} == {"orchard-test"}
    assert counts["train_synthetic"] == 8 * 4
    assert counts["cross:market"] == 20
    fitting = [r for role in ("train_real", "train_synthetic", "val_real", "val_synthetic")
               for r in data.records(role)]
    held = [r for role in data.eval_roles() for r in data.records(role)]
    assert not {r.sha256 for r in fitting} & {r.sha256 for r in held}
    assert not {r.family for r in fitting} & {r.family for r in held}
    assert counts["test_synthetic"] > 0 and counts["test_synthetic"] % 4 == 0  # whole families
    # Same seeds, same plan; the split does not move when fewer real images are used.
    assert plan_experiment(spec, settings).roles == data.roles
    fewer = plan_experiment(DataSpec(**{**spec.to_dict(), "real_per_class": 3}), settings)
    assert fewer.records("test_real") == data.records("test_real")
    assert fewer.records("val_real") == data.records("val_real")
    assert fewer.counts()["train_real"] == 3 * 4

    # The leak check itself fails when it should.
    leaky = ExperimentData(spec, data.class_names, {**data.roles,
                                                    "train_real": data.records("train_real") + data.records("test_real")[:1]})
    with pytest.raises(AssertionError, match="both"):
        check_no_leakage(leaky)
    family_leak = ImageRecord(-1, "f" * 64, "x.png", 0, "synthetic", "generated",
                              data.records("test_synthetic")[0].family)
    with pytest.raises(AssertionError, match="families"):
        check_no_leakage(ExperimentData(spec, data.class_names, {
            **data.roles, "train_synthetic": data.records("train_synthetic") + [family_leak]}))


def test_modes_and_clear_errors(settings) -> None:
    _plan_db(settings)
    synthetic = plan_experiment(DataSpec(mode="synthetic", real_datasets=["orchard"]), settings)
    assert synthetic.counts()["train_real"] == 0 and synthetic.counts()["val_real"] == 0
    assert synthetic.counts()["test_real"] > 0 and synthetic.counts()["train_synthetic"] > 0
    ratio = plan_experiment(DataSpec(mode="mixed", real_datasets=["orchard"], mix_ratio=0.5), settings)
    assert abs(ratio.counts()["train_synthetic"] - ratio.counts()["train_real"]) <= 4
    # Asking for more synthetic images than exist says so (the run name still says +500).
    greedy = plan_experiment(DataSpec(mode="mixed", real_datasets=["orchard"], synthetic_per_class=500),
                             settings)
    assert any("500 synthetic training images per class" in n and "fewer available" in n
               for n in greedy.notes)
    assert not any("fewer available" in n for n in plan_experiment(
        DataSpec(mode="mixed", real_datasets=["orchard"], synthetic_per_class=2), settings).notes)
    real = plan_experiment(DataSpec(mode="real", real_datasets=["orchard"], split_seed=1), settings)
    assert real.counts()["train_synthetic"] == 0 and real.counts()["test_synthetic"] > 0
    with pytest.raises(DataError, match="no dataset named nope"):
        plan_experiment(DataSpec(real_datasets=["nope"]), settings)
    with pytest.raises(DataError, match="at least 2 classes; only apple was chosen"):
        plan_experiment(DataSpec(classes=["apple"]), settings)
    with pytest.raises(DataError, match="unknown mode"):
        DataSpec(mode="both")


def test_threads_come_from_free_cores_or_the_user_and_snapshots_are_copies(tmp_path, monkeypatch) -> None:
    from core.training.checkpoint import CheckpointWriter, checkpoint_snapshot, load_checkpoint
    from core.training.speed import choose_threads, free_cores

    assert free_cores(load=0.1, cores=2) == 2 and free_cores(load=1.2, cores=2) == 1
    assert free_cores(load=9.0, cores=2) == 1 and free_cores(load=1.4, cores=8) == 7
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert choose_threads(3) == 3 and choose_threads(0, fixed=True) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads(0) == 2 and choose_threads(1) == 1

    # A checkpoint written in the background holds the weights of the moment it was taken.
    model = build_model("small", 2, image_size=16, conv1=2, conv2=2, hidden=4)
    snapshot = checkpoint_snapshot(model.to(memory_format=torch.channels_last), {"epoch": 1})
    taken = {k: v.clone() for k, v in model.state_dict().items()}
    writer = CheckpointWriter()
    published = []
    writer.submit([(tmp_path / "last.safetensors", snapshot)], then=lambda: published.append(1))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    writer.wait()
    saved = load_checkpoint(tmp_path / "last.safetensors")
    assert published == [1] and saved.epoch == 1
    assert all(torch.equal(saved.model_state[k], taken[k]) for k in taken)
    assert not list(tmp_path.glob(".part-*"))  # nothing half-written left behind


def test_a_fit_resumed_from_a_checkpoint_ends_bit_for_bit_as_an_uninterrupted_one(tmp_path) -> None:
    """The Adam moments saved in a checkpoint are plain (NCHW) tensors while the conv weights
    train channels-last: loaded as they were, the fused update paired them element by element
    in memory order, i.e. with the wrong weights, and a resumed run drifted."""
    import shutil

    X, y = _arrays(per_class=4, offset=0, size=16)
    val = _arrays(per_class=1, offset=500, size=16)
    config = TrainConfig(epochs=4, patience=0, image_size=16, batch_size=8,
                         widths={"conv1": 4, "conv2": 8, "hidden": 16})
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    resumed.mkdir()

    def keep_epoch_two(_row, history):  # the files a run killed in epoch 3 would leave
        if len(history) == 2:
            for path in whole.iterdir():
                shutil.copy(path, resumed / path.name)

    first = Classifier(config, class_names=CLASSES, checkpoint_dir=whole, threads=1,
                       on_epoch=keep_epoch_two).fit(X, y, validation=val)
    second = Classifier(config, class_names=CLASSES, checkpoint_dir=resumed,
                        threads=1).fit(X, y, validation=val)
    assert second.resumed_from_ == {"epoch": 2} and first.resumed_from_ is None

    def rows(history):
        return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
                for row in history]
    assert rows(second.history_) == rows(first.history_)
    np.testing.assert_array_equal(second.predict_proba(val[0]), first.predict_proba(val[0]))
