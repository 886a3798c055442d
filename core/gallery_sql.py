"""The SQL behind the gallery: filters, sort orders, keyset conditions, counts, prompt search.

Each filter maps to an index of migration 0011 whose columns are the filter's equality
columns followed by ``id``, so a "newest first" page reads LIMIT index entries and stops.
Totals come from ``image_counts`` (kept by triggers in the writing transaction, so they are
exact; on PostgreSQL applied at its commit, migration 0012) unless the filter searches prompts. Prompt search uses the FTS5 trigram index on
SQLite and the pg_trgm GIN index (through ``ILIKE``) on PostgreSQL; a query shorter than a
trigram, or a database without the index, falls back to a LIKE scan with the same result.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, column, false, func, or_, select, table, text, true
from sqlalchemy.orm import Session

from core.db.models import Image, ImageClass, ImageCount

SORTS = {
    "newest": "newest first",
    "oldest": "oldest first",
    "class": "by class",
    "size": "largest first",
}
FTS_TABLE = "images_prompt_fts"
TRIGRAM = 3  # the shortest text a trigram index can look up

_fts = table(FTS_TABLE, column("rowid"), column("prompt"))
_fts_known: dict[str, bool] = {}
_fts_lock = threading.Lock()


def has_prompt_index(session: Session) -> bool:
    """Whether this SQLite database has the FTS5 prompt index (checked once per database)."""
    bind = session.get_bind()
    if bind.dialect.name != "sqlite":
        return False
    key = str(bind.url)
    with _fts_lock:
        if key in _fts_known:
            return _fts_known[key]
    found = session.execute(select(func.count()).select_from(table("sqlite_master", column("name")))
                            .where(column("name") == FTS_TABLE)).scalar() == 1
    with _fts_lock:
        _fts_known[key] = found
    return found


def forget_prompt_index() -> None:
    """Forget what :func:`has_prompt_index` learnt (after a downgrade, in tests)."""
    with _fts_lock:
        _fts_known.clear()


def analyze(session: Session) -> None:
    """Refresh the planner's statistics of the gallery's tables (see ``refresh_statistics``)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA analysis_limit=1000"))
        session.execute(text("ANALYZE images"))
        session.execute(text("ANALYZE image_counts"))
    else:
        session.execute(text("ANALYZE images, image_counts"))


def _like_pattern(text: str) -> str:
    # The user's wildcards are escaped: the text is matched literally.
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def prompt_clause(text: str, session: Session | None) -> ColumnElement[bool]:
    """Case-insensitive substring match on the prompt, through the index where there is one."""
    if session is not None and len(text) >= TRIGRAM and has_prompt_index(session):
        # A quoted FTS5 phrase of trigrams is a substring match; inside quotes only '"' is
        # special (doubled), so the user's text is taken literally.
        phrase = '"' + text.replace('"', '""') + '"'
        return Image.id.in_(select(_fts.c.rowid).where(_fts.c.prompt.op("MATCH")(phrase)))
    return Image.prompt.ilike(_like_pattern(text), escape="\\")


def _excluded_clause(col: Any, flt: Any) -> ColumnElement[bool] | None:
    # ``= false`` rather than ``IS false``: PostgreSQL uses a B-tree index only for the former
    # (the column is NOT NULL, so both mean the same).
    if flt.only_excluded:
        return col == true()
    if not flt.include_excluded:
        return col == false()
    return None


def _split_clause(col: Any, splits: Sequence[str], none_value: str | None) -> ColumnElement[bool]:
    named = [s for s in splits if s]
    clauses = [col.in_(named)] if named else []
    if "" in splits:
        # "" is "no split": NULL in ``images`` (or an empty text), '' in ``image_counts``.
        clauses.append(col == "" if none_value == "" else or_(col.is_(None), col == ""))
    return or_(*clauses)


def _class_ids(names: Sequence[str], session: Session | None) -> Any:
    # Looked up first when there is a session: the planner then sees ``class_id = 5`` and
    # reads the class's index in id order; behind a subquery it cannot know it is one value.
    query = select(ImageClass.id).where(ImageClass.name.in_(list(names)))
    if session is None:
        return query.scalar_subquery()
    return list(session.scalars(query))


