"""The per-file work of an import, run in decoding processes: read, decode, crop, store.

Kept free of database imports so a process pool starts quickly. A worker returns small
``Decoded`` records (hash, stored path, size), never pixels, so little crosses processes.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

from core.childproc import die_with_parent
from core.config import Settings
from core.imageio import ImageRejected, decode_image, pixel_hash
from core.ingest.layouts import PlannedImage
from core.ingest.sources import Rejection, reopen
from core.neardup import fingerprint
from core.store import DiskFullError, ImageStore, StoreError


@dataclass
class Decoded:
    key: str  # shown in reports; ``file.jpg#box2`` for a crop
    sha256: str
    relpath: str
    created: bool  # this import wrote the file (so it may remove it if unused)
    width: int
    height: int
    format: str
    class_name: str
    split: str | None
    original_name: str
    extra: dict[str, Any] | None
    # Near-duplicate signatures (core.neardup.fingerprint).
    phash: int | None = None
    colour_sig: str | None = None


@dataclass(frozen=True)
class DiskFull:
    """The image folder's disk is full: the importer stops (every later file would fail
    the same way) instead of listing each file as rejected."""
    key: str
    reason: str


_stores: dict[str, ImageStore] = {}


def _store(settings: Settings) -> ImageStore:
    key = str(settings.home_path)
    if key not in _stores:
        _stores[key] = ImageStore(settings)
    return _stores[key]


def process(item: PlannedImage, settings: Settings, source_spec: dict[str, Any] | None,
            source: Any = None) -> list[Decoded | Rejection | DiskFull]:
    """One planned file -> one image, or one image per VOC box when cropping.

    ``source`` is the already open source when running in the importing process; decoding
    processes reopen it from ``source_spec`` (once per process).
    """
    try:
        if item.data is not None:
            data = item.data
        else:
            data = (source or reopen(source_spec)).read(item.key)
    except OSError as exc:
        return [Rejection(item.key, f"cannot read file: {exc}")]
    try:
        decoded = decode_image(data, max_pixels=settings.max_image_pixels, name=item.key)
    except ImageRejected as exc:
        return [Rejection(item.key, str(exc))]
    store = _store(settings)
    name = item.key.rsplit("/", 1)[-1]
    extra = dict(item.extra or {})
    if decoded.was_converted:
        extra["converted_from"] = decoded.original_mode
    out: list[Decoded | Rejection | DiskFull] = []
    try:
        if not item.crop_boxes:
            if item.boxes:
                extra["boxes"] = [b.to_dict() for b in item.boxes]
            stored = store.put(decoded, data)
            return [Decoded(item.key, decoded.sha256, stored.relpath, stored.created,
                            decoded.width, decoded.height, decoded.original_format,
                            item.class_name, item.split, name, extra or None,
                            *fingerprint(decoded.image))]
        for index, box in enumerate(item.boxes or []):
            key = f"{item.key}#box{index}"
            left, top = max(0, box.xmin), max(0, box.ymin)
            right, bottom = min(decoded.width, box.xmax), min(decoded.height, box.ymax)
            if right - left < 2 or bottom - top < 2:
                out.append(Rejection(key, f"box {box.to_dict()} is empty inside the "
                                          f"{decoded.width}x{decoded.height} image"))
                continue
            crop = decoded.image.crop((left, top, right, bottom))
            sha = pixel_hash(crop)
            stored = store.put_image(crop, sha)
            out.append(Decoded(key, sha, stored.relpath, stored.created, crop.width, crop.height,
                               decoded.original_format, box.label, item.split, name,
                               {**extra, "box": box.to_dict(), "box_index": index,
                                "source_image": item.key}, *fingerprint(crop)))
        return out
    except DiskFullError as exc:
        # The crops stored before it are returned too, so the importer knows their files.
        return [*out, DiskFull(item.key, exc.strerror or str(exc))]
    except StoreError as exc:
        return [Rejection(item.key, str(exc))]


def init_decoding_process(parent_pid: int | None = None) -> None:
    """Pool initializer: leave stopping to the importing process, and die with it.

    A forked child inherits the worker's SIGTERM handler; if a service manager signals the
    whole process group, the children must not die first and turn a clean "interrupted,
    resume later" into a broken pool. They exit when the parent shuts the pool down, and
    (``parent_pid`` given) are killed when the parent dies: a SIGKILLed worker must not
    leave orphans behind (core.childproc).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        die_with_parent(parent_pid)


def process_chunk(items: list[PlannedImage], settings: Settings,
                  source_spec: dict[str, Any] | None) -> list[list[Decoded | Rejection | DiskFull]]:
    return [process(item, settings, source_spec) for item in items]
