"""Crashes and bad disks: a SIGKILLed worker, a full disk, an unwritable data folder."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core import catalog, jobs
from core.db.engine import DataFolderError, init_db, session_scope
from core.db.models import Image, JobEvent
from core.imageio import decode_image
from core.store import ImageStore, StoreError
from core.worker import run_worker
from tests import crashjobs
from tests.browser import poll, process_running

ROOT = Path(__file__).resolve().parent.parent
# How long to wait for a worker subprocess to make progress: a ceiling, not a pace. A busy
# 2-core host (the suite runs files in parallel) can take a minute just to import torch.
LOAD_PROOF_S = 300


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, SYNTHLAB_EXTRA_JOB_MODULES="tests.crashjobs", PYTHONPATH=str(ROOT),
                SYNTHLAB_WORKER_POLL_SECONDS="0.1", SYNTHLAB_WORKER_HEARTBEAT_SECONDS="0.3",
                SYNTHLAB_WORKER_STALE_SECONDS="1", **extra)


def _indexed(settings, job_id: int) -> list[int]:  # noqa: ANN001
    with session_scope(settings) as session:
        return sorted(session.scalars(select(Image.gen_index).where(Image.job_id == job_id)))


def assert_store_consistent(settings) -> None:  # noqa: ANN001
    """Every file is indexed, every row has its file, no temporary file is left."""
    store = ImageStore(settings)
    with session_scope(settings) as session:
        rows = set(session.scalars(select(Image.path)))
    files = set(store.iter_relpaths())
    assert files == rows, f"orphan files {files - rows}, missing files {rows - files}"
    leftovers = [p.name for p in settings.tmp_dir.glob(".part-*")]
    leftovers += [p.name for p in settings.images_dir.rglob(".part-*")]
    assert not leftovers, leftovers


def _core_check_finds_nothing(settings) -> None:  # noqa: ANN001
    """``python -m core check`` (core.maintenance) agrees, when that command is installed."""
    try:
        import core.maintenance  # noqa: F401
    except ModuleNotFoundError:
        return
    import json

    done = subprocess.run([sys.executable, "-m", "core", "check", "--json", "--min-age", "0"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and not report["skipped_recent"], report


def _restart_worker(settings) -> None:  # noqa: ANN001
    """A new worker (in this process, to save a start-up) runs the queue empty."""
    import dataclasses

    assert run_worker(dataclasses.replace(settings, worker_stale_seconds=1.0), once=True) == 0


def test_worker_killed_mid_job_resumes_with_every_image_indexed(settings):
    count = 10
    job_id = jobs.submit("test_slow_images", {"count": count, "delay": 0.3, "seed": 7},
                         created_by="alice", total=count, settings=settings)
    worker = subprocess.Popen([sys.executable, "-m", "core", "worker"], cwd=ROOT, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + LOAD_PROOF_S
        while len(_indexed(settings, job_id)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_indexed(settings, job_id)) >= 3, "the job never got going"
        # Mid-way through the next image's transaction (file written, row not committed).
        time.sleep(0.15)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    before = _indexed(settings, job_id)
    assert len(before) < count
    assert jobs.get_job(job_id, settings).status == jobs.RUNNING  # nobody told the DB

    time.sleep(1.2)  # let the dead worker's heartbeat go stale
    _restart_worker(settings)

    job = jobs.get_job(job_id, settings)
    assert job.status == jobs.DONE, (job.status, job.error)
    assert _indexed(settings, job_id) == list(range(count))
    messages = [e.message for e in jobs.job_events(job_id, settings=settings)]
    assert any("worker stopped mid-job" in m for m in messages)
    assert any(m.startswith("resumed by worker") for m in messages)
    assert any(m.startswith(f"resuming: {len(before)} of {count}") for m in messages)
    assert_store_consistent(settings)
    _core_check_finds_nothing(settings)


def _no_space(*_args, **_kwargs):  # noqa: ANN002, ANN003
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_gives_a_clear_error_and_leaves_nothing(settings, monkeypatch):
    store = ImageStore(settings)
    raw = crashjobs.image_bytes("apple", 1)
    decoded = decode_image(raw)
    monkeypatch.setattr(os, "replace", _no_space)
    with pytest.raises(StoreError, match="No space left on device"):
        with session_scope(settings, write=True) as session:
            image_class = catalog.get_or_create_class(session, "apple")
            dataset = catalog.get_or_create_dataset(session, "full-disk")
            catalog.add_image(session, store, decoded, image_class=image_class,
                              dataset=dataset, raw=raw)
    monkeypatch.undo()
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 0
    assert list(store.iter_relpaths()) == []
    assert_store_consistent(settings)


def test_disk_full_during_a_job_fails_it_with_the_reason(settings, monkeypatch):
    monkeypatch.setenv("SYNTHLAB_EXTRA_JOB_MODULES", "tests.crashjobs")
    job_id = jobs.submit("test_slow_images", {"count": 3, "delay": 0}, created_by="bob",
                         settings=settings)
    monkeypatch.setattr(os, "replace", _no_space)
    run_worker(settings, once=True)
    monkeypatch.undo()
    job = jobs.get_job(job_id, settings)
    assert job.status == jobs.FAILED
    assert "cannot write image" in job.error and "No space left on device" in job.error
    assert _indexed(settings, job_id) == []
    assert_store_consistent(settings)


def test_unwritable_images_folder_gives_a_clear_error(settings):
    store = ImageStore(settings)
    for folder in sorted(settings.images_dir.rglob("*"), reverse=True):
        folder.rmdir()
    settings.images_dir.rmdir()
    settings.images_dir.write_text("not a folder")  # like a mount point gone wrong
    raw = crashjobs.image_bytes("lime", 2)
    with pytest.raises(StoreError, match="cannot write image"):
        with session_scope(settings, write=True) as session:
            catalog.add_image(session, store, decode_image(raw),
                              image_class=catalog.get_or_create_class(session, "lime"),
                              dataset=catalog.get_or_create_dataset(session, "x"), raw=raw)
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 0
        assert session.scalar(select(func.count()).select_from(JobEvent)) == 0
    assert not list(settings.tmp_dir.glob(".part-*"))


def test_unusable_data_folder_is_reported_plainly(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.config import Settings
    from core.db.engine import dispose_engines

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    home = blocker / "synthlab"
    with pytest.raises(DataFolderError, match="cannot write to the data folder"):
        init_db(Settings(home=home))
    env = dict(os.environ, SYNTHLAB_HOME=str(home))
    done = subprocess.run([sys.executable, "-m", "core", "jobs"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "cannot write to the data folder" in done.stderr and "Traceback" not in done.stderr

    monkeypatch.setenv("SYNTHLAB_HOME", str(home))
    monkeypatch.setenv("SYNTHLAB_AUTOSTART_WORKER", "0")
    dispose_engines()
    at = AppTest.from_file(str(ROOT / "pages" / "admin.py"), default_timeout=60).run()
    assert not at.exception
    assert any("Cannot write to the data folder" in e.value for e in at.error)
    dispose_engines()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tests.tiny_sd import tiny_sd_for_session

    return tiny_sd_for_session(tmp_path_factory)


@pytest.mark.slow
def test_generation_job_killed_mid_way_resumes(settings, tiny_model):
    from core.generation.generator import GenerationConfig
    from core.generation.jobs import submit_generation

    config = GenerationConfig(model=str(tiny_model), classes=["apple", "banana"], per_class=2,
                              steps=2, size=32, batch_size=1, seed=11)
    job_id = submit_generation(config, created_by="carol", settings=settings)
    worker = subprocess.Popen([sys.executable, "-m", "core", "worker"], cwd=ROOT, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + LOAD_PROOF_S
        while len(_indexed(settings, job_id)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    before = _indexed(settings, job_id)
    assert 2 <= len(before), "the generation job never got going"
    if len(before) < config.total:  # killed mid-way (the usual case): it must resume
        assert jobs.get_job(job_id, settings).status == jobs.RUNNING
    time.sleep(1.2)
    _restart_worker(settings)
    job = jobs.get_job(job_id, settings)
    assert job.status == jobs.DONE, (job.status, job.error)
    assert len(_indexed(settings, job_id)) == config.total
    with session_scope(settings) as session:
        creators = set(session.scalars(select(Image.added_by).where(Image.job_id == job_id)))
    assert creators == {"carol"}
    assert_store_consistent(settings)
    _core_check_finds_nothing(settings)


# --- the dashboard server restarted while a job waits ------------------------------------

def _wait(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.browser
@pytest.mark.slow
def test_job_queued_across_a_server_restart_runs_after_it(settings, output_dir):
    from playwright.sync_api import expect

    from tests.browser import chromium_missing_reason, launch_browser, start_server
    from tests.crashjobs import stop_dashboard_worker
    from core.worker import worker_alive

    if chromium_missing_reason():
        pytest.fail(chromium_missing_reason())
    env = {"SYNTHLAB_EXTRA_JOB_MODULES": "tests.crashjobs", "PYTHONPATH": str(ROOT)}
    home = settings.home_path
    server = start_server(home, env=env)
    try:
        with launch_browser() as page:
            page.goto(server.url + "/")
            _wait(lambda: worker_alive(settings), LOAD_PROOF_S, "the dashboard to start a worker")
            # Everything goes down: the worker first, then the server.
            stop_dashboard_worker(home)
            assert not worker_alive(settings)
            job_id = jobs.submit("test_slow_images", {"count": 3, "delay": 0},
                                 created_by="dana", settings=settings)
            server.stop()
            assert jobs.get_job(job_id, settings).status == jobs.QUEUED

            server = start_server(home, env=env)
            # The first visitor after the restart comes from a bookmark: the page must
            # still run inside app.py's navigation (sidebar, name), not on its own.
            page.goto(server.url + "/admin")
            _wait(lambda: jobs.get_job(job_id, settings).status == jobs.DONE, LOAD_PROOF_S,
                  "the queued job to run after the restart")
            expect(page.get_by_role("heading", name="Admin")).to_be_visible()
            expect(page.get_by_label("Your name", exact=True)).to_be_visible()
            expect(page.get_by_role("link", name="Gallery", exact=True)).to_be_visible()
            page.screenshot(path=str(output_dir / "after-restart.png"))
    finally:
        server.stop()
        stop_dashboard_worker(home)
    assert _indexed(settings, job_id) == [0, 1, 2]
    assert_store_consistent(settings)


# --- a worker SIGKILLed while its import's decoding pool runs -----------------------------

def _children_of(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(ppid) == pid and state != "Z":
                found.append(int(stat.parent.name))
    return found


def _image_count(settings) -> int:  # noqa: ANN001
    with session_scope(settings) as session:
        return int(session.scalar(select(func.count()).select_from(Image)))


# A worker process that takes the lock and forks one child (as a process pool does), which
# stays busy; each says when it is ready (the child after fork's after-in-child hooks).
_LOCK_THEN_FORK = r"""
import os, time
from core.config import get_settings
from core.worker import WorkerLock
lock = WorkerLock(get_settings(), "default")
assert lock.acquire()
if os.fork() == 0:
    os.write(1, f"child {os.getpid()}\n".encode())  # one write: lines never interleave
    time.sleep(120)
    os._exit(0)
