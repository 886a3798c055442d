"""Gallery query time at 100,000 (or --rows) image rows: SQL paging vs a Python-side filter.

    python bench/gallery_query.py                    # 100,000 rows
    python bench/gallery_query.py --rows 1000000 --repeats 5
    python bench/gallery_query.py --rows 20000 --no-insert-cost

Rows are bulk-inserted with a seeded generator (no image files: only the queries are
measured), then ANALYZE runs as after an import. For each case the real
``core.gallery.page`` (total + one page of 48, filtered and sorted in SQL, the way the
Gallery page calls it) is timed, and ``core.gallery.seek`` for the next page (keyset, what
"Next" does), against a naive version that loads every row and filters, sorts and slices
in Python, measured in the same run. Every case must match rows, and the SQL page must equal
the Python one. The insert cost per 10,000 rows is measured on a database at the schema
before the gallery indexes (revision 0010) and at the newest one, in the same run.
Medians of --repeats; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLASSES = ["apple", "banana", "lime", "plum", "pear", "kiwi", "mango", "cherry", "grape", "fig"]
DATASETS = [("fruits-360", "real"), ("kaggle", "real"), ("sd-turbo-1", "synthetic")]
PAGE = 48


COLUMNS = ("sha256", "path", "class_id", "source", "dataset_id", "split", "width", "height",
           "format", "added_at", "excluded", "prompt")


def image_rows(start: int, count: int, seed: int) -> list[tuple]:
    """``count`` image rows (tuples in ``COLUMNS`` order) from number ``start``, drawn with
    ``seed``: classes, datasets, splits, sizes and exclusions vary independently, so every
    case below matches rows."""
    from core.db.models import utcnow

    now = utcnow().isoformat(sep=" ")
    rng = random.Random(seed * 1_000_003 + start)
    rows = []
    for i in range(start, start + count):
        dataset = rng.choice((1, 1, 2, 3))
        synthetic = DATASETS[dataset - 1][1] == "synthetic"
        cls = rng.randrange(len(CLASSES))
        rows.append((
            f"{i:064x}", f"{i % 256:02x}/{i:064x}.jpg", 1 + cls,
            "synthetic" if synthetic else "real", dataset,
            None if synthetic else rng.choice(("train", "train", "train", "test", "val")),
            rng.randrange(100, 500), rng.randrange(100, 400), "JPEG", now, rng.random() < 0.01,
            (f"a photo of a {rng.choice(('ripe', 'green', 'sliced'))} {CLASSES[cls]}, seed {i}")
            if synthetic else None))
    return rows


INSERT_SQL = (f"INSERT INTO images ({', '.join(COLUMNS)}) "
              f"VALUES ({', '.join('?' for _ in COLUMNS)})")


def insert_rows(connection, rows: list[tuple]) -> None:
    # The driver's executemany: the ORM's per-row work would dominate a million-row fill.
    connection.exec_driver_sql(INSERT_SQL, rows)


def populate(settings, rows: int, seed: int) -> None:
    from sqlalchemy import insert

    from core.db.engine import session_scope
    from core.db.models import Dataset, ImageClass, utcnow

    with session_scope(settings, write=True) as session:
        session.execute(insert(ImageClass), [{"name": c, "display_name": c.title(),
                                              "prompt_name": c, "created_at": utcnow()}
                                             for c in CLASSES])
        session.execute(insert(Dataset), [{"name": name, "source": source, "created_at": utcnow()}
                                          for name, source in DATASETS])
    for start in range(0, rows, 50_000):
        with session_scope(settings, write=True) as session:
            insert_rows(session.connection(), image_rows(start, min(50_000, rows - start), seed))


def naive_page(settings, flt, sort: str, offset: int, limit: int):
    """What a page without SQL filtering does: fetch everything, filter in Python (the
    next page too, to check the keyset one)."""
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
    text = flt.prompt_contains.strip().lower()
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
        if text and text not in (r.prompt or "").lower():
            continue
        keep.append(r)
    if sort == "newest":
        keep.sort(key=lambda r: -r.id)
    elif sort == "class":
        keep.sort(key=lambda r: (r[3], -r.id))
    return len(keep), keep[offset:offset + limit], keep[offset + limit:offset + 2 * limit]


def timed(fn, repeats: int, cpu: list | None = None) -> tuple[float, object]:
    """Median wall seconds of ``repeats`` calls (the median CPU seconds appended to ``cpu``:
    SQLite runs in this process, so CPU time is the query's own work, whatever the load)."""
    times, cpus, result = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    if cpu is not None:
        cpu.append(statistics.median(cpus))
    return statistics.median(times), result


def insert_cost(work: Path, revision: str, seed: int, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds to insert 10,000 rows in one transaction (one executemany,
    as an import batch does), on a database migrated to ``revision``, each batch added to
    the ones before."""
    from alembic import command
    from sqlalchemy import insert
    from sqlalchemy.orm import Session

    from core.config import Settings
    from core.db.engine import alembic_config, get_engine
    from core.db.models import Dataset, ImageClass, utcnow

    home = work / f"insert-{revision}"
    settings = Settings.from_env({"SYNTHLAB_HOME": str(home), "SYNTHLAB_AUTOSTART_WORKER": "0"})
    settings.ensure_dirs()
    engine = get_engine(settings, write=True)
    config = alembic_config(settings)
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()
        connection.execute(insert(ImageClass), [{"name": c, "display_name": c, "prompt_name": c,
                                                 "created_at": utcnow()} for c in CLASSES])
        connection.execute(insert(Dataset), [{"name": n, "source": s, "created_at": utcnow()}
                                             for n, s in DATASETS])
        connection.commit()
    walls, cpus = [], []
    for k in range(repeats):
        batch = image_rows(k * 10_000, 10_000, seed)
        wall, cpu = time.perf_counter(), time.process_time()
        # A plain session: session_scope would first migrate to head.
        with Session(engine) as session:
            insert_rows(session.connection(), batch)
            session.commit()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--no-insert-cost", action="store_true",
                        help="skip the insert cost per 10,000 rows (before/after 0011)")
    args = parser.parse_args()

    from core import gallery
    from core.config import Settings
    from core.db.engine import dispose_engines, init_db

    work = Path(tempfile.mkdtemp(prefix="synthlab-bench-gallery-"))
    print(f"load average before: {load()} ({os.cpu_count()} CPUs); rows {args.rows:,}, "
          f"seed {args.seed}, repeats {args.repeats}")
    try:
        settings = Settings.from_env({"SYNTHLAB_HOME": str(work / "home"),
                                      "SYNTHLAB_AUTOSTART_WORKER": "0"})
        init_db(settings)
        t0 = time.perf_counter()
        populate(settings, args.rows, args.seed)
        t1 = time.perf_counter()
        gallery.refresh_statistics(settings)
        print(f"{args.rows:,} rows bulk-inserted in {t1 - t0:.1f}s, ANALYZE "
              f"{time.perf_counter() - t1:.1f}s")
        F = gallery.GalleryFilter
        everything = gallery.count(F(), settings)
        cases = [
            ("everything, newest, page 1", F(), "newest", 0),
            ("everything, newest, last page", F(), "newest", (everything - 1) // PAGE * PAGE),
            ("class=lime, newest, page 10", F(classes=["lime"]), "newest", 9 * PAGE),
            ("class+source+split, page 5", F(classes=["plum"], sources=["real"], splits=["test"]),
             "newest", 4 * PAGE),
            ("dataset=synthetic, by class, p2", F(datasets=[3]), "class", PAGE),
            ("prompt contains 'green mango'", F(prompt_contains="green mango"), "newest", 0),
            ("prompt 'photo' (all synth.), class", F(prompt_contains="photo"), "class", PAGE),
        ]
        pages, nexts, naives, page_cpu, naive_cpu = [], [], [], [], []
        print(f"{'query':<34}{'rows':>9}{'SQL page':>11}{'(CPU)':>9}{'keyset next':>13}"
              f"{'Python':>10}{'(CPU)':>9}{'ratio':>7}")
        for label, flt, sort, offset in cases:
            real_s, page = timed(lambda: gallery.page(flt, sort=sort, offset=offset, limit=PAGE,
                                                      settings=settings), args.repeats, page_cpu)
            naive_s, (n_total, naive_rows, naive_next) = timed(
                lambda: naive_page(settings, flt, sort, offset, PAGE), max(1, args.repeats // 3),
                naive_cpu)
            assert page.rows, f"{label}: matches nothing"
            assert page.total == n_total, (label, page.total, n_total)
            assert [r.id for r in page.rows] == [r.id for r in naive_rows], label
            next_s, following = timed(lambda: gallery.seek(flt, sort=sort, after=page.rows[-1],
                                                            limit=PAGE, settings=settings),
                                      args.repeats)
            assert [r.id for r in following] == [r.id for r in naive_next], label
            pages.append(real_s)
            nexts.append(next_s)
            naives.append(naive_s)
            print(f"{label:<34}{n_total:>9,}{real_s * 1000:>9.1f}ms{page_cpu[-1] * 1000:>7.1f}ms"
                  f"{next_s * 1000:>11.1f}ms{naive_s * 1000:>8.0f}ms{naive_cpu[-1] * 1000:>7.0f}ms"
                  f"{naive_s / real_s:>6.0f}x")
        print(f"median per page: SQL {statistics.median(pages) * 1000:.1f}ms (worst "
              f"{max(pages) * 1000:.1f}ms), keyset next {statistics.median(nexts) * 1000:.1f}ms, "
              f"Python filter {statistics.median(naives) * 1000:.0f}ms; overall "
              f"{sum(naives) / sum(pages):.0f}x faster than the Python filter "
              f"(median of per-case ratios {statistics.median(n / p for n, p in zip(naives, pages)):.0f}x)")
        print(f"CPU per page: median {statistics.median(page_cpu) * 1000:.1f}ms, worst "
              f"{max(page_cpu) * 1000:.1f}ms; Python filter {statistics.median(naive_cpu) * 1000:.0f}ms"
              f" ({sum(naive_cpu) / sum(page_cpu):.0f}x)")
        if not args.no_insert_cost:
            dispose_engines()
            before = insert_cost(work, "0010", args.seed, 3)
            after = insert_cost(work, "head", args.seed, 3)
            print(f"insert 10,000 rows: before 0011 {before[0] * 1000:.0f}ms wall / "
                  f"{before[1] * 1000:.0f}ms CPU, after {after[0] * 1000:.0f}ms wall / "
                  f"{after[1] * 1000:.0f}ms CPU (+{(after[1] - before[1]) * 1000:.0f} CPU-ms)")
        print(f"load average after: {load()}")
    finally:
        dispose_engines()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
