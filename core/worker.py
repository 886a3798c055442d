"""The worker process: takes jobs from the queue and runs them, one at a time per device.

``python -m core worker`` runs one in the foreground. The dashboard calls
``ensure_worker()`` on each page load, which starts a detached worker when none holds the
device's lock file, so jobs run outside Streamlit's script thread and survive page
reloads and closed browsers. A worker the dashboard started watches it and stops when the
dashboard stops (its running job is left interrupted, to resume with the next worker); a
worker started by hand or by systemd stays. ``python -m core worker --stop`` stops one.
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
from core.jobs import (CANCELLED, DONE, FAILED, INTERRUPTED, JobCancelled, claim_next,
                       fail_exhausted, finish, get_job, heartbeat, interrupt_jobs_of,
                       load_handlers, mark_stale_jobs, worker_identity)
from core.store import DiskFullError, is_disk_full
from core.workerlog import LoggedJobContext, log_job_end, one_line

log = logging.getLogger("synthlab.worker")
# How long a job's end is retried while the disk is full, and how often.
DISK_FULL_WAIT_S = 60.0
DISK_FULL_RETRY_S = 1.0
# How often a worker started by the dashboard looks whether the dashboard is still there.
PARENT_WATCH_S = 0.5


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


def log_path(settings: Settings, slot: str = "default") -> Path:
    """The worker's log: one line per job event (its standard output)."""
    return settings.logs_dir / f"worker-{slot}.log"


def debug_log_path(settings: Settings, slot: str = "default") -> Path:
    """Library warnings and tracebacks (the standard error of a worker the dashboard started)."""
    return settings.logs_dir / f"worker-{slot}.debug.log"


