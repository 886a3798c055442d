"""``preprocess``, ``presets`` and ``cache``: check one image, manage pipelines and the cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.cli import CliError, emit, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "preprocess", help="run a preprocessing pipeline on one image and write the result",
        description="Run the 'real' or 'synthetic' pipeline, or a saved preset, on one image.")
    run.add_argument("image", metavar="IMAGE", help="an image file, or the id of an indexed image")
    run.add_argument("--pipeline", default="real", help="real, synthetic or a preset name (default real)")
    run.add_argument("--size", type=int, help="output size in pixels (default: SYNTHLAB_IMAGE_SIZE)")
    run.add_argument("--seed", type=int, default=0, help="seed of the random steps (default 0)")
    run.add_argument("--out", required=True, type=Path, help="output PNG file")
    run.add_argument("--steps-dir", type=Path,
                     help="also write every intermediate step as NN_<step>.png in this folder")
    run.add_argument("--json", action="store_true", help="machine-readable report")
    run.set_defaults(func=_preprocess)

    presets = subparsers.add_parser("presets", help="list, show, save or delete pipeline presets")
    actions = presets.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list presets and the built-in defaults")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_presets_list)
    show = actions.add_parser("show", help="print a pipeline as JSON")
    show.add_argument("name")
    show.set_defaults(func=_presets_show)
    save = actions.add_parser("save", help="save a pipeline JSON file as a preset")
    save.add_argument("name")
    save.add_argument("--from-json", required=True, type=Path, dest="source",
                      help="a file holding a pipeline spec (as printed by 'presets show')")
    save.add_argument("--user", default="cli")
    save.add_argument("--json", action="store_true", help="machine-readable output")
    save.set_defaults(func=_presets_save)
    delete = actions.add_parser("delete", help="delete a preset (a default comes back as built in)")
    delete.add_argument("name")
    delete.add_argument("--json", action="store_true", help="machine-readable output")
    delete.set_defaults(func=_presets_delete)

    cache = subparsers.add_parser("cache", help="inspect, build or prune the preprocessed cache")
    cache_actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    cache_list = cache_actions.add_parser("list", help="list cache entries")
    cache_list.add_argument("--json", action="store_true", help="machine-readable output")
    cache_list.set_defaults(func=_cache_list)
    build = cache_actions.add_parser("build", help="fill the cache for a pipeline now")
    build.add_argument("--pipeline", default="real")
    build.add_argument("--size", type=int)
    build.add_argument("--source", choices=("real", "synthetic"),
                       help="only images of this source (default: the pipeline's name if it is one)")
    build.add_argument("--json", action="store_true", help="machine-readable output")
    build.set_defaults(func=_cache_build)
    prune = cache_actions.add_parser(
        "prune", help="remove cache entries unused for a while (or all with --all)")
    prune.add_argument("--older-than", type=float, default=30.0, metavar="DAYS",
                       help="remove entries not used for this many days (default 30)")
    prune.add_argument("--all", action="store_true", help="remove every entry")
    prune.add_argument("--json", action="store_true", help="machine-readable output")
    prune.set_defaults(func=_cache_prune)


def _pipeline(name: str, size: int | None):  # noqa: ANN202 - Pipeline
    from core.config import get_settings
    from core.preprocess import PipelineError, load_pipeline

    if size is not None and not 1 <= size <= 4096:
        raise CliError("--size must be between 1 and 4096")
    try:
        return load_pipeline(name, get_settings(), size=size)
    except PipelineError as exc:
        raise CliError(str(exc)) from exc


def _open_input(spec: str):  # noqa: ANN202 - PIL image and a description
    from core.config import get_settings
    from core.db.engine import session_scope
    from core.db.models import Image
    from core.imageio import ImageRejected, decode_image
    from core.store import ImageStore

    settings = get_settings()
    path = Path(spec)
    if not path.exists() and spec.isdigit():
        with session_scope(settings) as session:
            row = session.get(Image, int(spec))
        if row is None:
            raise CliError(f"{spec} is neither a file nor the id of an indexed image")
        path = ImageStore(settings).abspath(row.path)
        label = f"image {row.id} ({row.source}, {row.image_class.name})"
    else:
        label = str(path)
    if not path.is_file():
        raise CliError(f"not a file: {path}" if path.exists() else f"no such file: {path}")
    try:
        return decode_image(path, max_pixels=settings.max_image_pixels).image, label
    except ImageRejected as exc:
        raise CliError(f"{path}: {exc}") from exc


def _preprocess(args: argparse.Namespace) -> int:
    from core.imageio import encode_png
    from core.store import atomic_write

    if args.seed < 0:
        raise CliError("--seed must be >= 0")
    if args.out.suffix.lower() != ".png":
        raise CliError("--out must be a .png file (the result is written losslessly)")
    pipeline = _pipeline(args.pipeline, args.size)
    image, label = _open_input(args.image)
    stages = pipeline.apply_steps(image, seed=args.seed)
    result = stages[-1][1]
    try:
        atomic_write(args.out.resolve(), encode_png(result))
        if args.steps_dir:
            for index, (name, stage) in enumerate(stages):
                slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
                atomic_write(args.steps_dir.resolve() / f"{index:02d}_{slug}.png", encode_png(stage))
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    report = {"input": label, "input_size": list(image.size), "pipeline": args.pipeline,
              "pipeline_hash": pipeline.hash(), "steps": pipeline.describe(), "seed": args.seed,
              "output_size": list(result.size), "out": str(args.out)}
    width, height = image.size
    emit(report, args.json, (f"{args.out}: {result.size[0]}x{result.size[1]} from {label} "
                             f"({width}x{height}), pipeline {args.pipeline} (seed {args.seed}): "
                             f"{pipeline.describe()}"))
    return 0


def _presets_list(args: argparse.Namespace) -> int:
    from core.preprocess import BUILTIN_DESCRIPTIONS, DEFAULT_NAMES, list_presets

    rows = list_presets()
    saved = {row.name for row in rows}
    out = [{"name": row.name, "hash": row.pipeline_hash, "updated_by": row.updated_by,
            "updated_at": row.updated_at, "overrides_default": row.name in DEFAULT_NAMES} for row in rows]
    out += [{"name": name, "built_in": True, "description": BUILTIN_DESCRIPTIONS[name]}
            for name in DEFAULT_NAMES if name not in saved]
    lines = [f"{'NAME':<24} {'HASH':<14} SAVED BY"]
    for item in out:
        if item.get("built_in"):
            lines.append(f"{item['name']:<24} {'-':<14} built in: {item['description']}")
        else:
            note = " (overrides the built-in)" if item["overrides_default"] else ""
            lines.append(f"{item['name']:<24} {item['hash'][:12]:<14} "
                         f"{item['updated_by'] or '-'}, {item['updated_at'] or '-'}{note}")
    emit(out, args.json, "\n".join(lines))
    return 0


def _presets_show(args: argparse.Namespace) -> int:
    print_json(_pipeline(args.name, None).to_dict())
    return 0


def _presets_save(args: argparse.Namespace) -> int:
    from core.preprocess import Pipeline, PipelineError, save_preset

    try:
        spec = json.loads(args.source.read_text())
        pipeline = Pipeline.from_dict(spec)
        row = save_preset(args.name, pipeline, args.user)
    except OSError as exc:
        raise CliError(f"cannot read {args.source}: {exc.strerror or exc}") from exc
    except (ValueError, PipelineError) as exc:
        raise CliError(f"{args.source}: {exc}") from exc
    emit({"saved": row.name, "hash": row.pipeline_hash}, args.json,
         f"saved preset {row.name!r} (hash {row.pipeline_hash[:12]})")
    return 0


def _presets_delete(args: argparse.Namespace) -> int:
    from core.preprocess import delete_preset

    if not delete_preset(args.name):
        raise CliError(f"no preset named {args.name!r}")
    emit({"deleted": args.name}, args.json, f"deleted preset {args.name!r}")
    return 0


def _cache_list(args: argparse.Namespace) -> int:
    from core.preprocess import PreprocessedCache

    entries = [{"prefix_hash": e.prefix_hash, "images": e.images,
                "megabytes": round(e.bytes / 1e6, 2), "last_used": e.last_used,
                "cached_steps": e.spec.get("prefix")} for e in PreprocessedCache().entries()]
    lines = [f"{'ENTRY':<14} {'IMAGES':>7} {'MB':>9}  LAST USED"]
    lines += [f"{e['prefix_hash'][:12]:<14} {e['images']:>7} {e['megabytes']:>9.2f}  "
              + (f"{e['last_used']:%Y-%m-%d %H:%M}" if e["last_used"] else "never")
              for e in entries]
    emit(entries, args.json, "\n".join(lines) if entries else "the cache is empty")
    return 0


def _cache_build(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import Image
    from core.preprocess import CacheError, PreprocessedCache

    pipeline = _pipeline(args.pipeline, args.size)
    source = args.source or (args.pipeline if args.pipeline in ("real", "synthetic") else None)
    query = select(Image.sha256, Image.path).where(Image.excluded.is_(False)).order_by(Image.id)
    if source:
        query = query.where(Image.source == source)
    with session_scope() as session:
        refs = [(sha, path) for sha, path in session.execute(query)]
    try:
        built = PreprocessedCache().build(refs, pipeline)
    except CacheError as exc:
        raise CliError(str(exc)) from exc
    emit({"pipeline": args.pipeline, "prefix_hash": pipeline.prefix_hash(),
          "images": len(refs), "built": built}, args.json,
         f"pipeline {args.pipeline}: {built} of {len(refs)} images newly cached "
         f"(entry {pipeline.prefix_hash()[:12]})")
    return 0


def _cache_prune(args: argparse.Namespace) -> int:
    from core.preprocess import PreprocessedCache

    cache = PreprocessedCache()
    removed = cache.prune([]) if args.all else cache.prune([], older_than_days=args.older_than)
    kept = [e.prefix_hash for e in cache.entries()]
    emit({"removed": removed, "kept": kept}, args.json,
         f"removed {len(removed)} cache entries, kept {len(kept)}")
    return 0
