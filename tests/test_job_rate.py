"""One rate and one time left per job (issue 15): the job line and its bar agree."""

from __future__ import annotations

import re

from core import jobs
from core.jobs import JobContext, submit, window_rate


def test_window_rate_is_over_the_recent_window_only():
    # 10 units/s for a minute long ago, then 2 units/s: the rate shown is the recent one.
    samples = [(float(t), 10 * t) for t in range(0, 61)]
    samples += [(60.0 + t, 600 + 2 * t) for t in range(1, 121)]
    assert window_rate(samples, now=180.0) == 2.0
    assert window_rate(samples[:1], now=0.0) is None  # one sample: no rate yet
    assert window_rate([(0.0, 5), (1.0, 5)], now=1.0) is None  # no progress: no rate


def test_job_line_shows_the_stored_rate_and_its_time_left_only(settings):
    from webui.jobs import _job_line

    job_id = submit("rate-test", {}, title="rates", total=100, unit="images", settings=settings)
    assert jobs.claim_next("w", kinds=["rate-test"], settings=settings) == job_id
    ctx = JobContext(job_id, "rate-test", {}, settings, "w")
    for done in (0, 10, 20, 30):
        ctx.progress(done, 100, f"{done}/100 images", force=True)
    job = jobs.get_job(job_id, settings)
    rate, left = jobs.progress_figures(job)
    assert rate == job.rate and rate > 0 and left == (100 - 30) / rate
    line = _job_line(job)
    # Exactly one rate on the line, the stored one; and none in the bar's text.
    assert re.findall(r"[\d.]+ images/s", line) == [f"{rate:.2f} images/s"]
    assert "/s" not in (job.message or "")


def test_the_last_step_is_always_recorded_even_right_after_another(settings):
    """A finished job showed an earlier step's message ("1/6 images") under its "6/6": the
    last step came within the half-second rate limit and was dropped."""
    job_id = submit("rate-test", {}, title="steps", total=6, unit="images", settings=settings)
    assert jobs.claim_next("w", kinds=["rate-test"], settings=settings) == job_id
    ctx = JobContext(job_id, "rate-test", {}, settings, "w")
    for done in range(1, 7):  # all within the rate limit of the first write
        ctx.progress(done, 6, f"{done}/6 images")
    job = jobs.get_job(job_id, settings)
    assert (job.progress_done, job.message) == (6, "6/6 images")
