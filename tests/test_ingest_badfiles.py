"""A corpus of bad and unusual files, made by the test: clear reasons, nothing lost, nothing
written outside the data folder, odd-but-valid images converted rather than rejected."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

from tests.imagemaker import fruit_image, jpeg_bytes

SMALL = (40, 30)


def _png_bomb_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims ten billion pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _odd_but_valid() -> dict[str, bytes]:
    base = fruit_image("apple", 7, SMALL)
    sixteen = base.convert("L").convert("I;16")
    sixteen = Image.fromarray(np.asarray(sixteen, dtype=np.uint16) * 257)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(SMALL))
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "cmyk.jpg": _encoded(fruit_image("apple", 8, SMALL).convert("CMYK"), "JPEG"),
        "sixteen.png": _encoded(sixteen, "PNG"),
        "palette.png": _encoded(fruit_image("apple", 9, SMALL).convert("P"), "PNG"),
        "transparent.png": _encoded(rgba, "PNG"),
        "rotated.jpg": _encoded(fruit_image("apple", 10, SMALL), "JPEG", exif=exif),
        "gray.jpg": _encoded(fruit_image("apple", 11, SMALL).convert("L"), "JPEG"),
    }


def _bad() -> dict[str, bytes]:
    good = jpeg_bytes(fruit_image("apple", 12, (120, 90)))
    return {
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
        "truncated.jpg": good[: len(good) // 3],
        "notes.jpg": b"this is a text file with a .jpg name\n",
        "empty.png": b"",
        "bomb.png": _png_bomb_header(),
    }


def test_bad_and_odd_files_in_a_folder(settings, tmp_path):
    from core.db.engine import session_scope
    from core.db.models import Image as ImageRow
    from core.ingest import import_dataset

    folder = tmp_path / "mixed" / "apple"
    folder.mkdir(parents=True)
    for name, data in {**_odd_but_valid(), **_bad()}.items():
        (folder / name).write_bytes(data)
    (folder / "readme.txt").write_text("hello")
    report = import_dataset(tmp_path / "mixed", settings)

    reasons = {r["path"].split("/")[-1]: r["reason"] for r in report.rejected}
    assert set(reasons) == {"corrupt.jpg", "truncated.jpg", "notes.jpg", "empty.png", "bomb.png",
                            "readme.txt"}
    assert "empty file" in reasons["empty.png"]
    assert "not an image" in reasons["notes.jpg"]
    assert "truncated" in reasons["truncated.jpg"] or "corrupt" in reasons["truncated.jpg"]
    assert "too large" in reasons["bomb.png"] and "decompression bomb" in reasons["bomb.png"]
    assert "not an image file type" in reasons["readme.txt"]
    assert report.added == 6  # every odd-but-valid image, converted

    with session_scope(settings) as session:
        rows = {r.original_name: r for r in session.query(ImageRow)}
    assert rows["rotated.jpg"].width == SMALL[1] and rows["rotated.jpg"].height == SMALL[0]
    assert rows["cmyk.jpg"].extra["converted_from"] == "CMYK"
    assert rows["sixteen.png"].extra["converted_from"] == "I;16"
    from core.store import ImageStore

    store = ImageStore(settings)
    for row in rows.values():
        assert store.open_rgb(row.path).mode == "RGB"
        # Converted images are stored as the normalised RGB PNG, not the odd original.
        if row.extra and "converted_from" in row.extra:
            assert row.path.endswith(".png")


def test_zip_with_traversal_absolute_and_bomb_members(settings, tmp_path):
    from core.ingest import import_dataset

    work = tmp_path / "work"
    work.mkdir()
    archive = work / "evil.zip"
    good = jpeg_bytes(fruit_image("lime", 1, SMALL))
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("../escape.jpg"), good)
        zf.writestr(zipfile.ZipInfo("lime/../../escape2.jpg"), good)
        zf.writestr(zipfile.ZipInfo("/tmp/absolute.jpg"), good)
        zf.writestr(zipfile.ZipInfo("C:/windows/drive.jpg"), good)
        zf.writestr("lime/zipbomb.jpg", b"\x00" * (4 << 20), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("lime/good.jpg", good)
        link = zipfile.ZipInfo("lime/link.jpg")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    before = {p for p in tmp_path.rglob("*")}
    report = import_dataset(archive, settings)
    reasons = {r["path"]: r["reason"] for r in report.rejected}
    assert "absolute" in reasons["/tmp/absolute.jpg"] and "absolute" in reasons["C:/windows/drive.jpg"]
    assert "'..'" in reasons["../escape.jpg"] and "'..'" in reasons["lime/../../escape2.jpg"]
    assert "zip bomb" in reasons["lime/zipbomb.jpg"]
    assert "symbolic link" in reasons["lime/link.jpg"]
    assert report.added == 1
    home = settings.home_path
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(home == p or home in p.parents for p in created), created
    assert not any(p.name.startswith("escape") or p.name == "absolute.jpg"
                   for p in tmp_path.parent.rglob("*") if p.is_file())
    assert not (tmp_path.parent / "escape.jpg").exists()


def test_decode_limits_follow_settings(settings, tmp_path, monkeypatch):
    from core.config import get_settings
    from core.ingest import import_dataset

    monkeypatch.setenv("SYNTHLAB_MAX_IMAGE_PIXELS", "1000")
    monkeypatch.setenv("SYNTHLAB_MAX_IMPORT_FILE_MB", "1")
    strict = get_settings()
    folder = tmp_path / "big" / "apple"
    folder.mkdir(parents=True)
    (folder / "big.jpg").write_bytes(jpeg_bytes(fruit_image("apple", 1, (60, 60))))
    (folder / "huge.png").write_bytes(b"\x00" * (1 << 20 + 1))
    report = import_dataset(tmp_path / "big", strict)
    reasons = {r["path"]: r["reason"] for r in report.rejected}
    assert "too large" in reasons["apple/big.jpg"] and "MB" in reasons["apple/huge.png"]
    assert report.added == 0


def test_nothing_usable_is_a_clear_error_and_leaves_no_empty_dataset(settings, tmp_path):
    import pytest

    from core.db.engine import session_scope
    from core.db.models import Dataset
    from core.ingest import SourceError, import_dataset

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no image files to import.*empty"):
        import_dataset(empty, settings)

    notes = tmp_path / "notes" / "apple"
    notes.mkdir(parents=True)
    (notes / "readme.txt").write_text("hello")
    with pytest.raises(SourceError, match=r"1 files skipped \(apple/readme.txt: not an image"):
        import_dataset(tmp_path / "notes", settings)

    # Files that look like images but none decodes: a report of reasons, no dataset.
    broken = tmp_path / "broken" / "apple"
    broken.mkdir(parents=True)
    for name, data in _bad().items():
        (broken / name).write_bytes(data)
    report = import_dataset(tmp_path / "broken", settings)
    assert report.added == 0 and len(report.rejected) == len(_bad())
    assert report.dataset_id is None
    with session_scope(settings) as session:
        assert session.query(Dataset).count() == 0

    # The first usable image makes the dataset.
    (broken / "good.jpg").write_bytes(jpeg_bytes(fruit_image("apple", 3, SMALL)))
    report = import_dataset(tmp_path / "broken", settings)
    assert report.added == 1 and report.dataset_id is not None
    with session_scope(settings) as session:
        assert [d.name for d in session.query(Dataset)] == ["broken"]
