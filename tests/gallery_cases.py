"""A small varied image index and a plain-Python reference for every gallery filter and sort.

Used by ``test_gallery_queries`` (SQLite) and ``test_postgres`` (PostgreSQL): the SQL paths
(indexes, count table, trigram search, keyset and reversed-offset paging) must give exactly
the rows and totals a Python filter over all rows gives.
"""

from __future__ import annotations

import random
from typing import Any

CLASSES = ["apple", "banana", "kiwi", "plum", "bell_pepper"]
PROMPTS = ["a photo of a GREEN mango", "a green Mango, 50% off", "an apple_tree at dusk",
           'the "best" plum', "kiwi", "Green man walking", "ap", "a ripe banana, seed 7"]
SPLITS = ["train", "test", "val", None, ""]


def populate(settings: Any, rows: int = 300, seed: int = 14) -> None:
    """``rows`` image rows (no files: only queries are tested), drawn with ``seed``."""
    from sqlalchemy import insert

    from core.db.engine import session_scope
    from core.db.models import Dataset, Image, ImageClass, utcnow

    rng = random.Random(seed)
    now = utcnow()
    with session_scope(settings, write=True) as session:
        # Class ids deliberately not in name order, so "by class" must really sort by name.
        session.execute(insert(ImageClass), [{"name": c, "display_name": c.title(),
                                              "prompt_name": c, "created_at": now}
                                             for c in reversed(CLASSES)])
        session.execute(insert(Dataset), [
            {"name": "real-a", "source": "real", "created_at": now},
            {"name": "real-b", "source": "real", "created_at": now},
            {"name": "gen-1", "source": "synthetic", "created_at": now}])
        batch = []
        for i in range(rows):
            dataset = rng.choice([1, 2, 3])
            synthetic = dataset == 3
            batch.append({
                "sha256": f"{i:064x}", "path": f"{i % 256:02x}/{i:064x}.png",
                "class_id": rng.randint(1, len(CLASSES)),
                "source": "synthetic" if synthetic else "real", "dataset_id": dataset,
                "split": rng.choice(SPLITS), "width": rng.choice([16, 32, 48]),
                "height": rng.choice([16, 32]), "format": "PNG", "added_at": now,
                "excluded": rng.random() < 0.12,
                "prompt": f"{rng.choice(PROMPTS)} #{i}" if synthetic and rng.random() < 0.9 else None})
        session.execute(insert(Image), batch)


def all_rows(settings: Any) -> list[Any]:
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import Image, ImageClass

    with session_scope(settings) as session:
        return session.execute(select(Image.id, ImageClass.name.label("cls"), Image.source,
                                      Image.dataset_id, Image.split, Image.excluded, Image.prompt,
                                      Image.width, Image.height)
                               .join(ImageClass, Image.class_id == ImageClass.id)).all()


def python_filter(rows: list[Any], flt: Any, sort: str) -> list[int]:
    """The reference: what the gallery shows, filtered and sorted in plain Python."""
    text = flt.prompt_contains.strip().lower()
    keep = [r for r in rows
            if (r.excluded if flt.only_excluded else (flt.include_excluded or not r.excluded))
            and (not flt.classes or r.cls in flt.classes)
            and (not flt.sources or r.source in flt.sources)
            and (not flt.datasets or r.dataset_id in flt.datasets)
            and (not flt.splits or (r.split or "") in flt.splits)
            and (not text or text in (r.prompt or "").lower())]
    keys = {"newest": lambda r: -r.id, "oldest": lambda r: r.id,
            "class": lambda r: (r.cls, -r.id), "size": lambda r: (-r.width * r.height, -r.id)}
    return [r.id for r in sorted(keep, key=keys[sort])]


FILTER_VALUES = {
    "classes": [[], ["kiwi"], ["apple", "bell_pepper"], ["fig"]],
    "sources": [[], ["real"], ["synthetic"]],
    "datasets": [[], [3], [1, 2]],
    "splits": [[], ["test"], [""], ["", "train"]],
    "prompt_contains": ["", "green MAN", "ap", '"best"', "50%", "_tree", " Mango, 5", "zzz",
                        "kiwi", "mango EDITED", "#1"],
    "excluded": [(False, False), (True, False), (False, True)],
}


