"""``python -m core preprocess / presets / cache`` and the aspect-ratio statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.imagemaker import fruit_image, save_jpeg
from tests.test_preprocess_core import add_images

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, capsys) -> tuple[int, str, str]:  # noqa: ANN001
    from core.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_preprocess_writes_what_the_pipeline_makes(settings, tmp_path):
    from core.imageio import decode_image
    from core.preprocess import load_pipeline

    source = save_jpeg(fruit_image("banana", 3, (200, 100)), tmp_path / "in.jpg")
    out = tmp_path / "out.png"
    done = subprocess.run([sys.executable, "-m", "core", "preprocess", str(source), "--pipeline", "synthetic",
                           "--size", "48", "--seed", "5", "--out", str(out), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["output_size"] == [48, 48] and report["seed"] == 5
    expected = load_pipeline("synthetic", settings, size=48).apply(decode_image(source).image, seed=5)
    with Image.open(out) as written:
        assert written.size == (48, 48) and written.tobytes() == expected.tobytes()


def test_cli_preprocess_by_image_id_with_steps_and_clear_errors(settings, tmp_path, capsys):
    refs = add_images(settings, [(fruit_image("apple", 1, (90, 60)), "apple", "real")])
    del refs
    code, out, _ = _cli("preprocess", "1", "--out", str(tmp_path / "r.png"), "--size", "32",
                        "--steps-dir", str(tmp_path / "steps"), capsys=capsys)
    # For people: where it went, from what, through which steps.
    assert code == 0 and out.startswith(f"{tmp_path / 'r.png'}: 32x32 from image 1 (real, apple)")
    assert "Letterbox (" in out and "-> Resize (size=32" in out
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == [
        "00_original.png", "01_letterbox.png", "02_resize.png"]
    with Image.open(tmp_path / "r.png") as result:
        assert result.size == (32, 32)
    cases = [(("preprocess", "99", "--out", str(tmp_path / "x.png")), "neither a file nor the id"),
             (("preprocess", "1", "--pipeline", "fancy", "--out", str(tmp_path / "x.png")),
              "no pipeline preset named 'fancy'"),
             (("preprocess", "1", "--out", str(tmp_path / "x.jpg")), "must be a .png"),
             (("preprocess", "1", "--seed", "-1", "--out", str(tmp_path / "x.png")), "--seed must be >= 0")]
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    cases.append((("preprocess", str(not_image), "--out", str(tmp_path / "x.png")), "not an image"))
    for args, message in cases:
        code, _, err = _cli(*args, capsys=capsys)
        assert code == 2 and message in err, (args, err)
    assert not (tmp_path / "x.png").exists()


def test_cli_presets_and_cache(settings, tmp_path, capsys):
    add_images(settings, [(fruit_image("lime", i, (80, 60)), "lime", "real") for i in range(3)])
    code, out, _ = _cli("presets", "show", "real", capsys=capsys)
    spec = json.loads(out)
    spec["steps"][0]["fill"] = "white"
    (tmp_path / "p.json").write_text(json.dumps(spec))
    code, out, _ = _cli("presets", "save", "white real", "--from-json", str(tmp_path / "p.json"),
                        capsys=capsys)
    assert code == 0 and out.startswith("saved preset 'white real' (hash ")
    listed = json.loads(_cli("presets", "list", "--json", capsys=capsys)[1])
    assert {p["name"] for p in listed} == {"white real", "real", "synthetic", "original-real",
                                          "original-synthetic"}
    table = _cli("presets", "list", capsys=capsys)[1].splitlines()
    assert table[0].split() == ["NAME", "HASH", "SAVED", "BY"] and len(table) == 6
    assert any(line.startswith("original-real") and "WHITE" in line for line in table)
    assert any(line.startswith("synthetic") and "built in: " in line for line in table)
    (tmp_path / "bad.json").write_text('{"steps": [{"type": "letterbox", "fill": "plaid"}]}')
    code, _, err = _cli("presets", "save", "bad", "--from-json", str(tmp_path / "bad.json"), capsys=capsys)
    assert code == 2 and "fill" in err
    code, out, _ = _cli("cache", "build", "--pipeline", "white real", "--source", "real", "--json",
                        capsys=capsys)
    assert code == 0 and json.loads(out)["built"] == 3
    assert "0 of 3 images newly cached" in _cli("cache", "build", "--pipeline", "white real",
                                                "--source", "real", capsys=capsys)[1]
    entries = json.loads(_cli("cache", "list", "--json", capsys=capsys)[1])
    assert len(entries) == 1 and entries[0]["images"] == 3
    listing = _cli("cache", "list", capsys=capsys)[1].splitlines()
    assert len(listing) == 2 and listing[1].split()[1] == "3"
    assert json.loads(_cli("cache", "prune", "--json", capsys=capsys)[1])["removed"] == []  # recent
    assert _cli("cache", "prune", "--all", capsys=capsys)[1].strip() == "removed 1 cache entries, kept 0"
    assert _cli("cache", "list", capsys=capsys)[1].strip() == "the cache is empty"
    assert _cli("presets", "delete", "white real", capsys=capsys)[0] == 0
    assert _cli("presets", "delete", "white real", capsys=capsys)[0] == 2


def test_aspect_statistics_before_and_after(settings):
    from core.db.engine import session_scope
    from core.preprocess import default_pipeline
    from core.preprocess.stats import (ImageFilter, aspect_ratios, aspect_ratios_after, image_sizes,
                                       log_aspect_distance, measured_aspects, random_margin_from_dataset)

    sizes = [(120, 80), (80, 120), (150, 100), (100, 75), (90, 90)]
    add_images(settings, [(fruit_image("plum", i, size), "plum", "real") for i, size in enumerate(sizes)])
    add_images(settings, [(fruit_image("plum", 50 + i, (128, 128)), "plum", "synthetic") for i in range(30)])
    with session_scope(settings) as session:
        real = aspect_ratios(session, ImageFilter(source="real"))
        assert np.allclose(sorted(real), sorted(w / h for w, h in sizes))
        assert len(aspect_ratios(session, ImageFilter(source="real", class_name="apple"))) == 0
        synthetic_sizes = image_sizes(session, ImageFilter(source="synthetic"))
        measured = measured_aspects(session, ImageFilter(source="real"))
        margin = random_margin_from_dataset(session, ImageFilter(source="real", dataset_name="test-real"))
    assert len(measured) == 5 and set(margin.aspects) == set(measured)
    # Letterboxing keeps the real content's aspect; a random margin reshapes the squares.
    real_after = aspect_ratios_after(np.array(sizes, float), default_pipeline("real"))
    assert np.allclose(real_after, real, rtol=0.02)
    synthetic_after = aspect_ratios_after(synthetic_sizes, default_pipeline("synthetic"))
    assert np.all((synthetic_after > 0.74) & (synthetic_after < 1.51))
    measured_pipeline = default_pipeline("synthetic").__class__(
        (margin,) + default_pipeline("synthetic").steps[1:], max_side=256)
    matched = aspect_ratios_after(synthetic_sizes, measured_pipeline)
    square = np.ones(len(synthetic_sizes))
    assert log_aspect_distance(real, matched) < log_aspect_distance(real, square)


def test_compare_aspects_samples_across_all_images(settings):
    from core.db.engine import session_scope
    from core.preprocess import Pipeline, default_pipeline
    from core.preprocess.compare import aspect_figure, compare_aspects
    from core.preprocess.transforms import Letterbox, RandomMargin, Resize

    add_images(settings, [(fruit_image("lime", i, (80, 60)), "lime", "real") for i in range(6)])
    add_images(settings, [(fruit_image("lime", 70 + i, (64, 64)), "lime", "synthetic") for i in range(4)])
    four_three = Pipeline((RandomMargin(aspects=(1.3333,)), Letterbox(), Resize(64)))
    with session_scope(settings) as session:
        full = compare_aspects(session, default_pipeline("real"), four_three, class_name="lime")
        sampled = compare_aspects(session, default_pipeline("real"), four_three, class_name="lime", sample=4)
    assert len(full.real_before) == 6 and len(full.synthetic_before) == 4
    assert len(sampled.real_before) == 4 and len(sampled.synthetic_before) == 4
    # Squares against 4:3 photos before; the margin gives them the photos' shape after.
    assert full.distance_before == pytest.approx(np.log(4 / 3), rel=0.01)
    assert full.distance_after < 0.02
    figure = aspect_figure(full)
    assert [trace.name for trace in figure.data] == ["Real", "Synthetic", "Real", "Synthetic"]


def test_aspects_after_shortcuts_give_the_per_image_answers():
    """The page's shortcuts (one geometry per distinct size when no step draws; the epoch-0
    seeds kept) give exactly what each image's own seeded geometry gives, which is what
    training sees."""
    from core.preprocess import Pipeline, default_pipeline, item_seed
    from core.preprocess.stats import aspect_ratios_after
    from core.preprocess.transforms import Letterbox, RandomMargin, Resize

    rng = np.random.default_rng(3)
    sizes = rng.choice([[120, 80], [80, 120], [64, 64], [300, 100]], size=40).astype(float)
    for pipeline, seed in ((default_pipeline("real"), 0), (default_pipeline("synthetic"), 7),
                           (Pipeline((RandomMargin(aspects=(0.8, 1.3)), Letterbox(), Resize(32))), 2)):
        per_image = [pipeline.geometry(int(w), int(h), item_seed(seed, 0, i)).content_aspect
                     for i, (w, h) in enumerate(sizes)]
        assert aspect_ratios_after(sizes, pipeline, seed).tolist() == per_image
    assert aspect_ratios_after(np.empty((0, 2)), default_pipeline("synthetic")).shape == (0,)


def test_stage_previews_are_small_and_say_the_real_sizes(settings):
    """Preprocess shows each stage shrunk (what it caches and sends), captioned with the
    stage's real size; the last pipeline stage is what the pipeline makes."""
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import Image as ImageRow
    from core.preprocess import default_pipeline
    from core.preprocess.compare import PREVIEW_SIDE, stage_previews
    from core.store import ImageStore

    add_images(settings, [(fruit_image("plum", 1, (600, 320)), "plum", "real")])
    with session_scope(settings) as session:
        image_id, path = session.execute(select(ImageRow.id, ImageRow.path)).one()
    pipeline = default_pipeline("original-real")  # letterboxes the full-size picture
    shown = stage_previews(settings, image_id, pipeline, seed=3, size=64)
    assert (shown.width, shown.height) == (600, 320)
    assert [(name, w, h) for name, w, h, _ in shown.stages] == [
        ("Original", 600, 320), ("Letterbox", 600, 600), ("Resize", 64, 64),
        ("Plain resize (stretched)", 64, 64)]
    assert all(max(preview.size) <= PREVIEW_SIDE for *_, preview in shown.stages)
    made = pipeline.apply(ImageStore(settings).open_rgb(path), seed=3)
    assert np.array_equal(np.asarray(shown.stages[2][3]), np.asarray(made))
    assert stage_previews(settings, image_id + 99, pipeline, seed=3, size=64) is None
