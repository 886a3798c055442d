"""A cheap marker of "has the database changed?", for caches of slow read-only queries.

Pages cache the index's totals and choices (a GROUP BY over 100,000 rows costs tens of
milliseconds on every rerun) keyed on this marker, so a cached answer is used only while
nothing was written, by this process or any other (the worker, the CLI).

* SQLite: the size and modification time of the database file and its write-ahead log.
  Every commit appends to the log (or, after a checkpoint, rewrites it or the database
  file), so any write from any connection changes them; reading them is two ``stat``
  calls, no query.
* Other databases (PostgreSQL): the newest id of the tables whose changes the cached
  answers show (images, datasets, classes) and of the audit log, which records every
  curation (relabel, exclude, delete). A few index-only lookups.

A file's modification time has the kernel's clock tick as its resolution (a few
milliseconds), so two commits in one tick that leave the log the same size could look
like one; callers bound that with a short time to live as well.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from core.config import Settings, get_settings


def _sqlite_path(settings: Settings) -> Path | None:
    database = make_url(settings.database_url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def _stat(path: Path) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return (0, 0)
    return (info.st_size, info.st_mtime_ns)


def change_marker(settings: Settings | None = None) -> tuple:
    """A value that differs after any committed write to the index (see the module doc)."""
    settings = settings or get_settings()
    if settings.is_sqlite:
        path = _sqlite_path(settings)
        if path is not None:
            return ("sqlite", *_stat(path), *_stat(path.with_name(path.name + "-wal")))
    from core.db.engine import session_scope
    from core.db.models import Dataset, Image, ImageClass
    from core.users.models import AuditEntry

    with session_scope(settings) as session:
        return ("sql", *(session.scalar(select(func.max(table.id)))
                         for table in (Image, Dataset, ImageClass, AuditEntry)))
