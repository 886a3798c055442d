"""The preprocessed cache that feeds training: uint8 arrays built once, reused every epoch.

Layout, under ``settings.cache_dir / "preprocess"``::

    <prefix hash>/pipeline.json      the cached part of the pipeline (for people and prune)
    <prefix hash>/<shard>.npy        a flat uint8 array: many images back to back
    <prefix hash>/<shard>.json       its index: [sha256, offset, height, width] per image
    <prefix hash>/last_used          touched on every load (``prune --older-than``)

One entry per ``Pipeline.prefix_hash()`` (see ``core.preprocess.pipeline`` for the split
into a cached prefix and a random suffix), so changing a parameter of the prefix makes a
new entry and leaves the old one for ``prune``. Images missing from an entry are built in
shards of ``SHARD_SIZE`` by parallel worker processes (``Settings.preprocess_workers``);
each shard writes its array and then its index, both atomically, so a shard is either
complete or invisible and a crash never leaves a half-written one. Shards are immutable:
a later build adds new ones, readers memory-map them, so a load never decodes a file that
was already cached. Two processes building the same entry take a file lock, so the work is
done once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import io
import json
import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.childproc import die_with_parent
from core.config import Settings, get_settings
from core.preprocess.pipeline import Pipeline, PipelineError, item_seed
from core.preprocess.presets import load_pipeline
from core.store import ImageStore, atomic_write

SHARD_SIZE = 256
# Below this many missing images, starting worker processes (spawn: a fresh interpreter
# importing numpy, PIL and SQLAlchemy, about half a second each) costs more than it saves.
PARALLEL_MIN_IMAGES = 512

ImageRef = tuple[str, str]  # (sha256, path relative to the image store)
ProgressFn = Callable[[int, int], Any]


class CacheError(RuntimeError):
    """The cache could not be built (e.g. an image file is missing); the message says which."""


@dataclass(frozen=True)
class CacheEntryInfo:
    prefix_hash: str
    images: int
    bytes: int
    last_used: dt.datetime | None
    spec: dict[str, Any]


@dataclass
class _Entry:
    """In-memory view of one cache entry: the index and the memory-mapped shards."""

    folder: Path
    index: dict[str, tuple[str, int, int, int]] = field(default_factory=dict)
    shards: dict[str, np.ndarray] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)


class PreprocessedCache:
    """``load(images, pipeline, seed, epoch)`` -> ``(N, H, W, 3)`` uint8, built on first use."""

    def __init__(self, settings: Settings | None = None, *, workers: int | None = None) -> None:
        self.settings = settings or get_settings()
        self.root = self.settings.cache_dir / "preprocess"
        self.workers = max(1, int(workers if workers is not None else self.settings.preprocess_workers))
        self._entries: dict[str, _Entry] = {}
        # What the last ``load`` did: enough to reproduce it exactly.
        self.last_load: dict[str, Any] | None = None

    # --- public API -------------------------------------------------------------------

    def entry_dir(self, pipeline: Pipeline) -> Path:
        return self.root / pipeline.prefix_hash()

    def build(self, images: Sequence[ImageRef], pipeline: Pipeline | str, *,
              progress: ProgressFn | None = None) -> int:
        """Cache every image not cached yet for this pipeline; returns how many were built.

        ``progress(done, total)`` is called after each shard (a job passes ``ctx.progress``,
        which may raise to cancel: finished shards stay cached, so a re-run resumes).
        """
        pipeline = load_pipeline(pipeline, self.settings)
        images = as_refs(images)
        folder = self.entry_dir(pipeline)
        folder.mkdir(parents=True, exist_ok=True)
        self._write_meta(folder, pipeline)
        with _file_lock(folder / ".build.lock"):
            entry = self._refresh(pipeline)
            missing = list(dict.fromkeys((sha, rel) for sha, rel in images if sha not in entry.index))
            if not missing:
                return 0
            chunks = [missing[i:i + SHARD_SIZE] for i in range(0, len(missing), SHARD_SIZE)]
            jobs = [(self.settings, str(folder), pipeline.to_dict(), chunk) for chunk in chunks]
            done = 0
            if self.workers > 1 and len(missing) >= PARALLEL_MIN_IMAGES and len(chunks) > 1:
                # Spawn, not fork: the caller may be a threaded server (Streamlit, the worker).
                # The children die with this process (a SIGKILLed worker leaves no orphans).
                context = multiprocessing.get_context("spawn")
                pool = ProcessPoolExecutor(max_workers=min(self.workers, len(chunks)),
                                           mp_context=context, initializer=die_with_parent,
                                           initargs=(os.getpid(),))
                try:
                    for count in pool.map(_build_shard, jobs):
                        done += count
                        if progress:
                            progress(done, len(missing))
                except BaseException:
                    # A cancel (raised by ``progress``) or an error: drop the shards not
                    # started; finished ones stay cached for the re-run.
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
                pool.shutdown(wait=True)
            else:
                for job in jobs:
                    done += _build_shard(job)
                    if progress:
                        progress(done, len(missing))
            self._refresh(pipeline)
            return len(missing)

    def load(self, images: Sequence[ImageRef], pipeline: Pipeline | str, seed: int = 0,
             epoch: int = 0) -> np.ndarray:
        """Preprocessed images in the order given, as ``(N, H, W, 3)`` uint8.

        Item ``i`` gets the random suffix seeded with ``item_seed(seed, epoch, i)``, so the
        result equals ``pipeline.apply(image_i, item_seed(seed, epoch, i))`` byte for byte
        (``load_uncached`` is that reference) and ``last_load`` records what was used.
        """
        pipeline = load_pipeline(pipeline, self.settings)
        size = pipeline.output_size
        if size is None:
            raise PipelineError("this pipeline's output size depends on the image: end it with "
                                "a Resize (or a random crop + resize) to feed training")
        if seed < 0:
            raise PipelineError("seeds must be >= 0")
        images = as_refs(images)
        if images:
            self.build(images, pipeline)
        entry = self._refresh(pipeline)
        out = np.empty((len(images), size, size, 3), dtype=np.uint8)
        suffix = pipeline.suffix
        for index, (sha, _rel) in enumerate(images):
            cached = self._cached_array(entry, sha)
            if suffix:
                result = pipeline.apply_suffix(Image.fromarray(cached, "RGB"), item_seed(seed, epoch, index))
                cached = np.asarray(result)
            if cached.shape != out.shape[1:]:
                raise PipelineError(f"pipeline produced {cached.shape[1]}x{cached.shape[0]} images, "
                                    f"expected {size}x{size}")
            out[index] = cached
        with contextlib.suppress(OSError):
            (entry.folder / "last_used").touch()
        self.last_load = {"pipeline": pipeline.to_dict(), "pipeline_hash": pipeline.hash(),
                          "prefix_hash": pipeline.prefix_hash(), "seed": int(seed),
                          "epoch": int(epoch), "count": len(images),
                          "item_seeds": "item_seed(seed, epoch, index)"}
        return out

    def entries(self) -> list[CacheEntryInfo]:
        infos = []
        if not self.root.is_dir():
            return infos
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            count, size = 0, 0
            for file in folder.iterdir():
                size += file.stat().st_size if file.is_file() else 0
                if file.name.startswith("shard-") and file.suffix == ".json":
                    with contextlib.suppress(OSError, ValueError):
                        count += len(json.loads(file.read_text())["items"])
            used = folder / "last_used"
            last = dt.datetime.fromtimestamp(used.stat().st_mtime) if used.is_file() else None
            spec: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                spec = json.loads((folder / "pipeline.json").read_text())
            infos.append(CacheEntryInfo(folder.name, count, size, last, spec))
        return infos

    def prune(self, keep_hashes: Iterable[str | Pipeline] = (), *,
              older_than_days: float | None = None) -> list[str]:
        """Remove entries not in ``keep_hashes`` (prefix hashes or pipelines); with
        ``older_than_days``, only those also unused for that long. Returns what went."""
        keep = {k.prefix_hash() if isinstance(k, Pipeline) else str(k) for k in keep_hashes}
        removed = []
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
        for info in self.entries():
            if info.prefix_hash in keep:
                continue
            folder = self.root / info.prefix_hash
            if cutoff is not None:
                marker = folder / "last_used"
                stamp = marker.stat().st_mtime if marker.is_file() else folder.stat().st_mtime
                if stamp > cutoff:
                    continue
            # Rename first so a concurrent reader never sees a half-deleted entry.
            trash = self.root / f".trash-{info.prefix_hash}-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(OSError):
                os.replace(folder, trash)
                shutil.rmtree(trash, ignore_errors=True)
                removed.append(info.prefix_hash)
            self._entries.pop(info.prefix_hash, None)
        return removed

    # --- internals --------------------------------------------------------------------

    def _write_meta(self, folder: Path, pipeline: Pipeline) -> None:
        meta = folder / "pipeline.json"
        if meta.is_file():
            return
        payload = {"max_side": pipeline.max_side, "prefix": [s.to_dict() for s in pipeline.prefix],
                   "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        atomic_write(meta, json.dumps(payload, indent=1).encode(), self.settings.tmp_dir)

    def _refresh(self, pipeline: Pipeline) -> _Entry:
        """Read index files of shards written since the last look (by any process)."""
        key = pipeline.prefix_hash()
        entry = self._entries.get(key)
        if entry is None or not entry.folder.is_dir():
            entry = _Entry(self.root / key)
            self._entries[key] = entry
        if not entry.folder.is_dir():
            return entry
        for index_file in sorted(entry.folder.glob("shard-*.json")):
            shard = index_file.stem
            if shard in entry.seen:
                continue
            data_file = index_file.with_suffix(".npy")
            try:
                items = json.loads(index_file.read_text())["items"]
                entry.shards[shard] = np.load(data_file, mmap_mode="r")
            except (OSError, ValueError, KeyError):
                continue  # a damaged shard is ignored; its images are simply built again
            entry.seen.add(shard)
            for sha, offset, height, width in items:
                entry.index.setdefault(sha, (shard, int(offset), int(height), int(width)))
        return entry

    def _cached_array(self, entry: _Entry, sha: str) -> np.ndarray:
        try:
            shard, offset, height, width = entry.index[sha]
        except KeyError:
            raise CacheError(f"image {sha[:12]} is not in the cache (it was pruned while loading?)") from None
        flat = entry.shards[shard][offset:offset + height * width * 3]
        return np.asarray(flat).reshape(height, width, 3)


def as_refs(images: Iterable[Any]) -> list[ImageRef]:
    """``(sha256, relpath)`` pairs from pairs or from ``core.db.models.Image`` rows."""
    refs = []
    for item in images:
        if hasattr(item, "sha256") and hasattr(item, "path"):
            refs.append((str(item.sha256), str(item.path)))
        else:
            sha, rel = item
            refs.append((str(sha), str(rel)))
    return refs


def _build_shard(job: tuple[Settings, str, dict[str, Any], list[ImageRef]]) -> int:
    """Decode, cap and run the deterministic prefix for one chunk; write one shard."""
    settings, folder, spec, chunk = job
    pipeline = Pipeline.from_dict(spec)
    store = ImageStore(settings)
    arrays, items, offset = [], [], 0
    for sha, relpath in chunk:
        try:
            image = store.open_rgb(relpath)
        except FileNotFoundError:
            raise CacheError(f"image file missing: {relpath} (image {sha[:12]}); run the "
                             f"maintenance check to repair the index") from None
        except OSError as exc:
            raise CacheError(f"cannot read image {relpath}: {exc}") from None
        array = np.asarray(pipeline.apply_prefix(image), dtype=np.uint8)
        arrays.append(array.reshape(-1))
        items.append([sha, offset, int(array.shape[0]), int(array.shape[1])])
        offset += array.size
    shard = f"shard-{uuid.uuid4().hex}"
    buffer = io.BytesIO()
    np.save(buffer, np.concatenate(arrays) if arrays else np.empty(0, np.uint8))
    target = Path(folder)
    # The array first, then its index: an index is only ever visible for a complete array.
    atomic_write(target / f"{shard}.npy", buffer.getvalue(), settings.tmp_dir)
    atomic_write(target / f"{shard}.json", json.dumps({"items": items}).encode(), settings.tmp_dir)
    return len(chunk)


def load_uncached(images: Sequence[ImageRef], pipeline: Pipeline | str, seed: int = 0, epoch: int = 0,
                  settings: Settings | None = None) -> np.ndarray:
    """The naive loader: decode and preprocess every file now (the reference for the cache)."""
    settings = settings or get_settings()
    pipeline = load_pipeline(pipeline, settings)
    images = as_refs(images)
    store = ImageStore(settings)
    arrays = [np.asarray(pipeline.apply(store.open_rgb(rel), item_seed(seed, epoch, index)))
              for index, (_sha, rel) in enumerate(images)]
    if not arrays:
        size = pipeline.output_size or 0
        return np.empty((0, size, size, 3), np.uint8)
    return np.stack(arrays)


@contextlib.contextmanager
def _file_lock(path: Path):  # noqa: ANN202 - context manager
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
