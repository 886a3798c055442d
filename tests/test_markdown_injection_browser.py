"""In Chromium: class, dataset, job and user names carrying markdown links, images and bare
web addresses render as text on Home, Import and Gallery: no <a> or <img> points at their
hosts (issue 13, point 8; AppTest shows markdown source, only a browser shows the links)."""

from __future__ import annotations

import pytest

from tests.browser import browser_page, live_server, wait_for_app  # noqa: F401 - fixtures
from tests.imagemaker import make_imagefolder
from tests.test_markdown_injection import BARE, IMAGE, LINK, WWW

LIVE = ('a[href*="example.invalid"], a[href*="127.0.0.1:9"], '
        'img[src*="example.invalid"], img[src*="127.0.0.1:9"]')


@pytest.mark.browser
def test_names_with_links_and_images_render_as_text(live_server, browser_page, tmp_path,  # noqa: F811
                                                    output_dir):
    from sqlalchemy import update

    from core.db.engine import run_write
    from core.db.models import ImageClass
    from core.ingest import ImportOptions, import_dataset
    from core.ingest.jobs import submit_import

    settings = live_server.settings
    folder = make_imagefolder(tmp_path / "fruit", ["apple", "lime"], 2, size=(24, 24))
    import_dataset(folder, settings, ImportOptions(dataset=f"{IMAGE} {WWW}", added_by=BARE))
    run_write(lambda s: s.execute(update(ImageClass).where(ImageClass.name == "apple")
                                  .values(display_name=f"{IMAGE} {LINK}")), settings)
    run_write(lambda s: s.execute(update(ImageClass).where(ImageClass.name == "lime")
                                  .values(display_name=BARE)), settings)
    # A job whose title and (once the worker fails it) error carry the payloads.
    submit_import(f"/nowhere/{LINK}", dataset=f"{LINK} {BARE}", user=BARE, settings=settings)

    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 1500})
    page.goto(live_server.url)
    wait_for_app(page)
    for name, ready in (("Home", "Images per class and source"), ("Import", "Import jobs"),
                        ("Gallery", "images · page 1 of 1")):
        page.get_by_role("link", name=name, exact=True).click()
        page.get_by_text(ready).first.wait_for()
        wait_for_app(page)
        if name == "Import":  # the worker fails the job: its error is shown too
            page.get_by_text("path does not exist").first.wait_for()
        page.screenshot(path=output_dir / f"{name.lower()}.png", full_page=True)
        live = page.eval_on_selector_all(LIVE, "els => els.map(e => e.outerHTML)")
        assert not live, f"{name}: user text became links or images: {live}"
        assert "example.invalid" in page.inner_text("body"), f"{name}: payload not shown"
    assert "Traceback" not in live_server.log_tail()
