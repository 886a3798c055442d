"""Preprocessing transforms, pipelines, presets and the preprocessed cache."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.imagemaker import fruit_image


def _two_tone(width: int, height: int) -> Image.Image:
    """Left half red, right half blue: easy to locate after any geometry change."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = (220, 20, 20)
    array[:, width // 2:] = (20, 20, 220)
    return Image.fromarray(array)


def add_images(settings, items):
    """Add ``(PIL image, class, source)`` items to the catalog; return their (sha, path)."""
    from core.catalog import add_image, get_or_create_class, get_or_create_dataset
    from core.db.engine import session_scope
    from core.imageio import decode_image
    from core.store import ImageStore

    store = ImageStore(settings)
    refs = []
    with session_scope(settings, write=True) as session:
        for image, label, source in items:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            decoded = decode_image(buffer.getvalue())
            dataset = get_or_create_dataset(session, f"test-{source}", source=source)
            result = add_image(session, store, decoded, raw=buffer.getvalue(), source=source,
                               image_class=get_or_create_class(session, label), dataset=dataset)
            refs.append((result.image.sha256, result.image.path))
    return refs


@pytest.mark.parametrize("fill, expected", [("black", (0, 0, 0)), ("white", (255, 255, 255)),
                                            ("colour", (10, 200, 30))])
def test_letterbox_keeps_two_to_one_content_with_chosen_fill(fill, expected):
    from core.preprocess.transforms import Letterbox

    out = np.asarray(Letterbox(size=64, fill=fill, colour=(10, 200, 30)).apply(_two_tone(200, 100)))
    assert out.shape == (64, 64, 3)
    # 16 rows of fill above and below, the 64x32 content in between.
    assert (out[:16] == expected).all() and (out[48:] == expected).all()
    content = out[16:48].astype(int)
    assert (np.abs(content[:, :30] - (220, 20, 20)).max()) <= 2
    assert (np.abs(content[:, 34:] - (20, 20, 220)).max()) <= 2


def test_letterbox_fills_mean_edge_and_blur():
    from core.preprocess.transforms import Letterbox

    source = _two_tone(200, 100)
    mean = np.asarray(Letterbox(size=64, fill="mean").apply(source))
    assert (mean[:16] == (120, 20, 120)).all()
    edge = np.asarray(Letterbox(size=64, fill="edge").apply(source)).astype(int)
    # Replicated edges continue the content: red over the red half, blue over the blue one.
    assert np.abs(edge[0, :30] - (220, 20, 20)).max() <= 2 and np.abs(edge[63, 34:] - (20, 20, 220)).max() <= 2
    blur = np.asarray(Letterbox(size=64, fill="blur").apply(source)).astype(int)
    assert blur[:16].std() > 5 and blur[:16, :10, 0].mean() > blur[:16, 54:, 0].mean()
    # Letterbox without a size pads at the image's own scale.
    assert Letterbox(fill="black").apply(source).size == (200, 200)


def test_random_margin_gives_aspect_inside_the_range_and_is_reproducible():
    from core.preprocess.transforms import RandomMargin

    step = RandomMargin(min_aspect=0.7, max_aspect=1.6)
    square = fruit_image("plum", 5, (512, 512))
    aspects = []
    for seed in range(40):
        out = step.apply(square, np.random.default_rng(seed))
        assert max(out.size) == 512  # one axis is cut, the other kept
        aspects.append(out.width / out.height)
        again = step.apply(square, np.random.default_rng(seed))
        assert out.tobytes() == again.tobytes()
    assert all(0.7 - 0.005 <= a <= 1.6 + 0.005 for a in aspects)
    assert min(aspects) < 0.9 and max(aspects) > 1.3  # both orientations occur
    measured = RandomMargin(aspects=(0.75, 1.333))
    seen = {round(measured.apply(square, np.random.default_rng(s)).width
                  / measured.apply(square, np.random.default_rng(s)).height, 2) for s in range(20)}
    assert seen == {0.75, 1.33}


def test_every_transform_round_trips_and_same_seed_is_byte_identical():
    from core.preprocess.pipeline import Pipeline
    from core.preprocess.transforms import (ColouredMargins, ColourJitter, Cutout, GaussianNoise,
                                            Grayscale, HorizontalFlip, Letterbox, RandomCrop,
                                            RandomMargin, RandomResizedCrop, Resize, Rotate,
                                            TrimToLandscape, transform_from_dict, transform_types)

    steps = (TrimToLandscape(p=1.0), RandomMargin(0.8, 1.25), Letterbox(fill="blur"), Resize(48), RandomCrop(40),
             RandomResizedCrop(32, scale=(0.5, 1.0)), HorizontalFlip(), Rotate(8.0),
             ColourJitter(0.2, 0.2, 0.2, 0.05), Grayscale(p=0.5), GaussianNoise(6.0),
             Cutout(2, 0.2), ColouredMargins(0.1))
    assert {type(s) for s in steps} == set(transform_types().values()) - {
        t for n, t in transform_types().items() if n == "downscale"}
    for step in steps:
        restored = transform_from_dict(json.loads(json.dumps(step.to_dict())))
        assert restored == step and restored.hash() == step.hash()
    pipeline = Pipeline(steps, max_side=128, name="everything")
    restored = Pipeline.from_dict(json.loads(json.dumps(pipeline.to_dict())))
    assert restored == pipeline and restored.hash() == pipeline.hash()
    image = fruit_image("apple", 2, (120, 120))
    first, second = pipeline.apply(image, seed=7), restored.apply(image, seed=7)
    assert first.size == (32, 32) and first.tobytes() == second.tobytes()
    assert pipeline.apply(image, seed=8).tobytes() != first.tobytes()
    stages = pipeline.apply_steps(image, seed=7)
    assert [name for name, _ in stages][0] == "Original" and len(stages) == len(steps) + 1
    assert stages[-1][1].tobytes() == first.tobytes()
    # A parameter change is a new hash; 1 and 1.0 are the same parameter.
    assert Resize(48).hash() != Resize(50).hash()
    assert RandomMargin(1, 2).hash() == RandomMargin(1.0, 2.0).hash()


def test_bad_parameters_are_clear_errors():
    from core.preprocess.pipeline import Pipeline, PipelineError
    from core.preprocess.transforms import Letterbox, RandomMargin, TransformError

    with pytest.raises(TransformError, match="fill"):
        Letterbox(fill="purple")
    with pytest.raises(TransformError, match="min_aspect"):
        RandomMargin(2.0, 1.0)
    with pytest.raises(PipelineError, match="unknown transform"):
        Pipeline.from_dict({"steps": [{"type": "sharpen"}]})
    with pytest.raises(PipelineError, match="unknown parameters"):
        Pipeline.from_dict({"steps": [{"type": "resize", "sise": 3}]})


def test_pipeline_split_and_defaults():
    from core.preprocess import default_pipeline
    from core.preprocess.transforms import GaussianNoise

    real, synthetic = default_pipeline("real"), default_pipeline("synthetic", 32)
    assert not real.is_random and real.suffix == () and real.output_size == 64
    assert synthetic.prefix == () and len(synthetic.suffix) == 3 and synthetic.output_size == 32
    noisy = real.__class__(real.steps + (GaussianNoise(4.0),), max_side=real.max_side)
    # Adding a random step after the prefix keeps the cached part (same prefix hash).
    assert noisy.prefix_hash() == real.prefix_hash() and noisy.hash() != real.hash()
    assert real.with_size(96).prefix_hash() != real.prefix_hash()


def test_presets_are_saved_in_the_db_and_override_defaults(settings):
    from core.preprocess import (PipelineError, default_pipeline, delete_preset, list_presets,
                                 load_pipeline, save_preset)
    from core.preprocess.presets import PresetExists
    from core.preprocess.transforms import Grayscale

    custom = default_pipeline("real").__class__(default_pipeline("real").steps + (Grayscale(),))
    save_preset("gray real", custom, "alice", settings=settings)
    assert [p.name for p in list_presets(settings)] == ["gray real"]
    assert load_pipeline("gray real", settings) == custom
    with pytest.raises(PresetExists):
        save_preset("gray real", custom, "bob", settings=settings, overwrite=False)
    # Saving as "real" edits the default until the preset is deleted.
    save_preset("real", custom, "alice", settings=settings)
    assert load_pipeline("real", settings) == custom
    assert delete_preset("real", settings) and load_pipeline("real", settings) == default_pipeline("real")
    assert load_pipeline("real", settings, size=32).output_size == 32
    with pytest.raises(PipelineError, match="available: gray real, original-real, original-synthetic, real, synthetic"):
        load_pipeline("nope", settings)


def test_cache_equals_direct_preprocessing_and_is_reused(settings):
    from core.preprocess import PreprocessedCache, default_pipeline, load_uncached
    from core.preprocess.transforms import GaussianNoise, HorizontalFlip

    refs = add_images(settings, [(fruit_image(label, i, (90 + 7 * i, 60 + 11 * i)), label, "real")
                                 for i, label in enumerate(["apple", "lime", "plum", "banana"] * 2)])
    refs += add_images(settings, [(fruit_image("lime", 50 + i, (300, 300)), "lime", "synthetic")
                                  for i in range(3)])
    real = default_pipeline("real", 32)
    augmented = real.__class__(real.steps + (HorizontalFlip(), GaussianNoise(5.0)), max_side=real.max_side)
    synthetic = default_pipeline("synthetic", 32)
    cache = PreprocessedCache(settings, workers=1)
    for pipeline in (real, augmented, synthetic):
        for epoch in (0, 1):
            cached = cache.load(refs, pipeline, seed=3, epoch=epoch)
            direct = load_uncached(refs, pipeline, seed=3, epoch=epoch, settings=settings)
            assert cached.dtype == np.uint8 and cached.shape == (len(refs), 32, 32, 3)
            assert np.array_equal(cached, direct)
    assert cache.last_load["seed"] == 3 and cache.last_load["epoch"] == 1
    assert not np.array_equal(cache.load(refs, synthetic, seed=3, epoch=0),
                              cache.load(refs, synthetic, seed=3, epoch=1))
    # real and augmented share one entry; synthetic has its own.
    assert len(cache.entries()) == 2
    # Reuse: nothing is built again, and no image file is read again.
    assert cache.build(refs, real) == 0
    store_root = settings.images_dir
    moved = store_root.with_name("images-away")
    store_root.rename(moved)
    try:
        again = PreprocessedCache(settings).load(refs, augmented, seed=3, epoch=0)
    finally:
        moved.rename(store_root)
    assert np.array_equal(again, load_uncached(refs, augmented, seed=3, epoch=0, settings=settings))


def test_cache_parallel_build_prune_and_missing_file(settings, monkeypatch):
    from core.preprocess import CacheError, PreprocessedCache, default_pipeline, load_uncached
    from core.preprocess import cache as cache_module

    monkeypatch.setattr(cache_module, "SHARD_SIZE", 4)
    monkeypatch.setattr(cache_module, "PARALLEL_MIN_IMAGES", 8)
    refs = add_images(settings, [(fruit_image("apple", 100 + i, (64, 48)), "apple", "real")
                                 for i in range(12)])
    real = default_pipeline("real", 16)
    cache = PreprocessedCache(settings, workers=2)

    class Cancelled(Exception):
        pass

    def cancel(done, total):  # noqa: ANN001, ANN202 - what a job's progress does on cancel
        raise Cancelled

    with pytest.raises(Cancelled):
        cache.build(refs, real, progress=cancel)
    # How many shards finished before the cancel depends on timing; they are kept and a
    # re-run (the resumed job) builds only the rest.
    kept = sum(info.images for info in cache.entries())
    assert kept >= 4
    seen = []
    assert cache.build(refs, real, progress=lambda done, total: seen.append((done, total))) == 12 - kept
    assert sum(info.images for info in cache.entries()) == 12
    assert not seen or seen[-1] == (12 - kept, 12 - kept)
    assert np.array_equal(cache.load(refs, real), load_uncached(refs, real, settings=settings))
    other = real.with_size(24)
    cache.load(refs[:2], other)
    assert {e.prefix_hash for e in cache.entries()} == {real.prefix_hash(), other.prefix_hash()}
    assert cache.prune([real]) == [other.prefix_hash()]
    assert [e.prefix_hash for e in cache.entries()] == [real.prefix_hash()]
    assert cache.prune([], older_than_days=1) == []  # just used: kept
    (settings.images_dir / refs[0][1]).unlink()
    with pytest.raises(CacheError, match="missing"):
        cache.load(refs[:1], real.with_size(20))
    with pytest.raises(Exception, match="output size"):
        cache.load(refs[1:2], real.__class__(real.steps[:1]))


def test_geometry_predicts_where_the_content_ends_up():
    from core.preprocess import default_pipeline

    pipeline = default_pipeline("synthetic", 64)
    for size in ((512, 512), (300, 200)):
        image = fruit_image("banana", 9, size)
        for seed in range(8):
            stages = dict(pipeline.apply_steps(image, seed))
            cut = stages["Random margin"]
            geometry = pipeline.geometry(*size, seed=seed)
            assert (geometry.canvas_w, geometry.canvas_h) == (64, 64)
            assert geometry.content_aspect == pytest.approx(cut.width / cut.height, rel=0.01)
            # The letterboxed output has margins exactly where the geometry says.
            out = np.asarray(stages["Resize"]).astype(int)
            margin_rows = round((64 - geometry.content_h) / 2)
            if margin_rows >= 2:
                assert out[: margin_rows - 1].max() <= 3 and out[margin_rows + 1: 64 - margin_rows - 1].max() > 30

