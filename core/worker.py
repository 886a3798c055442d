"""The worker process: takes jobs from the queue and runs them, one at a time per device.

``python -m core worker`` runs one in the foreground. The dashboard calls
``ensure_worker()`` on each page load, which starts a detached worker when none holds the
device's lock file, so jobs run outside Streamlit's script thread and survive page
reloads, closed browsers and server restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import weakref
from pathlib import Path
from typing import IO

from core.config import Settings, get_settings
from core.db.engine import init_db
from core.jobs import (CANCELLED, DONE, FAILED, INTERRUPTED, JobCancelled, JobContext, claim_next,
                       fail_exhausted, finish, get_job, heartbeat, interrupt_jobs_of,
                       load_handlers, mark_stale_jobs, worker_identity)
from core.store import DiskFullError, is_disk_full

log = logging.getLogger("synthlab.worker")
# How long a job's end is retried while the disk is full, and how often.
DISK_FULL_WAIT_S = 60.0
DISK_FULL_RETRY_S = 1.0


def _lock_path(settings: Settings, slot: str) -> Path:
    return settings.home_path / f"worker-{slot}.lock"


def pid_path(settings: Settings, slot: str = "default") -> Path:
    return settings.home_path / f"worker-{slot}.pid"


# The open lock files of the worker locks this process holds (see ``_drop_locks_in_child``).
# Weak, so a lock object dropped without ``release()`` leaves no stale descriptor number.
_held_locks: weakref.WeakSet[IO[str]] = weakref.WeakSet()


def _drop_locks_in_child() -> None:
    """After a fork, in the child: let go of the parent's worker locks.

    A forked child shares the parent's open lock file, and ``flock`` belongs to the open
    file, not the process: a child that outlived a SIGKILLed worker (a decoding process)
    kept the lock, so every new worker exited and the queue stood still. The child's copy
    is pointed at /dev/null rather than closed, so that its file object, when collected,
    closes /dev/null and not some later file that reused the number. No ``LOCK_UN``: that
    would release the parent's lock too.
    """
    handles = [handle for handle in list(_held_locks) if not handle.closed]
    _held_locks.clear()
    if not handles:
        return
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for handle in handles:
            os.dup2(devnull, handle.fileno(), inheritable=False)
    finally:
        os.close(devnull)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_locks_in_child)


class WorkerLock:
    """An exclusive ``flock`` held for the worker's life: the OS frees it when the process
    dies. Only the worker holds it: forked children drop their copy at once (above), and
    spawned or exec'd ones never get it (Python opens files non-inheritable)."""

    def __init__(self, settings: Settings, slot: str) -> None:
        self.path = _lock_path(settings, slot)
        self.handle = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self.handle = handle
        _held_locks.add(handle)
        return True

    def release(self) -> None:
        if self.handle is not None:
            _held_locks.discard(self.handle)
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def worker_alive(settings: Settings | None = None, slot: str = "default") -> bool:
    settings = settings or get_settings()
    probe = WorkerLock(settings, slot)
    if probe.acquire():
        probe.release()
        return False
    return True


def ensure_worker(settings: Settings | None = None, slot: str = "default") -> bool:
    """Start a detached worker if none is alive. Returns True when one was started."""
    settings = settings or get_settings()
    if not settings.autostart_worker or worker_alive(settings, slot):
        return False
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(settings.logs_dir / f"worker-{slot}.log", "ab")  # noqa: SIM115
    env = dict(os.environ, SYNTHLAB_HOME=str(settings.home_path))
    if settings.db_url:
        env["SYNTHLAB_DB_URL"] = settings.db_url
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "core", "worker", "--slot", slot],
        cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, close_fds=True)
    log_file.close()
    # Known at once, unlike the worker's own pid file (written once it holds the lock), so
    # whoever stops this server can also stop a worker that is still starting up.
    spawned_pid_path(settings, slot).write_text(str(process.pid))
    return True


def spawned_pid_path(settings: Settings, slot: str = "default") -> Path:
    return settings.home_path / f"worker-{slot}.spawned"


class _Heartbeat(threading.Thread):
    def __init__(self, job_id: int, settings: Settings) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.job_id = job_id
        self.settings = settings
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.settings.worker_heartbeat_seconds):
            with contextlib.suppress(Exception):
                heartbeat(self.job_id, self.settings)