os.write(1, f"parent {os.getpid()}\n".encode())
time.sleep(120)
"""


def test_a_forked_child_does_not_hold_the_worker_lock(settings):
    from core.worker import worker_alive

    worker = subprocess.Popen([sys.executable, "-c", _LOCK_THEN_FORK], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, text=True)
    child = None
    try:
        ready = dict(worker.stdout.readline().split() for _ in range(2))
        child = int(ready["child"])
        assert worker_alive(settings)
        os.kill(worker.pid, signal.SIGKILL)  # the worker dies; its busy child lives on
        worker.wait(timeout=10)
        assert process_running(child)
        # Before the fix the child's inherited descriptor kept the lock: "a worker is
        # alive", and every new worker exited.
        assert not worker_alive(settings)
    finally:
        if worker.poll() is None:
            worker.kill()
        if child is not None and process_running(child):
            os.kill(child, signal.SIGKILL)
        worker.stdout.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_killed_mid_import_leaves_no_pool_and_the_next_worker_resumes(settings, tmp_path):
    from core.ingest.jobs import submit_import
    from tests.imagemaker import make_imagefolder

    # Big enough that the first 200-row batch commits well before the last file is decoded.
    folder = make_imagefolder(tmp_path / "fruit", ["apple", "plum", "lime"], 200, size=(64, 48))
    total = 600
    job_id = submit_import(str(folder), dataset="fruit", user="ann", settings=settings)
    # The default 30 s stale time, on purpose: the next worker must not need to wait it out.
    env = dict(_env(SYNTHLAB_INGEST_WORKERS="2"), SYNTHLAB_WORKER_STALE_SECONDS="30",
               SYNTHLAB_WORKER_HEARTBEAT_SECONDS="5")
    first = subprocess.Popen([sys.executable, "-m", "core", "worker"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll(lambda: len(_children_of(first.pid)) >= 2 and _image_count(settings) > 0, LOAD_PROOF_S,
              "the import to commit its first batch with two decoding processes")
        pool = _children_of(first.pid)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    committed = _image_count(settings)
    assert 0 < committed < total, "the import was not mid-way when the worker was killed"
    assert jobs.get_job(job_id, settings).status == jobs.RUNNING  # nobody told the DB

    # Before the fix the two decoding processes lived on, holding the worker's lock.
    took = poll(lambda: not any(process_running(pid) for pid in pool), 5,
                 f"the decoding processes {pool} to die with their worker")
    print(f"decoding processes gone {took:.2f} s after the worker's SIGKILL")

    second_log = tmp_path / "second-worker.log"
    with open(second_log, "wb") as log:  # a file, not a pipe nobody reads while it runs
        second = subprocess.Popen([sys.executable, "-m", "core", "worker"], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()

        def finished() -> bool:
            assert second.poll() is None, f"the new worker exited: {second_log.read_text()}"
            return jobs.get_job(job_id, settings).status in jobs.FINAL_STATUSES
        poll(finished, LOAD_PROOF_S, "the new worker to resume and finish the import")
        print(f"import resumed and finished {time.monotonic() - started:.2f} s after the "
              "new worker started")
    finally:
        second.terminate()
        second.wait(timeout=30)

    job = jobs.get_job(job_id, settings)
    assert job.status == jobs.DONE, (job.status, job.error)
    messages = [e.message for e in jobs.job_events(job_id, settings=settings)]
    assert any("worker stopped mid-job" in m for m in messages), messages
    assert any(m.startswith("resumed by worker") for m in messages), messages
    # Every file indexed exactly once: what the first worker committed counts as duplicates
    # now, the rest (including files its dead children had already stored) is added.
    assert (job.result["added"], job.result["duplicates"]) == (total - committed, committed)
    with session_scope(settings) as session:
        names = list(session.scalars(select(Image.original_name)))
    assert len(names) == total and len(set(names)) == total
    with session_scope(settings) as session:
        rows = set(session.scalars(select(Image.path)))
    assert set(ImageStore(settings).iter_relpaths()) == rows  # no file without its row
