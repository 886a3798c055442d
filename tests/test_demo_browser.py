"""The offline demo in a real browser: an empty Home offers it, one click builds it (the
dashboard's own worker draws the pictures and makes the demo model), the Gallery and the
Generate page show it, and one click on Home removes it again. Small sizes through the
demo's settings: 6 pictures per class, one generated image per class, one epoch."""

from __future__ import annotations

import re
import time

import pytest

from tests.browser import (BROWSER_TIMEOUT_MS, browser_page, chromium_missing_reason,  # noqa: F401
                           start_server, wait_for_app)

SMALL_DEMO = {"SYNTHLAB_DEMO_IMAGES_PER_CLASS": "6", "SYNTHLAB_DEMO_GENERATED_PER_CLASS": "1",
              "SYNTHLAB_DEMO_EPOCHS": "1"}


def _demo_images(settings) -> int:  # noqa: ANN001
    from sqlalchemy import func, select

    from core.db.engine import session_scope
    from core.db.models import Dataset, Image

    with session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(Image).join(Dataset)
                              .where(Dataset.name.like("demo:%"))) or 0


def _until(condition, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + BROWSER_TIMEOUT_MS / 1000
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.mark.browser
@pytest.mark.slow
def test_demo_is_built_and_removed_from_home(tmp_path, browser_page, output_dir):  # noqa: F811
    from playwright.sync_api import expect

    from core.demo import DEMO_MODEL_LABEL
    from core.demo.jobs import active_build_job

    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 1500})
    server = start_server(tmp_path / "home", env=SMALL_DEMO)
    try:
        page.goto(server.url)
        wait_for_app(page)
        page.get_by_role("button", name="Build the demo").click()
        expect(page.get_by_text("Demo queued as job")).to_be_visible()
        # The dashboard's worker draws and imports the 3 x 6 pictures, then builds the demo
        # model: wait for the whole build job, not just the pictures (the model comes last).
        _until(lambda: _demo_images(server.settings) >= 18, "the demo's pictures")
        _until(lambda: active_build_job(server.settings) is None, "the demo build job to end")
        page.reload()
        wait_for_app(page)
        expect(page.get_by_role("button", name="Remove the demo")).to_be_visible()
        page.screenshot(path=output_dir / "home-with-demo.png", full_page=True)

        page.get_by_role("link", name="Gallery").click()
        wait_for_app(page)
        # 18 drawn pictures, plus the demo generation's 3 once its job has run (it may have).
        expect(page.get_by_text(re.compile(r"^(18|19|20|21) images$")).first).to_be_visible()
        expect(page.get_by_text("Apple (demo) · real").first).to_be_visible()

        page.get_by_role("link", name="Generate").click()
        wait_for_app(page)
        # The only model here is preselected (the menu is a combobox: the label is its value).
        expect(page.get_by_role("combobox", name="Model")).to_have_value(DEMO_MODEL_LABEL)

        page.get_by_role("link", name="Home").click()
        wait_for_app(page)
        page.get_by_role("button", name="Remove the demo").click()
        expect(page.get_by_text("Demo removed").first).to_be_visible()
        wait_for_app(page)
        expect(page.get_by_role("button", name="Build the demo")).to_be_visible()
        assert _demo_images(server.settings) == 0
    except Exception:
        page.screenshot(path=output_dir / "failed.png", full_page=True)
        raise
    finally:
        server.stop(grace_s=3)