def ensure_worker(settings: Settings | None = None, slot: str = "default", *,
                  stop_with_this_process: bool = False) -> bool:
    """Start a detached worker if none is alive. Returns True when one was started.

    ``stop_with_this_process`` (the dashboard): the worker stops once this process has
    ended, after interrupting its job cleanly. Otherwise (a CLI that queues a job and
    returns) it stays until stopped.
    """
    settings = settings or get_settings()
    if not settings.autostart_worker or worker_alive(settings, slot):
        return False
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SYNTHLAB_HOME=str(settings.home_path))
    if settings.db_url:
        env["SYNTHLAB_DB_URL"] = settings.db_url
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "core", "worker", "--slot", slot]
    if stop_with_this_process:
        command += ["--parent-pid", str(os.getpid())]
    with open(log_path(settings, slot), "ab") as log_file, \
            open(debug_log_path(settings, slot), "ab") as debug_file:
        process = subprocess.Popen(  # noqa: S603 - our own module
            command, cwd=root, env=env, stdout=log_file, stderr=debug_file,
            stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    # Known at once, unlike the worker's own pid file (written once it holds the lock), so
    # whoever stops this server can also stop a worker that is still starting up.
    spawned_pid_path(settings, slot).write_text(str(process.pid))
    return True


def spawned_pid_path(settings: Settings, slot: str = "default") -> Path:
    return settings.home_path / f"worker-{slot}.spawned"


def _is_worker_process(pid: int) -> bool:
    """``pid`` is a running ``python -m core worker`` (not a recycled PID, not a zombie)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"core" in cmdline and b"worker" in cmdline


def stop_worker(settings: Settings | None = None, slot: str = "default", *,
                wait_seconds: float = 60.0) -> int | None:
    """Stop the running worker of ``slot`` cleanly: SIGTERM to the PID it recorded, then wait
    until it has exited (its lock goes with it). Its running job is left interrupted and resumes with
    the next worker. Returns the stopped worker's PID, None when none was running; raises
    ``TimeoutError`` when it is still running after ``wait_seconds``."""
    settings = settings or get_settings()
    # Its own pid file first; the PID the dashboard recorded as it spawned one only when
    # there is none yet (a worker still starting up).
    recorded = _read_pid(pid_path(settings, slot))
    if recorded is None or not _is_worker_process(recorded):
        recorded = _read_pid(spawned_pid_path(settings, slot))
    pids = [recorded] if recorded and _is_worker_process(recorded) else []
    if not pids:
        if worker_alive(settings, slot):
            raise RuntimeError(f"a worker holds {_lock_path(settings, slot)} but left no PID "
                               "file; stop it by hand")
        return None
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_seconds
    # The process, not the lock: a dashboard may start a new worker (taking the lock) as
    # soon as this one has gone.
    while any(_is_worker_process(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {pids[0]} did not stop within {wait_seconds:.0f} s")
        time.sleep(0.1)
    return pids[0]


def _stop_when_parent_ends(parent_pid: int) -> None:
    """Send this worker SIGTERM (a clean stop) once ``parent_pid``, the dashboard that started
    it, has ended. The parent PID, not a pid file or lease: a process's parent changes to
    the reaper when the parent dies and never changes back, so a recycled PID cannot fool
    it. (``PR_SET_PDEATHSIG`` cannot be used: it fires when the Streamlit *thread* that
    started the worker ends, which is after every page run.)"""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_WATCH_S)
        log.info("the dashboard that started this worker (PID %s) has stopped; stopping",
                 parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


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
        error = f"no handler for job kind {job.kind!r}"
        finish(job_id, FAILED, error=error, settings=settings)
        log_job_end(job_id, job.kind, FAILED, time.monotonic(), error)
        return FAILED
    ctx = LoggedJobContext(job_id=job_id, kind=job.kind, params=dict(job.params or {}),
                           settings=settings, worker_id=worker_id, created_by=job.created_by,
                           percent_step=settings.worker_log_progress_percent)
    started = time.monotonic()
    log.info("job #%s %s: started%s (by %s, attempt %s)", job_id, job.kind,
             f": {one_line(job.title)}" if job.title else "", job.created_by or "anonymous",
             job.attempts)
    beat = _Heartbeat(job_id, settings)
    beat.start()
    try:
        result = handler(ctx)
    except JobCancelled:
        finish(job_id, CANCELLED, settings=settings)
        log_job_end(job_id, job.kind, CANCELLED, started)
        return CANCELLED
    except KeyboardInterrupt:
        # The worker is being stopped: leave the job to be resumed by the next worker.
        finish(job_id, INTERRUPTED, settings=settings)
        log_job_end(job_id, job.kind, INTERRUPTED + " (resumes with the next worker)", started)
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the job
        # The traceback to standard error (the debug log), the event as one line.
        traceback.print_exc()
        # On a full disk the log line may not fit: the failure itself matters more.
        with contextlib.suppress(Exception):
            ctx.log(traceback.format_exc(limit=8), level="error")
        error = str(exc) if isinstance(exc, DiskFullError) else f"{type(exc).__name__}: {exc}"
        _finish_waiting_for_room(job_id, FAILED, settings, error=error)
        log_job_end(job_id, job.kind, FAILED, started, error)
        return FAILED
    finally:
        beat.stop_event.set()
    _finish_waiting_for_room(job_id, DONE, settings,
                             result=result if isinstance(result, dict) else None)
    log_job_end(job_id, job.kind, DONE, started)
    return DONE


def _release_claimed_jobs(worker_id: str, settings: Settings) -> None:
    from core.jobs import RUNNING, list_jobs

    for job in list_jobs(statuses=(RUNNING,), limit=1000, settings=settings):
        if job.worker_id == worker_id:
            finish(job.id, INTERRUPTED, settings=settings)
            log_job_end(job.id, job.kind, INTERRUPTED + " (resumes with the next worker)",
                        time.monotonic())


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
               idle_exit_seconds: float | None = None, parent_pid: int | None = None) -> int:
    """The worker loop. ``once``: run queued jobs until the queue is empty, then return.
    ``parent_pid``: stop cleanly once that process (the dashboard) has ended."""
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
    log.info("worker %s started (slot %s%s)", worker_id, slot,
             f", stops with the dashboard, PID {parent_pid}" if parent_pid else "")
    if parent_pid is not None:
        _stop_when_parent_ends(parent_pid)
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
        # Stopped between claiming a job and running it (loading its handler): leave that
        # job to resume now, not after ``worker_stale_seconds`` without a heartbeat.
        with contextlib.suppress(Exception):
            _release_claimed_jobs(worker_id, settings)
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(OSError):
            pid_file.unlink()
        lock.release()
        log.info("worker %s stopped", worker_id)
    return 0
