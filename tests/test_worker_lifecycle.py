"""The worker the dashboard starts stops with it; one started by hand stays until
``python -m core worker --stop``; its log holds job events, one line each (issue 15)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import jobs
from core.worker import PARENT_WATCH_S, worker_alive
from tests.browser import poll

ROOT = Path(__file__).resolve().parent.parent


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHLAB_")}
    env.update(SYNTHLAB_HOME=str(home), SYNTHLAB_WORKER_POLL_SECONDS="0.2",
               PYTHONPATH=str(ROOT), **extra)
    return env


def _core(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=_env(home),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.browser
@pytest.mark.slow
def test_dashboard_loads_nothing_from_outside_and_its_worker_stops_with_it(tmp_path, output_dir):
    from tests.browser import (chromium_missing_reason, launch_browser, process_running,
                               start_server, wait_for_app)

    if chromium_missing_reason():
        if os.environ.get("CI"):
            pytest.fail(chromium_missing_reason())
        pytest.skip(chromium_missing_reason())
    server = start_server(tmp_path / "home", env={"SYNTHLAB_EXTRA_JOB_MODULES": "tests.crashjobs"})
    settings = server.settings
    outside: list[str] = []
    try:
        with launch_browser() as page:
            # Every request that does not go to this server is logged and refused, as it
            # would fail on a machine without a network (the page icon came from
            # fonts.gstatic.com).
            def route(request_route) -> None:  # noqa: ANN001
                url = request_route.request.url
                if url.startswith(("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:")):
                    request_route.continue_()
                else:
                    outside.append(url)
                    request_route.abort()
            page.context.route("**/*", route)
            page.goto(server.url + "/")
            wait_for_app(page)
            # The menu's icons are drawn: their font has loaded (from this server).
            page.get_by_role("link", name="Gallery").wait_for()
            page.evaluate("document.fonts.ready")
            icon = page.evaluate("document.querySelector('link[rel*=icon]')?.href || ''")
            page.screenshot(path=str(output_dir / "home-offline.png"))
        assert outside == [], f"requests outside this server: {outside}"
        assert icon.startswith(("data:image/svg", server.url)), icon

        # The page load started a worker; give it a job to be inside when the server stops.
        poll(lambda: worker_alive(settings), 60, "the dashboard to start a worker")
        worker_pid = int((settings.home_path / "worker-default.pid").read_text())
        job_id = jobs.submit("test_slow_images", {"count": 200, "delay": 0.05},
                             created_by="ann", settings=settings)
        poll(lambda: jobs.get_job(job_id, settings).progress_done > 0, 60,
              "the job to store its first image")

        server.process.terminate()  # stop `streamlit run` by its PID, as Ctrl-C would
        server.process.wait(timeout=30)
        took = poll(lambda: not process_running(worker_pid) and not worker_alive(settings),
                     30, "the dashboard's worker to stop with it")
        assert took < 15
        job = jobs.get_job(job_id, settings)
        log = (settings.logs_dir / "worker-default.log").read_text()
        debug = (settings.logs_dir / "worker-default.debug.log").read_text()
        # Left to resume, and a clean stop does not use up one of its attempts.
        assert job.status == jobs.INTERRUPTED and job.attempts == 0, log + debug
        assert "has stopped; stopping" in log, log
        assert f"job #{job_id} test_slow_images: interrupted" in log, log
    finally:
        server.stop(grace_s=3)


def test_worker_stop_stops_a_hand_started_worker_which_outlives_its_parent(settings):
    from tests.browser import process_running

    home = settings.home_path
    assert "no worker is running" in _core(home, "worker", "--stop").stdout
    # Started by hand through a shell that exits at once: its parent is gone from the start.
    subprocess.run(["sh", "-c", f"'{sys.executable}' -m core worker >worker.out 2>&1 &"],
                   cwd=home, env=dict(_env(home), PYTHONPATH=str(ROOT)), check=True)
    log_file = home / "worker.out"
    poll(lambda: worker_alive(settings) or "No module named" in _text(log_file), 60,
          "the hand-started worker to take its lock")
    assert worker_alive(settings), _text(log_file)
    pid = int((home / "worker-default.pid").read_text())
    time.sleep(3 * PARENT_WATCH_S)  # longer than a dashboard's worker takes to notice
    assert worker_alive(settings), "a worker started by hand must not stop with its parent"
    result = _core(home, "worker", "--stop")
    assert result.returncode == 0, result.stderr
    assert f"stopped worker {pid}" in result.stdout
    assert not worker_alive(settings) and not process_running(pid)
    assert "worker" in _text(log_file) and "stopped" in _text(log_file)


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_worker_log_has_one_line_per_job_event_and_no_progress_bars(settings, tmp_path_factory):
    from core.generation.generator import GenerationConfig
    from core.generation.jobs import submit_generation
    import dataclasses

    from core.worker import debug_log_path, ensure_worker, log_path, stop_worker
    from tests.tiny_sd import tiny_sd_for_session

    model = tiny_sd_for_session(tmp_path_factory)
    job_id = submit_generation(GenerationConfig(model=str(model), classes=["lime"],
                                                per_class=4, seed=3, batch_size=2, size=32,
                                                steps=2, guidance=0.0),
                               created_by="ann", settings=settings)
    failing = jobs.submit("no_such_kind", {}, created_by="bob", settings=settings)
    # The dashboard's way of starting a worker, with its two log files.
    started = ensure_worker(dataclasses.replace(settings, autostart_worker=True))
    assert started
    try:
        poll(lambda: jobs.get_job(failing, settings).status == jobs.FAILED, 120,
              "both jobs to run")
    finally:
        stop_worker(settings, wait_seconds=30)
    assert jobs.get_job(job_id, settings).status == jobs.DONE
    log = log_path(settings).read_text()
    assert "\r" not in log and "\x1b" not in log, log
    lines = log.splitlines()
    ours = [line for line in lines if f"job #{job_id} " in line]
    assert re.search(r"started: .*\(by ann, attempt 1\)", ours[0]), ours
    assert any(re.search(r": 50% \(2/4 images", line) for line in ours), ours
    assert re.search(r": done after 0:00:\d\d$", ours[-1]), ours
    assert any(f"job #{failing} no_such_kind: failed" in line for line in lines), log
    # Every line is a timestamped event; libraries' output went to the debug file.
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) ")
    assert all(stamp.match(line) for line in lines), log
    assert debug_log_path(settings).exists()


def test_progress_is_logged_once_per_step_and_messages_stay_on_one_line(settings, caplog):
    from core.workerlog import LoggedJobContext, one_line

    job_id = jobs.submit("any", {}, settings=settings)
    ctx = LoggedJobContext(job_id=job_id, kind="any", params={}, settings=settings,
                           worker_id="here:1", percent_step=25)
    with caplog.at_level("INFO", logger="synthlab.jobs"):
        for done in range(1, 9):
            ctx.progress(done, 8 if done == 1 else None, force=True)
    assert [r.getMessage() for r in caplog.records] == [
        f"job #{job_id} any: {p}% ({d}/8)" for p, d in ((25, 2), (50, 4), (75, 6), (100, 8))]
    assert one_line("50%|\x1b[32m█████\x1b[0m| 5/10\r60%\nnext") == "50%|█████| 5/10 60% next"
