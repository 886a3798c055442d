"""Gallery query time on 100,000 image rows: SQL filtering and paging vs a Python-side filter.

    python bench/gallery_query.py              # 100,000 rows
    python bench/gallery_query.py --rows 20000

Rows are bulk-inserted (no image files: only the queries are measured). For each filter,
the real ``core.gallery.page`` (count + one page of 48, filtered and sorted in SQL) is
timed against a naive version that loads every row and filters, sorts and slices in
Python. Median of several repeats; the ratio is printed per query and overall.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLASSES = ["apple", "banana", "lime", "plum", "pear", "kiwi", "mango", "cherry", "grape", "fig"]


def populate(settings, rows: int) -> None:
    from sqlalchemy import insert

    from core.db.engine import session_scope
    from core.db.models import Dataset, Image, ImageClass, utcnow

    with session_scope(settings, write=True) as session:
        session.execute(insert(ImageClass), [{"name": c, "display_name": c.title(),
                                              "prompt_name": c, "created_at": utcnow()}
                                             for c in CLASSES])
        session.execute(insert(Dataset), [
            {"name": "fruits-360", "source": "real", "created_at": utcnow()},
            {"name": "kaggle", "source": "real", "created_at": utcnow()},
            {"name": "sd-turbo-1", "source": "synthetic", "created_at": utcnow()}])
    now = utcnow()
    batch = []
    with session_scope(settings, write=True) as session:
        for i in range(rows):
            dataset = 1 + i % 3
            synthetic = dataset == 3
            cls = i % len(CLASSES)
            batch.append({
                "sha256": f"{i:064x}", "path": f"{i % 256:02x}/{i:064x}.jpg", "class_id": 1 + cls,
                "source": "synthetic" if synthetic else "real", "dataset_id": dataset,
                "split": None if synthetic else ("train" if i % 5 else "test"),
                "width": 100 + i % 400, "height": 100 + i % 300, "format": "JPEG",
                "added_at": now, "excluded": i % 97 == 0,
                "prompt": f"a photo of a {'ripe' if i % 2 else 'green'} {CLASSES[cls]}, seed {i}"
                if synthetic else None})
            if len(batch) == 10_000:
                session.execute(insert(Image), batch)
                batch = []
        if batch:
            session.execute(insert(Image), batch)


def naive_page(settings, flt, sort: str, offset: int, limit: int):
    """What a page without SQL filtering does: fetch everything, filter in Python."""
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import Dataset, Image, ImageClass

    with session_scope(settings) as session:
        rows = session.execute(select(Image.id, Image.path, Image.sha256, ImageClass.name,
                                      ImageClass.display_name, Image.source, Dataset.name,
                                      Image.split, Image.width, Image.height, Image.excluded,
                                      Image.prompt, Image.dataset_id)
                               .join(ImageClass, Image.class_id == ImageClass.id)
                               .join(Dataset, Image.dataset_id == Dataset.id)).all()
    keep = []
    for r in rows:
        if r.excluded and not flt.include_excluded:
            continue
        if flt.classes and r[3] not in flt.classes:
            continue
        if flt.sources and r.source not in flt.sources:
            continue
        if flt.datasets and r.dataset_id not in flt.datasets:
            continue
        if flt.splits and (r.split or "") not in flt.splits:
            continue
        if flt.prompt_contains and flt.prompt_contains.lower() not in (r.prompt or "").lower():
            continue
        keep.append(r)
    if sort == "newest":
        keep.sort(key=lambda r: -r.id)
    elif sort == "class":
        keep.sort(key=lambda r: (r[3], -r.id))
    return len(keep), keep[offset:offset + limit]


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from core import gallery
    from core.config import Settings
    from core.db.engine import init_db

    work = Path(tempfile.mkdtemp(prefix="synthlab-bench-gallery-"))
    try:
        settings = Settings.from_env({"SYNTHLAB_HOME": str(work), "SYNTHLAB_AUTOSTART_WORKER": "0"})
        init_db(settings)
        t0 = time.perf_counter()
        populate(settings, args.rows)
        print(f"{args.rows:,} rows bulk-inserted in {time.perf_counter() - t0:.1f}s")
        F = gallery.GalleryFilter
        cases = [
            ("everything, newest, page 1", F(), "newest", 0),
            ("everything, newest, last page", F(), "newest", args.rows - 100),
            ("class=lime, newest, page 10", F(classes=["lime"]), "newest", 9 * 48),
            ("class+source+split, page 5", F(classes=["plum"], sources=["real"], splits=["test"]),
             "newest", 4 * 48),
            ("dataset=synthetic, by class", F(datasets=[3]), "class", 48),
            ("prompt contains 'green mango'", F(prompt_contains="green mango"), "newest", 0),
        ]
        total_real = total_naive = 0.0
        print(f"{'query':<34}{'SQL page':>12}{'naive':>12}{'ratio':>9}")
        for label, flt, sort, offset in cases:
            real_s, page = timed(lambda: gallery.page(flt, sort=sort, offset=offset, limit=48,
                                                      settings=settings), args.repeats)
            naive_s, (n_total, naive_rows) = timed(
                lambda: naive_page(settings, flt, sort, offset, 48), max(1, args.repeats // 2))
            assert page.total == n_total, (label, page.total, n_total)
            assert [r.id for r in page.rows] == [r.id for r in naive_rows], label
            total_real += real_s
            total_naive += naive_s
            print(f"{label:<34}{real_s * 1000:>10.1f}ms{naive_s * 1000:>10.1f}ms{naive_s / real_s:>8.1f}x")
        print(f"overall: SQL {total_real * 1000:.0f}ms vs naive {total_naive * 1000:.0f}ms "
              f"= {total_naive / total_real:.1f}x faster")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
