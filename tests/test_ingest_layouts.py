"""Import of each supported layout into a real SQLite index."""

from __future__ import annotations

import threading
import zipfile

import pytest
from sqlalchemy import func, select

from tests.imagemaker import fruit_image, make_imagefolder, save_jpeg

SMALL = (32, 24)


def _rows(settings):
    from core.db.engine import session_scope
    from core.db.models import Image, ImageClass

    with session_scope(settings) as session:
        return [(name, split, path, extra) for name, split, path, extra in session.execute(
            select(ImageClass.name, Image.split, Image.path, Image.extra)
            .join(ImageClass, Image.class_id == ImageClass.id).order_by(Image.id))]


def test_imagefolder_import_and_reimport_is_all_duplicates(settings, tmp_path):
    from core.ingest import ImportOptions, import_dataset
    from core.store import ImageStore

    root = make_imagefolder(tmp_path / "fruit", ["apple", "banana"], 5, size=SMALL)
    report = import_dataset(root, settings, ImportOptions(added_by="ann"))
    assert report.layout == "imagefolder" and report.dataset == "fruit"
    assert (report.added, report.duplicates, report.rejected) == (10, 0, [])
    assert report.per_class == {"apple": 5, "banana": 5}
    rows = _rows(settings)
    assert sorted({r[0] for r in rows}) == ["apple", "banana"] and all(r[1] is None for r in rows)
    store = ImageStore(settings)
    assert all(store.exists(r[2]) for r in rows)

    again = import_dataset(root, settings, ImportOptions(dataset="fruit-again"))
    assert (again.added, again.duplicates) == (0, 10)
    assert len(_rows(settings)) == 10 and len(list(store.iter_relpaths())) == 10


def test_fruits360_layout_keeps_split_tags_through_the_process_pool(settings, tmp_path):
    from core.ingest import ImportOptions, import_dataset

    root = tmp_path / "fruits-360_dataset" / "fruits-360"
    for split_dir, offset in (("Training", 0), ("Test", 500)):
        for c, label in enumerate(["apple", "lime"]):
            for i in range(16):
                save_jpeg(fruit_image(label, offset + c * 100 + i, SMALL),
                          root / split_dir / f"Apple Red {label}" / f"{i}_100.jpg")
    (root / "readme.md").write_text("not an image")
    report = import_dataset(tmp_path / "fruits-360_dataset", settings,
                            ImportOptions(workers=2))  # 64 files: decoded in the pool
    assert report.layout == "fruits360"
    assert report.added == 64 and report.per_split == {"train": 32, "test": 32}
    assert {r[0] for r in _rows(settings)} == {"apple_red_apple", "apple_red_lime"}
    assert [r["path"] for r in report.rejected] == ["fruits-360/readme.md"]


