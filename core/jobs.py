"""Background jobs: a queue in the database, run by worker processes (``core.worker``).

A capability registers a handler per job kind::

    @register_handler("generate")
    def run_generation(ctx: JobContext) -> dict: ...

The handler reads ``ctx.params``, reports with ``ctx.progress``/``ctx.log`` and calls
``ctx.check_cancelled()`` between units of work. It must be resumable: a job whose
worker died is picked up again (status ``interrupted`` -> ``running``) and the handler
must continue from what is already stored, not start over.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.db.models import Job, JobEvent, utcnow

QUEUED, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE_STATUSES = (QUEUED, RUNNING, INTERRUPTED)
FINAL_STATUSES = (DONE, FAILED, CANCELLED)
MAX_ATTEMPTS = 3

# Modules that register handlers when imported; a missing one is skipped.
HANDLER_MODULES = ("core.generation.jobs", "core.training.jobs", "core.explain.jobs",
                   "core.quiz.jobs", "core.ingest.jobs", "core.demo.jobs")

Handler = Callable[["JobContext"], "dict[str, Any] | None"]
_handlers: dict[str, Handler] = {}


class JobCancelled(Exception):
    """Raised inside a handler when a user asked to cancel the job."""


def register_handler(kind: str) -> Callable[[Handler], Handler]:
    def decorate(fn: Handler) -> Handler:
        _handlers[kind] = fn
        return fn
    return decorate


def _extra_handler_modules() -> tuple[str, ...]:
    # Test-only (or site-specific) job kinds, e.g. SYNTHLAB_EXTRA_JOB_MODULES=tests.crashjobs:
    # a worker subprocess has no other way to learn them.
    raw = os.environ.get("SYNTHLAB_EXTRA_JOB_MODULES", "")
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def load_handlers() -> dict[str, Handler]:
    for module in _extra_handler_modules():
        importlib.import_module(module)
    for module in HANDLER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not (exc.name and module.startswith(exc.name)):
                raise
    return dict(_handlers)


def worker_identity(pid: int | None = None) -> str:
    """``host:pid`` of this process (or of another ``pid`` on this host)."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


# --- queue operations (used by pages, the CLI and the worker) -------------------------

def submit(kind: str, params: dict[str, Any], *, title: str | None = None,
           created_by: Any = None, total: int = 0, unit: str | None = None,
           settings: Settings | None = None) -> int:
    """Queue a job; ``unit`` names what its progress counts (shown as "12/40 images").

    ``created_by`` is a name (CLI, scripts: trusted) or a ``core.users.identity.Identity``
    (pages): an identity is re-checked against the accounts at this moment, so a removed
    user's open tab cannot queue work (``PermissionDenied``, audited).
    """
    from core.users.identity import Identity
    from core.users.permissions import refusals_audited, require_current

    identity = created_by if isinstance(created_by, Identity) else None
    created_by = identity.name if identity is not None else created_by

    def write(session: Session) -> int:
        if identity is not None:
            require_current(identity, None, None, f"queue a {kind} job", session=session)
        job = Job(kind=kind, params=params, title=title or kind, created_by=created_by,
                  status=QUEUED, progress_total=total, progress_unit=unit)
        session.add(job)
        session.flush()
        session.add(JobEvent(job_id=job.id, message=f"queued by {created_by or 'anonymous'}"))
        return job.id
    with refusals_audited(settings):
        return run_write(write, settings)


def request_cancel(job_id: int, *, by: Any = None, settings: Settings | None = None) -> bool:
    """Ask for a job to stop. A queued job is cancelled at once; a running one at its next check.

    ``by`` is a name (CLI: trusted) or an ``Identity`` (pages), whose current role is read
    in the same transaction: a click in a live job panel (a fragment, which skips the page's
    sign-in check) by a since-demoted admin is refused here and audited.
    """
    from core.users.identity import Identity
    from core.users.permissions import refusals_audited, require_current

    identity = by if isinstance(by, Identity) else None
    by = identity.name if identity is not None else by

    def write(session: Session) -> bool:
        job = session.get(Job, job_id)
        if identity is not None:
            require_current(identity, job.created_by if job is not None else None, "cancel",
                            f"job #{job_id}", session=session)
        if job is None or job.status in FINAL_STATUSES:
            return False
        session.add(JobEvent(job_id=job_id, level="warning",
                             message=f"cancel requested by {by or 'anonymous'}"))
        from core.users import audit  # here: core.users imports the DB layer, not jobs

        audit.record(session, by, "cancel", target_kind="job", target_id=job_id,
                     detail={"kind": job.kind, "owner": job.created_by, "status": job.status})
        if job.status in (QUEUED, INTERRUPTED):
            job.status = CANCELLED
            job.finished_at = utcnow()
        else:
            job.cancel_requested = True
        return True
    with refusals_audited(settings):
        return run_write(write, settings)


