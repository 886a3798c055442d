"""Adding images, classes and datasets to the index: the one write path for image rows.

``add_image`` writes the file first and the row second, so the DB never points at a
missing file; callers commit the session (in batches if they like).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import SOURCE_REAL, SOURCES, Dataset, Image, ImageClass
from core.imageio import DecodedImage
from core.neardup import fingerprint
from core.store import ImageStore


def class_key(name: str) -> str:
    """``"Bell Pepper"`` -> ``"bell_pepper"``: the stable key of a class."""
    key = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_").lower()
    if not key:
        raise ValueError(f"not a usable class name: {name!r}")
    return key


def display_name_for(key: str) -> str:
    return key.replace("_", " ").strip().title()


def get_or_create_class(session: Session, name: str, *, display_name: str | None = None,
                        prompt_name: str | None = None) -> ImageClass:
    key = class_key(name)
    found = session.scalar(select(ImageClass).where(ImageClass.name == key))
    if found is not None:
        return found
    pretty = display_name or (name.strip() if name.strip() != key else display_name_for(key))
    # Prompts read better in lower case ("a photo of an apple"); the display name keeps capitals.
    image_class = ImageClass(name=key, display_name=pretty,
                             prompt_name=prompt_name or pretty.lower())
    session.add(image_class)
    session.flush()
    return image_class


def get_or_create_dataset(session: Session, name: str, *, source: str = SOURCE_REAL,
                          origin: str | None = None, layout: str | None = None,
                          created_by: str | None = None) -> Dataset:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    found = session.scalar(select(Dataset).where(Dataset.name == name))
    if found is not None:
        return found
    dataset = Dataset(name=name, source=source, origin=origin, layout=layout, created_by=created_by)
    session.add(dataset)
    session.flush()
    return dataset


@dataclass
class AddResult:
    image: Image
    duplicate: bool


def add_image(session: Session, store: ImageStore, decoded: DecodedImage, *,
              image_class: ImageClass, dataset: Dataset, source: str | None = None,
              raw: bytes | None = None, split: str | None = None,
              original_name: str | None = None, added_by: str | None = None,
              generation: dict[str, Any] | None = None,
              extra: dict[str, Any] | None = None) -> AddResult:
    """Store the file and add its row; an image already indexed is reported as duplicate.

    ``generation`` holds the synthetic record: job_id, gen_index, prompt, negative_prompt,
    seed, model, scheduler, steps, guidance, gen_width, gen_height.
    """
    existing = session.scalar(select(Image).where(Image.sha256 == decoded.sha256))
    if existing is not None:
        return AddResult(existing, duplicate=True)
    stored = store.put(decoded, raw)
    phash, colour_sig = fingerprint(decoded.image)
    row = Image(sha256=decoded.sha256, phash=phash, colour_sig=colour_sig, path=stored.relpath,
                class_id=image_class.id,
                source=source or dataset.source, dataset_id=dataset.id, split=split,
                width=decoded.width, height=decoded.height, format=decoded.original_format,
                original_name=original_name, added_by=added_by, extra=extra,
                **(generation or {}))
    session.add(row)
    return AddResult(row, duplicate=False)
