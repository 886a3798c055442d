"""Gallery queries, curation, export and the store/index check, on a real SQLite file."""

from __future__ import annotations

import os
import re
import time
import zipfile

import pytest

from tests.imagemaker import fruit_image, make_imagefolder

SMALL = (32, 24)


@pytest.fixture()
def indexed(settings, tmp_path):
    """Two real datasets (one with splits) and a few synthetic images with prompts."""
    from core.catalog import add_image, get_or_create_class, get_or_create_dataset
    from core.db.engine import session_scope
    from core.imageio import decode_image
    from core.ingest import ImportOptions, import_dataset
    from core.store import ImageStore

    import_dataset(make_imagefolder(tmp_path / "a", ["apple", "banana"], 4, size=SMALL), settings,
                   ImportOptions(dataset="real-a", added_by="ann"))
    root = tmp_path / "b"
    make_imagefolder(root / "Training", ["apple"], 3, seed=5, size=SMALL)
    make_imagefolder(root / "Test", ["apple"], 2, seed=6, size=SMALL)
    import_dataset(root, settings, ImportOptions(dataset="real-b", added_by="bob"))
    store = ImageStore(settings)
    with session_scope(settings, write=True) as session:
        dataset = get_or_create_dataset(session, "gen-1", source="synthetic")
        apple = get_or_create_class(session, "apple")
        for i, prompt in enumerate(["a photo of an apple", "a red apple, 50% off", "an apple_tree"]):
            image = fruit_image("apple", 900 + i, (40, 40))
            add_image(session, store, decode_image(_png(image)), image_class=apple, dataset=dataset,
                      generation={"prompt": prompt, "seed": i, "model": "tiny"}, added_by="gen")
    return settings


def _png(image):
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_filters_sort_and_pages(indexed):
    from core import gallery

    everything = gallery.page(gallery.GalleryFilter(), limit=100)
    assert everything.total == 16
    assert [r.id for r in everything.rows] == sorted((r.id for r in everything.rows), reverse=True)
    oldest = gallery.page(gallery.GalleryFilter(), sort="oldest", limit=5, offset=5)
    assert [r.id for r in oldest.rows] == sorted(r.id for r in everything.rows)[5:10]
    assert oldest.page_count == 4

    assert gallery.count(gallery.GalleryFilter(classes=["banana"])) == 4
    assert gallery.count(gallery.GalleryFilter(sources=["synthetic"])) == 3
    b = next(d.id for d in gallery.datasets(indexed) if d.name == "real-b")
    assert gallery.count(gallery.GalleryFilter(datasets=[b], splits=["test"])) == 2
    assert gallery.count(gallery.GalleryFilter(splits=[""])) == 11  # no split tag
    # Prompt text is matched literally: % and _ are not wildcards.
    assert gallery.count(gallery.GalleryFilter(prompt_contains="APPLE")) == 3
    assert gallery.count(gallery.GalleryFilter(prompt_contains="50%")) == 1
    assert gallery.count(gallery.GalleryFilter(prompt_contains="e_t")) == 1
    by_size = gallery.page(gallery.GalleryFilter(), sort="size", limit=3)
    assert all(r.width * r.height == 1600 for r in by_size.rows)
    by_class = gallery.page(gallery.GalleryFilter(), sort="class", limit=100).rows
    assert by_class[-1].class_name == "banana"
    with pytest.raises(ValueError):
        gallery.page(gallery.GalleryFilter(), sort="random")


