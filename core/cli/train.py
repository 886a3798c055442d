"""``train`` and ``runs``: train classifiers in the foreground, list runs and their metrics."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from core.cli import CliError, positive_int, print_json
from core.training.protocols import INIT_SCHEMES, OPTIMIZERS, PROTOCOLS, SELECT_RULES

MODES = ("real", "synthetic", "mixed", "pretrain-finetune")


def _names(values: list[str] | None) -> list[str] | None:
    """``--classes apple banana`` and ``--classes apple,banana`` both work."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _level(text: str) -> int | None:
    if text.lower() == "all":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("levels are positive integers or 'all'")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="train and evaluate a classifier in the foreground",
        description="Train on real, synthetic or mixed images and evaluate on the held-out "
                    "real test set (and the synthetic test set when there is one).")
    train.add_argument("--train", dest="mode", required=True, choices=MODES,
                       help="what to train on")
    train.add_argument("--classes", nargs="+", help="class names (default: every class with images)")
    train.add_argument("--datasets", nargs="+", help="real datasets to use (default: all)")
    train.add_argument("--synthetic-datasets", nargs="+", help="synthetic datasets (default: all)")
    train.add_argument("--cross-datasets", nargs="+", default=[],
                       help="also evaluate on these real datasets (train on A, test on B)")
    train.add_argument("--model", choices=("small", "deep"), default="small",
                       help="classifier: the small reference CNN or a deeper one (default: small)")
    train.add_argument("--protocol", choices=tuple(PROTOCOLS),
                       help="start from a named protocol: synthlab (the default) or original (the "
                            "original fruit study's, exactly); the options below override it")
    train.add_argument("--epochs", type=int, help="default: 10")
    train.add_argument("--finetune-epochs", type=int, help="pretrain-finetune: epochs on real data")
    train.add_argument("--lr", type=float, help="learning rate (default: 0.001)")
    train.add_argument("--batch-size", type=int, help="default: 32")
    train.add_argument("--optimizer", choices=OPTIMIZERS, help="default: adamw (original: adam)")
    train.add_argument("--weight-decay", type=float, help="default: 0.0001 (original: 0)")
    train.add_argument("--init", choices=INIT_SCHEMES,
                       help="initial weights: default (PyTorch's) or xavier (uniform, zero biases)")
    train.add_argument("--select", choices=SELECT_RULES,
                       help="keep the weights of the best validation epoch (best-val, the default) "
                            "or of the last epoch (last)")
    train.add_argument("--patience", type=int,
                       help="early stopping patience with --select best-val (0: off; default: 3)")
    train.add_argument("--val-fraction", type=float,
                       help="share of the training images held out for validation (0: none, every "
                            "image trains; default: 0.15)")
    train.add_argument("--augment", choices=("every-epoch", "once"),
                       help="random preprocessing steps redrawn every epoch (default) or drawn "
                            "once per image (original)")
    train.add_argument("--real-pipeline", help="preprocessing pipeline or preset for real images "
                                               "(default: real)")
    train.add_argument("--synthetic-pipeline", help="preprocessing pipeline or preset for synthetic "
                                                    "images (default: synthetic)")
    train.add_argument("--deterministic", action="store_true", default=None,
                       help="deterministic GPU kernels (torch deterministic algorithms, no cuDNN "
                            "autotuning); recorded with the run")
    train.add_argument("--image-size", type=int, help="default: SYNTHLAB_IMAGE_SIZE")
    train.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    train.add_argument("--split-seed", type=int, default=0,
                       help="seed of the test/validation split (default: 0)")
    train.add_argument("--repeats", type=int, default=1, help="repeat with this many seeds")
    train.add_argument("--synthetic-per-class", type=int,
                       help="synthetic images per class (mixed: all real + N synthetic)")
    train.add_argument("--mix-ratio", type=float, help="mixed: synthetic share of the training set")
    train.add_argument("--mix-half", action="store_true",
                       help="mixed as the original study: half of the real and half of the "
                            "synthetic training images of each class")
    train.add_argument("--real-per-class", type=_level, help="keep N real training images per class")
    train.add_argument("--sweep", nargs="+", type=_level, metavar="N",
                       help="data-efficiency sweep over real images per class, e.g. 5 10 25 50 all "
                            "(each level with and without --synthetic-per-class synthetic images)")
    train.add_argument("--name", default="", help="a name for the run(s)")
    train.add_argument("--device", default=None, help="auto | cuda | mps | cpu")
    train.add_argument("--threads", type=int, default=None, metavar="N",
                       help="torch threads while training (default: SYNTHLAB_TORCH_THREADS; 0 "
                            "picks them from the cores free now: usable cores minus the load average)")
    train.add_argument("--json", action="store_true", help="machine-readable output")
    train.set_defaults(func=_train)

    runs = subparsers.add_parser("runs", help="list training runs and their test metrics")
    runs.add_argument("--limit", type=positive_int, default=50,
                      help="show the newest N runs (default: 50)")
    runs.add_argument("--group", help="only the runs of this repeat/sweep group")
    runs.add_argument("--json", action="store_true", help="machine-readable output")
    runs.set_defaults(func=_runs)


