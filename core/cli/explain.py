"""``explain``: what a trained run looks at in one image, as an overlay PNG.

    python -m core explain --run 3 --image 42 --method gradcam --out cam.png [--json]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from core.cli import CliError, print_json

METHOD_CHOICES = ("saliency", "integrated-gradients", "gradcam", "occlusion")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain", help="attribution map of one image with a trained run (captum)",
        description="Writes the attribution heatmap over the model's input as a PNG and prints "
                    "the predicted class and probabilities.")
    parser.add_argument("--run", required=True, type=int, metavar="RUN_ID", help="a finished training run")
    parser.add_argument("--image", required=True, metavar="IMAGE_ID_OR_PATH",
                        help="an image id from the index, or an image file")
    parser.add_argument("--method", required=True, choices=METHOD_CHOICES)
    parser.add_argument("--out", required=True, type=Path, metavar="OUT.png", help="overlay PNG to write")
    parser.add_argument("--target", default="predicted",
                        help="class to explain: predicted (default), true, or a class name/index")
    parser.add_argument("--steps", type=int, default=32, help="integrated gradients: path steps")
    parser.add_argument("--baseline", default="blurred", choices=("blurred", "black", "white", "mean"),
                        help="integrated gradients / occlusion: the reference image")
    parser.add_argument("--window", type=int, default=8, help="occlusion: window side in pixels")
    parser.add_argument("--stride", type=int, default=4, help="occlusion: stride in pixels")
    parser.add_argument("--input", dest="input_mode", default="by-source", choices=("by-source", "eval"),
                        help="by-source (default): the run's pipeline for the image's source, as "
                             "training fed it; eval: the deterministic real pipeline for any image")
    parser.add_argument("--input-seed", type=int, default=0,
                        help="seed of the pipeline's random steps (synthetic images)")
    parser.add_argument("--opacity", type=float, default=0.55, help="heatmap opacity 0-1")
    parser.add_argument("--scale", type=int, default=4, help="upscale factor of the PNG")
    parser.add_argument("--no-cache", action="store_true", help="recompute even if cached")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_explain)

    cache = subparsers.add_parser(
        "explain-cache", help="size of the attribution cache; --prune removes stale entries",
        description="Counts cached attribution maps. --prune removes rows whose file is gone, "
                    "files no row points at (older than 10 minutes) and maps of deleted runs.")
    cache.add_argument("--prune", action="store_true", help="remove the stale entries")
    cache.add_argument("--json", action="store_true", help="machine-readable output")
    cache.set_defaults(func=_cache)


def _explain(args: argparse.Namespace) -> int:
    from core.config import get_settings
    from core.db.engine import init_db
    from core.explain.attribution import AttributionConfig, AttributionError
    from core.explain.overlay import render_overlay
    from core.explain.service import ExplainError, explain, load_run, subject_from_reference
    from core.store import atomic_write

    if args.out.suffix.lower() != ".png":
        raise CliError(f"--out must be a .png file, not {args.out}")
    if not 0.0 <= args.opacity <= 1.0:
        raise CliError("--opacity must be between 0 and 1")
    if not 1 <= args.scale <= 32:
        raise CliError("--scale must be between 1 and 32")
    settings = get_settings()
    init_db(settings)
    try:
        config = AttributionConfig(method=args.method, ig_steps=args.steps, baseline=args.baseline,
                                   occlusion_window=args.window, occlusion_stride=args.stride)
        run = load_run(args.run, settings)
        subject = subject_from_reference(args.image, settings)
        result = explain(run, subject, config, target=args.target, input_mode=args.input_mode,
                         input_seed=args.input_seed,
                         use_cache=not args.no_cache, settings=settings)
    except (ExplainError, AttributionError) as exc:
        raise CliError(str(exc)) from exc
    image = render_overlay(result.prepared.pixels, result.attribution, opacity=args.opacity,
                           scale=args.scale,
                           content_box=result.prepared.content_box if result.prepared.has_margins else None)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    out = args.out.expanduser().resolve()
    try:
        atomic_write(out, buffer.getvalue())
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from exc

    summary = {**result.summary(), "out": str(out)}
    if args.json:
        print_json(summary)
        return 0
    print(f"run #{result.run_id}, {config.describe()}, target class: {result.target_class}")
    truth = f" (true class: {subject.true_class})" if subject.true_class else ""
    print(f"predicted: {result.predicted_class}{truth}")
    for name, probability in result.top_predictions(len(result.class_names)):
        print(f"  {probability:7.2%}  {name}")
    if result.margin_mass is not None:
        print(f"attribution on the letterbox margins: {result.margin_mass:.1%} "
              f"(margins are {result.margin_area:.1%} of the input)")
    print(f"overlay written to {out}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from core.explain.cache import inspect_cache

    report = inspect_cache(prune=args.prune)
    if args.json:
        print_json(report.to_dict())
        return 0
    print(f"{report.rows} cached maps, {report.files} files, {report.bytes / 2**20:.1f} MiB")
    print(f"stale: {report.rows_without_file} rows without a file, "
          f"{report.files_without_row} files without a row")
    if args.prune:
        print(f"removed {report.removed_rows} rows and {report.removed_files} files")
    return 0