def get_job(job_id: int, settings: Settings | None = None) -> Job | None:
    with session_scope(settings) as session:
        return session.get(Job, job_id)


def list_jobs(*, kind: str | None = None, statuses: tuple[str, ...] | None = None,
              limit: int = 50, settings: Settings | None = None) -> list[Job]:
    with session_scope(settings) as session:
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if kind:
            query = query.where(Job.kind == kind)
        if statuses:
            query = query.where(Job.status.in_(statuses))
        return list(session.scalars(query))


def job_events(job_id: int, *, limit: int = 200, settings: Settings | None = None) -> list[JobEvent]:
    with session_scope(settings) as session:
        query = (select(JobEvent).where(JobEvent.job_id == job_id)
                 .order_by(JobEvent.id.desc()).limit(limit))
        return list(reversed(list(session.scalars(query))))


def add_event(job_id: int, message: str, level: str = "info",
              settings: Settings | None = None) -> None:
    def write(session: Session) -> None:
        session.add(JobEvent(job_id=job_id, level=level, message=message))
    run_write(write, settings)


# The rate a job shows is over its last minute of progress: recent enough to follow a
# change of speed (a resumed job, a slower class), long enough not to jump per batch.
RATE_WINDOW_SECONDS = 60.0


def window_rate(samples: list[tuple[float, int]], now: float,
                window_seconds: float = RATE_WINDOW_SECONDS) -> float | None:
    """Units per second over the ``(time, done)`` samples of the last ``window_seconds``.

    The one rate of a job: ``JobContext.progress`` stores it in ``Job.rate`` and every view
    (the job line, its time left, the CLI) reads it from there, so no two places disagree.
    None until two samples in the window differ.
    """
    recent = [(t, d) for t, d in samples if now - t <= window_seconds]
    if len(recent) < 2:
        return None
    (first_t, first_d), (last_t, last_d) = recent[0], recent[-1]
    if last_t <= first_t or last_d <= first_d:
        return None
    return (last_d - first_d) / (last_t - first_t)


def eta_seconds(job: Job) -> float | None:
    """Time left at the job's stored rate (``window_rate``); None without a rate."""
    if not job.rate or job.rate <= 0 or job.progress_total <= 0:
        return None
    return max(0.0, (job.progress_total - job.progress_done) / job.rate)


def progress_figures(job: Job) -> tuple[float | None, float | None]:
    """The rate and time left to show for ``job`` (both None unless it is running)."""
    if job.status != RUNNING or not job.rate:
        return None, None
    return job.rate, eta_seconds(job)


def mark_stale_jobs(settings: Settings | None = None) -> list[int]:
    """Running jobs whose worker stopped beating become ``interrupted`` (to be resumed)."""
    settings = settings or get_settings()
    cutoff = utcnow() - dt.timedelta(seconds=settings.worker_stale_seconds)

    def write(session: Session) -> list[int]:
        stale = list(session.scalars(select(Job).where(
            Job.status == RUNNING,
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))))
        ids = []
        for job in stale:
            if _worker_alive_here(job.worker_id) and job.heartbeat_at and \
                    job.heartbeat_at > utcnow() - dt.timedelta(seconds=settings.worker_stale_seconds * 4):
                continue
            _interrupt(session, job)
            ids.append(job.id)
        return ids
    return run_write(write, settings)


def _interrupt(session: Session, job: Job) -> None:
    job.status = INTERRUPTED
    job.worker_id = None
    session.add(JobEvent(job_id=job.id, level="warning",
                         message="worker stopped mid-job; the job will resume"))


def interrupt_jobs_of(worker_id: str, settings: Settings | None = None) -> list[int]:
    """Running jobs of a worker known to be dead become ``interrupted`` now, heartbeat or not.

    For a worker that took over its dead predecessor's lock (core.worker). A process that
    now has the dead worker's PID (reused) makes this do nothing: the heartbeat rule in
    ``mark_stale_jobs`` still frees those jobs later.
    """
    if _worker_alive_here(worker_id):
        return []

    def write(session: Session) -> list[int]:
        orphans = list(session.scalars(select(Job).where(Job.status == RUNNING,
                                                         Job.worker_id == worker_id)))
        for job in orphans:
            _interrupt(session, job)
        return [job.id for job in orphans]
    return run_write(write, settings)


def _worker_alive_here(worker_id: str | None) -> bool:
    if not worker_id or ":" not in worker_id:
        return False
    host, pid = worker_id.rsplit(":", 1)
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