def _request(args: argparse.Namespace, settings: Any) -> Any:
    from core.training.data import DataError, DataSpec
    from core.training.experiments import ExperimentRequest
    from core.training.protocols import protocol_options
    from core.training.trainer import TrainConfig

    if args.mix_ratio is not None and args.mode != "mixed":
        raise CliError("--mix-ratio only applies to --train mixed")
    if args.mix_half and args.mode != "mixed":
        raise CliError("--mix-half only applies to --train mixed")
    if args.mode == "mixed" and args.mix_ratio is None and args.synthetic_per_class is None \
            and not args.sweep and not args.mix_half:
        raise CliError("--train mixed needs --synthetic-per-class N, --mix-ratio R or --mix-half")
    augment = None if args.augment is None else args.augment == "every-epoch"
    data_values, train_values = protocol_options(
        args.protocol,
        {"val_fraction": args.val_fraction, "real_pipeline": args.real_pipeline,
         "synthetic_pipeline": args.synthetic_pipeline, "augment_each_epoch": augment},
        {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
         "optimizer": args.optimizer, "weight_decay": args.weight_decay, "init": args.init,
         "select": args.select, "patience": args.patience, "deterministic": args.deterministic,
         "image_size": args.image_size})
    train_values.setdefault("image_size", settings.image_size)
    try:
        data = DataSpec(mode=args.mode, classes=_names(args.classes), real_datasets=_names(args.datasets),
                        synthetic_datasets=_names(args.synthetic_datasets),
                        cross_datasets=_names(args.cross_datasets) or [],
                        real_per_class=args.real_per_class, synthetic_per_class=args.synthetic_per_class,
                        mix_ratio=args.mix_ratio, mix_half=args.mix_half, split_seed=args.split_seed,
                        **data_values)
        train = TrainConfig(model=args.model, seed=args.seed, device=args.device or settings.device,
                            finetune_epochs=args.finetune_epochs, **train_values)
        return ExperimentRequest(data=data, train=train, repeats=args.repeats, name=args.name,
                                 sweep_levels=args.sweep,
                                 sweep_synthetic_per_class=args.synthetic_per_class or 50,
                                 protocol=args.protocol)
    except (DataError, ValueError) as exc:
        raise CliError(str(exc)) from exc


def _train(args: argparse.Namespace) -> int:
    from core.config import get_settings
    from core.training.data import DataError
    from core.training.experiments import create_runs, list_runs

    from core.training.speed import warm_optimizer_imports

    warm_optimizer_imports()  # overlaps planning the runs below
    settings = get_settings()
    if args.threads is not None:
        if args.threads < 0:
            raise CliError(f"--threads must be 0 (choose from the free cores) or more, not {args.threads}")
        settings = dataclasses.replace(settings, torch_threads=args.threads)
    request = _request(args, settings)
    plans: dict[int, Any] = {}
    try:
        run_ids = create_runs(request, created_by="cli", settings=settings, plans=plans)
    except DataError as exc:
        raise CliError(str(exc)) from exc
    results = train_in_foreground(run_ids, settings, plans=plans)
    payload: dict[str, Any] = {"run_ids": run_ids, "runs": results}
    if len(run_ids) > 1:
        payload["summary"] = variant_summaries(list_runs(ids=run_ids, settings=settings))
    if args.json:
        print_json(payload)
        return 0
    for entry in results:
        print(f"run {entry['run_id']}: {entry['name']}")
        for warning in entry.get("warnings", []):
            print(f"  note: {warning}")
        for eval_set, values in entry.items():
            if isinstance(values, dict) and "accuracy" in values:
                print(f"  {eval_set} (n={values.get('n')}): " + "  ".join(
                    _with_interval(k, v, values.get("ci95", {}).get(k)) for k, v in values.items()
                    if k not in ("n", "ci95")))
    for variant in payload.get("summary", []):
        for eval_set, values in variant["metrics"].items():
            print(f"{variant['label']}: mean +- std over {variant['n_runs']} run(s), {eval_set}: "
                  + "  ".join(f"{k} {v['mean']:.3f}+-{v['std']:.3f}" for k, v in values.items()))
    return 0


