"""Several real processes write at once while a worker runs: nobody sees "database is locked"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from core import jobs
from core.db.engine import session_scope
from core.db.models import Image
from core.store import ImageStore

ROOT = Path(__file__).resolve().parent.parent
WRITERS = 4
IMAGES_PER_WRITER = 12


def _env() -> dict[str, str]:
    return dict(os.environ, SYNTHLAB_EXTRA_JOB_MODULES="tests.crashjobs",
                SYNTHLAB_WORKER_POLL_SECONDS="0.1", PYTHONPATH=str(ROOT))


def test_concurrent_writers_and_worker(settings):
    worker = subprocess.Popen([sys.executable, "-m", "core", "worker"], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        writers = [subprocess.Popen([sys.executable, "-m", "tests.crashjobs", "writer", str(i),
                                     str(IMAGES_PER_WRITER)], cwd=ROOT, env=_env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for i in range(WRITERS)]
        outputs = [w.communicate(timeout=120) for w in writers]
        for proc, (out, err) in zip(writers, outputs):
            assert proc.returncode == 0, err[-3000:]
            assert "locked" not in (out + err).lower(), err[-3000:]

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and jobs.list_jobs(statuses=jobs.ACTIVE_STATUSES,
                                                             settings=settings):
            time.sleep(0.3)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker_log = worker.communicate(timeout=30)[0]
    assert "locked" not in worker_log.lower(), worker_log[-3000:]

    all_jobs = jobs.list_jobs(limit=100, settings=settings)
    expected_jobs = WRITERS * len(range(0, IMAGES_PER_WRITER, 4))
    assert len(all_jobs) == expected_jobs
    assert {j.status for j in all_jobs} == {jobs.DONE}, [(j.id, j.status, j.error) for j in all_jobs]
    assert all(j.progress_done == 10 for j in all_jobs)

    store = ImageStore(settings)
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Image)) == WRITERS * IMAGES_PER_WRITER
        paths = set(session.scalars(select(Image.path)))
    assert paths == set(store.iter_relpaths())
