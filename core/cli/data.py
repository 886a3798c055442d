"""``ingest``, ``stats``, ``export``, ``check`` and ``rehash``: the data commands of
``python -m core``."""

from __future__ import annotations

import argparse
import getpass
import sys

from core.cli import CliError, print_json
from core.wording import plural


def register(subparsers: argparse._SubParsersAction) -> None:
    ingest = subparsers.add_parser(
        "ingest", help="import images from a folder, a .zip or a Hugging Face dataset",
        description="Import a dataset. The layout is recognised by itself: class folders "
                    "(ImageFolder), Fruits-360 (Training/Test), flat files named by class "
                    "(apple_12.jpg, with Pascal VOC .xml boxes), or a Hugging Face dataset "
                    "(a save_to_disk folder, or a Hub id such as user/name when online; "
                    "a label column names the classes, or else one split per class as in "
                    "DiegoP-S/DatasetSynthesis). Near-duplicates (resized, re-encoded or "
                    "cropped copies) are listed in the report. "
                    "Exit status 0 when the import ran, even if some files were rejected.")
    ingest.add_argument("path", metavar="PATH", help="folder, .zip, saved HF dataset or Hub id")
    ingest.add_argument("--dataset", help="dataset name (default: the folder or archive name)")
    ingest.add_argument("--source", choices=("real", "synthetic"), default="real")
    ingest.add_argument("--class", dest="force_class", metavar="NAME",
                        help="give every image this class (e.g. a flat folder of one fruit)")
    ingest.add_argument("--crop-boxes", action="store_true",
                        help="import each Pascal VOC box as a cropped object image")
    ingest.add_argument("--workers", type=int, help="decoding processes (default: SYNTHLAB_INGEST_WORKERS)")
    ingest.add_argument("--json", action="store_true", help="machine-readable report")
    ingest.set_defaults(func=_ingest)

    stats = subparsers.add_parser("stats", help="image counts per class and source")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(func=_stats)

    export = subparsers.add_parser(
        "export", help="write images to a zip in ImageFolder layout (<class>/<file>) with a labels.csv")
    export.add_argument("out", metavar="OUT.zip")
    export.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME",
                        help="only this class (repeatable)")
    export.add_argument("--source", dest="sources", action="append", default=[],
                        choices=("real", "synthetic"), help="only this source (repeatable)")
    export.add_argument("--dataset", dest="datasets", action="append", default=[], metavar="NAME",
                        help="only this dataset, by name (repeatable)")
    export.add_argument("--split", dest="splits", action="append", default=[],
                        help="only this split tag (repeatable)")
    export.add_argument("--include-excluded", action="store_true")
    export.add_argument("--json", action="store_true", help="machine-readable output")
    export.set_defaults(func=_export)

    check = subparsers.add_parser(
        "check", help="find rows without files, orphan files and leftovers; --repair fixes them")
    check.add_argument("--repair", action="store_true", help="remove what is broken")
    check.add_argument("--min-age", type=float, default=None, metavar="SECONDS",
                       help="leave files younger than this alone (default 900: a running "
                            "import may still be adding their rows)")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=_check)

    rehash = subparsers.add_parser(
        "rehash", help="compute the near-duplicate signatures of images indexed without them",
        description="Images indexed before near-duplicate detection existed have no "
                    "perceptual hash. This computes the missing ones (from the stored files); "
                    "an experiment also computes those of its images before splitting, and "
                    "`check --repair` runs this too.")
    rehash.add_argument("--workers", type=int, default=None,
                        help="processes (default: SYNTHLAB_INGEST_WORKERS)")
    rehash.add_argument("--json", action="store_true", help="machine-readable output")
    rehash.set_defaults(func=_rehash)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in a container
        return "cli"


def _ingest(args: argparse.Namespace) -> int:
    from core.ingest import ImportOptions, SourceError, import_dataset
    from core.store import DiskFullError

    options = ImportOptions(dataset=args.dataset, source=args.source,
                            force_class=args.force_class, crop_boxes=args.crop_boxes,
                            added_by=_user(), workers=args.workers)

    def progress(done: int, total: int, message: str) -> None:
        if not args.json and sys.stderr.isatty():
            print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)
    try:
        report = import_dataset(args.path, options=options, progress=progress)
    except SourceError as exc:
        raise CliError(str(exc)) from exc
    except DiskFullError as exc:  # the import removed what it could not index
        raise CliError(str(exc)) from exc
    except ValueError as exc:  # e.g. an unusable --class name
        raise CliError(str(exc)) from exc
    if args.json:
        print_json(report.to_dict())
        return 0
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"dataset {report.dataset!r}: {report.summary}")
    for name, n in sorted(report.per_class.items()):
        print(f"  {name:<30} {n}")
    for item in report.rejected[:50]:
        print(f"  rejected {item['path']}: {item['reason']}")
    if len(report.rejected) > 50:
        print(f"  ... and {len(report.rejected) - 50} more rejected (see --json)")
    if report.near_duplicate_pairs:
        print(f"{plural(report.near_duplicate_pairs, 'near-duplicate pair')} (resized, re-encoded or "
              "cropped copies; a split keeps copies of one class on one side)")
        for item in report.near_duplicates[:10]:
            print(f"  {item['path']} ~ {item['similar_to']} (image #{item['similar_to_image']}, "
                  f"{item['similar_dataset']}, distance {item['distance']})")
        if report.near_duplicate_pairs > 10:
            print(f"  ... and {report.near_duplicate_pairs - 10} more (see --json)")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from core import gallery

    stats = gallery.stats()
    if args.json:
        print_json(stats)
        return 0
    print(f"{stats['images']} images ({stats['excluded']} excluded)")
    sources = sorted({s for counts in stats["per_class"].values() for s in counts} | {"real", "synthetic"})
    print(f"{'class':<30}" + "".join(f"{s:>12}" for s in sources))
    for name, counts in sorted(stats["per_class"].items()):
        print(f"{name:<30}" + "".join(f"{counts.get(s, 0):>12}" for s in sources))
    return 0


