"""Consistency check of the image store against the index, with an optional repair.

Finds: rows whose file is missing, files without a row (orphans, e.g. after a crash
between writing a file and committing its row), leftover temporary files and upload
staging folders no import job needs any more, and cached
thumbnails of images that no longer exist. Files younger than ``min_age_seconds`` are
reported but left alone: they may belong to an import that is running right now.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.db.models import Image
from core.store import ImageStore

DEFAULT_MIN_AGE_SECONDS = 15 * 60


@dataclass
class CheckReport:
    rows_missing_file: list[dict[str, Any]] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    stale_thumbnails: list[str] = field(default_factory=list)
    skipped_recent: list[str] = field(default_factory=list)
    repaired: bool = False
    actions: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.rows_missing_file or self.orphan_files or self.temp_files
                    or self.stale_thumbnails)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows_missing_file": self.rows_missing_file,
                "orphan_files": self.orphan_files, "temp_files": self.temp_files,
                "stale_thumbnails": self.stale_thumbnails, "skipped_recent": self.skipped_recent,
                "repaired": self.repaired, "actions": self.actions}


def _staged_paths_in_use(settings: Settings) -> set[str]:
    """Upload folders that a queued or running import job still needs."""
    from core import jobs

    names = set()
    for job in jobs.list_jobs(kind="import", statuses=jobs.ACTIVE_STATUSES, limit=1000,
                              settings=settings):
        parts = Path(str((job.params or {}).get("path", ""))).parts
        if "uploads" in parts and parts.index("uploads") + 1 < len(parts):
            names.add(parts[parts.index("uploads") + 1])
    return names


def _old_enough(path: Path, min_age: float, now: float) -> bool:
    try:
        return now - path.stat().st_mtime >= min_age
    except OSError:
        return False


def check(settings: Settings | None = None, repair: bool = False, *,
          min_age_seconds: float = DEFAULT_MIN_AGE_SECONDS) -> CheckReport:
    settings = settings or get_settings()
    store = ImageStore(settings)
    report = CheckReport(repaired=repair)
    now = time.time()

    with session_scope(settings) as session:
        rows = session.execute(select(Image.id, Image.path, Image.sha256)).all()
    known_paths = {path for _id, path, _sha in rows}
    known_stems = {Path(path).stem for path in known_paths}

    for image_id, relpath, _sha in rows:
        try:
            present = store.exists(relpath)
        except ValueError:
            present = False
        if not present:
            report.rows_missing_file.append({"id": image_id, "path": relpath})

    for relpath in store.iter_relpaths():
        if relpath in known_paths:
            continue
        path = store.root / relpath
        if _old_enough(path, min_age_seconds, now):
            report.orphan_files.append(relpath)
        else:
            report.skipped_recent.append(f"images/{relpath}")

    for folder in (settings.tmp_dir, store.root):
        if not folder.is_dir():
            continue
        candidates = folder.iterdir() if folder == settings.tmp_dir else folder.glob("*/.part-*")
        for path in candidates:
            if not path.is_file():
                continue
            label = str(path.relative_to(settings.home_path))
            if _old_enough(path, min_age_seconds, now):
                report.temp_files.append(label)
            else:
                report.skipped_recent.append(label)

    exports = settings.cache_dir / "exports"  # zips prepared for download by the Gallery
    if exports.is_dir():
        for path in exports.iterdir():
            label = str(path.relative_to(settings.home_path))
            if _old_enough(path, max(min_age_seconds, 3600), now):
                report.temp_files.append(label)

    uploads = settings.home_path / "uploads"
    if uploads.is_dir():
        in_use = _staged_paths_in_use(settings)
        for folder in uploads.iterdir():
            label = str(folder.relative_to(settings.home_path))
            if folder.name in in_use or not _old_enough(folder, min_age_seconds, now):
                report.skipped_recent.append(label)
            else:
                report.temp_files.append(label)

    if store.thumbs.is_dir():
        for path in store.thumbs.glob("*/*.jpg"):
            stem = path.stem.rsplit("_", 1)[0]
            if stem not in known_stems and _old_enough(path, min_age_seconds, now):
                report.stale_thumbnails.append(str(path.relative_to(store.thumbs)))

    if repair:
        _repair(settings, store, report)
    return report


def _repair(settings: Settings, store: ImageStore, report: CheckReport) -> None:
    missing_ids = [row["id"] for row in report.rows_missing_file]

    def drop_rows(session: Session) -> list[str]:
        notes = []
        for image_id in missing_ids:
            image = session.get(Image, image_id)
            # Re-checked inside the write lock: the file may have come back meanwhile.
            if image is None or store.exists(image.path):
                continue
            try:
                with session.begin_nested():
                    session.execute(delete(Image).where(Image.id == image_id))
                notes.append(f"removed row {image_id} (file {image.path} missing)")
            except IntegrityError:
                # Other records (training runs, quiz answers) point at it: keep the row
                # but take it out of every view and set.
                session.execute(update(Image).where(Image.id == image_id).values(excluded=True))
                notes.append(f"excluded row {image_id} (file missing, still referenced)")
        return notes
    if missing_ids:
        report.actions.extend(run_write(drop_rows, settings))

    for relpath in report.orphan_files:
        def still_orphan(session: Session, relpath: str = relpath) -> bool:
            return session.scalar(select(Image.id).where(Image.path == relpath)) is None
        # Under the write lock, so an import cannot add its row between check and unlink.
        def remove(session: Session, relpath: str = relpath) -> bool:
            if not still_orphan(session):
                return False
            store.delete(relpath)
            return True
        if run_write(remove, settings):
            report.actions.append(f"removed orphan file images/{relpath}")

    for label in report.temp_files:
        path = settings.home_path / label
        with contextlib.suppress(OSError):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            report.actions.append(f"removed temporary file {label}")

    for label in report.stale_thumbnails:
        with contextlib.suppress(OSError):
            (store.thumbs / label).unlink()
            report.actions.append(f"removed stale thumbnail thumbs/{label}")
