"""The background worker seen from the admin page: is it alive, which PID, restart it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from dataclasses import dataclass

from core.config import Settings
from core.worker import ensure_worker, pid_path, worker_alive


@dataclass(frozen=True)
class WorkerStatus:
    alive: bool
    pid: int | None
    log_tail: str


def worker_status(settings: Settings, slot: str = "default", log_lines: int = 30) -> WorkerStatus:
    pid = None
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_path(settings, slot).read_text().strip())
    alive = worker_alive(settings, slot)
    log_file = settings.logs_dir / f"worker-{slot}.log"
    tail = ""
    with contextlib.suppress(OSError):
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-log_lines:])
    return WorkerStatus(alive=alive, pid=pid if alive else None, log_tail=tail)


def restart_worker(settings: Settings, *, actor: str, slot: str = "default",
                   wait_seconds: float = 15.0,
                   stop_with_this_process: bool = False) -> WorkerStatus:
    """Stop the worker (SIGTERM: its running job is left to resume) and start a fresh one
    (``stop_with_this_process``: one that stops when this process, the dashboard, ends)."""
    from core.users import audit

    status = worker_status(settings, slot)
    if status.alive and status.pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(status.pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_seconds
        while worker_alive(settings, slot) and time.monotonic() < deadline:
            time.sleep(0.2)
        if worker_alive(settings, slot):
            raise RuntimeError(f"worker {status.pid} did not stop within {wait_seconds:.0f} s")
    ensure_worker(dataclasses.replace(settings, autostart_worker=True), slot,
                  stop_with_this_process=stop_with_this_process)
    audit.record_now(actor, "restart_worker", target_kind="worker", target_id=slot,
                     detail={"old_pid": status.pid}, settings=settings)
    deadline = time.monotonic() + wait_seconds
    while not worker_alive(settings, slot) and time.monotonic() < deadline:
        time.sleep(0.2)
    return worker_status(settings, slot)
