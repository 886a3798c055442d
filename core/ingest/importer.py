"""Import a folder, a zip or a Hugging Face dataset into the image index.

Files are decoded in a process pool (reading, decoding, hashing and writing the
content-addressed file happen there); this process only turns the small results into
rows, committed in batches. Each batch first looks up which hashes are already indexed;
if a concurrent import adds the same image in between, the batch's insert fails on the
unique hash and is redone row by row, so both imports finish and report the duplicate.

Re-running an import (a resumed job, the same folder twice) adds nothing twice: every
image already indexed is a duplicate, so an interrupted import simply continues.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import gallery_sql, neardup
from core.catalog import class_key, get_or_create_class, get_or_create_dataset
from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.db.models import SOURCES, Dataset, Image, ImageClass, utcnow
from core.ingest.decoding import (Decoded, DiskFull, init_decoding_process, process,
                                  process_chunk)
from core.ingest.huggingface import (HuggingFaceSource, check_hub_id, is_saved_dataset,
                                     looks_like_hub_id)
from core.ingest.layouts import Plan, PlannedImage, plan_import
from core.ingest.options import ImportOptions, ImportReport
from core.ingest.sources import Rejection, SourceError, open_source
from core.store import DiskFullError, ImageStore, is_disk_full

ProgressFn = Callable[[int, int, str], None]
# Below this many files a process pool costs more to start than it saves.
POOL_MIN_FILES = 64
CHUNK_FILES = 16
# Reports list files up to this many per kind (the counts are always complete).
MAX_LISTED_FILES = 1000
# Near-duplicate pairs listed in a report (closest first); the count is always complete.
MAX_LISTED_NEAR_DUPLICATES = 200


def default_dataset_name(path_or_id: str) -> str:
    path = Path(path_or_id)
    if path.suffix.lower() == ".zip":
        return path.stem
    return path.name or str(path_or_id)


def open_any(path_or_id: str | Path, settings: Settings, *,
             hub_only: bool = False):  # noqa: ANN201 - a source
    """The right source for a folder, zip, saved HF dataset or Hub id (only a Hub id
    when ``hub_only``)."""
    text = str(path_or_id)
    if hub_only:
        check_hub_id(text)
        return HuggingFaceSource(text, hub_only=True)
    path = Path(text).expanduser()
    max_file = settings.max_import_file_mb * 2**20
    if path.exists():
        if is_saved_dataset(path):
            return HuggingFaceSource(text)
        return open_source(path, max_file, settings.max_upload_mb * 2**20 * 4)
    if looks_like_hub_id(text):
        try:
            return HuggingFaceSource(text)
        except SourceError as exc:
            raise SourceError(f"path does not exist: {text}; as a Hugging Face Hub id: {exc}") from exc
    raise SourceError(f"path does not exist: {text}")


def import_dataset(path_or_id: str | Path, settings: Settings | None = None,
                   options: ImportOptions | None = None, *,
                   progress: ProgressFn | None = None) -> ImportReport:
    """Import everything usable; bad files are listed in the report and skipped.

    Raises ``SourceError`` when the source itself cannot be used. ``progress(done, total,
    message)`` may raise (``JobCancelled``) to stop the import; what was committed stays.
    """
    settings = settings or get_settings()
    options = options or ImportOptions()
    if options.source not in SOURCES:
        raise SourceError(f"source must be one of {', '.join(SOURCES)}, not {options.source!r}")
    if options.force_class:
        class_key(options.force_class)  # a clear error before any work
    started = time.perf_counter()
    source = open_any(path_or_id, settings, hub_only=options.hub_only)
    try:
        if isinstance(source, HuggingFaceSource):
            plan = source.plan()
        else:
            entries, rejected = source.scan()
            plan = plan_import(entries, read=source.read, force_class=options.force_class,
                               crop_boxes=options.crop_boxes)
            plan.rejected[:0] = rejected
        if not plan.images:
            raise SourceError(_nothing_to_import(path_or_id, plan.rejected))
        name = options.dataset or default_dataset_name(str(path_or_id))
        report = ImportReport(dataset=name, dataset_id=None, layout=plan.layout,
                              origin=str(path_or_id))
        report.rejected.extend(r.to_dict() for r in plan.rejected)
        _Importer(settings, options, report, source, progress).run(plan)
    finally:
        source.close()
    if report.added >= ANALYZE_AFTER_ROWS:
        # A bulk import changes the table's shape: refresh the planner's statistics, which
        # pick the gallery's indexes (sampled: milliseconds even at a million rows).
        with session_scope(settings, write=True) as session:
            gallery_sql.analyze(session)
    report.seconds = time.perf_counter() - started
    return report


ANALYZE_AFTER_ROWS = 500


def _nothing_to_import(path_or_id: str | Path, rejected: list) -> str:  # noqa: ANN001
    message = f"no image files to import in {path_or_id}"
    if not rejected:
        return message + " (it is empty)"
    shown = "; ".join(f"{r.path}: {r.reason}" for r in rejected[:3])
    more = f" and {len(rejected) - 3} more" if len(rejected) > 3 else ""
    return f"{message}: {len(rejected)} files skipped ({shown}{more})"


def _write_retrying_conflicts(fn: Callable[[Session], Any], settings: Settings) -> Any:
    """``run_write`` for get-or-create: on PostgreSQL two imports may create the same class
    or dataset at once; the loser's unique-name conflict is retried and finds the winner's."""
    try:
        return run_write(fn, settings)
    except IntegrityError:
        return run_write(fn, settings)


def _usable_class(name: str) -> bool:
    try:
        class_key(name)
    except ValueError:
        return False
    return True


class _Importer:
    def __init__(self, settings: Settings, options: ImportOptions, report: ImportReport,
                 source: Any, progress: ProgressFn | None) -> None:
        self.settings = settings
        self.options = options
        self.report = report
        self.source = source
        self.progress = progress or (lambda done, total, message: None)
        self.store = ImageStore(settings)
        self.class_ids: dict[str, int] = {}
        self.pending: list[Decoded] = []
        self.seen: set[str] = set()
        self.added_keys: dict[str, str] = {}  # sha256 -> file key, of images this import added
        self.layout = ""
        # Files this import wrote that have no row yet: removed if the import cannot finish.
        self.unindexed: set[str] = set()
        self.disk_full: str | None = None  # why, once a write found the disk full

    def run(self, plan: Plan) -> None:
        self.layout = plan.layout
        total = len(plan.images)
        self.progress(0, total, f"{total} files to import")
        done = 0
        decoded = self._decode_all(plan.images)
        try:
            for outputs in decoded:
                for out in outputs:
                    if isinstance(out, Decoded) and out.created:
                        self.unindexed.add(out.relpath)
                    if self.disk_full:
                        continue  # draining the decoders' last results: only their files count
                    if isinstance(out, DiskFull):
                        self.disk_full = "no room for image files"
                    elif isinstance(out, Rejection):
                        self.report.rejected.append(out.to_dict())
                    elif not _usable_class(out.class_name):
                        self.report.rejected.append({"path": out.key, "reason": (
                            f"not a usable class name: {out.class_name!r}")})
                    else:
                        self.pending.append(out)
                done += 1
                if not self.disk_full and len(self.pending) >= self.options.batch_size:
                    self._unless_disk_full(self._flush)
                if not self.disk_full:
                    self._unless_disk_full(lambda: self.progress(
                        done, total, f"{done}/{total} files, {self.report.added} added"))
            # What was decoded before the disk filled up is indexed if the database still
            # has room (its files are kept: adopted); otherwise they are removed below.
            self._unless_disk_full(self._flush)
        except BaseException:
            # Cancelled, interrupted or failed: files this import wrote without a row would
            # be orphans (a resumed import writes them again). The pool is shut down first,
            # so no decoder writes another file after the clean-up.
            decoded.close()
            self._remove_unindexed()
            raise
        if self.disk_full:
            removed = self._remove_unindexed()
            raise DiskFullError(
                f"the disk holding the data folder is full ({self.disk_full})"
                f": {self.report.added} images were imported, {removed} files written without "
                "a database row were removed; free some space and run the import again (images "
                "already imported count as duplicates)")
        self._near_duplicates()
        self.progress(total, total, self.report.summary)

    def _unless_disk_full(self, step: Callable[[], Any]) -> None:
        """Run ``step``; a full disk (a file or database write) stops the import: the
        decoders are drained, then the files without rows removed (``run``)."""
        try:
            step()
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            self.disk_full = ("no room for image files" if isinstance(exc, OSError)
                              else "the database could not be written")
            self.pending = []

    def _remove_unindexed(self) -> int:
        """Remove the files this import wrote that have no row, and say how many.

        A file another import indexed meanwhile (same pixels) has a row by now and stays;
        reading rows works on a full disk.
        """
        if not self.unindexed:
            return 0
        paths = sorted(self.unindexed)
        with contextlib.suppress(Exception):  # the database unreachable: keep every file
            with session_scope(self.settings) as session:
                indexed = set(session.execute(select(Image.path).where(
                    Image.path.in_(paths))).scalars())
            removed = 0
            for relpath in paths:
                if relpath not in indexed:
                    with contextlib.suppress(OSError, ValueError):
                        self.store.delete(relpath)
                        removed += 1
            self.unindexed.clear()
            return removed
        return 0

    # -- decoding -------------------------------------------------------------------
    def _workers(self, count: int) -> int:
        wanted = self.options.workers or self.settings.ingest_workers
        return 1 if count < POOL_MIN_FILES else max(1, wanted)

    def _tasks(self, images: list[PlannedImage]) -> Iterator[PlannedImage]:
        spec = self.source.spec
        for item in images:
            if self.disk_full:
                return  # no new work once the disk is full; what is in flight is drained
            if spec is None and item.data is None:
                try:
                    item.data = self.source.read(item.key)
                except OSError as exc:
                    self.report.rejected.append({"path": item.key, "reason": f"cannot read: {exc}"})
                    continue
            yield item

    def _decode_all(self, images: list[PlannedImage]) -> Iterator[list[Decoded | Rejection]]:
        spec = self.source.spec
        workers = self._workers(len(images))
        if workers == 1:
            for item in self._tasks(images):
                yield process(item, self.settings, spec, self.source)
            return
        # fork: children start at once and never re-run the caller's __main__ (a
        # forkserver/spawn child would, which breaks scripts and ``python -`` callers).
        # They only decode and write files, none of the parent's threads' locks.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        in_flight: collections.deque[Future] = collections.deque()
        chunk: list[PlannedImage] = []
        with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                 initializer=init_decoding_process,
                                 initargs=(os.getpid(),)) as pool:
            try:
                for item in self._tasks(images):
                    chunk.append(item)
                    if len(chunk) == CHUNK_FILES:
                        in_flight.append(pool.submit(process_chunk, chunk, self.settings, spec))
                        chunk = []
                        while len(in_flight) >= workers * 4:
                            yield from in_flight.popleft().result()
                if chunk:
                    in_flight.append(pool.submit(process_chunk, chunk, self.settings, spec))
                while in_flight:
                    yield from in_flight.popleft().result()
            except BaseException:
                for future in in_flight:
                    future.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    # -- rows -----------------------------------------------------------------------
    def _ensure_classes(self, batch: list[Decoded]) -> None:
        # In a transaction of their own, so a batch that is redone never caches the id of
        # a class whose creation was rolled back.
        missing = {class_key(item.class_name) for item in batch} - self.class_ids.keys()
        if not missing:
            return
        names = {class_key(item.class_name): item.class_name for item in batch}

        def create(session: Session) -> dict[str, int]:
            return {key: get_or_create_class(session, names[key]).id for key in missing}
        self.class_ids.update(_write_retrying_conflicts(create, self.settings))

    def _ensure_dataset(self) -> None:
        # Made with the first batch of decoded images, so an import where every file was
        # rejected leaves no empty dataset behind.
        if self.report.dataset_id is not None:
            return

        def create(session: Session) -> int:
            return get_or_create_dataset(
                session, self.report.dataset, source=self.options.source,
                origin=self.report.origin, layout=self.layout,
                created_by=self.options.added_by).id
        self.report.dataset_id = _write_retrying_conflicts(create, self.settings)

    def _row(self, item: Decoded) -> dict[str, Any]:
        return {"sha256": item.sha256, "path": item.relpath,
                "class_id": self.class_ids[class_key(item.class_name)],
                "source": self.options.source, "dataset_id": self.report.dataset_id,
                "phash": item.phash, "colour_sig": item.colour_sig, "split": item.split,
                "width": item.width, "height": item.height,
                "format": item.format, "original_name": item.original_name,
                "added_by": self.options.added_by, "added_at": utcnow(), "excluded": False,
                "extra": item.extra}

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        self._ensure_classes(batch)
        self._ensure_dataset()
        try:
            outcome = run_write(lambda session: self._insert_batch(session, batch), self.settings)
        except IntegrityError:
            # Someone else indexed one of these images meanwhile: go row by row.
            outcome = run_write(lambda session: self._insert_one_by_one(session, batch),
                                self.settings)
        added, duplicates = outcome
        self.seen.update(item.sha256 for item in added)
        self.unindexed.difference_update(item.relpath for item in added)
        self.added_keys.update((item.sha256, item.key) for item in added)
        for item in added:
            self.report.added += 1
            if len(self.report.added_files) < MAX_LISTED_FILES:
                self.report.added_files.append({"path": item.key, "class": item.class_name,
                                                "split": item.split})
            self.report.per_class[item.class_name] = self.report.per_class.get(item.class_name, 0) + 1
            split = item.split or "-"
            self.report.per_split[split] = self.report.per_split.get(split, 0) + 1
        for item, existing_id, existing_path in duplicates:
            self.report.duplicates += 1
            if len(self.report.duplicate_files) < MAX_LISTED_FILES:
                self.report.duplicate_files.append({"path": item.key, "same_as_image": existing_id})
            if item.created and existing_path != item.relpath:
                # Same pixels stored under another extension: our copy would be an orphan.
                with contextlib.suppress(OSError, ValueError):
                    self.store.delete(item.relpath)
                    self.unindexed.discard(item.relpath)

    def _near_duplicates(self) -> None:
        """List the added images that are near-duplicates of each other or of older ones.

        Done once after the last batch, so each pair is found once however the batches
        fell, against everything indexed at that moment (concurrent imports included).
        """
        limits = neardup.Limits.of(self.settings)
        if not limits.enabled or not self.added_keys:
            return
        with session_scope(self.settings) as session:
            rows = session.execute(
                select(Image.id, Image.sha256, Image.phash, Image.colour_sig)
                .where(Image.phash.is_not(None), Image.colour_sig.is_not(None))
                .order_by(Image.id)).all()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        hashes = neardup.as_uint64(np.fromiter((r[2] for r in rows), dtype=np.int64,
                                               count=len(rows)))
        colours = neardup.as_colours([r[3] for r in rows])
        new = np.fromiter((r[1] in self.added_keys for r in rows), dtype=bool, count=len(rows))
        new_index = np.flatnonzero(new)
        pairs = neardup.pairs_between(hashes[new_index], hashes, limits,
                                      query_colours=colours[new_index], reference_colours=colours)
        mine, other = new_index[pairs.left], pairs.right
        # A pair of two added images is found from both ends: keep it once.
        keep = (ids[other] != ids[mine]) & (~new[other] | (ids[mine] < ids[other]))
        mine, other, dist = mine[keep], other[keep], pairs.distance[keep]
        self.report.near_duplicate_pairs = int(mine.size)
        order = np.lexsort((ids[other], ids[mine], dist))[:MAX_LISTED_NEAR_DUPLICATES]
        listed = [(int(mine[k]), int(other[k]), int(dist[k])) for k in order]
        wanted = sorted({int(ids[i]) for pair in listed for i in pair[:2]})
        with session_scope(self.settings) as session:
            facts = {r[0]: r[1:] for r in session.execute(
                select(Image.id, Image.original_name, Image.path, ImageClass.name, Dataset.name)
                .join(ImageClass, Image.class_id == ImageClass.id)
                .join(Dataset, Image.dataset_id == Dataset.id).where(Image.id.in_(wanted)))}
        for a, b, distance in listed:
            new_id, other_id = int(ids[a]), int(ids[b])
            name, path, class_name, dataset = facts.get(other_id, (None, "", "", ""))
            within = bool(new[b])
            self.report.near_duplicates.append({
                "path": self.added_keys[rows[a][1]], "image_id": new_id,
                "class": facts.get(new_id, (None, "", "", ""))[2],
                "similar_to_image": other_id,
                "similar_to": self.added_keys[rows[b][1]] if within else (name or path),
                "similar_class": class_name, "similar_dataset": dataset,
                "distance": distance, "within_import": within})

    def _split_known(self, session: Session, batch: list[Decoded]):  # noqa: ANN202
        shas = {item.sha256 for item in batch}
        known = {sha: (image_id, path) for image_id, sha, path in session.execute(
            select(Image.id, Image.sha256, Image.path).where(Image.sha256.in_(shas)))}
        fresh, duplicates = [], []
        fresh_shas: set[str] = set()
        for item in batch:
            if item.sha256 in known:
                duplicates.append((item, *known[item.sha256]))
            elif item.sha256 in self.seen or item.sha256 in fresh_shas:
                duplicates.append((item, None, item.relpath))
            else:
                fresh.append(item)
                fresh_shas.add(item.sha256)
        return fresh, duplicates

    def _insert_batch(self, session: Session, batch: list[Decoded]):  # noqa: ANN202
        fresh, duplicates = self._split_known(session, batch)
        if fresh:
            session.execute(insert(Image), [self._row(item) for item in fresh])
        return fresh, duplicates

    def _insert_one_by_one(self, session: Session, batch: list[Decoded]):  # noqa: ANN202
        fresh, duplicates = self._split_known(session, batch)
        added = []
        for item in fresh:
            try:
                with session.begin_nested():
                    session.execute(insert(Image), [self._row(item)])
                added.append(item)
            except IntegrityError:
                existing = session.execute(select(Image.id, Image.path)
                                           .where(Image.sha256 == item.sha256)).first()
                duplicates.append((item, *(existing or (None, item.relpath))))
        return added, duplicates