def claim_next(worker_id: str, kinds: list[str] | None = None,
               settings: Settings | None = None) -> int | None:
    """Atomically take the oldest runnable job, or return None."""
    def write(session: Session) -> int | None:
        query = (select(Job).where(Job.status.in_((QUEUED, INTERRUPTED)),
                                   Job.attempts < MAX_ATTEMPTS)
                 .order_by(Job.id).limit(1))
        if kinds is not None:
            query = query.where(Job.kind.in_(kinds))
        if session.bind.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        job = session.scalar(query)
        if job is None:
            return None
        resumed = job.status == INTERRUPTED
        job.status = RUNNING
        job.worker_id = worker_id
        job.attempts += 1
        job.heartbeat_at = utcnow()
        job.started_at = job.started_at or utcnow()
        session.add(JobEvent(job_id=job.id, message=(
            f"resumed by worker {worker_id}" if resumed else f"started by worker {worker_id}")))
        return job.id
    return run_write(write, settings)


def fail_exhausted(settings: Settings | None = None) -> None:
    """Interrupted jobs that already used every attempt are failed, with a reason."""
    def write(session: Session) -> None:
        session.execute(update(Job).where(Job.status == INTERRUPTED, Job.attempts >= MAX_ATTEMPTS)
                        .values(status=FAILED, finished_at=utcnow(),
                                error=f"interrupted {MAX_ATTEMPTS} times; giving up"))
    run_write(write, settings)


def counts_by_status(settings: Settings | None = None) -> dict[str, int]:
    with session_scope(settings) as session:
        rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
        return {status: count for status, count in rows}


# --- the handler's view of its job ----------------------------------------------------

@dataclass
class JobContext:
    job_id: int
    kind: str
    params: dict[str, Any]
    settings: Settings
    worker_id: str
    created_by: str | None = None
    _last_write: float = 0.0
    _rate_window: list[tuple[float, int]] = field(default_factory=list)
    _cancelled: bool = False

    def log(self, message: str, level: str = "info") -> None:
        add_event(self.job_id, message, level, self.settings)

    def progress(self, done: int, total: int | None = None, message: str | None = None,
                 *, force: bool = False) -> None:
        """Record progress (rate-limited to ~2 writes a second) and check for cancel."""
        now = time.monotonic()
        self._rate_window.append((now, done))
        self._rate_window = [(t, d) for t, d in self._rate_window
                             if now - t <= RATE_WINDOW_SECONDS]
        # The last step is always written: a rate-limited one left a finished job showing
        # an earlier step's message ("1/6 images") under its "6/6".
        final = total is not None and done >= total
        if not force and not final and now - self._last_write < 0.5:
            return
        self._last_write = now
        rate = window_rate(self._rate_window, now)

        def write(session: Session) -> bool:
            values: dict[str, Any] = {"progress_done": done, "heartbeat_at": utcnow()}
            if total is not None:
                values["progress_total"] = total
            if rate is not None:
                values["rate"] = rate
            if message is not None:
                values["message"] = message
            session.execute(update(Job).where(Job.id == self.job_id).values(**values))
            return bool(session.scalar(select(Job.cancel_requested).where(Job.id == self.job_id)))
        self._cancelled = run_write(write, self.settings)
        self.check_cancelled(refresh=False)

    def set_result(self, result: dict[str, Any]) -> None:
        """Save partial results while running (the final ones are the handler's return)."""
        def write(session: Session) -> None:
            session.execute(update(Job).where(Job.id == self.job_id).values(result=result))
        run_write(write, self.settings)

    def check_cancelled(self, refresh: bool = True) -> None:
        if refresh:
            with session_scope(self.settings) as session:
                self._cancelled = bool(session.scalar(
                    select(Job.cancel_requested).where(Job.id == self.job_id)))
        if self._cancelled:
            raise JobCancelled()


def finish(job_id: int, status: str, *, result: dict[str, Any] | None = None,
           error: str | None = None, settings: Settings | None = None) -> None:
    def write(session: Session) -> None:
        job = session.get(Job, job_id)
        if job is None:
            return
        job.status = status
        if status != INTERRUPTED:
            job.finished_at = utcnow()
        else:
            job.worker_id = None
            # Stopped cleanly (a worker told to stop, a dashboard closed): not the job's
            # fault, so it does not use up one of its MAX_ATTEMPTS. Crashes still count.
            job.attempts = max(0, job.attempts - 1)
        job.heartbeat_at = utcnow()
        if result is not None:
            job.result = result
        if error is not None:
            job.error = error
        if status == DONE and job.progress_total:
            job.progress_done = max(job.progress_done, job.progress_total)
        session.add(JobEvent(job_id=job_id, level="error" if status == FAILED else "info",
                             message=f"{status}" + (f": {error}" if error else "")))
    run_write(write, settings)


def heartbeat(job_id: int, settings: Settings | None = None) -> None:
    def write(session: Session) -> None:
        session.execute(update(Job).where(Job.id == job_id, Job.status == RUNNING)
                        .values(heartbeat_at=utcnow()))
    run_write(write, settings)