def test_counts_detail_relabel_exclude_restore(indexed):
    from core import gallery
    from core.users import audit

    counts = {(r["class"], r["source"]): r["count"] for r in gallery.counts_by_class_and_source(indexed)}
    assert counts == {("apple", "real"): 9, ("apple", "synthetic"): 3, ("banana", "real"): 4}
    synthetic = gallery.page(gallery.GalleryFilter(sources=["synthetic"])).rows
    detail = gallery.image_detail(synthetic[0].id)
    assert detail["prompt"] and detail["model"] == "tiny" and detail["dataset"] == "gen-1"

    ids = [r.id for r in gallery.page(gallery.GalleryFilter(classes=["banana"])).rows[:2]]
    assert gallery.relabel(ids, "Bell Pepper", actor="carol") == 2
    assert gallery.count(gallery.GalleryFilter(classes=["bell_pepper"])) == 2
    assert gallery.set_excluded(ids, True, actor="carol") == 2
    assert gallery.count(gallery.GalleryFilter(classes=["bell_pepper"])) == 0
    assert gallery.count(gallery.GalleryFilter(only_excluded=True)) == 2
    assert gallery.stats()["excluded"] == 2
    gallery.set_excluded(ids, False, actor="carol")
    assert gallery.count(gallery.GalleryFilter(classes=["bell_pepper"])) == 2
    actions = [e.action for e in audit.entries(actor="carol")]
    assert actions == ["restore", "exclude", "relabel"]


def test_signed_in_user_may_only_change_own_images(indexed):
    from core import gallery
    from core.users.identity import AUTH_PASSWORD, Identity
    from core.users.permissions import PermissionDenied

    from core.users import accounts

    # Password-mode identities are re-read from their accounts at each action (issue 13).
    accounts.add_user("ann", "anns-password")
    bobs = [r.id for r in gallery.page(gallery.GalleryFilter(classes=["banana"])).rows]
    ann = Identity("ann", auth_mode=AUTH_PASSWORD, verified=True)
    assert gallery.relabel(bobs, "lime", actor=ann) == len(bobs)  # ann imported real-a
    b_rows = gallery.page(gallery.GalleryFilter(splits=["test"])).rows
    with pytest.raises(PermissionDenied):
        gallery.delete_images([r.id for r in b_rows], actor=ann)
    assert gallery.count(gallery.GalleryFilter(splits=["test"])) == 2


def test_delete_removes_row_then_file_and_export_zip(indexed, tmp_path):
    from core import gallery, gallery_export
    from core.store import ImageStore

    store = ImageStore(indexed)
    victim = gallery.page(gallery.GalleryFilter(classes=["banana"]), limit=1).rows[0]
    thumb = store.thumbnail_path(victim.path)
    assert gallery.delete_images([victim.id], actor="dan") == 1
    assert gallery.image_detail(victim.id) is None
    assert not store.exists(victim.path) and not thumb.exists()

    out = tmp_path / "export" / "apples.zip"
    result = gallery_export.export_zip(gallery.GalleryFilter(classes=["apple"], sources=["real"]),
                                       out)
    assert result["images"] == 9 and result["missing_files"] == []
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert len(names) == 10 and all(n.startswith("apple/") for n in names if n != "labels.csv")
        assert zf.testzip() is None
    assert not [p for p in out.parent.iterdir() if p.name != "apples.zip"]


def _age(path, seconds=3600):
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_check_finds_and_repairs_orphan_file_and_row_without_file(indexed):
    from core import gallery, maintenance
    from core.imageio import decode_image
    from core.store import ImageStore

    store = ImageStore(indexed)
    assert maintenance.check(indexed).ok
    orphan = store.put(decode_image(_png(fruit_image("plum", 77, SMALL))))  # file, no row
    _age(store.abspath(orphan.relpath))
    victim = gallery.page(gallery.GalleryFilter(), limit=1).rows[0]
    store.thumbnail_path(victim.path)
    store.abspath(victim.path).unlink()  # row, no file
    leftover = indexed.tmp_dir / ".part-crashed.jpg"
    leftover.write_bytes(b"half")
    _age(leftover)
    fresh_orphan = store.put(decode_image(_png(fruit_image("lime", 78, SMALL))))  # maybe in use
    from core.ingest.jobs import stage_uploads, submit_import

    abandoned = stage_uploads([("a.jpg", b"x")], indexed)  # its job is long gone
    _age(abandoned)
    waiting = stage_uploads([("b.zip", b"y")], indexed)  # a queued job still needs it
    submit_import(str(waiting), settings=indexed)
    _age(waiting.parent)

    report = maintenance.check(indexed)
    assert not report.ok and report.orphan_files == [orphan.relpath]
    assert report.rows_missing_file == [{"id": victim.id, "path": victim.path}]
    assert sorted(report.temp_files) == ["tmp/.part-crashed.jpg", f"uploads/{abandoned.name}"]
    assert f"images/{fresh_orphan.relpath}" in report.skipped_recent
    assert store.exists(orphan.relpath)  # a check alone changes nothing

    repaired = maintenance.check(indexed, repair=True)
    assert len(repaired.actions) >= 3
    assert not store.exists(orphan.relpath) and store.exists(fresh_orphan.relpath)
    assert gallery.image_detail(victim.id) is None and not leftover.exists()
    assert not abandoned.exists() and waiting.exists()
    after = maintenance.check(indexed)
    assert after.orphan_files == [] and after.rows_missing_file == [] and after.temp_files == []