def where(query: Select, flt: Any, session: Session | None = None) -> Select:
    """``query`` narrowed to the images ``flt`` (a ``GalleryFilter``) lets through."""
    query = _narrowed(query, flt, session, Image, no_split=None)
    text = flt.prompt_contains.strip()
    if text:
        query = query.where(prompt_clause(text, session))
    return query


def _narrowed(query: Select, flt: Any, session: Session | None, table: Any,
              no_split: str | None) -> Select:
    """``query`` narrowed by ``flt``'s column filters on ``table`` (``images``, or the
    ``image_counts`` table with the same columns, where "no split" is stored as '')."""
    excluded = _excluded_clause(table.excluded, flt)
    if excluded is not None:
        query = query.where(excluded)
    if flt.classes:
        query = query.where(table.class_id.in_(_class_ids(flt.classes, session)))
    if flt.sources:
        query = query.where(table.source.in_(flt.sources))
    if flt.datasets:
        query = query.where(table.dataset_id.in_(flt.datasets))
    if flt.splits:
        query = query.where(_split_clause(table.split, flt.splits, no_split))
    return query


def count(session: Session, flt: Any) -> int:
    """How many images match: summed from ``image_counts`` unless the filter searches
    prompts (which that table does not cover); exact either way."""
    if searches_prompts(flt):
        return session.scalar(where(select(func.count(Image.id)), flt, session)) or 0
    return int(session.scalar(_counts_where(select(func.coalesce(func.sum(ImageCount.n), 0)),
                                            flt, session)) or 0)


def searches_prompts(flt: Any) -> bool:
    return bool(flt.prompt_contains.strip())


def ids_and_total(session: Session, flt: Any, sort: str, *, offset: int,
                  limit: int) -> tuple[list[int], int]:
    """One page of ids and the total, from one pass over the matches (``count(*) OVER ()``).

    For a prompt search, which the count table does not cover: counting must visit every
    match through the prompt index anyway, so the page comes from the same pass instead of
    a second search of the index. (An offset past the end finds no row to carry the
    total: it is then counted apart.)"""
    query = order(where(select(Image.id, func.count().over()), flt, session), sort)
    found = session.execute(query.offset(offset).limit(limit)).all()
    if found:
        return [row[0] for row in found], int(found[0][1])
    return [], count(session, flt) if offset else 0


def count_by_class(session: Session, flt: Any) -> dict[int, int]:
    """``{class id: matching images}`` for the classes with any."""
    if searches_prompts(flt):
        query = where(select(Image.class_id, func.count(Image.id)), flt, session)
        found = list(session.execute(query.group_by(Image.class_id)))
    else:
        query = _counts_where(select(ImageCount.class_id, func.sum(ImageCount.n)), flt, session)
        found = list(session.execute(query.group_by(ImageCount.class_id)))
    return {class_id: int(n) for class_id, n in found if n}


def class_source_counts(session: Session, *, include_excluded: bool = False
                        ) -> list[tuple[str, str | None, str, int]]:
    """``(class name, display name, source, images)`` for every class and source with any,
    by class name: the count table's few rows summed (exact), not the images counted."""
    query = (select(ImageClass.name, ImageClass.display_name, ImageCount.source,
                    func.sum(ImageCount.n))
             .join(ImageClass, ImageCount.class_id == ImageClass.id)
             .group_by(ImageClass.name, ImageClass.display_name, ImageCount.source)
             .having(func.sum(ImageCount.n) > 0)
             .order_by(ImageClass.name, ImageCount.source))
    if not include_excluded:
        query = query.where(ImageCount.excluded == False)  # noqa: E712 - SQL, indexable
    return [(name, display, source, int(n)) for name, display, source, n in session.execute(query)]


def _counts_where(query: Select, flt: Any, session: Session) -> Select:
    return _narrowed(query, flt, session, ImageCount, no_split="")


