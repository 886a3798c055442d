"""Helpers for the training tests: put the tests' fruit images into the index.

Kept in a test_* module (it holds no tests) so it sits with the training tests it serves.
"""

from __future__ import annotations

import io

from core.catalog import add_image, get_or_create_class, get_or_create_dataset
from core.config import Settings
from core.db.engine import session_scope
from core.imageio import decode_image
from core.store import ImageStore
from imagemaker import fruit_image

CLASSES = ["apple", "banana", "lime", "plum"]


def png_bytes(image) -> bytes:  # noqa: ANN001
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def add_fruit_images(settings: Settings, dataset: str, *, classes: list[str] = CLASSES,
                     per_class: int = 20, seed: int = 0, source: str = "real",
                     size: tuple[int, int] = (40, 32), split: str | None = None,
                     families: int | None = None) -> int:
    """Add ``per_class`` images per class; synthetic ones get a generation record whose
    (prompt, seed) repeats every ``families`` images (a family of near-duplicates)."""
    store = ImageStore(settings)
    added = 0
    with session_scope(settings, write=True) as session:
        data = get_or_create_dataset(session, dataset, source=source)
        for c_index, label in enumerate(classes):
            image_class = get_or_create_class(session, label)
            for i in range(per_class):
                image = fruit_image(label, seed * 1_000_003 + c_index * 10_007 + i, size)
                raw = png_bytes(image)
                generation = None
                if source == "synthetic":
                    family = i % families if families else i
                    generation = {"prompt": f"a photo of a {label}", "seed": seed * 1000 + family,
                                  "gen_index": i, "model": "test", "steps": 1}
                result = add_image(session, store, decode_image(raw), image_class=image_class,
                                   dataset=data, raw=raw, split=split, generation=generation)
                added += not result.duplicate
    return added