def train_in_foreground(run_ids: list[int], settings: Any,
                        plans: dict[int, Any] | None = None) -> list[dict[str, Any]]:
    """Execute queued runs in this process with a progress bar; one result entry per run.

    ``plans``: what ``create_runs(..., plans=)`` planned for these runs just now (the others
    are planned here)."""
    from tqdm import tqdm

    from core.training.data import DataError
    from core.training.execution import execute_run, training_units
    from core.training.experiments import get_run, labelled, mark_runs, plan_for_run
    from core.training.models import RUN_CANCELLED, RUN_FAILED

    plans, units = dict(plans or {}), {}
    for run_id in run_ids:
        if run_id not in plans:
            plans[run_id] = plan_for_run(get_run(run_id, settings), settings)
        units[run_id] = training_units(plans[run_id][1], plans[run_id][2])
    total = sum(units.values())
    done = 0
    results = []
    with tqdm(total=total, unit="img", file=sys.stderr, disable=None,
              desc=f"{len(run_ids)} run(s)") as bar:
        for run_id in run_ids:
            def report(units: int, _total: int, name: str) -> None:
                bar.set_description(name[:60])
                bar.update(max(0, units - bar.n))

            def stage(name: str) -> None:
                bar.set_description(name)
            try:
                execute_run(run_id, settings, on_progress=report, progress_offset=done,
                            progress_total=total, on_stage=stage, planned=plans.pop(run_id))
            except DataError as exc:
                mark_runs(run_ids, RUN_FAILED, settings, error=str(exc))
                raise CliError(str(exc)) from exc
            except KeyboardInterrupt:
                mark_runs(run_ids, RUN_CANCELLED, settings, error="interrupted on the command line")
                raise
            except Exception as exc:
                mark_runs([run_id], RUN_FAILED, settings, error=f"{type(exc).__name__}: {exc}")
                raise
            done += units[run_id]
            run = get_run(run_id, settings)
            entry: dict[str, Any] = {"run_id": run_id, "name": run.name, "seed": run.seeds.get("train"),
                                     "seeds": run.seeds, "real_test": labelled(run.metrics, "real_test")}
            warnings = [n for n in (run.config or {}).get("notes", [])
                        if "fewer available" in n or "not enough" in n]
            if warnings:
                entry["warnings"] = warnings
            for eval_set in (run.metrics or {}):
                if eval_set != "real_test" and not eval_set.startswith("_"):
                    entry[eval_set] = labelled(run.metrics, eval_set)
            results.append(entry)
    return results


def _with_interval(name: str, value: float | None, interval: list[float] | None) -> str:
    if value is None:
        return f"{name} n/a"
    return f"{name} {value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def variant_summaries(runs: list[Any]) -> list[dict[str, Any]]:
    """One entry per configuration (mode, sweep level, mix...): runs that differ only by
    seed are pooled, different configurations never are."""
    from core.training.experiments import LABELLED_METRICS, group_by_variant, summarize

    out = []
    for group in group_by_variant(runs):
        data = (group[0].config or {}).get("data", {})
        summary = summarize(group)
        mix = ("half of each set" if data.get("mix_half") else
               f"ratio {data['mix_ratio']}" if data.get("mix_ratio") is not None else
               data.get("synthetic_per_class")) if group[0].mode == "mixed" else None
        level = data.get("real_per_class")
        protocol = (group[0].config or {}).get("protocol")
        label = ", ".join(filter(None, [
            f"{protocol} protocol" if protocol else "", group[0].mode,
            f"{level} real/class" if level is not None else "",
            f"synthetic: {mix}" if mix is not None else ""]))
        out.append({"label": label, "mode": group[0].mode, "real_per_class": level,
                    "synthetic_per_class": data.get("synthetic_per_class"), "mix": mix,
                    "protocol": protocol, "run_ids": [r.id for r in group], "n_runs": len(group),
                    "metrics": {eval_set: {LABELLED_METRICS[k]: v for k, v in values.items()
                                           if k in LABELLED_METRICS}
                                for eval_set, values in summary.items()}})
    return out


def _runs(args: argparse.Namespace) -> int:
    from core.training.experiments import labelled, list_runs, reconcile_runs

    reconcile_runs()
    rows = list_runs(limit=args.limit, group_id=args.group)
    payload = [{"id": r.id, "name": r.name, "mode": r.mode, "model": r.model_name, "status": r.status,
                "group_id": r.group_id, "seeds": r.seeds, "job_id": r.job_id,
                "created_by": r.created_by, "created_at": r.created_at, "error": r.error,
                "metrics": {k: labelled(r.metrics, k) for k in (r.metrics or {}) if not k.startswith("_")}}
               for r in rows]
    if args.json:
        print_json(payload)
        return 0
    if not rows:
        print("no runs yet: train one with  python -m core train --train real")
    else:
        print(f"{'ID':>5}  {'STATUS':<10} {'MODE':<18} {'':<20}  {'GROUP':<12}  NAME")
    for entry in payload:
        acc = entry["metrics"].get("real_test", {}).get("accuracy")
        print(f"{entry['id']:>5}  {entry['status']:<10} {entry['mode']:<18} "
              f"real-test acc {'%.3f' % acc if acc is not None else '-':>6}  "
              f"{entry['group_id'] or '-':<12}  {entry['name']}")
    return 0