def _sort_columns(sort: str) -> list[tuple[Any, bool]]:
    """``(expression, descending)`` pairs, ending with the id (a total order)."""
    if sort == "newest":
        return [(Image.id, True)]
    if sort == "oldest":
        return [(Image.id, False)]
    if sort == "class":
        return [(ImageClass.name, False), (Image.id, True)]
    if sort == "size":
        return [(Image.width * Image.height, True), (Image.id, True)]
    raise ValueError(f"unknown sort {sort!r}; one of {', '.join(SORTS)}")


def order(query: Select, sort: str, *, reverse: bool = False) -> Select:
    """``query`` sorted by ``sort`` (or its exact reverse, to read a page from the end)."""
    columns = _sort_columns(sort)
    if sort == "class":
        query = query.join(ImageClass, Image.class_id == ImageClass.id)
    return query.order_by(*[(col.desc() if desc != reverse else col.asc()) for col, desc in columns])


def sort_key(row: Any, sort: str) -> tuple[Any, ...]:
    """The values of ``sort``'s columns for an ``ImageRow``: where a keyset page starts."""
    if sort in ("newest", "oldest"):
        return (row.id,)
    if sort == "class":
        return (row.class_name, row.id)
    if sort == "size":
        return (row.width * row.height, row.id)
    raise ValueError(f"unknown sort {sort!r}; one of {', '.join(SORTS)}")


def beyond(sort: str, key: tuple[Any, ...], *, backwards: bool = False) -> ColumnElement[bool]:
    """Rows strictly after ``key`` in ``sort`` order (before it with ``backwards``): the
    lexicographic comparison written out, since the columns mix directions."""
    columns = _sort_columns(sort)
    clauses = []
    for depth, (col, desc) in enumerate(columns):
        ahead = col < key[depth] if desc != backwards else col > key[depth]
        equal = [c == key[k] for k, (c, _) in enumerate(columns[:depth])]
        clauses.append(and_(*equal, ahead) if equal else ahead)
    return or_(*clauses) if len(clauses) > 1 else clauses[0]


def class_sorted_ids(session: Session, flt: Any, *, limit: int, offset: int = 0,
                     after: tuple[str, int] | None = None,
                     before: tuple[str, int] | None = None) -> list[int]:
    """Ids of one "by class" page (class name A-Z, newest first within a class), read one
    class at a time: each step is ``class_id = ? ... ORDER BY id DESC`` on a class index, so
    no query sorts the whole filtered set (a join ordered by name would). Per-class totals
    (from the count table) say which class an offset falls in and which classes to skip.
    ``after``/``before`` are a boundary row's ``(class name, id)``: keyset paging."""
    per_class = count_by_class(session, flt)
    names = {class_id: name for class_id, name in session.execute(
        select(ImageClass.id, ImageClass.name).where(ImageClass.id.in_(list(per_class))))}
    order_ = sorted(per_class, key=lambda class_id: names[class_id])
    backwards = before is not None
    boundary = after or before
    if backwards:
        order_.reverse()
    if boundary is not None:
        name, _ = boundary
        # Start at the boundary's class (or the first one beyond it in this direction).
        order_ = [c for c in order_ if (names[c] <= name if backwards else names[c] >= name)]
    ids: list[int] = []
    for class_id in order_:
        want = limit - len(ids)
        if want <= 0:
            break
        total = per_class[class_id]
        if boundary is None and offset >= total:
            offset -= total
            continue
        query = where(select(Image.id), flt, session).where(Image.class_id == class_id)
        descending = not backwards
        if boundary is not None and names[class_id] == boundary[0]:
            query = query.where(Image.id > boundary[1] if backwards else Image.id < boundary[1])
        elif boundary is None and offset > total // 2:
            # Deep in a big class: read it from its other end (see ``core.gallery.page``).
            take = min(want, total - offset)
            query = query.order_by(Image.id.asc()).offset(total - offset - take).limit(take)
            ids.extend(list(session.scalars(query))[::-1])
            offset = 0
            continue
        query = query.order_by(Image.id.desc() if descending else Image.id.asc())
        ids.extend(session.scalars(query.offset(offset).limit(want)))
        offset = 0
    return ids[::-1] if backwards else ids
