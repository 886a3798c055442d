"""Housekeeping of the attribution cache: what it holds, and removing what is stale.

Stale means: a row whose ``.npy`` file is gone (it would be recomputed anyway), a file no
row points at (left by a crash between the two writes), and the maps of deleted runs.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass

from sqlalchemy import delete, select

from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.explain.models import Attribution
from core.explain.service import attributions_dir

# A file younger than this may belong to a map whose row is being written right now.
MIN_ORPHAN_AGE_SECONDS = 600


@dataclass
class CacheReport:
    rows: int = 0
    files: int = 0
    bytes: int = 0
    rows_without_file: int = 0
    files_without_row: int = 0
    removed_rows: int = 0
    removed_files: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def inspect_cache(settings: Settings | None = None, *, prune: bool = False,
                  min_age_seconds: float = MIN_ORPHAN_AGE_SECONDS) -> CacheReport:
    """Count the cache's rows and files; with ``prune``, remove the stale ones."""
    settings = settings or get_settings()
    root = attributions_dir(settings)
    with session_scope(settings) as session:
        rows = {path: row_id for row_id, path in session.execute(select(Attribution.id, Attribution.path))}
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*.npy")} if root.is_dir() else {}
    report = CacheReport(rows=len(rows), files=len(files),
                         bytes=sum(p.stat().st_size for p in files.values()))
    missing = [row_id for path, row_id in rows.items() if path not in files]
    now = time.time()
    orphans = [p for rel, p in files.items()
               if rel not in rows and now - p.stat().st_mtime >= min_age_seconds]
    report.rows_without_file, report.files_without_row = len(missing), len(orphans)
    if not prune:
        return report
    if missing:
        def write(session) -> None:  # noqa: ANN001
            session.execute(delete(Attribution).where(Attribution.id.in_(missing)))
        run_write(write, settings)
        report.removed_rows = len(missing)
    for path in orphans:  # rows first, then files: nothing ever points at a removed file
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            report.removed_files += 1
    return report
