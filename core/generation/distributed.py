"""A generation job's batches spread over a pool of Ray actors (``execution_backend = ray``).

Each actor (one per GPU, or one per CPU on a cluster without GPUs) loads the pipeline
once and makes whole batches with ``PipelineRunner``, the code of the local path, from
the same planned ``WorkItem``s (same seeds, prompts and indices). It returns lossless PNG
bytes through Ray's object store; the SynthLab worker stores each batch as it arrives, in
any order, through ``Generator._store``, which skips an (job, class, index) already
stored. So:

- an actor or its host dying loses only its batches in flight, which go to another actor;
- the worker dying takes its actors with it (they belong to it), and the resumed job
  makes only the batches not yet stored;
- cancel kills the actors at once, mid-batch.

Ray is imported by ``core.cluster.connect``, never at import time.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from core.cluster import actor_count, connect, this_host, worker_resources
from core.config import Settings
from core.generation.config import GenerationConfig, GenerationError, Reporter, WorkItem
from core.generation.runner import PipelineRunner, decode_png, encode_png
from core.wording import plural

# Batches queued on one actor at a time: one running, one waiting, so an actor never
# idles while the worker stores its previous batch.
IN_FLIGHT_PER_ACTOR = 2
# Actor deaths a job survives beyond one per actor before it gives up (an actor that
# cannot even load the model would otherwise be replaced forever).
EXTRA_ACTOR_DEATHS = 3
CANCEL_CHECK_SECONDS = 1.0


class GenerationActor:
    """One pipeline on one Ray worker, loaded once and reused for every batch of a job."""

    def __init__(self, config_params: dict[str, Any], settings: Settings) -> None:
        from core.generation.loading import load_pipeline, prepare_for_batch, set_scheduler

        self.config = GenerationConfig.from_params(config_params)
        loaded = load_pipeline(self.config.model, settings, scheduler=self.config.scheduler)
        set_scheduler(loaded, self.config.scheduler)
        prepare_for_batch(loaded, self.config.batch_size, self.config.size)
        self.runner = PipelineRunner(loaded, self.config, self.config.batch_size)
        self.host = {**this_host(), "device": loaded.device}

    def where(self) -> dict[str, str]:
        return self.host

    def generate(self, batch: list[WorkItem]) -> dict[str, Any]:
        started = time.perf_counter()
        notes = _Notes()
        images = self.runner.generate(batch, notes)
        return {"images": [encode_png(image) for image in images], "host": self.host,
                "seconds": time.perf_counter() - started, "notes": notes.lines}


class _Notes:
    """The actor's reporter: keeps log lines (OOM back-off) for the worker to record."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def progress(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log(self, message: str, level: str = "info") -> None:
        self.lines.append(message)

    def check_cancelled(self, refresh: bool = True) -> None:
        pass  # the worker cancels by killing the actor


@dataclass
class RayRunStats:
    made: int = 0
    hosts: collections.Counter = field(default_factory=collections.Counter)
    actor_deaths: int = 0
    retried_batches: int = 0
    actor_seconds: float = 0.0  # time actors spent inside the pipeline


class _Pool:
    """The job's actors, named ``synthlab-job<id>-gen<k>`` (the Admin page lists them)."""

    def __init__(self, ray: Any, generator: Any, size: int) -> None:  # noqa: ANN401
        self.ray = ray
        self.job_id = generator.job_id
        self.params = generator.config.to_params()
        self.settings = generator.settings
        self.remote_class = ray.remote(GenerationActor)
        self.options = {**worker_resources(ray), "max_restarts": 0, "max_task_retries": 0}
        self.started = 0
        self.actors: dict[str, Any] = {}
        for _ in range(size):
            self.add()

    def add(self) -> None:
        name = f"synthlab-job{self.job_id}-gen{self.started}"
        self.started += 1
        self.actors[name] = self.remote_class.options(name=name, **self.options).remote(self.params, self.settings)

    def remove(self, name: str) -> None:
        self.actors.pop(name, None)

    def kill_all(self) -> None:
        for actor in self.actors.values():
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors.clear()


