"""Test-only job kinds and a writer process for the concurrency and crash-recovery tests.

A worker subprocess learns these kinds through ``SYNTHLAB_EXTRA_JOB_MODULES=tests.crashjobs``.

- ``test_slow_images``: adds ``count`` images one by one through ``catalog.add_image``,
  pausing *inside* each write transaction (file stored, row not yet committed) so that a
  SIGKILL most likely lands in the worst place: a file without its row. It resumes like a
  real generation job: images already indexed for the job are skipped, the others are
  made again from their seeds (same pixels, same file).
- ``test_progress``: many progress updates, to load the DB while writers write.

``python -m tests.crashjobs writer ID N`` is one concurrent writer process;
``stop_dashboard_worker(home)`` stops the worker a dashboard started, even one still starting.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core import catalog, jobs
from core.db.engine import run_write, session_scope
from core.db.models import SOURCE_REAL, SOURCE_SYNTHETIC, Image
from core.imageio import decode_image
from core.store import ImageStore
from tests.imagemaker import CLASS_COLOURS, fruit_image

LABELS = sorted(CLASS_COLOURS)


def image_bytes(label: str, seed: int, size: int = 24) -> bytes:
    buffer = io.BytesIO()
    fruit_image(label, seed, (size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


@jobs.register_handler("test_slow_images")
def slow_images(ctx: jobs.JobContext) -> dict[str, Any]:
    count = int(ctx.params.get("count", 10))
    delay = float(ctx.params.get("delay", 0.2))
    base_seed = int(ctx.params.get("seed", 0))
    store = ImageStore(ctx.settings)
    with session_scope(ctx.settings) as session:
        done = set(session.scalars(select(Image.gen_index).where(Image.job_id == ctx.job_id)))
    if done:
        ctx.log(f"resuming: {len(done)} of {count} images already indexed")
    for index in range(count):
        if index in done:
            continue
        label = LABELS[index % len(LABELS)]
        seed = base_seed + index
        decoded = decode_image(image_bytes(label, seed))

        def write(session, label=label, seed=seed, index=index, decoded=decoded):  # noqa: ANN001
            image_class = catalog.get_or_create_class(session, label)
            dataset = catalog.get_or_create_dataset(session, f"job-{ctx.job_id}",
                                                    source=SOURCE_SYNTHETIC,
                                                    created_by=ctx.created_by)
            catalog.add_image(session, store, decoded, image_class=image_class, dataset=dataset,
                              added_by=ctx.created_by,
                              generation={"job_id": ctx.job_id, "gen_index": index,
                                          "seed": seed, "prompt": f"a photo of {label}"})
            session.flush()
            time.sleep(delay)  # file on disk, row not committed: the crash window
        run_write(write, ctx.settings)
        ctx.progress(index + 1, count, f"image {index + 1}/{count}", force=True)
    return {"images": count}


@jobs.register_handler("test_progress")
def many_progress_updates(ctx: jobs.JobContext) -> dict[str, Any]:
    steps = int(ctx.params.get("steps", 20))
    for step in range(steps):
        ctx.progress(step + 1, steps, f"step {step + 1}", force=True)
        if step % 5 == 0:
            ctx.log(f"at step {step}")
    return {"steps": steps}


def writer(writer_id: int, count: int) -> int:
    """Import ``count`` images, submit jobs and log to them, each in a short transaction."""
    from core.config import get_settings

    settings = get_settings()
    store = ImageStore(settings)
    submitted = []
    for index in range(count):
        label = LABELS[(writer_id + index) % len(LABELS)]
        raw = image_bytes(label, 1_000_000 * (writer_id + 1) + index)
        decoded = decode_image(raw)

        def write(session, label=label, raw=raw, decoded=decoded, index=index):  # noqa: ANN001
            image_class = catalog.get_or_create_class(session, label)
            dataset = catalog.get_or_create_dataset(session, f"writer-{writer_id}",
                                                    source=SOURCE_REAL,
                                                    created_by=f"writer{writer_id}")
            catalog.add_image(session, store, decoded, image_class=image_class, dataset=dataset,
                              raw=raw, original_name=f"w{writer_id}_{index}.png",
                              added_by=f"writer{writer_id}")
        run_write(write, settings)
        if index % 4 == 0:
            submitted.append(jobs.submit("test_progress", {"steps": 10},
                                         created_by=f"writer{writer_id}", settings=settings))
        if submitted:
            jobs.add_event(submitted[-1], f"writer {writer_id} wrote image {index}",
                           settings=settings)
        jobs.list_jobs(limit=5, settings=settings)
    print(f"writer {writer_id}: {count} images, jobs {submitted}")
    return 0


def stop_dashboard_worker(home: Path, timeout: float = 30) -> None:
    """Stop the detached worker a dashboard started, even one still starting up."""
    from tests.browser import stop_workers

    stop_workers(home, timeout)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "writer":
        sys.exit(writer(int(sys.argv[2]), int(sys.argv[3])))
    sys.exit("usage: python -m tests.crashjobs writer ID COUNT")
