"""``worker`` and ``jobs``: run the background worker, list and cancel jobs."""

from __future__ import annotations

import argparse

from core.cli import CliError, positive_int, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    worker = subparsers.add_parser("worker", help="run the background job worker in the foreground")
    worker.add_argument("--slot", default="default",
                        help="lock name; run one worker per GPU with e.g. --slot cuda1")
    worker.add_argument("--kind", action="append", dest="kinds",
                        help="only run jobs of this kind (repeatable)")
    worker.add_argument("--once", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--stop", action="store_true",
                        help="stop the running worker of this slot cleanly (its job is left to "
                             "resume) and wait until it has exited")
    worker.add_argument("--timeout", type=positive_int, default=60,
                        help="with --stop: seconds to wait (default: 60)")
    worker.add_argument("--parent-pid", type=positive_int, default=None, help=argparse.SUPPRESS)
    worker.set_defaults(func=_worker)

    jobs = subparsers.add_parser("jobs", help="list jobs, or cancel one")
    jobs.add_argument("--cancel", type=int, metavar="JOB_ID", help="cancel this job")
    jobs.add_argument("--limit", type=positive_int, default=20,
                      help="show the newest N jobs (default: 20)")
    jobs.add_argument("--json", action="store_true", help="machine-readable output")
    jobs.set_defaults(func=_jobs)


def _worker(args: argparse.Namespace) -> int:
    from core.workerlog import configure_worker_logging

    if args.stop:
        return _stop_worker(args.slot, args.timeout)
    # Before the worker imports any library that reads its progress-bar settings.
    configure_worker_logging()
    from core.worker import run_worker

    # --parent-pid: given by the dashboard that starts a worker (stop when it stops).
    return run_worker(slot=args.slot, kinds=args.kinds, once=args.once,
                      parent_pid=args.parent_pid)


def _stop_worker(slot: str, timeout: int) -> int:
    from core.worker import stop_worker

    try:
        pid = stop_worker(slot=slot, wait_seconds=timeout)
    except (TimeoutError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc
    print(f"no worker is running (slot {slot})" if pid is None else
          f"stopped worker {pid} (slot {slot}); a job it was running resumes with the next worker")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from core import jobs

    if args.cancel is not None:
        if jobs.get_job(args.cancel) is None:
            raise CliError(f"no job with id {args.cancel}")
        changed = jobs.request_cancel(args.cancel, by="cli")
        print_json({"job_id": args.cancel, "cancel_requested": changed}) if args.json else \
            print(f"job {args.cancel}: " + ("cancel requested" if changed else "already finished"))
        return 0
    rows = jobs.list_jobs(limit=args.limit)
    if args.json:
        print_json([{"id": j.id, "kind": j.kind, "status": j.status, "title": j.title,
                     "done": j.progress_done, "total": j.progress_total, "unit": j.progress_unit,
                     "created_by": j.created_by, "error": j.error} for j in rows])
        return 0
    if not rows:
        print("no jobs")
    for j in rows:
        unit = f" {j.progress_unit}" if j.progress_unit else ""
        print(f"{j.id:>5}  {j.kind:<10} {j.status:<12} {j.progress_done}/{j.progress_total}{unit}  "
              f"{j.title or ''}  ({j.created_by or '-'})")
    return 0
