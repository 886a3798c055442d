"""A real browser: open the dashboard, import a small folder on the Import page, see it in the Gallery."""

from __future__ import annotations

import pytest

from tests.browser import browser_page, live_server, wait_for_app  # noqa: F401 - fixtures
from tests.imagemaker import make_imagefolder


@pytest.mark.browser
def test_import_a_folder_and_see_it_in_the_gallery(live_server, browser_page, output_dir,  # noqa: F811
                                                   tmp_path):
    page = browser_page
    # Streamlit scrolls inside its own container: a tall window puts whole pages in a shot.
    page.set_viewport_size({"width": 1400, "height": 1500})
    folder = make_imagefolder(tmp_path / "orchard", ["apple", "banana", "plum"], 3, size=(64, 48))

    page.goto(live_server.url)
    wait_for_app(page)
    page.get_by_text("No images yet").wait_for()
    page.screenshot(path=output_dir / "home-empty.png", full_page=True)

    page.get_by_role("link", name="Import").click()
    page.get_by_role("heading", name="Import a dataset").wait_for()
    wait_for_app(page)
    page.get_by_text("Folder or zip on the server").click()
    page.get_by_label("Server path (a folder or a .zip)").fill(str(folder))
    page.get_by_label("Dataset name").fill("orchard")
    page.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text("queued as job").wait_for()
    # The worker the dashboard started runs the job; the report appears when it is done.
    page.get_by_text("Dataset orchard (imagefolder layout)").wait_for()
    page.screenshot(path=output_dir / "import.png", full_page=True)

    page.get_by_role("link", name="Gallery").click()
    page.get_by_role("heading", name="Gallery").wait_for()
    wait_for_app(page)
    try:
        page.get_by_text("9 images · page 1 of 1").wait_for()
    except Exception:
        page.screenshot(path=output_dir / "gallery-failed.png", full_page=True)
        raise
    thumbnails = page.locator('[data-testid="stImage"] img')
    thumbnails.nth(8).wait_for()
    assert thumbnails.count() == 9
    page.screenshot(path=output_dir / "gallery.png", full_page=True)

    page.get_by_role("link", name="Home").click()
    page.get_by_text("Images per class and source").wait_for()
    wait_for_app(page)
    page.screenshot(path=output_dir / "home.png", full_page=True)
    assert "Traceback" not in live_server.log_tail()
