"""Hugging Face datasets with one split per class and a binary image column: the layout of
the study's published synthetic set (DiegoP-S/DatasetSynthesis), built here with
``save_to_disk`` and imported through ``import_dataset`` and ``python -m core ingest``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from tests.imagemaker import fruit_image

SMALL = (40, 30)
CLASSES = {"Apple": ("apple", "PNG", 3), "Banana": ("banana", "JPEG", 2), "Orange": ("plum", "PNG", 2)}


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _class_split_dataset(path: Path, *, column: str = "image", kind: str = "binary") -> Path:
    """Splits Apple/Banana/Orange, no label column; Orange's last row is corrupt."""
    import datasets

    if kind == "binary":
        feature = datasets.Value("binary")
    elif kind == "struct":
        feature = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    else:
        feature = datasets.Image()
    features = datasets.Features({column: feature, "prompt": datasets.Value("string")})
    splits = {}
    for index, (split, (look, fmt, count)) in enumerate(CLASSES.items()):
        cells: list = [_encoded(fruit_image(look, index * 100 + i, SMALL), fmt) for i in range(count)]
        if split == "Orange":
            # A real PNG cut short: its header reads, its pixels do not.
            whole = _encoded(fruit_image("plum", 999, SMALL), "PNG")
            cells.append(whole[: len(whole) // 2])
        if kind != "binary":
            cells = [{"bytes": cell, "path": None} for cell in cells]
        splits[split] = datasets.Dataset.from_dict(
            {column: cells, "prompt": [f"a photo of {split.lower()}"] * len(cells)},
            features=features)
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def _db_rows(settings) -> list[tuple[str, str, str | None, str, str, dict]]:
    from core.db.engine import session_scope
    from core.db.models import Dataset, Image as ImageRow, ImageClass

    with session_scope(settings) as session:
        return list(session.execute(
            select(ImageClass.name, ImageClass.display_name, ImageRow.split, ImageRow.source,
                   Dataset.source, ImageRow.extra)
            .join(ImageClass, ImageRow.class_id == ImageClass.id)
            .join(Dataset, ImageRow.dataset_id == Dataset.id).order_by(ImageRow.id)))


def _check_database(settings) -> None:
    rows = _db_rows(settings)
    counts: dict[str, int] = {}
    for name, _display, _split, _source, _dataset_source, _extra in rows:
        counts[name] = counts.get(name, 0) + 1
    assert counts == {"apple": 3, "banana": 2, "orange": 2}
    assert {r[1] for r in rows} == {"Apple", "Banana", "Orange"}
    # Untagged: training draws its own train/val/test from them like any synthetic pool.
    assert all(r[2] is None for r in rows)
    assert all(r[3] == "synthetic" and r[4] == "synthetic" for r in rows)
    assert {r[5]["hf_split"] for r in rows} == {"Apple", "Banana", "Orange"}


def test_class_splits_with_binary_column_import(settings, tmp_path):
    from core.ingest import ImportOptions, import_dataset

    saved = _class_split_dataset(tmp_path / "DatasetSynthesis")
    report = import_dataset(saved, settings, ImportOptions(source="synthetic"))

    assert report.layout == "huggingface"
    assert report.added == 7 and report.duplicates == 0
    assert report.per_class == {"Apple": 3, "Banana": 2, "Orange": 2}
    assert report.per_split == {"-": 7}
    assert len(report.rejected) == 1
    assert report.rejected[0]["path"] == "Orange/2"
    assert "truncated or corrupt image data" in report.rejected[0]["reason"]
    _check_database(settings)

    again = import_dataset(saved, settings, ImportOptions(source="synthetic"))
    assert again.added == 0 and again.duplicates == 7


def test_class_splits_through_the_cli(settings, tmp_path, capsys):
    from core.cli import main

    saved = _class_split_dataset(tmp_path / "synth-hf")
    assert main(["ingest", str(saved), "--source", "synthetic", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == 7 and report["per_class"] == {"Apple": 3, "Banana": 2, "Orange": 2}
    assert [r["path"] for r in report["rejected"]] == ["Orange/2"]
    _check_database(settings)

    assert main(["stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["per_class"] == {"apple": {"synthetic": 3}, "banana": {"synthetic": 2},
                                  "orange": {"synthetic": 2}}


@pytest.mark.parametrize(("column", "kind"), [
    ("blob", "binary"),  # no telling name: found by the PNG/JPEG signature of its bytes
    ("img", "struct"),  # {"bytes", "path"} dicts, as pandas/parquet exports write them
    ("picture", "image"),  # an Image feature, read undecoded
])
def test_other_image_columns(settings, tmp_path, column, kind):
    from core.ingest import ImportOptions, import_dataset

    saved = _class_split_dataset(tmp_path / f"hf-{kind}", column=column, kind=kind)
    report = import_dataset(saved, settings, ImportOptions(source="synthetic"))
    assert report.per_class == {"Apple": 3, "Banana": 2, "Orange": 2}
    assert [r["path"] for r in report.rejected] == ["Orange/2"]
    _check_database(settings)


def test_split_names_without_labels_are_not_classes(settings, tmp_path):
    import datasets

    from core.ingest import SourceError, import_dataset

    cells = [_encoded(fruit_image("apple", i, SMALL), "PNG") for i in range(2)]
    features = datasets.Features({"image": datasets.Value("binary")})
    datasets.DatasetDict({name: datasets.Dataset.from_dict({"image": cells}, features=features)
                          for name in ("train", "test")}).save_to_disk(str(tmp_path / "nolabels"))
    with pytest.raises(SourceError, match="'train' is a split name, not a class"):
        import_dataset(tmp_path / "nolabels", settings)


def test_binary_column_without_images_is_still_refused(settings, tmp_path):
    import datasets

    from core.ingest import SourceError, import_dataset

    features = datasets.Features({"payload": datasets.Value("binary")})
    datasets.DatasetDict({"Apple": datasets.Dataset.from_dict(
        {"payload": [b"not an image", b"nor this"]}, features=features)}).save_to_disk(
        str(tmp_path / "blobs"))
    with pytest.raises(SourceError, match="has no image column"):
        import_dataset(tmp_path / "blobs", settings)

