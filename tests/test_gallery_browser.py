"""The Gallery in a real browser: a grid of same-size square thumbnails, a click on a
thumbnail opens the image, and Next in the detail view moves to the next image."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser import LiveServer, browser_page, start_server, wait_for_app  # noqa: F401
from tests.imagemaker import make_imagefolder


@pytest.fixture()
def gallery_server(tmp_path) -> Iterator[LiveServer]:
    # No job runs here: without the worker the dashboard starts and stops sooner, and
    # nothing else competes for the CPU while the page loads.
    server = start_server(tmp_path / "browser-home", env={"SYNTHLAB_AUTOSTART_WORKER": "0"})
    try:
        yield server
    finally:
        server.stop(grace_s=3)


@pytest.mark.browser
def test_square_grid_click_opens_and_next_moves_on(gallery_server, browser_page,  # noqa: F811
                                                   output_dir, tmp_path):
    from core import gallery
    from core.db.engine import init_db
    from core.ingest import ImportOptions, import_dataset

    settings = gallery_server.settings
    init_db(settings)
    # Wide and tall originals side by side: the grid must still be square and even.
    import_dataset(make_imagefolder(tmp_path / "wide", ["apple"], 4, size=(64, 32)), settings,
                   ImportOptions(dataset="wide"))
    import_dataset(make_imagefolder(tmp_path / "tall", ["lime"], 3, seed=4, size=(24, 60)),
                   settings, ImportOptions(dataset="tall"))
    newest = [row.id for row in gallery.page(gallery.GalleryFilter(), settings=settings).rows]

    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.goto(f"{gallery_server.url}/gallery")
    wait_for_app(page)
    page.get_by_text("7 images · page 1 of 1").wait_for(timeout=60_000)
    thumbs = page.locator('[class*="st-key-g_cell_"] [data-testid="stImage"] img')
    thumbs.nth(6).wait_for()
    page.wait_for_function(  # every picture decoded, so the boxes have their final size
        """() => [...document.querySelectorAll('[class*="st-key-g_cell_"] img')]
                 .every(img => img.complete && img.naturalWidth > 0)""")
    boxes = [thumbs.nth(i).bounding_box() for i in range(thumbs.count())]
    assert len(boxes) == 7
    sizes = {(round(b["width"]), round(b["height"])) for b in boxes}
    assert len(sizes) == 1, sizes
    width, height = sizes.pop()
    assert width == height and width > 60, (width, height)
    page.screenshot(path=output_dir / "gallery-grid.png", full_page=True)

    # What is under the middle of a thumbnail is its own "open" button: the picture itself
    # is the click target.
    first = boxes[0]
    x, y = first["x"] + first["width"] / 2, first["y"] + first["height"] / 2
    hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y).closest('button')?.innerText",
                        [x, y])
    assert hit == f"#{newest[0]}"
    page.mouse.click(x, y)
    page.get_by_role("heading", name=f"Image #{newest[0]}:").wait_for(timeout=60_000)
    page.get_by_text("1 of 7 images in this list").wait_for()
    page.get_by_text("Class:").first.wait_for()
    page.screenshot(path=output_dir / "gallery-detail.png", full_page=True)

    page.locator(".st-key-g_detail_next button").click()
    page.get_by_role("heading", name=f"Image #{newest[1]}:").wait_for(timeout=60_000)
    page.get_by_text("2 of 7 images in this list").wait_for()
    assert "Traceback" not in gallery_server.log_tail()
