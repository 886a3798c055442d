"""The gallery's SQL paths (indexes, count table, FTS5 trigram search, keyset and
reversed-offset paging) against a plain Python filter over all rows, on SQLite."""

from __future__ import annotations

import pytest

from tests import gallery_cases


@pytest.fixture()
def small_index(settings):
    gallery_cases.populate(settings)
    return settings


def _fts_in_step(settings) -> None:
    from sqlalchemy import text

    from core.db.engine import session_scope

    with session_scope(settings, write=True) as session:
        # FTS5 raises "database disk image is malformed" if its index is inconsistent.
        # (Not rank=1, the comparison with the rows: rows without a prompt are left out of
        # the index on purpose; the searches in check_every_combination compare contents.)
        session.execute(text("INSERT INTO images_prompt_fts (images_prompt_fts) "
                             "VALUES ('integrity-check')"))


def test_every_filter_and_sort_matches_a_python_filter_before_and_after_writes(small_index):
    from core import gallery

    with gallery.session_scope(small_index) as session:
        assert gallery.gallery_sql.has_prompt_index(session)  # the trigram path is tested
    assert gallery_cases.check_every_combination(small_index) > 40
    gallery_cases.check_counts_table(small_index)
    gallery_cases.mutate(small_index)
    gallery_cases.check_counts_table(small_index)
    _fts_in_step(small_index)
    assert gallery_cases.check_every_combination(small_index) > 40


def test_offset_and_keyset_pages_agree_from_both_ends(small_index):
    from core.gallery import GalleryFilter

    for flt in (GalleryFilter(), GalleryFilter(classes=["kiwi"], include_excluded=True),
                GalleryFilter(datasets=[3], prompt_contains="green")):
        for sort in ("newest", "oldest", "class", "size"):
            gallery_cases.check_paging(small_index, flt, sort)


def test_splits_counts_stats_and_train_and_preprocess_counts_come_from_the_count_table(
        small_index):
    from core import gallery

    rows = gallery_cases.all_rows(small_index)
    assert gallery.splits(small_index) == sorted({r.split for r in rows if r.split})
    by_class = {(c["class"], c["source"]): c["count"]
                for c in gallery.counts_by_class_and_source(small_index)}
    expected: dict = {}
    for r in rows:
        if not r.excluded:
            expected[(r.cls, r.source)] = expected.get((r.cls, r.source), 0) + 1
    assert by_class == expected
    stats = gallery.stats(small_index)
    assert stats["images"] == len(rows) and stats["excluded"] == sum(r.excluded for r in rows)
    _check_train_and_preprocess_counts(small_index)
    gallery.delete_images([r.id for r in rows if r.split == "val"], settings=small_index)
    assert "val" not in gallery.splits(small_index)
    gallery_cases.mutate(small_index)
    _check_train_and_preprocess_counts(small_index)


def test_concurrent_writers_keep_the_counts_exact(small_index):
    """SQLite serialises writers (BEGIN IMMEDIATE), and the per-row triggers count inside
    each writer's transaction: no count update is lost however the writers interleave."""
    kept = gallery_cases.concurrent_writers(small_index, writers=3, rounds=5)
    gallery_cases.check_counts_table(small_index)
    assert len(gallery_cases.all_rows(small_index)) == 300 + kept


def test_a_prompt_search_reads_the_prompt_index_once_per_page(small_index):
    """The page and its total come from one search of the FTS index (not a count, then a
    page: the index's posting lists read twice), and Next from one search, whatever the
    sort (not one per class for "by class"); the rows stay exact."""
    from sqlalchemy import event

    from core import gallery
    from core.db.engine import get_engine

    searches: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:  # noqa: ANN001
        if "images_prompt_fts" in statement:
            searches.append(statement)

    engine = get_engine(small_index, write=False)
    rows = gallery_cases.all_rows(small_index)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        for sort in gallery.SORTS:
            for offset in (0, 8):
                flt = gallery.GalleryFilter(prompt_contains="green")
                searches.clear()
                page = gallery.page(flt, sort=sort, offset=offset, limit=8, settings=small_index)
                assert len(searches) == 1, (sort, offset, searches)
                expected = gallery_cases.python_filter(rows, flt, sort)
                assert page.total == len(expected)
                assert [r.id for r in page.rows] == expected[offset:offset + 8], (sort, offset)
                searches.clear()  # Next, by keyset: one search too (not one per class)
                following = gallery.seek(flt, sort=sort, after=page.rows[-1], limit=8,
                                         settings=small_index)
                assert len(searches) == 1, (sort, offset, searches)
                assert [r.id for r in following] == expected[offset + 8:offset + 16]
        beyond = gallery.page(flt, offset=10_000, limit=8, settings=small_index)
        assert beyond.rows == [] and beyond.total == len(expected)
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def _check_train_and_preprocess_counts(settings) -> None:  # noqa: ANN001
    """Train's dataset/class choices and Preprocess's class options (which sum
    ``image_counts``) equal a count over the rows."""
    from core.db.engine import session_scope
    from core.preprocess.compare import class_options
    from core.training.data import available_choices

    dataset_names = {1: "real-a", 2: "real-b", 3: "gen-1"}
    real: dict = {}
    synthetic: dict = {}
    classes: dict = {}
    for r in gallery_cases.all_rows(settings):
        if r.excluded:
            continue
        side = real if r.source == "real" else synthetic
        side[dataset_names[r.dataset_id]] = side.get(dataset_names[r.dataset_id], 0) + 1
        classes.setdefault(r.cls, {"real": 0, "synthetic": 0})[r.source] += 1
    choices = available_choices(settings)
    assert (choices.real_datasets, choices.synthetic_datasets) == (real, synthetic)
    assert choices.classes == classes
    with session_scope(settings) as session:
        options = class_options(session)
    assert [o.name for o in options] == sorted(classes)
    assert {o.name: {"real": o.real, "synthetic": o.synthetic} for o in options} == classes