def test_update_every_filtered_image(indexed):
    from core import gallery
    from core.users import audit
    from core.users.identity import AUTH_PASSWORD, Identity
    from core.users.permissions import PermissionDenied

    synthetic = gallery.GalleryFilter(sources=["synthetic"])
    assert gallery.update_filtered(synthetic, excluded=True, actor="eve") == 3
    assert gallery.count(synthetic) == 0 and gallery.stats()["excluded"] == 3
    hidden = gallery.GalleryFilter(sources=["synthetic"], only_excluded=True)
    assert gallery.update_filtered(hidden, excluded=False, actor="eve") == 3
    assert gallery.count(synthetic) == 3
    assert gallery.update_filtered(gallery.GalleryFilter(classes=["banana"]),
                                   class_name="plantain", actor="eve") == 4
    assert gallery.count(gallery.GalleryFilter(classes=["plantain"])) == 4
    assert [e.action for e in audit.entries(actor="eve")] == ["relabel", "restore", "exclude"]
    from core.users import accounts

    accounts.add_user("bob", "bobs-password")  # an identity must have a current account
    bob = Identity("bob", auth_mode=AUTH_PASSWORD, verified=True)
    with pytest.raises(PermissionDenied):  # real-a belongs to ann
        gallery.update_filtered(gallery.GalleryFilter(classes=["plantain"]), excluded=True, actor=bob)
    with pytest.raises(ValueError):
        gallery.update_filtered(synthetic)


def test_export_names_are_readable_safe_and_labels_csv_lists_each_image(indexed, tmp_path):
    import csv
    import io

    from core import gallery, gallery_export
    from core.catalog import add_image, get_or_create_class, get_or_create_dataset
    from core.db.engine import session_scope
    from core.imageio import decode_image
    from core.store import ImageStore

    # A dataset name is free user text: it must not steer a file out of its folder.
    with session_scope(indexed, write=True) as session:
        evil = get_or_create_dataset(session, "../../up/..\\evil name", source="synthetic")
        add_image(session, ImageStore(indexed), decode_image(_png(fruit_image("plum", 5, SMALL))),
                  image_class=get_or_create_class(session, "plum"), dataset=evil,
                  generation={"prompt": 'a "plum", on\na table', "seed": 7, "model": "m/x"})
    out = tmp_path / "all.zip"
    result = gallery_export.export_zip(gallery.GalleryFilter(), out)
    assert result["images"] == 17 and result["missing_files"] == []
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        labels = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
        assert zf.testzip() is None
    images = [n for n in names if n != "labels.csv"]
    assert len(images) == len(set(images)) == 17
    for name in images:
        folder, file = name.split("/")
        assert re.fullmatch(r"[a-z0-9_]+", folder) and re.fullmatch(r"[A-Za-z0-9._-]+", file)
        assert ".." not in name and not name.startswith("/")
    # Readable: <class>/<source>_<dataset>_<id>.<ext>, never the hash.
    by_id = {int(row["id"]): row for row in labels}
    detail = gallery.image_detail(min(by_id))
    assert by_id[detail["id"]]["file"] == f"{detail['class']}/real_real-a_{detail['id']}.jpg"
    assert not any(detail["sha256"][:16] in n for n in names)
    assert list(labels[0]) == list(gallery_export.LABEL_COLUMNS)
    assert sorted(row["file"] for row in labels) == sorted(images)
    plum = next(row for row in labels if row["class"] == "plum")
    assert plum["file"].startswith("plum/synthetic_up_evil_name_")
    assert (plum["prompt"], plum["seed"], plum["model"]) == ('a "plum", on\na table', "7", "m/x")
    assert plum["source"] == "synthetic" and plum["dataset"] == "../../up/..\\evil name"
    apple = gallery.image_detail(int(next(r["id"] for r in labels if r["split"] == "test")))
    row = by_id[apple["id"]]
    assert (row["class"], row["dataset"], row["split"], row["width"], row["height"], row["sha256"]) == (
        apple["class"], apple["dataset"], "test", str(apple["width"]), str(apple["height"]),
        apple["sha256"])
    # The name guard on its own: a class folder cannot be "..", "labels.csv" or empty.
    taken = {"labels.csv"}
    row = {"class": "../..", "source": "real", "dataset": "a/b", "id": 3, "path": "x/y.JPG"}
    assert gallery_export.archive_name(row, taken) == "unlabelled/real_a_b_3.jpg"
    assert gallery_export.archive_name({**row, "class": "labels.csv"}, taken).startswith(
        "labels_csv/")
    assert gallery_export.archive_name(row, taken) == "unlabelled/real_a_b_3-2.jpg"


