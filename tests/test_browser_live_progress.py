"""A real browser: a job started elsewhere shows up on an open Home page and its progress
moves while the page stays open (no reload, no click), then it reads done.

This is what teammates on a shared server rely on, and it exercises the live panel's
switch from the idle refresh to the fast one and back (``webui.jobs.live_fragment``).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.browser import ROOT, browser_page, start_server, wait_for_app  # noqa: F401 - fixture
from webui.jobs import IDLE_REFRESH_SECONDS


@pytest.mark.browser
def test_progress_of_a_job_started_elsewhere_updates_live(browser_page, tmp_path, output_dir):  # noqa: F811
    from core import jobs

    server = start_server(tmp_path / "home", env={"SYNTHLAB_EXTRA_JOB_MODULES": "tests.crashjobs",
                                                  "PYTHONPATH": str(ROOT)})
    page = browser_page
    try:
        page.goto(server.url)
        wait_for_app(page)
        page.get_by_text("No jobs yet.").wait_for()

        # Another user (here: the test process) queues a job the dashboard's worker runs.
        count = 40
        job_id = jobs.submit("test_slow_images", {"count": count, "delay": 0.5},
                             created_by="dana", total=count, settings=server.settings)

        # The idle panel notices it within its interval, without a reload.
        # The job's summary line: "#N title · status · done/total · by who".
        line = page.locator('[data-testid="stMarkdownContainer"] p').filter(
            has_text=f"#{job_id} test_slow_images").first
        line.wait_for(timeout=(IDLE_REFRESH_SECONDS + 20) * 1000)

        # While it runs, the panel refreshes fast: the "done/total" figure keeps moving.
        # Sampled until the job is over, so a worker slow to start on a busy machine does
        # not matter. The job takes ~20 s: refreshed every 2 s the panel shows some nine
        # values between 0 and the total, stuck on the 10 s idle interval two or three.
        seen: list[int] = []
        shot = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            match = re.search(rf"(\d+)/{count}", line.inner_text())
            if match:
                seen.append(int(match.group(1)))
            if jobs.get_job(job_id, settings=server.settings).status in jobs.FINAL_STATUSES:
                break
            if not shot and len({v for v in seen if 0 < v < count}) == 2:
                page.screenshot(path=output_dir / "home-live-progress.png", full_page=True)
                shot = True
            time.sleep(0.5)
        moving = sorted({v for v in seen if 0 < v < count})
        assert len(moving) >= 4, f"progress did not move on the open page: {seen}"
        assert seen == sorted(seen)

        # And it ends as done on the same open page.
        from playwright.sync_api import expect

        expect(line).to_contain_text("done",
                                     timeout=(IDLE_REFRESH_SECONDS + 30) * 1000)
        assert jobs.get_job(job_id, settings=server.settings).status == jobs.DONE
    finally:
        server.stop(grace_s=3)