def filters(combinations: int = 60, seed: int = 3) -> list[Any]:
    """Each value of each filter alone, then ``combinations`` mixes of all of them drawn
    with ``seed`` (the full product is ~3,500 filters: slow to compile, no more telling)."""
    from core.gallery import GalleryFilter

    def make(choice: dict[str, Any]) -> Any:
        include, only = choice.pop("excluded", (False, False))
        return GalleryFilter(**choice, include_excluded=include, only_excluded=only)

    found = [make({name: value}) for name, values in FILTER_VALUES.items() for value in values]
    rng = random.Random(seed)
    for _ in range(combinations):
        # "any" (each list's first value) weighted up, so most mixes still match something.
        found.append(make({name: rng.choice([*values, values[0], values[0]])
                           for name, values in FILTER_VALUES.items()}))
    return found


def check_every_combination(settings: Any, combinations: int = 60) -> int:
    """Every filter x sort: SQL rows in order and the count equal the Python reference.
    Returns how many combinations matched something (so a test can see it is not vacuous)."""
    from sqlalchemy import select

    from core import gallery_sql
    from core.db.engine import session_scope
    from core.db.models import Image

    rows = all_rows(settings)
    nonempty = 0
    with session_scope(settings) as session:
        for flt in filters(combinations):
            expected_total = len(python_filter(rows, flt, "newest"))
            assert gallery_sql.count(session, flt) == expected_total, flt
            nonempty += expected_total > 0
            for sort in gallery_sql.SORTS:
                query = gallery_sql.order(gallery_sql.where(select(Image.id), flt, session), sort)
                assert list(session.scalars(query)) == python_filter(rows, flt, sort), (flt, sort)
    return nonempty


def check_paging(settings: Any, flt: Any, sort: str, limit: int = 30) -> None:
    """Every page by offset (first, middle, last: read from either end) and by keyset
    (walking next from page 1 and previous from the last page) equals the reference."""
    from core import gallery

    expected = python_filter(all_rows(settings), flt, sort)
    pages = [expected[i:i + limit] for i in range(0, len(expected), limit)] or [[]]
    by_offset = [gallery.page(flt, sort=sort, offset=k * limit, limit=limit, settings=settings)
                 for k in range(len(pages))]
    assert [[r.id for r in p.rows] for p in by_offset] == pages, (flt, sort)
    assert {p.total for p in by_offset} == {len(expected)}
    forward = [by_offset[0].rows]
    while forward[-1] and len(forward) < len(pages):
        forward.append(gallery.seek(flt, sort=sort, after=forward[-1][-1], limit=limit,
                                    settings=settings))
    assert [[r.id for r in p] for p in forward] == pages, (flt, sort)
    backward = [by_offset[-1].rows]
    while backward[-1] and len(backward) < len(pages):
        backward.append(gallery.seek(flt, sort=sort, before=backward[-1][0], limit=limit,
                                     settings=settings))
    assert [[r.id for r in p] for p in reversed(backward)] == pages, (flt, sort)
    if len(pages) > 2:  # page() with a keyset hint gives the same page as by offset
        hinted = gallery.page(flt, sort=sort, offset=limit, limit=limit, total=len(expected),
                              after=by_offset[0].rows[-1], settings=settings)
        assert [r.id for r in hinted.rows] == pages[1]


def check_counts_table(settings: Any) -> None:
    """``image_counts`` equals a GROUP BY over ``images`` (the triggers kept it in step)."""
    from sqlalchemy import func, select

    from core.db.engine import session_scope
    from core.db.models import Image, ImageCount

    with session_scope(settings) as session:
        kept = {(r.class_id, r.source, r.dataset_id, r.split, bool(r.excluded)): r.n
                for r in session.scalars(select(ImageCount))}
        counted: dict = {}
        for c, s, d, sp, e, n in session.execute(
                select(Image.class_id, Image.source, Image.dataset_id, Image.split, Image.excluded,
                       func.count()).group_by(Image.class_id, Image.source, Image.dataset_id,
                                              Image.split, Image.excluded)):
            key = (c, s, d, sp or "", bool(e))  # NULL and '' splits share the '' key
            counted[key] = counted.get(key, 0) + n
    assert kept == counted


