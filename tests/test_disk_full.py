"""A full disk (issue 13, point 10): one clear error, no files left without rows, a job that
ends failed with the reason, a worker that keeps running, and a next run that finishes.

The data folder lives on a real 5 MB tmpfs mounted by the test (root, as in this project's
CI containers); where mounting is not permitted the tests skip with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FILES = 150  # ~50 KB of noise each: about 7.5 MB, more than the 5 MB disk holds


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 5 MB tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _grow(mount_point: Path) -> None:
    """Free space, as an admin would: the same filesystem, made bigger."""
    subprocess.run(["mount", "-o", "remount,size=64m", str(mount_point)], check=True)


@pytest.fixture()
def full_settings(small_disk: Path, monkeypatch):  # noqa: ANN201 - Settings
    from core.config import get_settings
    from core.db.engine import dispose_engines, init_db

    monkeypatch.setenv("SYNTHLAB_HOME", str(small_disk / "home"))
    monkeypatch.setenv("SYNTHLAB_AUTOSTART_WORKER", "0")
    monkeypatch.delenv("SYNTHLAB_DB_URL", raising=False)
    dispose_engines()
    settings = get_settings()
    init_db(settings)
    yield settings
    dispose_engines()


def _noise_folder(root: Path) -> Path:
    rng = np.random.default_rng(7)
    for k in range(FILES):
        folder = root / ("apple" if k % 2 else "plum")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{k}.png", compress_level=1)
    return root


def _files_and_rows(settings) -> tuple[set[str], set[str]]:  # noqa: ANN001
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import Image as ImageRow
    from core.store import ImageStore

    files = set(ImageStore(settings).iter_relpaths())
    with session_scope(settings) as session:
        rows = set(session.execute(select(ImageRow.path)).scalars())
    return files, rows


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=240, check=False)


def test_cli_ingest_on_a_full_disk_says_so_and_leaves_no_files_without_rows(
        full_settings, small_disk, tmp_path):
    source = _noise_folder(tmp_path / "noise")
    done = _cli("ingest", str(source), "--workers", "2")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "full" in lines[0], lines
    assert str(full_settings.home_path) not in lines[0]  # no server path in the message
    print(lines[0])
    files, rows = _files_and_rows(full_settings)
    assert files <= rows, f"{len(files - rows)} files without rows"

    _grow(small_disk)
    done = _cli("ingest", str(source), "--workers", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    files, rows = _files_and_rows(full_settings)
    assert len(rows) == FILES and files == rows


def test_import_job_on_a_full_disk_fails_with_the_reason_and_the_worker_goes_on(
        full_settings, small_disk, tmp_path):
    from core import jobs
    from core.ingest.jobs import submit_import
    from core.worker import run_worker

    source = _noise_folder(tmp_path / "noise")
    first = submit_import(str(source), dataset="noise", settings=full_settings)
    assert run_worker(full_settings, once=True) == 0  # returns: it did not crash
    job = jobs.get_job(first, full_settings)
    assert job.status == jobs.FAILED and "full" in (job.error or ""), (job.status, job.error)
    files, rows = _files_and_rows(full_settings)
    assert files <= rows, f"{len(files - rows)} files without rows"

    _grow(small_disk)
    second = submit_import(str(source), dataset="noise", settings=full_settings)
    assert run_worker(full_settings, once=True) == 0
    assert jobs.get_job(second, full_settings).status == jobs.DONE
    files, rows = _files_and_rows(full_settings)
    assert len(rows) == FILES and files == rows


def test_a_job_failing_on_a_full_disk_ends_failed_once_there_is_room(full_settings):
    import errno
    import threading

    from core import jobs
    from core.worker import run_worker

    filler = full_settings.home_path / "filler"

    @jobs.register_handler("test-disk-full")
    def fill_and_fail(ctx: jobs.JobContext) -> dict:
        # Fill the disk to the last byte, so even the database cannot record the failure,
        # and have the admin free the space a moment later.
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        threading.Timer(1.0, filler.unlink).start()
        raise OSError(errno.ENOSPC, "No space left on device")

    job_id = jobs.submit("test-disk-full", {}, settings=full_settings)
    assert run_worker(full_settings, once=True) == 0  # returns: it did not crash
    job = jobs.get_job(job_id, full_settings)
    assert job.status == jobs.FAILED and "No space left" in (job.error or ""), (job.status, job.error)
