"""A train job's runs in parallel on Ray (``execution_backend = ray``).

The worker prepares each run (``prepare_run``: plans the data, loads the pixels, draws
every epoch's augmentation) and hands the arrays to a ``RunTrainer`` actor, which trains
with the local code (``train_and_evaluate``) in a scratch folder on whatever host it lands
on. The worker asks the actor for one event at a time: an epoch's history and checkpoint
files, which it writes into the run's folder and row as a local run would, and at the end
the metrics and the model file. Nothing on a remote host touches the data folder or the
database.

The actor hands out events one by one, from a queue of one: its training runs at most an
epoch ahead of the checkpoint the worker holds, so its memory stays bounded, and a run whose
Ray worker or host dies restarts on another from the worker's last checkpoint, losing at
most the epochs in flight. An actor, not a streaming task: Ray Client (``ray://``)
drivers cannot consume streaming generators.
"""

from __future__ import annotations

import dataclasses
import os
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

# Times a run is started again after its Ray worker or host died.
MAX_RESTARTS = 3
CHECKPOINT_FILES = (LAST_FILE, BEST_FILE)


def scratch_folder(run_id: int) -> Path:
    """A fresh scratch folder for a run on this host, named after this process; first the
    folders of this run's earlier actors here whose process is gone (a killed process
    cleans up nothing) are removed."""
    base = Path(tempfile.gettempdir())
    for old in base.glob(f"synthlab-run{run_id}-pid*-*"):
        pid = old.name.split("-pid", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"synthlab-run{run_id}-pid{os.getpid()}-"))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True


class RunTrainer:
    """One run on one Ray worker: trains in a thread from ``checkpoints`` (files to resume
    from), and hands out ``("epoch", history, files)`` after each epoch, then
    ``("done", outcome, model_bytes, host)``, one per ``next_event`` call."""

    def __init__(self, work: RunWork, checkpoints: dict[str, bytes]) -> None:
        self.folder = scratch_folder(work.run_id)
        for name, data in checkpoints.items():
            (self.folder / name).write_bytes(data)
        # One event waits here at most: the epoch after it blocks in the checkpoint writer,
        # the one after that in the trainer, until the worker has taken this one.
        self.events: queue.Queue = queue.Queue(maxsize=1)
        self.thread = threading.Thread(target=self._train, args=(work,), daemon=True)
        self.thread.start()

    def _train(self, work: RunWork) -> None:
        def on_epoch(_row: dict[str, Any], history: list[dict[str, Any]]) -> None:
            files = {name: (self.folder / name).read_bytes() for name in CHECKPOINT_FILES
                     if (self.folder / name).is_file()}
            self.events.put(("epoch", list(history), files))

        try:
            outcome = train_and_evaluate(work, self.folder, self.folder, on_epoch=on_epoch)
            self.events.put(("done", outcome, (self.folder / MODEL_FILE).read_bytes(),
                             this_host()))
        except BaseException as exc:  # noqa: BLE001 - raised again by next_event, on Ray
            self.events.put(("error", exc))

    def next_event(self) -> tuple:
        event = self.events.get()
        if event[0] == "error":
            raise event[1]
        if event[0] == "done":
            shutil.rmtree(self.folder, ignore_errors=True)
        return event


class _RunOnRay:
    """One run's actor and what the worker knows of it."""

    def __init__(self, work: RunWork, settings: Settings) -> None:
        self.work = work
        self.folder = run_dir(settings, work.run_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.restarts = 0
        self.images_done = 0
        self.epochs_held = 0  # epochs in the checkpoint the worker wrote last
        self.actor: Any = None

    def checkpoints(self) -> dict[str, bytes]:
        return {name: (self.folder / name).read_bytes() for name in CHECKPOINT_FILES
                if (self.folder / name).is_file()}


def run_training_on_ray(ctx: JobContext, run_ids: list[int], done_units: int,
                        total: int) -> dict[str, Any]:
    """Train ``run_ids`` (not yet done) in parallel; returns ``{run_id: real-test metrics}``."""
    settings = ctx.settings
    ray = connect(settings)
    from ray.exceptions import RayError, RayTaskError

    trainer = ray.remote(RunTrainer)
    options = {**worker_resources(ray), "max_restarts": 0, "max_task_retries": 0}
    asked: dict[Any, _RunOnRay] = {}  # next_event calls in flight, one per run

    def start(run: _RunOnRay) -> None:
        checkpoints = run.checkpoints()
        if checkpoints and not run.work.resuming:
            run.work = dataclasses.replace(run.work, resuming=True)
        run.actor = trainer.options(name=f"synthlab-run{run.work.run_id}-{run.restarts}",
                                    **options).remote(run.work, checkpoints)
        asked[run.actor.next_event.remote()] = run

    def stop(run: _RunOnRay) -> None:
        try:
            ray.kill(run.actor)
        except Exception:  # noqa: BLE001 - already gone
            pass

    for run_id in run_ids:
        work = prepare_run(run_id, settings).materialised()
        ctx.log(f"run {run_id}: {work.name} goes to the Ray cluster"
                + (" (resuming from its checkpoint)" if work.resuming else ""))
        start(_RunOnRay(work, settings))
    results: dict[str, Any] = {}
    progress = {"done": done_units}
    try:
        while asked:
            ready, _ = ray.wait(list(asked), num_returns=1, timeout=1.0)
            ctx.check_cancelled()
            for ref in ready:
                run = asked.pop(ref)
                try:
                    event = ray.get(ref)
                except RayTaskError as exc:  # training itself failed: no point in a restart
                    stop(run)
                    mark_runs([run.work.run_id], RUN_FAILED, settings,
                              error=f"{type(exc.cause).__name__}: {exc.cause}")
                    raise exc.as_instanceof_cause() from None
                except RayError as exc:  # its process or host died
                    stop(run)
                    _restart(ctx, run, exc)
                    start(run)
                    continue
                _record(ctx, run, event, results, progress, total)
                if event[0] == "epoch":
                    asked[run.actor.next_event.remote()] = run
                else:
                    stop(run)
    except JobCancelled:
        for run in asked.values():
            stop(run)
        mark_runs([run.work.run_id for run in asked.values()], RUN_CANCELLED, settings,
                  error="cancelled")
        raise
    except BaseException:
        for run in asked.values():
            stop(run)
        raise
    return results


def _restart(ctx: JobContext, run: _RunOnRay, exc: Exception) -> None:
    run.restarts += 1
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if run.restarts > MAX_RESTARTS:
        mark_runs([run.work.run_id], RUN_FAILED, ctx.settings, error=f"lost its host: {reason}")
        raise RuntimeError(f"run {run.work.run_id} lost its Ray worker {run.restarts} times: "
                           f"{reason}")
    held = f"its checkpoint after {run.epochs_held} epoch(s)" if run.epochs_held else \
        "its last checkpoint, if it has one"
    ctx.log(f"run {run.work.run_id}: its Ray worker died ({type(exc).__name__}); it starts "
            f"again on another worker from {held}", level="warning")


def _record(ctx: JobContext, run: _RunOnRay, event: tuple, results: dict[str, Any],
            progress: dict[str, int], total: int) -> None:
    """Write what a run's actor sent: an epoch's checkpoints and history, or the finished run."""
    run_id = run.work.run_id
    if event[0] == "epoch":
        _, history, files = event
        for name, data in files.items():
            atomic_write(run.folder / name, data, ctx.settings.tmp_dir)
        _update_run(run_id, ctx.settings, history=history)
        run.epochs_held = len(history)
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