def _voc(name: str, boxes: list[tuple[str, int, int, int, int]]) -> str:
    objects = "".join(
        f"<object><name>{label}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for label, x0, y0, x1, y1 in boxes)
    return f"<annotation><filename>{name}</filename>{objects}</annotation>"


def _kaggle_flat(root):
    train = root / "train_zip" / "train"
    save_jpeg(fruit_image("apple", 1, (96, 72)), train / "apple_1.jpg")
    (train / "apple_1.xml").write_text(_voc("apple_1.jpg", [("apple", 5, 5, 40, 40),
                                                           ("apple", 50, 10, 90, 60)]))
    save_jpeg(fruit_image("banana", 2, (96, 72)), train / "banana_3.jpg")
    (train / "banana_3.xml").write_text(_voc("banana_3.jpg", [("banana", 0, 0, 96, 72)]))
    save_jpeg(fruit_image("lime", 3, (96, 72)), root / "test_zip" / "test" / "lime_7.jpg")
    save_jpeg(fruit_image("lime", 4, (96, 72)), train / "42.jpg")  # no class in the name
    return root


def test_flat_files_with_voc_boxes_whole_images(settings, tmp_path):
    from core.ingest import import_dataset

    report = import_dataset(_kaggle_flat(tmp_path / "kaggle"), settings)
    assert report.layout == "flat" and report.added == 3
    assert report.per_class == {"apple": 1, "banana": 1, "lime": 1}
    assert report.per_split == {"train": 2, "test": 1}
    assert [r["path"] for r in report.rejected] == ["train_zip/train/42.jpg"]
    assert "class from the file name" in report.rejected[0]["reason"]
    apple = next(r for r in _rows(settings) if r[0] == "apple")
    assert len(apple[3]["boxes"]) == 2  # the annotation is kept with the image


def test_flat_files_with_voc_boxes_as_crops(settings, tmp_path):
    from core.ingest import ImportOptions, import_dataset

    report = import_dataset(_kaggle_flat(tmp_path / "kaggle"), settings,
                            ImportOptions(crop_boxes=True))
    assert report.added == 4  # 2 apple crops + 1 banana crop + the lime without boxes
    crops = [r for r in _rows(settings) if r[3] and "box" in r[3]]
    assert len(crops) == 3
    first = next(r for r in crops if r[3]["box_index"] == 0 and r[0] == "apple")
    assert first[3]["box"] == {"label": "apple", "xmin": 5, "ymin": 5, "xmax": 40, "ymax": 40}
    assert first[3]["source_image"].endswith("apple_1.jpg")
    from core.db.engine import session_scope
    from core.db.models import Image

    with session_scope(settings) as session:
        sizes = {(w, h) for w, h in session.execute(select(Image.width, Image.height))}
    assert (35, 35) in sizes and (40, 50) in sizes


def test_force_class_for_a_flat_folder(settings, tmp_path):
    from core.ingest import ImportOptions, import_dataset

    for i in range(3):
        save_jpeg(fruit_image("plum", i, SMALL), tmp_path / "plums" / f"IMG{i:04d}.jpg")
    report = import_dataset(tmp_path / "plums", settings, ImportOptions(force_class="Plum"))
    assert report.added == 3 and report.per_class == {"Plum": 3}


def test_zip_import_reads_members_without_extracting(settings, tmp_path):
    from core.ingest import import_dataset

    folder = make_imagefolder(tmp_path / "src", ["apple", "lime"], 3, size=SMALL)
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*.jpg")):
            zf.write(path, f"my-fruit/{path.relative_to(folder).as_posix()}")
        zf.writestr("__MACOSX/._apple_0.jpg", b"resource fork")
    report = import_dataset(archive, settings)
    assert report.dataset == "upload" and report.layout == "imagefolder"
    assert report.added == 6 and report.rejected == []
    assert not list(settings.tmp_dir.iterdir())


def test_huggingface_save_to_disk(settings, tmp_path):
    import datasets

    from core.ingest import import_dataset

    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["apple", "banana"])})
    def split(seed):
        return datasets.Dataset.from_dict(
            {"image": [fruit_image("apple", seed, SMALL), fruit_image("banana", seed + 1, SMALL),
                       fruit_image("banana", seed + 2, SMALL)],
             "label": [0, 1, 1]}, features=features)
    saved = tmp_path / "hf-fruit"
    datasets.DatasetDict({"train": split(0), "test": split(10)}).save_to_disk(str(saved))
    report = import_dataset(saved, settings)
    assert report.layout == "huggingface" and report.added == 6
    assert report.per_class == {"apple": 2, "banana": 4}
    assert report.per_split == {"train": 3, "test": 3}
    assert all(r[3]["hf_split"] in ("train", "test") for r in _rows(settings))


def test_hub_id_offline_gives_a_clear_error(settings):
    from core.ingest import SourceError, import_dataset

    with pytest.raises(SourceError, match="cannot load Hugging Face dataset"):
        import_dataset("nobody-here/no-such-fruit-set", settings)
    with pytest.raises(SourceError, match="does not exist"):
        import_dataset("/no/such/folder", settings)


def test_concurrent_imports_of_the_same_images(settings, tmp_path):
    from core.db.engine import session_scope
    from core.db.models import Image
    from core.ingest import ImportOptions, import_dataset

    root = make_imagefolder(tmp_path / "same", ["apple", "plum"], 6, size=SMALL)
    reports, errors = [], []

    def run(name):
        try:
            reports.append(import_dataset(root, settings, ImportOptions(dataset=name, workers=1,
                                                                        batch_size=3)))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(f"copy{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.added for r in reports) == 12 and sum(r.duplicates for r in reports) == 12
    with session_scope(settings) as session:
        assert session.scalar(select(func.count(Image.id))) == 12


def test_batch_conflict_with_a_concurrent_import_falls_back_row_by_row(settings, tmp_path,
                                                                         monkeypatch):
    """On PostgreSQL another import can commit a hash between our lookup and our insert;
    the batch then fails on the unique hash and is redone row by row."""
    from core.ingest import ImportOptions, import_dataset, importer

    root = make_imagefolder(tmp_path / "race", ["apple", "lime"], 3, size=SMALL)
    first = import_dataset(root / "apple", settings, ImportOptions(dataset="first", force_class="apple"))
    assert first.added == 3
    original = importer._Importer._split_known
    calls = []

    def blind_first_lookup(self, session, batch):
        calls.append(len(batch))
        if len(calls) == 1:  # as if the other import's rows were not committed yet
            return list(batch), []
        return original(self, session, batch)
    monkeypatch.setattr(importer._Importer, "_split_known", blind_first_lookup)
    second = import_dataset(root, settings, ImportOptions(dataset="second", workers=1))
    assert len(calls) == 2  # the failed batch, then the row-by-row redo
    assert (second.added, second.duplicates) == (3, 3)
    assert second.per_class == {"lime": 3}
    assert len(_rows(settings)) == 6
