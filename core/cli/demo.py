"""``demo``: build (or ``--remove``) the offline demo."""

from __future__ import annotations

import argparse
import sys
import time

from core.cli import CliError, emit, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="try SynthLab offline: a drawn fruit dataset, a tiny demo model and jobs",
        description="Builds a small demo with no download: a few hundred procedurally drawn "
                    "fruit-like pictures per class (dataset 'demo: drawn fruit'), a tiny "
                    "random-weight diffusion pipeline ('demo model: makes noise, for trying "
                    "the flow'), and queues one generation, one training run and one "
                    "attribution job for the worker (the dashboard starts one; or run "
                    "`python -m core worker`). Running it again adds nothing twice. "
                    "`--remove` takes all of it away again and nothing else.")
    demo.add_argument("--remove", action="store_true",
                      help="remove the demo's datasets, images, model, jobs, runs and attributions")
    demo.add_argument("--per-class", type=positive_int, default=None, metavar="N",
                      help="drawn pictures per class (default: SYNTHLAB_DEMO_IMAGES_PER_CLASS, 200)")
    demo.add_argument("--generated-per-class", type=positive_int, default=None, metavar="N",
                      help="images per class the generation job makes (default: SYNTHLAB_DEMO_GENERATED_PER_CLASS, 8)")
    demo.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: SYNTHLAB_DEMO_EPOCHS, 2)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the drawings, the split, "
                                                          "the training and the generation")
    demo.add_argument("--no-jobs", action="store_true", help="only the dataset and the model")
    demo.add_argument("--wait", action="store_true",
                      help="wait until the three jobs are done (a worker must be running)")
    demo.add_argument("--timeout", type=positive_int, default=600, metavar="SECONDS",
                      help="how long --wait (or --remove, for running jobs to stop) waits")
    demo.add_argument("--json", action="store_true", help="machine-readable output")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from core.cli.data import _user
    from core.demo import DemoError, build_demo, remove_demo, wait_for_jobs

    if args.remove:
        try:
            report = remove_demo(by=_user(), wait_s=float(args.timeout))
        except DemoError as exc:
            raise CliError(str(exc)) from exc
        emit(report.to_dict(), args.json, f"demo {report.summary}")
        return 0

    if args.wait and not args.no_jobs:
        from core.worker import worker_alive

        if not worker_alive():
            raise CliError("--wait needs a running worker: start `python -m core worker` in "
                           "another shell (or open the dashboard), then run this again")

    def progress(message: str) -> None:
        if not args.json:
            print(f"{message} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        report = build_demo(per_class=args.per_class,
                            generated_per_class=args.generated_per_class,
                            epochs=args.epochs, seed=args.seed,
                            queue_jobs=not args.no_jobs, created_by=_user(), progress=progress)
    except DemoError as exc:
        raise CliError(str(exc)) from exc
    payload = report.to_dict()
    lines = [f"dataset {report.dataset!r}: {report.images} images ({report.added} added now)",
             f"demo model: {report.model_dir}"]
    for kind, job_id in report.jobs.items():
        again = " (queued earlier)" if kind in report.reused_jobs else ""
        lines.append(f"{kind} job #{job_id}{again}")
    if report.jobs and not args.wait:
        lines.append("the worker runs the jobs: open the dashboard (streamlit run app.py) or run "
                     "`python -m core worker`; `python -m core demo --remove` takes it all away")
    if args.wait and report.jobs:
        statuses = wait_for_jobs(list(report.jobs.values()), timeout_s=float(args.timeout))
        payload["statuses"] = {kind: statuses[job_id] for kind, job_id in report.jobs.items()}
        payload["seconds_until_done"] = round(time.monotonic() - started, 1)
        lines.append("jobs: " + ", ".join(f"{kind} {status}"
                                          for kind, status in payload["statuses"].items())
                     + f" after {payload['seconds_until_done']} s")
        if any(status != "done" for status in payload["statuses"].values()):
            emit(payload, args.json, "\n".join(lines))
            return 1
    emit(payload, args.json, "\n".join(lines))
    return 0