def run_on_ray(generator: Any, reporter: Reporter,  # noqa: ANN401 - a Generator
               batches: list[list[WorkItem]]) -> RayRunStats:
    """Make and store ``batches`` on the cluster; returns what was made where."""
    ray = connect(generator.settings)
    from ray.exceptions import RayActorError, RayTaskError

    stats = RayRunStats()
    queue = collections.deque(batches)
    size = actor_count(ray, generator.settings, len(batches))
    pool = _Pool(ray, generator, size)
    reporter.log(f"Ray: {size} actor(s) for {len(batches)} batch(es)")
    in_flight: dict[Any, tuple[str, list[WorkItem]]] = {}
    total = generator.config.total
    last_cancel_check = 0.0
    try:
        while queue or in_flight:
            _submit(pool, queue, in_flight)
            if not in_flight:
                raise GenerationError("no Ray actor is left to run this job")
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=CANCEL_CHECK_SECONDS)
            if time.monotonic() - last_cancel_check >= CANCEL_CHECK_SECONDS:
                last_cancel_check = time.monotonic()
                reporter.check_cancelled()
            for ref in ready:
                name, batch = in_flight.pop(ref)
                try:
                    out = ray.get(ref)
                except RayActorError as exc:
                    _actor_died(pool, name, batch, queue, stats, reporter, exc, size)
                    continue
                except RayTaskError as exc:
                    raise GenerationError(f"a batch failed on Ray actor {name}: "
                                          f"{type(exc.cause).__name__}: {exc.cause}") from exc
                for note in out["notes"]:
                    reporter.log(f"{out['host']['hostname']}: {note}", level="warning")
                images = [decode_png(data) for data in out["images"]]
                added = generator._store(batch, images, host=out["host"], raw=out["images"])
                stats.made += added
                stats.hosts[out["host"]["hostname"]] += added
                stats.actor_seconds += out["seconds"]
                done = generator.stored_count()
                # The rate is the job's own (core.jobs.window_rate), not a second one here.
                reporter.progress(done, total, f"{done}/{total} images on "
                                  f"{plural(len(stats.hosts), 'host')}")
    finally:
        pool.kill_all()
    return stats


def _submit(pool: _Pool, queue: collections.deque, in_flight: dict) -> None:
    """Give each actor work until it has ``IN_FLIGHT_PER_ACTOR`` batches queued."""
    load = collections.Counter(name for name, _ in in_flight.values())
    for name, actor in list(pool.actors.items()):
        while queue and load[name] < IN_FLIGHT_PER_ACTOR:
            batch = queue.popleft()
            in_flight[actor.generate.remote(batch)] = (name, batch)
            load[name] += 1


def _actor_died(pool: _Pool, name: str, batch: list[WorkItem], queue: collections.deque,
                stats: RayRunStats, reporter: Reporter, exc: Exception, size: int) -> None:
    """Put the lost batch back in front and, the first time, replace the dead actor."""
    queue.appendleft(batch)
    stats.retried_batches += 1
    if name not in pool.actors:
        return  # already replaced (an actor with two batches in flight fails twice)
    pool.remove(name)
    stats.actor_deaths += 1
    if stats.actor_deaths > size + EXTRA_ACTOR_DEATHS:
        raise GenerationError(f"Ray actors keep dying ({stats.actor_deaths} so far); the last: "
                              f"{_last_line(exc)}")
    reporter.log(f"Ray actor {name} died ({type(exc).__name__}: {_last_line(exc)}); its "
                 f"batches go to another actor", level="warning")
    pool.add()


def _last_line(exc: BaseException, limit: int = 300) -> str:
    """The gist of a Ray error: its last non-empty line (the cause, e.g. a missing model)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:limit]
