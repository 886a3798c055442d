"""Browsing and curating the image index: filtered, sorted, paginated queries in SQL.

The SQL lives in ``core.gallery_sql``: every filter is served by an index ending in ``id``
(so a page reads LIMIT index entries), totals come from the trigger-kept ``image_counts``
table, prompt search uses a trigram index. Next/previous pages seek from the last row shown
(keyset); an OFFSET is used only for a jump, and read from the nearer end. Nothing is
filtered in Python.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from core import gallery_sql, neardup
from core.catalog import get_or_create_class
from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.db.models import Dataset, Image, ImageClass, ImageCount
from core.store import ImageStore
from core.users.permissions import refusals_audited

SORTS = gallery_sql.SORTS


@dataclass
class GalleryFilter:
    """Which images to show. Empty lists mean "any"."""

    classes: list[str] = field(default_factory=list)  # class keys (``bell_pepper``)
    sources: list[str] = field(default_factory=list)  # real | synthetic
    datasets: list[int] = field(default_factory=list)  # dataset ids
    splits: list[str] = field(default_factory=list)  # train | test | val | "" (no split)
    prompt_contains: str = ""
    include_excluded: bool = False
    only_excluded: bool = False


@dataclass
class ImageRow:
    id: int
    path: str
    sha256: str
    class_name: str
    class_display: str
    source: str
    dataset: str
    split: str | None
    width: int
    height: int
    excluded: bool
    prompt: str | None


@dataclass
class Page:
    rows: list[ImageRow]
    total: int
    offset: int
    limit: int

    @property
    def page_count(self) -> int:
        return max(1, -(-self.total // self.limit))


def _where(query: Select, flt: GalleryFilter, session: Session | None = None) -> Select:
    # With a session, prompt search may use the trigram index (same rows either way).
    return gallery_sql.where(query, flt, session)


_ROW_COLUMNS = (Image.id, Image.path, Image.sha256, ImageClass.name, ImageClass.display_name,
                Image.source, Dataset.name, Image.split, Image.width, Image.height,
                Image.excluded, Image.prompt)


def count(flt: GalleryFilter, settings: Settings | None = None) -> int:
    """How many images match (exact: from the count table, or counted for a prompt search)."""
    with session_scope(settings) as session:
        return gallery_sql.count(session, flt)


def _rows(session: Session, ids: list[int]) -> list[ImageRow]:
    # The page's ids were picked on the images table alone (index only); now join the names.
    if not ids:
        return []
    query = (select(*_ROW_COLUMNS).join(ImageClass, Image.class_id == ImageClass.id)
             .join(Dataset, Image.dataset_id == Dataset.id).where(Image.id.in_(ids)))
    by_id = {r[0]: ImageRow(*r) for r in session.execute(query)}
    return [by_id[i] for i in ids if i in by_id]


def _by_class_steps(flt: GalleryFilter, sort: str) -> bool:
    # "By class" one class at a time spares sorting a big filtered set; a prompt search is
    # bounded by its matches, and each step would search the prompt index again: one query.
    return sort == "class" and not gallery_sql.searches_prompts(flt)


def _seek_ids(session: Session, flt: GalleryFilter, sort: str, limit: int,
              after: ImageRow | None, before: ImageRow | None) -> list[int]:
    if _by_class_steps(flt, sort):
        return gallery_sql.class_sorted_ids(
            session, flt, limit=limit,
            after=gallery_sql.sort_key(after, sort) if after is not None else None,
            before=gallery_sql.sort_key(before, sort) if before is not None else None)
    query = _where(select(Image.id), flt, session)
    if after is not None:
        query = query.where(gallery_sql.beyond(sort, gallery_sql.sort_key(after, sort)))
        return list(session.scalars(gallery_sql.order(query, sort).limit(limit)))
    assert before is not None
    query = query.where(gallery_sql.beyond(sort, gallery_sql.sort_key(before, sort), backwards=True))
    ids = list(session.scalars(gallery_sql.order(query, sort, reverse=True).limit(limit)))
    return ids[::-1]


def seek(flt: GalleryFilter, *, sort: str = "newest", after: ImageRow | None = None,
         before: ImageRow | None = None, limit: int = 48,
         settings: Settings | None = None) -> list[ImageRow]:
    """Keyset paging: the ``limit`` rows just after ``after`` (the last row shown: the next
    page) or just before ``before`` (the first row shown: the previous page), in ``sort``
    order. Costs the same on page 2 and page 2,000, unlike an OFFSET."""
    if (after is None) == (before is None):
        raise ValueError("give exactly one of after= or before=")
    limit = max(1, min(int(limit), 1000))
    with session_scope(settings) as session:
        return _rows(session, _seek_ids(session, flt, sort, limit, after, before))


def page(flt: GalleryFilter, *, sort: str = "newest", offset: int = 0, limit: int = 48,
         total: int | None = None, after: ImageRow | None = None,
         before: ImageRow | None = None, settings: Settings | None = None) -> Page:
    """One page of images and the total matching the filter (pass ``total`` if known).

    With ``after`` (or ``before``) the page is read by keyset from that row, ``offset``
    then only says which page it is; if the rows around it changed so that the seek comes
    back short, or the page is the first, the page is read by offset instead. An offset past the middle is read from
    the other end, so the last page costs what the first does. A prompt search without
    ``total`` reads the page and the total in one search of the prompt index, by offset.
    """
    limit = max(1, min(int(limit), 1000))
    offset = max(0, int(offset))
    with session_scope(settings) as session:
        if total is None and gallery_sql.searches_prompts(flt):
            # Page and total in one search of the prompt index, read by offset: the search
            # visits every match to count them, so a keyset seek would save nothing.
            ids, total = gallery_sql.ids_and_total(session, flt, sort, offset=offset, limit=limit)
            return Page(rows=_rows(session, ids), total=total, offset=offset, limit=limit)
        if total is None:
            total = gallery_sql.count(session, flt)
        expected = max(0, min(limit, total - offset))
        ids: list[int] | None = None
        # The first page is read from the top (cheap), so it always shows the newest rows.
        if (after is not None or before is not None) and offset > 0:
            ids = _seek_ids(session, flt, sort, limit, after, before)
            if len(ids) < expected:
                ids = None
        if ids is None and _by_class_steps(flt, sort):
            ids = gallery_sql.class_sorted_ids(session, flt, limit=limit, offset=offset)
        if ids is None:
            query = _where(select(Image.id), flt, session)
            if offset > total // 2 and expected:
                # Reverse order from the end: OFFSET walks total - offset entries, not offset.
                from_end = max(0, total - offset - limit)
                ids = list(session.scalars(gallery_sql.order(query, sort, reverse=True)
                                           .offset(from_end).limit(expected)))[::-1]
            else:
                ids = list(session.scalars(gallery_sql.order(query, sort)
                                           .offset(offset).limit(limit)))
        rows = _rows(session, ids)
    return Page(rows=rows, total=total, offset=offset, limit=limit)


def refresh_statistics(settings: Settings | None = None) -> None:
    """Let the query planner see the table as it is now (ANALYZE), after a bulk import: on
    SQLite, without statistics, a filter may pick a worse index. Sampled on SQLite (at
    most ~1,000 rows per index), so it takes milliseconds at a million rows."""
    with session_scope(settings, write=True) as session:
        gallery_sql.analyze(session)


def image_detail(image_id: int, settings: Settings | None = None) -> dict[str, Any] | None:
    """Every stored fact about one image, for the detail view."""
    with session_scope(settings) as session:
        image = session.get(Image, image_id)
        if image is None:
            return None
        data = {column.name: getattr(image, column.key)
                for column in Image.__table__.columns}
        data["class"] = image.image_class.name
        data["class_display_name"] = image.image_class.display_name
        data["dataset"] = image.dataset.name
        data["phash"] = neardup.to_hex(image.phash)  # as imagehash prints it
        return data


def near_duplicates(image_id: int, settings: Settings | None = None,
                    max_distance: int | None = None) -> list[tuple[Image, int]]:
    """Resized, re-encoded or cropped copies of an image (``core.neardup``), closest first:
    ``(image, pHash distance)`` with class and dataset loaded. ``max_distance`` overrides
    ``Settings.near_duplicate_distance``; an image without signatures gets them first."""
    found = neardup.near_images(image_id, settings, max_distance=max_distance)
    if not found:
        return []
    with session_scope(settings) as session:
        rows = {image.id: image for image in session.scalars(
            select(Image).where(Image.id.in_([other for other, _ in found])))}
    return [(rows[other], distance) for other, distance in found if other in rows]


def classes(settings: Settings | None = None) -> list[ImageClass]:
    with session_scope(settings) as session:
        return list(session.scalars(select(ImageClass).order_by(ImageClass.name)))


def datasets(settings: Settings | None = None) -> list[Dataset]:
    with session_scope(settings) as session:
        return list(session.scalars(select(Dataset).order_by(Dataset.id.desc())))


def splits(settings: Settings | None = None) -> list[str]:
    """Every split name in use (from the count table: no scan of the images)."""
    with session_scope(settings) as session:
        return sorted(s for s in session.scalars(select(ImageCount.split).distinct()) if s)


def counts_by_class_and_source(settings: Settings | None = None, *,
                               include_excluded: bool = False) -> list[dict[str, Any]]:
    """``[{class, display_name, source, count}]`` for charts and ``stats``."""
    with session_scope(settings) as session:
        rows = gallery_sql.class_source_counts(session, include_excluded=include_excluded)
    return [{"class": name, "display_name": display, "source": source, "count": n}
            for name, display, source, n in rows]


def stats(settings: Settings | None = None) -> dict[str, Any]:
    """Totals for ``python -m core stats`` and the Home page."""
    rows = counts_by_class_and_source(settings)
    per_class: dict[str, dict[str, int]] = {}
    for row in rows:
        per_class.setdefault(row["class"], {})[row["source"]] = row["count"]
    with session_scope(settings) as session:
        total = int(session.scalar(select(func.coalesce(func.sum(ImageCount.n), 0))) or 0)
        excluded = int(session.scalar(select(func.coalesce(func.sum(ImageCount.n), 0))
                                      .where(ImageCount.excluded == True)) or 0)  # noqa: E712
        per_dataset = {name: int(n) for name, n in session.execute(
            select(Dataset.name, func.sum(ImageCount.n))
            .join(ImageCount, ImageCount.dataset_id == Dataset.id)
            .group_by(Dataset.name).having(func.sum(ImageCount.n) > 0).order_by(Dataset.name))}
    by_source: dict[str, int] = {}
    for row in rows:
        by_source[row["source"]] = by_source.get(row["source"], 0) + row["count"]
    return {"images": total, "excluded": excluded, "by_source": by_source,
            "per_class": per_class, "per_dataset": per_dataset}


# --- curation ---------------------------------------------------------------------------
# ``actor`` is a ``core.users.identity.Identity`` (pages pass the signed-in one) or a plain
# name (CLI, scripts: trusted). With real sign-in, only an image's owner (``added_by``) or
# an admin may change it; every change is written to the audit log in the same transaction.

def _authorise(session: Session, image_ids: list[int], actor: Any, action: str) -> str:
    from core.users.identity import Identity, unverified
    from core.users.permissions import require_current

    identity = actor if isinstance(actor, Identity) else unverified(actor)
    if isinstance(actor, Identity):
        # The role as it is now, read in this transaction: a page (or a fragment) may hold
        # an identity from before a demotion or removal.
        identity = require_current(identity, None, None, "change images", session=session)
        owners = set(session.scalars(select(Image.added_by).where(Image.id.in_(image_ids))
                                     .distinct()))
        for owner in owners:
            require_current(identity, owner, action, f"images added by {owner or 'nobody'}",
                            session=session)
    return identity.name


def _audit(session: Session, actor: str, action: str, image_ids: list[int],
           detail: dict[str, Any] | None = None) -> None:
    from core.users import audit

    audit.record(session, actor, action, target_kind="image",
                 target_id=",".join(map(str, image_ids[:20])) + ("..." if len(image_ids) > 20 else ""),
                 detail={"count": len(image_ids), **(detail or {})})


def _old_classes(session: Session, which: Any) -> dict[str, Any]:
    """``{"old_class": name}`` (or ``{name: count}`` when they differ) for a relabel's audit
    entry: without it the log says where images went but not where they came from."""
    counts = dict(session.execute(
        select(ImageClass.name, func.count(Image.id)).join(ImageClass, Image.class_id == ImageClass.id)
        .where(which).group_by(ImageClass.name).order_by(ImageClass.name)).all())
    if len(counts) == 1:
        return {"old_class": next(iter(counts))}
    return {"old_class": counts}


def relabel(image_ids: list[int], class_name: str, *, actor: Any = None,
            settings: Settings | None = None) -> int:
    """Move images to another class (created if new). Returns how many changed."""
    image_ids = list(image_ids)

    def write(session: Session) -> int:
        name = _authorise(session, image_ids, actor, "relabel")
        target = get_or_create_class(session, class_name)
        before = _old_classes(session, Image.id.in_(image_ids))
        result = session.execute(update(Image).where(Image.id.in_(image_ids))
                                 .values(class_id=target.id))
        _audit(session, name, "relabel", image_ids, {"class": target.name, **before})
        return result.rowcount or 0
    with refusals_audited(settings):
        return run_write(write, settings)


def set_excluded(image_ids: list[int], excluded: bool, *, actor: Any = None,
                 settings: Settings | None = None) -> int:
    """Soft-exclude (or restore) images: excluded ones stay stored but leave every view and set."""
    image_ids = list(image_ids)

    def write(session: Session) -> int:
        name = _authorise(session, image_ids, actor, "exclude")
        result = session.execute(update(Image).where(Image.id.in_(image_ids))
                                 .values(excluded=excluded))
        _audit(session, name, "exclude" if excluded else "restore", image_ids)
        return result.rowcount or 0
    with refusals_audited(settings):
        return run_write(write, settings)


def delete_images(image_ids: list[int], *, actor: Any = None,
                  settings: Settings | None = None) -> int:
    """Delete rows first, then their files: a crash in between leaves an orphan file (which
    ``check --repair`` removes), never a row pointing at a missing file."""
    settings = settings or get_settings()
    image_ids = list(image_ids)

    def write(session: Session) -> list[str]:
        name = _authorise(session, image_ids, actor, "delete")
        paths = list(session.scalars(select(Image.path).where(Image.id.in_(image_ids))))
        session.execute(delete(Image).where(Image.id.in_(image_ids)))
        _audit(session, name, "delete", image_ids)
        return paths
    with refusals_audited(settings):
        paths = run_write(write, settings)
    store = ImageStore(settings)
    for relpath in paths:
        with contextlib.suppress(OSError, ValueError):
            store.delete(relpath)
    return len(paths)


def update_filtered(flt: GalleryFilter, *, excluded: bool | None = None,
                    class_name: str | None = None, actor: Any = None,
                    settings: Settings | None = None) -> int:
    """Exclude, restore or relabel every image matching ``flt`` in one statement.

    The matching ids are read once inside the write transaction (the update changes
    columns the filter looks at) and updated in chunks of 500, well under SQLite's limit on
    bound parameters. Returns how many rows changed.
    """
    if (excluded is None) == (class_name is None):
        raise ValueError("give exactly one of excluded= or class_name=")
    action = "relabel" if class_name is not None else ("exclude" if excluded else "restore")

    def write(session: Session) -> int:
        from core.users.identity import Identity
        from core.users.permissions import require_current

        ids = _where(select(Image.id), flt, session).scalar_subquery()
        if isinstance(actor, Identity):
            # Re-read the role now (see _authorise), then check each owner.
            fresh = require_current(actor, None, None, "change images", session=session)
            for owner in session.scalars(select(Image.added_by).where(Image.id.in_(ids)).distinct()):
                require_current(fresh, owner, "exclude" if action == "restore" else action,
                                f"images added by {owner or 'nobody'}", session=session)
        values: dict[str, Any] = {}
        audit_detail: dict[str, Any] = {}
        if class_name is not None:
            target = get_or_create_class(session, class_name)
            values["class_id"] = target.id
            audit_detail = {"class": target.name, **_old_classes(session, Image.id.in_(ids))}
        else:
            values["excluded"] = excluded
        matching = list(session.scalars(_where(select(Image.id), flt, session)))
        changed = 0
        for start in range(0, len(matching), 500):
            chunk = matching[start:start + 500]
            changed += session.execute(update(Image).where(Image.id.in_(chunk))
                                       .values(**values)).rowcount or 0
        name = actor.name if isinstance(actor, Identity) else (actor or None)
        from core.users import audit

        audit.record(session, name, action, target_kind="image", target_id="filter",
                     detail={"count": changed, "filter": repr(flt), **audit_detail})
        return changed
    with refusals_audited(settings):
        return run_write(write, settings)


# --- undo -------------------------------------------------------------------------------
# The Gallery offers "Undo" after each change: it keeps each changed image's class and
# excluded flag from just before, and ``revert`` writes them back (audited as "undo").

def curation_state(image_ids: list[int] | None = None, flt: GalleryFilter | None = None,
                   settings: Settings | None = None) -> dict[int, tuple[str, bool]]:
    """``{id: (class key, excluded)}`` of the given images, or of every image matching ``flt``."""
    if (image_ids is None) == (flt is None):
        raise ValueError("Give exactly one of image_ids= or flt=.")
    with session_scope(settings) as session:
        query = select(Image.id, ImageClass.name, Image.excluded).join(
            ImageClass, Image.class_id == ImageClass.id)
        if flt is not None:
            query = _where(query, flt, session)
        else:
            query = query.where(Image.id.in_(list(image_ids or [])))
        return {image_id: (name, bool(excluded)) for image_id, name, excluded in session.execute(query)}


def revert(before: dict[int, tuple[str, bool]], *, actor: Any = None,
           settings: Settings | None = None) -> int:
    """Put each image's class and excluded flag back to ``before`` (from ``curation_state``).

    Images deleted since are skipped. Returns how many images still exist and were reset.
    """
    groups: dict[tuple[str, bool], list[int]] = {}
    for image_id, state in before.items():
        groups.setdefault((state[0], bool(state[1])), []).append(int(image_id))
    image_ids = [i for ids in groups.values() for i in ids]

    def write(session: Session) -> int:
        # In chunks: an Undo of "Change all filtered images" may hold 100,000 ids, far over
        # the bound parameters one statement may take.
        for start in range(0, len(image_ids), 5000):  # SQLite takes 32,766 at least
            name = _authorise(session, image_ids[start:start + 5000], actor, "relabel")
        changed = 0
        for (class_name, excluded), ids in groups.items():
            target = get_or_create_class(session, class_name)
            for start in range(0, len(ids), 5000):
                changed += session.execute(
                    update(Image).where(Image.id.in_(ids[start:start + 5000]))
                    .values(class_id=target.id, excluded=excluded)).rowcount or 0
        _audit(session, name, "undo", image_ids)
        return changed
    if not image_ids:
        return 0
    with refusals_audited(settings):
        return run_write(write, settings)