def mutate(settings: Any) -> None:
    """Writes through every path that touches the indexed columns: relabel, exclude,
    restore, bulk update, delete, a prompt edit and a plain insert."""
    from sqlalchemy import update

    from core import gallery
    from core.db.engine import session_scope
    from core.db.models import Image

    gallery.relabel([3, 4, 5, 40], "kiwi", settings=settings)
    gallery.relabel([6], "fig", settings=settings)  # a new class
    gallery.set_excluded([7, 8, 9], True, settings=settings)
    gallery.set_excluded([10], False, settings=settings)
    gallery.update_filtered(gallery.GalleryFilter(classes=["plum"], splits=["val"]),
                            excluded=True, settings=settings)
    gallery.delete_images([11, 12, 13], settings=settings)
    with session_scope(settings, write=True) as session:
        session.execute(update(Image).where(Image.id.in_([20, 21, 22, 23]))
                        .values(prompt="GREEN MANGO edited", split="test", source="synthetic"))
        session.execute(update(Image).where(Image.id == 24).values(prompt=None))


def import_row(number: int, class_id: int, *, dataset_id: int = 1, split: str | None = "train",
               source: str = "real") -> dict[str, Any]:
    """One ``images`` row as the importer writes it (no file: only the counts are tested).
    ``number`` makes its hash and path unique; keep it above ``populate``'s rows."""
    from core.db.models import utcnow

    return {"sha256": f"{number:064x}", "path": f"ff/{number:064x}.png", "class_id": class_id,
            "source": source, "dataset_id": dataset_id, "split": split, "width": 16,
            "height": 16, "format": "PNG", "added_at": utcnow(), "excluded": False}


def crossed_transactions(settings: Any, first: list[Any], second: list[Any]) -> list[BaseException]:
    """Run two write transactions at once, each a list of steps ``fn(session)``: both run
    their first step, then (once the other has too) the rest, then commit. With steps that
    touch the same count keys in opposite orders, each holds what the other wants next: the
    classic deadlock. Returns the errors the two raised (none, when writes cannot cross)."""
    import threading

    from core.db.engine import session_scope

    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def run(steps: list[Any]) -> None:
        try:
            with session_scope(settings, write=True) as session:
                steps[0](session)
                barrier.wait()
                for step in steps[1:]:
                    step(session)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            barrier.abort()
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(steps,)) for steps in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a transaction never finished"
    return errors


def concurrent_writers(settings: Any, writers: int = 2, rounds: int = 6) -> int:
    """``writers`` threads at once through the app's own write paths, each round: an import
    batch written row by row (as the importer's executemany does) over every class, odd
    writers in the opposite class order, then a relabel, an exclude and a delete of some of
    those rows. Returns how many of the new rows remain (each round keeps 3 of 5)."""
    import threading

    from sqlalchemy import insert, select

    from core import gallery
    from core.db.engine import run_write, session_scope
    from core.db.models import Image

    errors: list[BaseException] = []
    class_ids = list(range(1, len(CLASSES) + 1))

    def writer(index: int) -> None:
        order = class_ids if index % 2 == 0 else class_ids[::-1]
        try:
            for round_ in range(rounds):
                base = 1_000_000 + (index * rounds + round_) * len(order)
                rows = [import_row(base + k, class_id, dataset_id=1 + k % 2)
                        for k, class_id in enumerate(order)]
                run_write(lambda session, rows=rows: session.execute(insert(Image), rows), settings)
                with session_scope(settings) as session:
                    ids = list(session.scalars(select(Image.id).where(
                        Image.sha256.in_([r["sha256"] for r in rows])).order_by(Image.id)))
                gallery.relabel(ids[:2], CLASSES[round_ % len(CLASSES)], settings=settings)
                gallery.set_excluded(ids[2:3], True, settings=settings)
                gallery.delete_images(ids[3:5], settings=settings)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return writers * rounds * 3
