"""A train job's runs as parallel Ray tasks (``execution_backend = ray``).

The worker prepares each run (``prepare_run``: plans the data, loads the pixels, draws
every epoch's augmentation) and sends the arrays to a Ray task, which trains with the
local code (``train_and_evaluate``) in a scratch folder on whatever host it lands on.
After every epoch the task streams back the epoch's history and its checkpoint files;
the worker writes them into the run's folder and the run's row, as a local run would.
When the task's host or process dies, the worker starts the run again on another
host with the checkpoints it has, so training resumes from the last epoch. At the end
the task sends the metrics and the model file. Nothing on a remote host touches the
data folder or the database.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from core.cluster import connect, this_host, worker_resources
from core.config import Settings
from core.jobs import JobCancelled, JobContext
from core.store import atomic_write
from core.training.checkpoint import BEST_FILE, LAST_FILE, MODEL_FILE, run_dir
from core.training.execution import RunWork, finish_run, prepare_run, train_and_evaluate
from core.training.experiments import _update_run, mark_runs
from core.training.models import RUN_CANCELLED, RUN_FAILED

# Times a run is started again after its task's host or process died.
MAX_RESTARTS = 3
CHECKPOINT_FILES = (LAST_FILE, BEST_FILE)


def train_on_host(work: RunWork, checkpoints: dict[str, bytes]):  # noqa: ANN201 - a generator
    """The Ray task: yields ``("epoch", history, files)`` after each epoch, then
    ``("done", outcome, model_bytes, host)``. ``checkpoints``: files to resume from."""
    folder = Path(tempfile.mkdtemp(prefix=f"synthlab-run{work.run_id}-"))
    try:
        for name, data in checkpoints.items():
            (folder / name).write_bytes(data)
        events: queue.Queue = queue.Queue()

        def on_epoch(_row: dict[str, Any], history: list[dict[str, Any]]) -> None:
            files = {name: (folder / name).read_bytes() for name in CHECKPOINT_FILES
                     if (folder / name).is_file()}
            events.put(("epoch", list(history), files))

        def train() -> None:
            try:
                outcome = train_and_evaluate(work, folder, folder, on_epoch=on_epoch)
                events.put(("done", outcome, (folder / MODEL_FILE).read_bytes(), this_host()))
            except BaseException as exc:  # noqa: BLE001 - raised again below, in the task
                events.put(("error", exc))

        thread = threading.Thread(target=train, daemon=True)
        thread.start()
        while True:
            event = events.get()
            if event[0] == "error":
                raise event[1]
            yield event
            if event[0] == "done":
                return
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _RunOnRay:
    """One run's task and what the worker knows of it."""

    def __init__(self, work: RunWork, settings: Settings) -> None:
        self.work = work
        self.folder = run_dir(settings, work.run_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.restarts = 0
        self.images_done = 0

    def checkpoints(self) -> dict[str, bytes]:
        return {name: (self.folder / name).read_bytes() for name in CHECKPOINT_FILES
                if (self.folder / name).is_file()}


def run_training_on_ray(ctx: JobContext, run_ids: list[int], done_units: int,
                        total: int) -> dict[str, Any]:
    """Train ``run_ids`` (not yet done) in parallel; returns ``{run_id: real-test metrics}``."""
    settings = ctx.settings
    ray = connect(settings)
    from ray.exceptions import RayError, RayTaskError

    task = ray.remote(train_on_host)
    options = {**worker_resources(ray), "max_retries": 0, "num_returns": "streaming"}
    runs: dict[Any, _RunOnRay] = {}

    def start(run: _RunOnRay) -> None:
        generator = task.options(name=f"synthlab-run{run.work.run_id}", **options).remote(
            run.work, run.checkpoints())
        runs[generator] = run

    for run_id in run_ids:
        work = prepare_run(run_id, settings).materialised()
        ctx.log(f"run {run_id}: {work.name} goes to the Ray cluster"
                + (" (resuming from its checkpoint)" if work.resuming else ""))
        start(_RunOnRay(work, settings))
    results: dict[str, Any] = {}
    progress = {"done": done_units}
    try:
        while runs:
            ready, _ = ray.wait(list(runs), num_returns=1, timeout=1.0)
            ctx.check_cancelled()
            for generator in ready:
                run = runs[generator]
                try:
                    event = ray.get(next(generator))
                except StopIteration:
                    runs.pop(generator)
                    continue
                except RayTaskError as exc:
                    mark_runs([run.work.run_id], RUN_FAILED, settings,
                              error=f"{type(exc.cause).__name__}: {exc.cause}")
                    raise exc.as_instanceof_cause() from None
                except RayError as exc:  # the task's process or host died
                    runs.pop(generator)
                    _restart(ctx, run, exc)
                    start(run)
                    continue
                _record(ctx, run, event, results, progress, total)
    except JobCancelled:
        for generator, run in runs.items():
            ray.cancel(generator, force=True)
        mark_runs([run.work.run_id for run in runs.values()], RUN_CANCELLED, settings,
                  error="cancelled")
        raise
    except BaseException:
        for generator in runs:
            ray.cancel(generator, force=True)
        raise
    return results


def _restart(ctx: JobContext, run: _RunOnRay, exc: Exception) -> None:
    run.restarts += 1
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if run.restarts > MAX_RESTARTS:
        mark_runs([run.work.run_id], RUN_FAILED, ctx.settings, error=f"lost its host: {reason}")
        raise RuntimeError(f"run {run.work.run_id} lost its Ray task {run.restarts} times: "
                           f"{reason}")
    ctx.log(f"run {run.work.run_id}: its Ray task died ({type(exc).__name__}); resuming from "
            f"the last checkpoint on another worker", level="warning")


def _record(ctx: JobContext, run: _RunOnRay, event: tuple, results: dict[str, Any],
            progress: dict[str, int], total: int) -> None:
    """Write what a task sent: an epoch's checkpoints and history, or the finished run."""
    run_id = run.work.run_id
    if event[0] == "epoch":
        _, history, files = event
        for name, data in files.items():
            atomic_write(run.folder / name, data, ctx.settings.tmp_dir)
        _update_run(run_id, ctx.settings, history=history)
        images = _images_done(run.work, history)
        progress["done"] += images - run.images_done
        run.images_done = images
        ctx.progress(progress["done"], total, f"run {run_id}: {run.work.name}")
        return
    _, outcome, model_bytes, host = event
    atomic_write(run.folder / MODEL_FILE, model_bytes, ctx.settings.tmp_dir)
    outcome["metrics"]["_train"]["host"] = host["hostname"]
    finish_run(run_id, outcome, ctx.settings)
    progress["done"] += run.work.units - run.images_done
    run.images_done = run.work.units
    real = outcome["metrics"].get("real_test", {})
    results[str(run_id)] = {"accuracy": real.get("accuracy"), "f1_macro": real.get("f1"),
                            "f1_weighted": real.get("f1_weighted"), "host": host["hostname"]}
    ctx.log(f"run {run_id} done on {host['hostname']}: real-test accuracy "
            f"{real.get('accuracy')}")
    ctx.set_result({"runs": results})
    ctx.progress(progress["done"], total, f"run {run_id} done", force=True)


def _images_done(work: RunWork, history: list[dict[str, Any]]) -> int:
    """Training images pushed so far, from the epochs in ``history``."""
    sizes = {phase.name: len(phase.labels) for phase in work.phases}
    return sum(sizes.get(row.get("phase"), 0) for row in history)
