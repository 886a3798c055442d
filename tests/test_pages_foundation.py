"""Home, Import and Gallery pages through ``streamlit.testing.v1.AppTest``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.imagemaker import make_imagefolder

SMALL = (32, 24)
ROOT = Path(__file__).resolve().parent.parent


def _page(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=60)
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.error] + [e.value for e in at.info] + [e.value for e in at.warning]
    parts += [s.value for s in at.success] + [str(m.value) for m in at.metric]
    parts += [h.value for h in at.subheader] + [h.value for h in at.title]
    return "\n".join(str(p) for p in parts)


@pytest.fixture()
def imported(settings, tmp_path):
    from core.ingest import ImportOptions, import_dataset

    import_dataset(make_imagefolder(tmp_path / "fruit", ["apple", "lime"], 4, size=SMALL),
                   settings, ImportOptions(dataset="fruit", added_by="ann"))
    return settings


def test_home_empty_and_with_data(settings, tmp_path):
    at = _page("home").run()
    assert not at.exception
    text = _texts(at)
    assert "No images yet" in text and "Diffusion models" in text
    assert "CPU" in text or "CUDA" in text or "MPS" in text

    from core.ingest import import_dataset

    import_dataset(make_imagefolder(tmp_path / "fruit", ["apple", "plum"], 2, size=SMALL), settings)
    at = _page("home").run()
    assert not at.exception
    assert at.metric[0].value == "4"
    assert len(at.get("plotly_chart")) == 1
    frames = [df.value for df in at.dataframe]
    assert any("fruit" in set(f.get("dataset", [])) for f in frames)


def test_import_page_server_path_runs_in_the_worker(settings, tmp_path):
    from core.worker import run_worker

    root = make_imagefolder(tmp_path / "orchard", ["apple", "banana"], 3, size=SMALL)
    (root / "apple" / "bad.jpg").write_bytes(b"garbage")
    at = _page("import_data").run()
    assert not at.exception
    at.radio(key="import_from").set_value("Folder or zip on the server").run()
    assert not at.get("file_uploader")  # only the chosen source's input is shown
    at.text_input(key="import_path").set_value(str(tmp_path / "nowhere"))
    at.button[0].click().run()
    assert any("does not exist" in e.value for e in at.error)

    at.text_input(key="import_path").set_value(str(root))
    at.text_input(key="import_dataset").set_value("orchard")
    at.button[0].click().run()
    assert not at.exception and any("queued as job" in s.value for s in at.success)
    assert run_worker(settings, once=True) == 0
    at.run()
    text = _texts(at)
    assert "Dataset **orchard**" in text
    assert [m.value for m in at.metric] == ["6", "0", "1"]
    # Rejected files are a table (every reason whole), not a grid that cuts long cells.
    rejected = next(t.value for t in at.table if "reason" in t.value.columns)
    assert list(rejected["path"]) == ["apple/bad.jpg"]
    assert list(rejected["reason"]) == ["not an image (unrecognised format)"]
    added = next(df.value for df in at.dataframe if "split" in df.value.columns)
    assert len(added) == 6

    from core import jobs

    job = jobs.list_jobs(kind="import", limit=1)[0]
    assert job.status == "done" and job.created_by == "anonymous"


def test_import_page_uploads_a_zip_and_a_folder(settings, tmp_path):
    from core import gallery
    from core.ingest.jobs import uploads_dir
    from core.worker import run_worker

    root = make_imagefolder(tmp_path / "src", ["lime"], 3, size=SMALL)
    archive = tmp_path / "limes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in root.rglob("*.jpg"):
            zf.write(path, path.relative_to(root).as_posix())
    at = _page("import_data").run()
    at.radio(key="import_from").set_value("Upload files").run()
    at.button[0].click().run()
    assert any("Choose the files" in e.value for e in at.error)
    at.file_uploader(key="import_uploads").set_value(
        ("../../limes.zip", archive.read_bytes(), "application/zip"))
    at.text_input(key="import_dataset").set_value("uploaded")
    at.button[0].click().run()
    assert not at.exception and any("queued as job" in s.value for s in at.success)
    run_worker(settings, once=True)
    assert gallery.count(gallery.GalleryFilter(classes=["lime"])) == 3
    assert not any(uploads_dir(settings).iterdir())  # the staged upload is gone
    at.run()
    assert "Dataset **uploaded**" in _texts(at)

    # A folder upload names each file by its path inside the folder: class folders survive.
    other = make_imagefolder(tmp_path / "orchard", ["apple", "plum"], 2, seed=7, size=SMALL)
    files = [(f"orchard/{p.relative_to(other).as_posix()}", p.read_bytes(), "image/jpeg")
             for p in sorted(other.rglob("*.jpg"))]
    at.radio(key="import_from").set_value("Upload a folder").run()
    at.file_uploader(key="import_folder").set_value(files)
    at.text_input(key="import_dataset").set_value("orchard")
    at.button[0].click().run()
    assert not at.exception
    run_worker(settings, once=True)
    at.run()
    assert "Dataset **orchard** (imagefolder layout)" in _texts(at)
    assert gallery.count(gallery.GalleryFilter(classes=["apple", "plum"])) == 4


def test_gallery_filter_detail_relabel_exclude_delete(imported):
    from core import gallery

    at = _page("gallery").run()
    assert not at.exception
    assert "**8 images**" in _texts(at)
    assert len(at.get("image")) == 8  # one thumbnail per image

    at.multiselect(key="g_classes").set_value(["lime"])
    at.sidebar.button[0].click().run()  # Apply
    assert "**4 images**" in _texts(at)

    first = gallery.page(gallery.GalleryFilter(classes=["lime"])).rows[0]
    at.button(key=f"g_open_{first.id}").click().run()
    assert not at.exception
    assert f"Image #{first.id}: Lime" in _texts(at)

    at.button(key="FormSubmitter:g_relabel_form-Relabel").click().run()  # unchanged: says so
    assert any("already has this class" in i.value for i in at.info)
    at.text_input(key="g_relabel_new").set_value("Key Lime")
    at.button(key="FormSubmitter:g_relabel_form-Relabel").click().run()
    assert not at.exception
    assert gallery.image_detail(first.id)["class"] == "key_lime"
    assert any("to Key Lime" in s.value for s in at.success)

    at.button(key="g_toggle_excluded").click().run()
    assert gallery.image_detail(first.id)["excluded"] is True
    at.button(key="g_toggle_excluded").click().run()
    assert gallery.image_detail(first.id)["excluded"] is False

    assert at.button(key="g_delete").disabled
    at.checkbox(key="g_confirm_delete").check().run()
    at.button(key="g_delete").click().run()
    assert not at.exception
    assert gallery.image_detail(first.id) is None

    at.radio(key="g_bulk_action").set_value("Exclude")
    at.button(key="FormSubmitter:g_bulk_form-Apply to all filtered images").click().run()
    assert any("Tick the confirmation" in e.value for e in at.error)
    at.checkbox(key="g_bulk_confirm").check()
    at.button(key="FormSubmitter:g_bulk_form-Apply to all filtered images").click().run()
    assert not at.exception and any("Excluded 3 images" in m.value for m in at.success)
    assert gallery.count(gallery.GalleryFilter(classes=["lime"])) == 0
    at.radio(key="g_excluded").set_value("only")
    at.sidebar.button[0].click().run()
    assert "**3 images**" in _texts(at)

    at.button(key="g_export").click().run()
    assert not at.exception
    assert at.get("download_button")


def test_gallery_pages_through_many_rows(imported, tmp_path):
    from core.ingest import import_dataset

    import_dataset(make_imagefolder(tmp_path / "more", ["plum"], 6, seed=3, size=SMALL), imported)
    at = _page("gallery").run()
    at.select_slider(key="g_page_size").set_value(12)
    at.sidebar.button[0].click().run()
    assert "**14 images** · page 1 of 2" in _texts(at) and len(at.get("image")) == 12
    first = _shown_ids(at)
    at.button(key="g_next").click().run()
    assert "page 2 of 2" in _texts(at) and len(at.get("image")) == 2
    assert at.button(key="g_next").disabled
    second = _shown_ids(at)
    assert len(second) == 2 and not set(second) & set(first)
    at.button(key="g_prev").click().run()  # keyset back from page 2's first row
    assert "page 1 of 2" in _texts(at) and _shown_ids(at) == first


def _shown_ids(at) -> list[int]:
    return [int(b.key.removeprefix("g_open_")) for b in at.button if b.key.startswith("g_open_")]
