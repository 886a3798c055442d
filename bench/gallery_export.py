"""Zip export with readable names and ``labels.csv`` vs a plain zip of the same files.

    python bench/gallery_export.py                 # 600 images (3 classes x 200), 5 repeats
    python bench/gallery_export.py --per-class 500 --repeats 7

The baseline, measured in the same run, writes the same image files under the old
``<class>/<sha256[:16]>.<ext>`` names with no labels file; the ratio shows what the
readable names and the metadata table cost. Prints the median ratio and the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    os.environ["SYNTHLAB_HOME"] = str(tmp / "home")
    os.environ["SYNTHLAB_AUTOSTART_WORKER"] = "0"
    try:
        from core import gallery, gallery_export
        from core.config import get_settings
        from core.db.engine import init_db
        from core.ingest import import_dataset
        from core.store import ImageStore
        from tests.imagemaker import make_imagefolder

        settings = get_settings()
        init_db(settings)
        import_dataset(make_imagefolder(tmp / "src", ["apple", "lime", "plum"], args.per_class,
                                        size=(96, 72)), settings)
        everything = gallery.GalleryFilter()
        store = ImageStore(settings)
        rows = list(gallery_export.iter_rows(everything, settings))

        def baseline() -> None:
            with zipfile.ZipFile(tmp / "baseline.zip", "w") as archive:
                for row in rows:
                    archive.write(store.abspath(row["path"]),
                                  f"{row['class']}/{row['sha256'][:16]}{Path(row['path']).suffix}")

        ratios = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            baseline()
            base = time.perf_counter() - start
            start = time.perf_counter()
            gallery_export.export_zip(everything, tmp / "export.zip", settings=settings)
            ratios.append((time.perf_counter() - start) / base)
        print(f"{len(rows)} images: export / baseline time, median of {args.repeats}: "
              f"{statistics.median(ratios):.2f} (each: {', '.join(f'{r:.2f}' for r in ratios)}); "
              f"load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