def run_job(job_id: int, settings: Settings, worker_id: str) -> str:
    """Run one claimed job to its end and record the outcome; returns the final status."""
    handlers = load_handlers()
    job = get_job(job_id, settings)
    assert job is not None
    handler = handlers.get(job.kind)
    if handler is None:
        finish(job_id, FAILED, error=f"no handler for job kind {job.kind!r}", settings=settings)
        return FAILED
    ctx = JobContext(job_id=job_id, kind=job.kind, params=dict(job.params or {}),
                     settings=settings, worker_id=worker_id, created_by=job.created_by)
    beat = _Heartbeat(job_id, settings)
    beat.start()
    try:
        result = handler(ctx)
    except JobCancelled:
        finish(job_id, CANCELLED, settings=settings)
        return CANCELLED
    except KeyboardInterrupt:
        # The worker is being stopped: leave the job to be resumed by the next worker.
        finish(job_id, INTERRUPTED, settings=settings)
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the job
        log.exception("job %s failed", job_id)
        # On a full disk the log line may not fit: the failure itself matters more.
        with contextlib.suppress(Exception):
            ctx.log(traceback.format_exc(limit=8), level="error")
        error = str(exc) if isinstance(exc, DiskFullError) else f"{type(exc).__name__}: {exc}"
        _finish_waiting_for_room(job_id, FAILED, settings, error=error)
        return FAILED
    finally:
        beat.stop_event.set()
    _finish_waiting_for_room(job_id, DONE, settings,
                             result=result if isinstance(result, dict) else None)
    return DONE


def _finish_waiting_for_room(job_id: int, status: str, settings: Settings, *,
                             error: str | None = None, result: dict | None = None) -> None:
    """``finish`` that waits (up to ``DISK_FULL_WAIT_S``) while the disk is full, so the job
    ends with its reason as soon as there is room. If there is none by then, the job stays
    "running" without a heartbeat and is resumed as stale later; the worker goes on."""
    deadline = time.monotonic() + DISK_FULL_WAIT_S
    while True:
        try:
            finish(job_id, status, error=error, result=result, settings=settings)
            return
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            if time.monotonic() >= deadline:
                log.error("job %s: cannot record %s, the disk is full", job_id, status)
                return
            time.sleep(DISK_FULL_RETRY_S)


def run_worker(settings: Settings | None = None, *, slot: str = "default",
               kinds: list[str] | None = None, once: bool = False,
               idle_exit_seconds: float | None = None) -> int:
    """The worker loop. ``once``: run queued jobs until the queue is empty, then return."""
    settings = settings or get_settings()
    init_db(settings)
    lock = WorkerLock(settings, slot)
    if not lock.acquire():
        print(f"another worker already holds {lock.path}; exiting", file=sys.stderr)
        return 1
    worker_id = worker_identity()
    pid_file = pid_path(settings, slot)
    previous_pid = _read_pid(pid_file)
    pid_file.write_text(str(os.getpid()))
    if previous_pid is not None and previous_pid != os.getpid():
        # The last holder of this slot's lock left its pid file: it was killed. Holding the
        # lock now proves it is gone, so its jobs resume at once instead of after
        # ``worker_stale_seconds`` without a heartbeat.
        interrupt_jobs_of(worker_identity(previous_pid), settings)
    stopping = threading.Event()

    def _stop(signum, _frame):  # noqa: ANN001
        stopping.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    idle_since = time.monotonic()
    try:
        while not stopping.is_set():
            try:
                mark_stale_jobs(settings)
                fail_exhausted(settings)
                job_id = claim_next(worker_id, kinds, settings)
            except Exception as exc:
                # A full disk (SQLite cannot write) is waited out, not a crash that would
                # leave the queue without a worker.
                if not is_disk_full(exc):
                    raise
                log.error("the disk holding the data folder is full; waiting")
                if once:
                    break
                time.sleep(max(settings.worker_poll_seconds, DISK_FULL_RETRY_S))
                continue
            if job_id is None:
                if once:
                    break
                if idle_exit_seconds is not None and time.monotonic() - idle_since > idle_exit_seconds:
                    break
                time.sleep(settings.worker_poll_seconds)
                continue
            run_job(job_id, settings, worker_id)
            idle_since = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(OSError):
            pid_file.unlink()
        lock.release()
    return 0
