"""Import throughput: the real importer vs a naive one, on the same generated JPEGs.

    python bench/import_throughput.py            # 2,000 JPEGs of assorted sizes
    python bench/import_throughput.py --n 300    # quicker

Naive baseline: one process, each file read, decoded, stored and committed in its own
transaction (``catalog.add_image`` + commit per image). Real: ``core.ingest.import_dataset``
(decoding in a process pool of ``--workers``, rows committed in batches of 200). Each runs
on its own fresh data folder; the ratio is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = [(96, 72), (160, 120), (320, 240), (500, 375), (640, 480), (800, 600)]
CLASSES = ["apple", "banana", "lime", "plum"]


def make_corpus(folder: Path, n: int, seed: int = 0) -> int:
    from tests.imagemaker import fruit_image, save_jpeg

    total_bytes = 0
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        size = SIZES[(i // len(CLASSES)) % len(SIZES)]
        path = save_jpeg(fruit_image(label, seed * 1_000_000 + i, size), folder / label / f"{label}_{i}.jpg",
                         quality=88)
        total_bytes += path.stat().st_size
    return total_bytes


def fresh_settings(home: Path):
    from core.config import Settings
    from core.db.engine import dispose_engines, init_db

    dispose_engines()
    settings = Settings.from_env({"SYNTHLAB_HOME": str(home), "SYNTHLAB_AUTOSTART_WORKER": "0"})
    init_db(settings)
    return settings


def naive_import(folder: Path, settings) -> int:
    from core.catalog import add_image, get_or_create_class, get_or_create_dataset
    from core.db.engine import session_scope
    from core.imageio import ImageRejected, decode_image
    from core.store import ImageStore

    store = ImageStore(settings)
    added = 0
    for path in sorted(folder.rglob("*.jpg")):
        raw = path.read_bytes()
        try:
            decoded = decode_image(raw, max_pixels=settings.max_image_pixels)
        except ImageRejected:
            continue
        with session_scope(settings, write=True) as session:  # one commit per image
            dataset = get_or_create_dataset(session, "naive")
            image_class = get_or_create_class(session, path.parent.name)
            result = add_image(session, store, decoded, image_class=image_class, dataset=dataset,
                               raw=raw, original_name=path.name)
            added += not result.duplicate
    return added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args()

    from core.ingest import ImportOptions, import_dataset

    work = Path(tempfile.mkdtemp(prefix="synthlab-bench-import-"))
    try:
        corpus = work / "corpus"
        t0 = time.perf_counter()
        size = make_corpus(corpus, args.n)
        print(f"corpus: {args.n} JPEGs, {size / 2**20:.1f} MB, sizes {SIZES[0]}..{SIZES[-1]} "
              f"(made in {time.perf_counter() - t0:.1f}s); {os.cpu_count()} CPUs")

        settings = fresh_settings(work / "naive-home")
        t0 = time.perf_counter()
        naive_added = naive_import(corpus, settings)
        naive_s = time.perf_counter() - t0
        print(f"naive (1 process, 1 commit per image): {naive_added} images in {naive_s:.2f}s "
              f"= {naive_added / naive_s:.1f} images/s")

        settings = fresh_settings(work / "real-home")
        t0 = time.perf_counter()
        report = import_dataset(corpus, settings, ImportOptions(workers=args.workers))
        real_s = time.perf_counter() - t0
        print(f"importer ({args.workers} decoding processes, batches of 200): {report.added} images "
              f"in {real_s:.2f}s = {report.added / real_s:.1f} images/s")
        assert report.added == naive_added == args.n, (report.added, naive_added)
        print(f"ratio: {naive_s / real_s:.2f}x faster than the naive baseline")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
