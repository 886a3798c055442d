"""Attribution maps through captum on a small CNN trained in the test, margins, overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.explain.attribution import (BASELINES, METHODS, AttributionConfig, AttributionError,
                                      attribute, baseline_pixels, explainable_copy,
                                      letterbox_content_box, margin_area_share, margin_mass,
                                      predict_probabilities, region_mass)
from core.explain.figures import attribution_figure, margin_figure, probabilities_figure
from core.explain.overlay import colourise, render_overlay
from test_explain_fixtures import one_torch_thread  # noqa: F401  (autouse fixture)

SIDE = 32
PATCH = 8
COLOURS = np.array([[220, 30, 30], [30, 30, 220]], dtype=float)  # class 0 red, class 1 blue
QUADRANTS = {"top-left": (0, 0, SIDE // 2, SIDE // 2), "top-right": (SIDE // 2, 0, SIDE, SIDE // 2),
             "bottom-left": (0, SIDE // 2, SIDE // 2, SIDE),
             "bottom-right": (SIDE // 2, SIDE // 2, SIDE, SIDE)}


def corner_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The label is the colour of the top-left patch. Blobs of *both* colours are scattered
    over the rest of the image, so colour alone elsewhere says nothing about the label."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(110, 30, (n, SIDE, SIDE, 3))
    labels = rng.integers(0, 2, n)
    for i in range(n):
        for colour in COLOURS:
            for _ in range(2):
                cy, cx = rng.integers(PATCH + 2, SIDE - 4, 2)
                pixels[i, cy - 2:cy + 2, cx - 2:cx + 2] = colour
        pixels[i, :PATCH, :PATCH] = COLOURS[labels[i]] + rng.normal(0, 10, (PATCH, PATCH, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def corner_model():
    """A SmallCNN (the training engineer's Classifier) trained for a few seconds."""
    from core.training.trainer import Classifier, TrainConfig

    train_x, train_y = corner_images(240, seed=0)
    test_x, test_y = corner_images(24, seed=1)
    classifier = Classifier(TrainConfig(epochs=5, image_size=SIDE, batch_size=32, seed=0, patience=0,
                                        device="cpu"), class_names=["red", "blue"])
    classifier.fit(train_x, train_y)
    assert classifier.score(test_x, test_y) >= 0.95, "the corner task should be easy to learn"
    return classifier.model_, test_x, test_y


@pytest.mark.parametrize("method", METHODS)
def test_each_method_returns_a_finite_map_of_the_input_size(corner_model, method):
    model, test_x, test_y = corner_model
    baselines = BASELINES if method in ("integrated-gradients", "occlusion") else ("black",)
    for baseline in baselines:
        config = AttributionConfig(method=method, baseline=baseline, ig_steps=8,
                                   occlusion_window=8, occlusion_stride=8)
        result = attribute(model, test_x[0], int(test_y[0]), config)
        assert result.shape == (SIDE, SIDE)
        assert result.dtype == np.float32
        assert np.isfinite(result).all()
        assert np.abs(result).sum() > 0, f"{method}/{baseline} gave an empty map"


def test_attribution_mass_concentrates_in_the_corner_that_decides_the_label(corner_model):
    model, test_x, test_y = corner_model
    net = explainable_copy(model)
    for method in METHODS:
        config = AttributionConfig(method=method, ig_steps=16, occlusion_window=6, occlusion_stride=4)
        shares = {name: [] for name in QUADRANTS}
        for pixels, label in zip(test_x[:8], test_y[:8]):
            result = attribute(net, pixels, int(label), config, prepared=True)
            for name, box in QUADRANTS.items():
                shares[name].append(region_mass(result, box))
        means = {name: float(np.mean(values)) for name, values in shares.items()}
        others = max(v for k, v in means.items() if k != "top-left")
        # A map that ignored the corner would give each quadrant about a quarter.
        assert means["top-left"] > 0.3, (method, means)
        assert means["top-left"] > 1.3 * others, (method, means)


def test_gradcam_works_with_in_place_relus_and_leaves_the_model_alone(corner_model):
    model, test_x, test_y = corner_model
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert relus and all(m.inplace for m in relus)  # SmallCNN uses in-place ReLUs
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = attribute(model, test_x[1], int(test_y[1]), AttributionConfig(method="gradcam"))
    assert result.min() >= 0  # ReLU'd Grad-CAM
    assert all(m.inplace for m in relus)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_predict_probabilities_and_target_checks(corner_model):
    model, test_x, test_y = corner_model
    probabilities = predict_probabilities(model, test_x[2])
    assert probabilities.shape == (2,) and abs(probabilities.sum() - 1) < 1e-5
    assert int(np.argmax(probabilities)) == int(test_y[2])
    with pytest.raises(AttributionError, match="out of range"):
        attribute(model, test_x[2], 5, AttributionConfig())
    with pytest.raises(AttributionError, match="larger than"):
        attribute(model, test_x[2], 0, AttributionConfig(method="occlusion", occlusion_window=64))


def test_config_validation_and_cache_key():
    with pytest.raises(AttributionError, match="unknown method"):
        AttributionConfig(method="lime")
    with pytest.raises(AttributionError, match="unknown baseline"):
        AttributionConfig(method="integrated-gradients", baseline="green")
    with pytest.raises(AttributionError):
        AttributionConfig(ig_steps=0)
    saliency = AttributionConfig(method="saliency")
    # Parameters a method does not use do not change its cache key; those it uses do.
    assert saliency.params_hash(0) == AttributionConfig(method="saliency", ig_steps=99).params_hash(0)
    assert saliency.params_hash(0) != saliency.params_hash(1)
    ig = AttributionConfig(method="integrated-gradients")
    assert ig.params_hash(0) != AttributionConfig(method="integrated-gradients", ig_steps=8).params_hash(0)
    assert AttributionConfig.from_dict(ig.to_dict()) == ig


def test_baselines_are_images_of_the_right_kind():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert baseline_pixels(pixels, "black").max() == 0
    assert baseline_pixels(pixels, "white").min() == 255
    mean = baseline_pixels(pixels, "mean")
    assert (mean == mean[0, 0]).all()
    assert np.allclose(mean[0, 0], pixels.reshape(-1, 3).mean(axis=0), atol=0.51)
    blurred = baseline_pixels(pixels, "blurred", blur_radius=3).astype(float)
    assert blurred.shape == pixels.shape and blurred.std() < pixels.astype(float).std() / 2


def test_margin_mass_is_the_share_of_absolute_attribution_outside_the_content_box():
    box = (0, 4, 16, 12)  # 16x16 map, content rows 4..11: half the pixels are margin
    flat = np.ones((16, 16))
    assert margin_area_share((16, 16), box) == 0.5
    assert margin_mass(flat, box) == pytest.approx(0.5)
    only_margins = np.zeros((16, 16))
    only_margins[:4] = -2.0  # negative evidence is still attention
    assert margin_mass(only_margins, box) == pytest.approx(1.0)
    only_content = np.zeros((16, 16))
    only_content[6, 6] = 3.0
    assert margin_mass(only_content, box) == 0.0
    assert np.isnan(margin_mass(np.zeros((16, 16)), box))
    with pytest.raises(AttributionError):
        margin_mass(flat, (0, 0, 17, 16))


@pytest.mark.parametrize("size", [(48, 36), (36, 48), (40, 40), (97, 13)])
def test_letterbox_content_box_matches_the_preprocessing_letterbox(size):
    from core.explain.service import content_box_from_geometry
    from core.preprocess.pipeline import default_pipeline

    width, height = size
    box = letterbox_content_box(width, height, SIDE)
    pipeline = default_pipeline("real", SIDE)
    assert content_box_from_geometry(pipeline.geometry(width, height), SIDE) == box
    # And the pixels agree: a white picture letterboxed on black is white exactly in the box.
    out = np.asarray(pipeline.apply(Image.new("RGB", size, (255, 255, 255))))
    rows = np.where(out.max(axis=(1, 2)) > 128)[0]
    cols = np.where(out.max(axis=(0, 2)) > 128)[0]
    left, top, right, bottom = box
    assert abs(rows[0] - top) <= 1 and abs(rows[-1] + 1 - bottom) <= 1
    assert abs(cols[0] - left) <= 1 and abs(cols[-1] + 1 - right) <= 1


def test_overlay_and_figures():
    pixels = np.full((16, 16, 3), 100, dtype=np.uint8)
    positive = np.zeros((16, 16), dtype=np.float32)
    positive[2:5, 2:5] = 1.0
    image = render_overlay(pixels, positive, opacity=0.5, scale=3, content_box=(0, 2, 16, 14))
    assert image.size == (16 * 3 * 2 + 6, 16 * 3)
    hot = np.asarray(image)[3 * 3, 16 * 3 + 6 + 3 * 3]
    cold = np.asarray(image)[12 * 3, 16 * 3 + 6 + 12 * 3]
    assert hot.sum() > cold.sum()  # the attributed patch is brighter in the overlay
    signed = positive - np.flip(positive)
    colours = colourise(signed)
    assert colours[3, 3, 0] > colours[3, 3, 2]  # positive -> red
    assert colours[12, 12, 2] > colours[12, 12, 0]  # negative -> blue
    with pytest.raises(ValueError):
        render_overlay(pixels, np.zeros((8, 8)))

    figure = attribution_figure(pixels, positive, opacity=0.3, content_box=(0, 2, 16, 14))
    kinds = [trace.type for trace in figure.data]
    assert kinds == ["image", "heatmap"]
    heatmap = figure.data[1]
    assert heatmap.opacity == 0.3 and "attribution" in heatmap.hovertemplate
    assert np.asarray(heatmap.z).shape == (16, 16)
    bars = probabilities_figure(["a", "b", "c"], [0.2, 0.7, 0.1], top=2)
    assert list(bars.data[0].y) == ["a", "b"]  # most likely on top (last)
    margins = margin_figure([{"label": "#1", "source": "real", "mean_margin_mass": 0.1,
                              "mean_margin_area": 0.25}])
    assert len(margins.data) == 2


def test_content_box_follows_the_random_margin_of_the_synthetic_pipeline():
    """Square synthetic images get a random crop, then a letterbox: the box must follow the
    crop drawn with the same seed."""
    from core.explain.service import content_box_from_geometry
    from core.preprocess.pipeline import default_pipeline

    pipeline = default_pipeline("synthetic", SIDE)
    boxes = set()
    for seed in range(12):
        box = content_box_from_geometry(pipeline.geometry(80, 80, seed=seed), SIDE)
        boxes.add(box)
        out = np.asarray(pipeline.apply(Image.new("RGB", (80, 80), (255, 255, 255)), seed=seed))
        rows = np.where(out.max(axis=(1, 2)) > 128)[0]
        cols = np.where(out.max(axis=(0, 2)) > 128)[0]
        left, top, right, bottom = box
        assert abs(rows[0] - top) <= 1 and abs(rows[-1] + 1 - bottom) <= 1, (seed, box)
        assert abs(cols[0] - left) <= 1 and abs(cols[-1] + 1 - right) <= 1, (seed, box)
    assert len(boxes) > 3  # the margins really vary with the seed


def test_margin_mass_exposes_a_model_that_reads_the_margins():
    """Class 0 is letterboxed (black bars), class 1 is not; the content is the same noise.
    The only cue is the margins, so a working margin measure must show the attribution on
    them well above their share of the area."""
    from core.training.trainer import Classifier, TrainConfig

    bar = 6
    rng = np.random.default_rng(0)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        pixels = rng.normal(120, 40, (n, SIDE, SIDE, 3))
        labels = rng.integers(0, 2, n)
        pixels[labels == 0, :bar] = 0
        pixels[labels == 0, SIDE - bar:] = 0
        return np.clip(pixels, 0, 255).astype(np.uint8), labels

    train_x, train_y = images(200)
    test_x, test_y = images(24)
    classifier = Classifier(TrainConfig(epochs=3, image_size=SIDE, batch_size=32, seed=0, patience=0,
                                        device="cpu")).fit(train_x, train_y)
    assert classifier.score(test_x, test_y) >= 0.95
    net = explainable_copy(classifier.model_)
    box = (0, bar, SIDE, SIDE - bar)
    area = margin_area_share((SIDE, SIDE), box)
    letterboxed = test_x[test_y == 0][:8]
    for config in (AttributionConfig(method="saliency"), AttributionConfig(method="gradcam"),
                   AttributionConfig(method="integrated-gradients", ig_steps=16, baseline="mean"),
                   AttributionConfig(method="occlusion", baseline="mean", occlusion_window=6,
                                     occlusion_stride=4)):
        mass = np.mean([margin_mass(attribute(net, x, 0, config, prepared=True), box) for x in letterboxed])
        assert mass > 1.3 * area, (config.describe(), mass, area)
    # The documented blind spot: black margins equal a black baseline, so integrated
    # gradients give them nothing, whatever the model does with them.
    black = AttributionConfig(method="integrated-gradients", ig_steps=8, baseline="black")
    assert margin_mass(attribute(net, letterboxed[0], 0, black, prepared=True), box) < 1e-6