def _export(args: argparse.Namespace) -> int:
    from core import gallery, gallery_export
    from core.catalog import class_key

    by_name = {d.name: d.id for d in gallery.datasets()}
    unknown = [name for name in args.datasets if name not in by_name]
    if unknown:
        raise CliError(f"no dataset named {', '.join(unknown)}; known: {', '.join(sorted(by_name)) or 'none'}")
    known_classes = {c.name for c in gallery.classes()}
    unknown = [name for name in args.classes if class_key(name) not in known_classes]
    if unknown:
        raise CliError(f"no class named {', '.join(unknown)}; "
                       f"known: {', '.join(sorted(known_classes)) or 'none'}")
    if not args.out.lower().endswith(".zip"):
        raise CliError("OUT must end with .zip")
    flt = gallery.GalleryFilter(classes=[class_key(c) for c in args.classes], sources=args.sources,
                                datasets=[by_name[n] for n in args.datasets], splits=args.splits,
                                include_excluded=args.include_excluded)
    try:
        result = gallery_export.export_zip(flt, args.out)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    if args.json:
        print_json(result)
    else:
        print(f"Wrote {plural(result['images'], 'image')} and labels.csv to {result['path']}")
        if result["missing_files"]:
            print(f"  {plural(len(result['missing_files']), 'file')} missing "
                  "(run `python -m core check`)")
    return 0


def _check(args: argparse.Namespace) -> int:
    from core import maintenance, neardup

    kwargs = {} if args.min_age is None else {"min_age_seconds": args.min_age}
    report = maintenance.check(repair=args.repair, **kwargs)
    # Rows without near-duplicate signatures are not broken (a split computes them), so
    # they do not fail the check; --repair fills them in after the broken rows are gone.
    unsigned = neardup.missing_count()
    if args.repair and unsigned:
        rehashed = neardup.backfill()
        report.actions.append(f"computed the near-duplicate signatures of {rehashed.hashed} images")
        unsigned = neardup.missing_count()
    if args.json:
        print_json({**report.to_dict(), "images_without_signatures": unsigned})
        return 0 if report.ok or args.repair else 1
    print("store and index agree" if report.ok else "problems found:")
    for row in report.rows_missing_file:
        print(f"  row {row['id']}: file missing ({row['path']})")
    for path in report.orphan_files:
        print(f"  orphan file: images/{path}")
    for path in report.temp_files:
        print(f"  leftover temporary file: {path}")
    for path in report.stale_thumbnails:
        print(f"  thumbnail of a deleted image: thumbs/{path}")
    if report.skipped_recent:
        print(f"  {len(report.skipped_recent)} recent files left alone (a running import?)")
    for action in report.actions:
        print(f"  fixed: {action}")
    if unsigned:
        print(f"  {unsigned} images have no near-duplicate signatures yet "
              "(`python -m core rehash` computes them)")
    if not report.ok and not args.repair:
        print("run `python -m core check --repair` to fix")
        return 1
    return 0


def _rehash(args: argparse.Namespace) -> int:
    from core import neardup
    from core.config import get_settings

    settings = get_settings()
    workers = args.workers if args.workers is not None else settings.ingest_workers
    if workers < 1:
        raise CliError("--workers must be at least 1")

    def progress(done: int, total: int) -> None:
        if not args.json and sys.stderr.isatty():
            print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)
    report = neardup.backfill(settings, workers=workers, progress=progress)
    if args.json:
        print_json(report.to_dict())
        return 0
    if sys.stderr.isatty() and (report.hashed or report.unreadable):
        print(file=sys.stderr)
    print(f"computed the near-duplicate signatures of {report.hashed} images "
          f"in {report.seconds:.1f} s")
    for item in report.unreadable[:20]:
        print(f"  image #{item['id']} ({item['path']}): {item['reason']}")
    if len(report.unreadable) > 20:
        print(f"  ... and {len(report.unreadable) - 20} more unreadable (see --json)")
    if report.unreadable:
        print("run `python -m core check` for missing files")
    return 0
