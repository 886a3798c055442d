"""The Gallery page through AppTest: square grid, facts-first detail, Previous/Next across
pages, Undo after each change, and counts with the right plural."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.imagemaker import fruit_image, make_imagefolder

ROOT = Path(__file__).resolve().parent.parent
SMALL = (32, 24)  # not square: the grid must still be


@pytest.fixture()
def thirteen(settings, tmp_path):
    """12 real images (8 apples, 4 limes) and one synthetic apple with a generation record."""
    import io

    from core.catalog import add_image, get_or_create_class, get_or_create_dataset
    from core.db.engine import session_scope
    from core.imageio import decode_image
    from core.ingest import ImportOptions, import_dataset
    from core.store import ImageStore

    import_dataset(make_imagefolder(tmp_path / "fruit", ["apple"], 8, size=SMALL), settings,
                   ImportOptions(dataset="fruit", added_by="ann"))
    import_dataset(make_imagefolder(tmp_path / "limes", ["lime"], 4, seed=9, size=SMALL), settings,
                   ImportOptions(dataset="limes", added_by="ann"))
    buffer = io.BytesIO()
    fruit_image("apple", 700, (40, 30)).save(buffer, format="PNG")
    with session_scope(settings, write=True) as session:
        add_image(session, ImageStore(settings), decode_image(buffer.getvalue()),
                  image_class=get_or_create_class(session, "apple"),
                  dataset=get_or_create_dataset(session, "gen-1", source="synthetic"),
                  generation={"prompt": "a photo of a red apple", "seed": 4242,
                              "model": "tiny-sd"}, added_by="gen")
    return settings


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.success] + [e.value for e in at.info] + [e.value for e in at.error]
    parts += [h.value for h in at.subheader] + [t.value for t in at.toast]
    parts += [e.label for e in at.expander] + [b.label for b in at.button]
    parts += [c.label for c in at.checkbox]
    return "\n".join(str(p) for p in parts)


def _shown_id(at: AppTest) -> int:
    heading = next(h.value for h in at.subheader if h.value.startswith("Image #"))
    return int(re.match(r"Image #(\d+)", heading).group(1))


def _no_bad_plural(text: str) -> None:
    assert not re.search(r"(?<![\d,])1 images\b", text), text
    assert not re.search(r"\b(?:[02-9]|\d{2,}) image\b", text), text


def test_grid_detail_previous_next_undo_and_plurals(thirteen):
    from core import gallery
    from core.store import ImageStore

    at = AppTest.from_file(str(ROOT / "pages" / "gallery.py"), default_timeout=60).run()
    assert not at.exception
    at.select_slider(key="g_page_size").set_value(12)
    at.sidebar.button[0].click().run()
    text = _texts(at)
    assert "**13 images** · page 1 of 2" in text
    _no_bad_plural(text)
    newest = gallery.page(gallery.GalleryFilter(), limit=13).rows
    # The grid shows the square cached thumbnails, one per image; the "open" control is
    # each thumbnail's own button (laid over it), not a separate link elsewhere.
    assert len(at.get("image")) == 12
    store = ImageStore(thirteen)
    for row in newest[:12]:
        thumb = store.square_thumbnail_path(row.path)
        from PIL import Image

        with Image.open(thumb) as image:
            assert image.size == (thirteen.thumbnail_px, thirteen.thumbnail_px)
    # The selected cell and every other cell are keyed containers (the grid's style hangs
    # on those keys).
    keys = {c.key for c in at.container if c.key}
    assert {f"g_cell_{r.id}" for r in newest[:12]} <= keys

    # Open the synthetic apple (the newest): what people look for first, hashes below.
    at.button(key=f"g_open_{newest[0].id}").click().run()
    assert not at.exception and _shown_id(at) == newest[0].id
    facts = next(m.value for m in at.markdown if m.value.startswith("**Class:**"))
    order = [facts.index(f"**{name}:**") for name in
             ("Class", "Source", "Dataset", "Split", "Prompt", "Seed", "Model", "Size")]
    assert order == sorted(order)
    assert "a photo of a red apple" in facts and "4242" in facts and "tiny" in facts
    assert "40 × 30 px" in facts
    sha = gallery.image_detail(newest[0].id)["sha256"]
    assert sha not in facts
    assert "Hashes, paths and every stored field" in [e.label for e in at.expander]
    table = next(df.value for df in at.dataframe if "field" in df.value.columns)
    assert sha in set(table["value"]) and "path" in set(table["field"])
    assert "1 of 13 images in this list" in _texts(at)
    assert at.button(key="g_detail_prev").disabled

    # Next walks the filtered, sorted list, over the page's edge, and back.
    at.button(key="g_detail_next").click().run()
    assert _shown_id(at) == newest[1].id and not at.button(key="g_detail_prev").disabled
    at.button(key=f"g_open_{newest[10].id}").click().run()
    at.button(key="g_detail_next").click().run()
    assert _shown_id(at) == newest[11].id
    at.button(key="g_detail_next").click().run()  # the 13th: on page 2
    assert _shown_id(at) == newest[12].id and "page 2 of 2" in _texts(at)
    assert at.button(key="g_detail_next").disabled
    at.button(key="g_detail_prev").click().run()  # back to page 1, its last image
    assert _shown_id(at) == newest[11].id and "page 1 of 2" in _texts(at)

    # Exclude says so, with an Undo that really undoes.
    shown = newest[11].id
    at.button(key="g_toggle_excluded").click().run()
    assert gallery.image_detail(shown)["excluded"] is True
    assert any("Excluded 1 image" in s.value for s in at.success)
    assert any("Excluded 1 image" in t.value for t in at.toast)
    # It left the list (excluded images are hidden): Next goes on to the one now in its place.
    assert "No longer on this page of the list" in _texts(at)
    at.button(key="g_detail_next").click().run()
    assert _shown_id(at) == newest[12].id
    at.button(key="g_undo").click().run()
    assert gallery.image_detail(shown)["excluded"] is False
    assert any("Undone: 1 image back as before" in s.value for s in at.success)
    assert "g_undo" not in {b.key for b in at.button}  # no Undo of an Undo

    # Relabel, then Undo puts the old class back.
    shown = newest[12].id
    at.text_input(key="g_relabel_new").set_value("Key Lime")
    at.button(key="FormSubmitter:g_relabel_form-Relabel").click().run()
    assert gallery.image_detail(shown)["class"] == "key_lime"
    assert any("to Key Lime" in s.value for s in at.success)
    at.button(key="g_undo").click().run()
    assert gallery.image_detail(shown)["class"] == "apple"

    # Bulk: exclude the 4 limes; Undo includes exactly those again.
    at.multiselect(key="g_classes").set_value(["lime"])
    at.sidebar.button[0].click().run()
    assert "**4 images**" in _texts(at)
    at.checkbox(key="g_bulk_confirm").check()
    at.button(key="FormSubmitter:g_bulk_form-Apply to all filtered images").click().run()
    assert any("Excluded 4 images" in s.value for s in at.success)
    assert gallery.count(gallery.GalleryFilter(classes=["lime"])) == 0
    at.button(key="g_undo").click().run()
    assert gallery.count(gallery.GalleryFilter(classes=["lime"])) == 4

    # One image: singular everywhere.
    at.multiselect(key="g_classes").set_value([])
    at.multiselect(key="g_sources").set_value(["synthetic"])
    at.sidebar.button[0].click().run()
    text = _texts(at)
    assert "**1 image** · page 1 of 1" in text and "Change all 1 filtered image" in text
    _no_bad_plural(text)
    at.button(key="g_export").click().run()
    assert "Download 1 image" in at.get("download_button")[0].proto.label