def test_relabel_audit_records_the_old_class(indexed):
    from core import gallery
    from core.users import audit

    apples = [r.id for r in gallery.page(gallery.GalleryFilter(classes=["apple"]), limit=2).rows]
    gallery.relabel(apples[:1], "Pear", actor="fay")
    entry = audit.entries(actor="fay", action="relabel")[0]
    assert entry.detail["class"] == "pear" and entry.detail["old_class"] == "apple"
    banana = gallery.page(gallery.GalleryFilter(classes=["banana"]), limit=1).rows[0].id
    gallery.relabel([apples[1], banana], "quince", actor="fay")
    entry = audit.entries(actor="fay", action="relabel")[0]
    assert entry.detail["old_class"] == {"apple": 1, "banana": 1}
    gallery.update_filtered(gallery.GalleryFilter(classes=["pear"]), class_name="apple", actor="fay")
    entry = audit.entries(actor="fay", action="relabel")[0]
    assert entry.detail["class"] == "apple" and entry.detail["old_class"] == "pear"


def test_revert_puts_class_and_excluded_back_even_for_many_ids(indexed):
    from core import gallery

    before = gallery.curation_state(flt=gallery.GalleryFilter())
    assert len(before) == 16
    gallery.update_filtered(gallery.GalleryFilter(classes=["apple"]), class_name="pear", actor="gil")
    gallery.update_filtered(gallery.GalleryFilter(), excluded=True, actor="gil")
    # Ids deleted since are skipped.
    gone = {10_000_000 + i: ("apple", False) for i in range(3)}
    from core.users.identity import unverified

    assert gallery.revert({**before, **gone}, actor=unverified("gil")) == 16  # as the page does
    assert gallery.curation_state(flt=gallery.GalleryFilter(include_excluded=True)) == before


def test_square_thumbnails_and_plurals(indexed):
    from PIL import Image

    from core import gallery
    from core.store import ImageStore
    from core.wording import plural

    store = ImageStore(indexed)
    row = gallery.page(gallery.GalleryFilter(classes=["banana"]), limit=1).rows[0]
    assert (row.width, row.height) == SMALL
    thumb = store.square_thumbnail_path(row.path, 20)
    with Image.open(thumb) as image:
        assert image.size == (20, 20)
    assert store.square_thumbnail_path(row.path, 20) == thumb  # cached
    store.delete(row.path)
    assert not thumb.exists()
    assert [plural(n, "image") for n in (0, 1, 2, 1234)] == [
        "0 images", "1 image", "2 images", "1,234 images"]
    assert plural(2, "class", "classes") == "2 classes"
    from core.wording import sentence

    # Errors on the pages start with a capital; a message opening with a name keeps it.
    assert sentence(" no dataset named x ") == "No dataset named x"
    assert sentence("broken.png: not an image") == "broken.png: not an image"
    assert sentence("'Apple' is taken") == "'Apple' is taken"
    assert sentence("SourceError: path does not exist: /x") == "Path does not exist: /x"
