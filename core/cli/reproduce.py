"""``reproduce original``: rerun the original fruit study beside SynthLab's protocol."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.cli import CliError, emit, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    reproduce = subparsers.add_parser(
        "reproduce", help="rerun the original study: 4 modes x 2 protocols x N seeds, then a report",
        description="Train real-only, synthetic-only, mixed and pretrain-finetune classifiers "
                    "under the original study's protocol (no validation split, last-epoch "
                    "weights, Xavier init, Adam, white letterbox, LANCZOS, the study's trim of "
                    "square images, mixed = half of each set) and under SynthLab's default, "
                    "with several seeds each, all tested on the same held-out real images; then "
                    "write the HTML report comparing them with each other and with the study's "
                    "published figures. Runs train in this process (they show on the dashboard "
                    "as they go) unless --queue hands them to the background worker.")
    reproduce.add_argument("recipe", choices=("original",), help="what to reproduce")
    reproduce.add_argument("--real", required=True, metavar="DATASET",
                           help="the real dataset (e.g. the Kaggle fruit photos)")
    reproduce.add_argument("--synthetic", required=True, metavar="DATASET",
                           help="the synthetic dataset (e.g. the study's DatasetSynthesis)")
    reproduce.add_argument("--classes", nargs="+",
                           help="classes (default: those with real and synthetic images, less "
                                "'mixed', which the study dropped)")
    reproduce.add_argument("--seeds", type=positive_int, default=5,
                           help="training seeds per configuration (default: 5)")
    reproduce.add_argument("--seed", type=int, default=0, help="first training seed (default: 0)")
    reproduce.add_argument("--split-seed", type=int, default=0,
                           help="seed of the test split when the real dataset has no test tag")
    reproduce.add_argument("--epochs", type=positive_int,
                           help="override both protocols' 10 epochs (for a quick look only)")
    reproduce.add_argument("--out", type=Path,
                           help="the report file (default: synthlab-reproduce-GROUP.html)")
    reproduce.add_argument("--queue", action="store_true",
                           help="queue a job for the background worker and return; write the "
                                "report later with  python -m core report GROUP")
    reproduce.add_argument("--json", action="store_true", help="machine-readable output")
    reproduce.set_defaults(func=_reproduce)


def _reproduce(args: argparse.Namespace) -> int:
    from core.cli.train import _names, train_in_foreground, variant_summaries
    from core.config import get_settings
    from core.training.data import DataError
    from core.training.experiments import list_runs
    from core.training.recipes import queue_reproduction

    settings = get_settings()
    try:
        plan = queue_reproduction(args.real, args.synthetic, classes=_names(args.classes),
                                  seeds=args.seeds, seed=args.seed, split_seed=args.split_seed,
                                  epochs=args.epochs, created_by="cli", settings=settings)
    except (DataError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    payload: dict[str, Any] = {"group_id": plan.group_id, "run_ids": plan.run_ids,
                               "classes": plan.classes, "notes": plan.notes}
    header = (f"reproduce original: {len(plan.run_ids)} runs (4 modes x 2 protocols x "
              f"{args.seeds} seed(s)) on {', '.join(plan.classes)}, group {plan.group_id}")
    if args.queue:
        from core.training.jobs import submit_training
        from core.worker import ensure_worker

        job_id = submit_training(plan.run_ids, title=f"reproduce original ({len(plan.run_ids)} runs)",
                                 created_by="cli", settings=settings)
        ensure_worker(settings)
        payload["job_id"] = job_id
        emit(payload, args.json, "\n".join([header, *(f"note: {n}" for n in plan.notes),
                                            f"queued job {job_id}; when it is done:  python -m core "
                                            f"report {plan.group_id} --out report.html"]))
        return 0
    if not args.json:
        print(header)
        for note in plan.notes:
            print(f"note: {note}")
    train_in_foreground(plan.run_ids, settings)
    from core.training.report import write_report

    out = args.out or Path(f"synthlab-reproduce-{plan.group_id}.html")
    try:
        path = write_report(plan.group_id, out, settings)
    except OSError as exc:
        raise CliError(f"the runs finished but the report could not be written to {out}: "
                       f"{exc.strerror or exc}; write it with  python -m core report "
                       f"{plan.group_id} --out FILE") from exc
    payload["report"] = str(path)
    payload["summary"] = variant_summaries(list_runs(ids=plan.run_ids, settings=settings))
    lines = []
    for variant in payload["summary"]:
        real = variant["metrics"].get("real_test", {})
        lines.append(f"  {variant['label']:<58} " + "  ".join(
            f"{k} {real[k]['mean']:.3f}+-{real[k]['std']:.3f}"
            for k in ("accuracy", "f1_macro", "f1_weighted", "roc_auc") if k in real))
    emit(payload, args.json, "\n".join(["real test set, mean +- std over seeds:", *lines,
                                        f"report: {path}"]))
    return 0
