"""The ``generate`` job kind: queue, extend, run in the worker or in the foreground (CLI)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.db.models import Image, ImageClass, Job, JobEvent, utcnow
from core.generation.generator import GenerationConfig, GenerationError, Generator, snapshot_prompts
from core.generation.models import GenerationItem
from core.jobs import (CANCELLED, DONE, FAILED, INTERRUPTED, RUNNING, JobCancelled, JobContext,
                       finish, get_job, heartbeat, register_handler, submit, worker_identity)

KIND = "generate"


def require_model(source: str, settings: Settings) -> None:
    """Refuse a job for a model that is not on this machine, with the command to get it."""
    from core.cluster import uses_ray
    from core.generation.loading import ModelNotAvailable, missing_model_message
    from core.generation.registry import locate

    if uses_ray(settings):
        # The cluster's hosts load the model, not this one (which may have neither the
        # weights nor a GPU); an actor without it fails with this same message.
        return
    if locate(source, settings) is None:
        raise ModelNotAvailable(missing_model_message(source))


def job_title(config: GenerationConfig) -> str:
    classes = ", ".join(config.classes[:3]) + (" ..." if len(config.classes) > 3 else "")
    return f"Generate {config.per_class} x {classes} with {config.model}"


def submit_generation(config: GenerationConfig, *, created_by: str | None = None,
                      settings: Settings | None = None) -> int:
    """Queue a generation job; classes that do not exist yet are created."""
    settings = settings or get_settings()
    config.validate()
    require_model(config.model, settings)
    snapshot_prompts(config, settings)
    return submit(KIND, config.to_params(), title=job_title(config), created_by=created_by,
                  total=config.total, unit="images", settings=settings)


def extension_config(job_id: int, more_per_class: int, settings: Settings | None = None) -> GenerationConfig:
    """The config of the next ``more_per_class`` images of each class of an earlier job.

    Same model, prompts, base seed and dataset; the new indices follow the old ones, so no
    image repeats and together they are the images of one larger job.
    """
    job = get_job(job_id, settings)
    if job is None or job.kind != KIND:
        raise GenerationError(f"no generation job {job_id}")
    config = GenerationConfig.from_params(job.params)
    config.dataset_name = config.dataset_name or f"generated-job-{job_id}"
    config.start_index = config.start_index + config.per_class
    config.per_class = int(more_per_class)
    config.validate()
    return config


def extend_job(job_id: int, more_per_class: int, *, created_by: str | None = None,
               settings: Settings | None = None) -> int:
    """Queue the extension of an earlier job (see ``extension_config``)."""
    settings = settings or get_settings()
    config = extension_config(job_id, more_per_class, settings)
    return submit(KIND, config.to_params(), title=job_title(config) + f" (extends #{job_id})",
                  created_by=created_by, total=config.total, unit="images", settings=settings)


@register_handler(KIND)
def run_generation_job(ctx: JobContext) -> dict[str, Any]:
    config = GenerationConfig.from_params(ctx.params)
    generator = Generator(config, ctx.settings, job_id=ctx.job_id, created_by=ctx.created_by)
    result = generator.run(ctx)
    out = {"image_ids": result.image_ids, "images": len(result.image_ids),
           "made_this_run": result.made, "dataset": generator.dataset_name()}
    hosts = job_hosts(ctx.job_id, ctx.settings)
    if hosts:  # images made on a Ray cluster say where (core.generation.distributed)
        out["hosts"] = hosts
    return out


def job_hosts(job_id: int, settings: Settings | None = None) -> dict[str, int]:
    """How many of a job's images each Ray host made ({} for a job run locally)."""
    with session_scope(settings) as session:
        extras = session.scalars(select(Image.extra)
                                 .join(GenerationItem, GenerationItem.image_id == Image.id)
                                 .where(GenerationItem.job_id == job_id))
        counts: dict[str, int] = {}
        for extra in extras:
            host = (extra or {}).get("host")
            if host:
                counts[host] = counts.get(host, 0) + 1
    return dict(sorted(counts.items()))


def job_image_ids(job_id: int, settings: Settings | None = None) -> list[int]:
    with session_scope(settings) as session:
        return list(session.scalars(select(GenerationItem.image_id)
                                    .where(GenerationItem.job_id == job_id)
                                    .order_by(GenerationItem.id)))


@dataclass
class RecentImage:
    image_id: int
    relpath: str
    class_name: str
    prompt: str | None
    seed: int | None


def recent_images(job_id: int, limit: int = 8, settings: Settings | None = None) -> list[RecentImage]:
    """The newest images a job stored (the page shows them while it runs)."""
    with session_scope(settings) as session:
        rows = session.execute(
            select(Image.id, Image.path, ImageClass.display_name, Image.prompt, GenerationItem.seed)
            .join(GenerationItem, GenerationItem.image_id == Image.id)
            .join(ImageClass, ImageClass.id == GenerationItem.class_id)
            .where(GenerationItem.job_id == job_id)
            .order_by(GenerationItem.id.desc()).limit(limit))
        return [RecentImage(*row) for row in rows]


# --- foreground runs (CLI, accelerate launch) -----------------------------------------

def create_running_job(config: GenerationConfig, *, created_by: str | None = None,
                       title: str | None = None, settings: Settings | None = None) -> int:
    """A job row that is already ``running`` in this process, so no worker claims it."""
    settings = settings or get_settings()
    config.validate()
    require_model(config.model, settings)
    snapshot_prompts(config, settings)
    worker_id = worker_identity()

    def write(session) -> int:  # noqa: ANN001
        job = Job(kind=KIND, params=config.to_params(), title=title or job_title(config),
                  created_by=created_by, status=RUNNING, progress_total=config.total,
                  worker_id=worker_id, attempts=1, started_at=utcnow(), heartbeat_at=utcnow())
        session.add(job)
        session.flush()
        session.add(JobEvent(job_id=job.id, message=f"started in the foreground by {worker_id}"))
        return job.id
    return run_write(write, settings)


@contextlib.contextmanager
def heartbeat_while_running(job_id: int, settings: Settings):  # noqa: ANN201 - context manager
    """Keep the job's heartbeat fresh so workers do not mistake it for a dead one."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(settings.worker_heartbeat_seconds):
            with contextlib.suppress(Exception):
                heartbeat(job_id, settings)
    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{job_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()


def finish_foreground(job_id: int, settings: Settings, *, error: BaseException | None = None,
                      result: dict[str, Any] | None = None) -> str:
    """Record how a foreground run ended; returns the final status."""
    if error is None:
        finish(job_id, DONE, result=result, settings=settings)
        return DONE
    if isinstance(error, JobCancelled):
        finish(job_id, CANCELLED, result=result, settings=settings)
        return CANCELLED
    if isinstance(error, KeyboardInterrupt):
        # Stopped by hand: a worker can pick it up and finish it.
        finish(job_id, INTERRUPTED, settings=settings)
        return INTERRUPTED
    finish(job_id, FAILED, error=f"{type(error).__name__}: {error}", settings=settings)
    return FAILED
