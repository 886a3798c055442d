"""The Gallery's zip export: the filtered images under readable names, plus ``labels.csv``.

Each image is stored as ``<class>/<source>_<dataset>_<id>.<ext>`` (ImageFolder layout, so
``torchvision.datasets.ImageFolder`` reads it as is), and ``labels.csv`` at the top lists
every image with its metadata, keyed by the name it has inside the zip.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.config import Settings, get_settings
from core.db.engine import session_scope
from core.db.models import Dataset, Image, ImageClass
from core.gallery import GalleryFilter, _where
from core.store import ImageStore

LABELS_NAME = "labels.csv"
LABEL_COLUMNS = ("id", "file", "class", "source", "dataset", "split", "prompt", "seed", "model",
                 "width", "height", "sha256")
_EXPORT_COLUMNS = (Image.id, Image.path, ImageClass.name, Image.source, Dataset.name, Image.split,
                   Image.prompt, Image.seed, Image.model, Image.width, Image.height, Image.sha256)


def iter_rows(flt: GalleryFilter, settings: Settings | None = None,
              batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every matching image as a dict (``id, path, class, source, dataset, split, prompt,
    seed, model, width, height, sha256``), in id order, read in batches."""
    keys = ("id", "path", "class", "source", "dataset", "split", "prompt", "seed", "model",
            "width", "height", "sha256")
    last = 0
    while True:
        with session_scope(settings) as session:
            query = (_where(select(*_EXPORT_COLUMNS)
                            .join(ImageClass, Image.class_id == ImageClass.id)
                            .join(Dataset, Image.dataset_id == Dataset.id), flt, session)
                     .where(Image.id > last).order_by(Image.id).limit(batch))
            rows = [dict(zip(keys, row, strict=True)) for row in session.execute(query)]
        if not rows:
            return
        yield from rows
        last = rows[-1]["id"]


def safe_name_part(text: object, fallback: str = "unnamed", max_chars: int = 60) -> str:
    """Part of a file or folder name made only of letters, digits, ``_`` and ``-``.

    Class and dataset names are user text: ``../x`` or ``a/b`` must never leave their
    folder inside the zip, and names stay portable to Windows and macOS file systems.
    """
    cleaned = re.sub(r"[^0-9A-Za-z-]+", "_", str(text or "")).strip("_-")[:max_chars]
    return cleaned.strip("_-") or fallback


def archive_name(row: dict[str, Any], taken: set[str]) -> str:
    """``<class>/<source>_<dataset>_<id>.<ext>``, unique (case-insensitively) among ``taken``."""
    folder = safe_name_part(row["class"], "unlabelled")
    stem = f"{safe_name_part(row['source'])}_{safe_name_part(row['dataset'])}_{row['id']}"
    suffix = Path(row["path"]).suffix.lower()
    name, n = f"{folder}/{stem}{suffix}", 1
    while name.lower() in taken:  # the id keeps names apart; this is a second guard
        n += 1
        name = f"{folder}/{stem}-{n}{suffix}"
    taken.add(name.lower())
    return name


def labels_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LABEL_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in LABEL_COLUMNS})
    return buffer.getvalue()


def export_zip(flt: GalleryFilter, out_path: str | Path, *,
               settings: Settings | None = None) -> dict[str, Any]:
    """Write the filtered images (``<class>/<file>``) and ``labels.csv`` into a zip.

    Written to a temporary file beside the target and renamed at the end, so a failed
    export never leaves a half-written archive under the final name.
    """
    settings = settings or get_settings()
    store = ImageStore(settings)
    out_path = Path(out_path).expanduser().resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(f".{out_path.name}.part-{os.getpid()}")
    labelled: list[dict[str, Any]] = []
    missing: list[int] = []
    per_class: dict[str, int] = {}
    taken = {LABELS_NAME}
    try:
        with zipfile.ZipFile(tmp_path, "w", compression=zipfile.ZIP_STORED) as archive:
            for row in iter_rows(flt, settings):
                try:
                    source = store.abspath(row["path"])
                    name = archive_name(row, taken)
                    archive.write(source, name)
                except (OSError, ValueError):
                    missing.append(row["id"])
                    continue
                labelled.append({**row, "file": name})
                per_class[row["class"]] = per_class.get(row["class"], 0) + 1
            archive.writestr(LABELS_NAME, labels_csv(labelled),
                             compress_type=zipfile.ZIP_DEFLATED)
        os.replace(tmp_path, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    return {"path": str(out_path), "images": len(labelled), "per_class": per_class,
            "missing_files": missing}
