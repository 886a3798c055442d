"""Recognising a dataset's layout from its file names, without being told.

Supported, after stripping wrapper folders (``fruits-360/``, ``dataset/``):

* ``imagefolder``: ``<class>/<file>`` (the torchvision ImageFolder convention);
* ``fruits360``: ``Training/<class>/<file>`` and ``Test/<class>/<file>``: the split
  folder becomes the image's split tag (``train``/``test``/``val``);
* ``flat``: files whose name starts with the class (``apple_12.jpg``), in the root or in
  a split folder (``train/apple_12.jpg``), optionally with Pascal VOC ``.xml`` boxes
  beside them (Kaggle's "fruit-images-for-object-detection").

The result is a list of ``PlannedImage`` (which file, which class, which split, which
boxes) plus per-file rejections; no image is opened here.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from core.imageio import IMAGE_EXTENSIONS
from core.ingest.sources import Entry, Rejection

SPLIT_NAMES = {"training": "train", "train": "train", "test": "test", "testing": "test",
               "validation": "val", "val": "val", "valid": "val"}
MAX_XML_BYTES = 1 << 20

IMAGEFOLDER, FRUITS360, FLAT, HUGGINGFACE = "imagefolder", "fruits360", "flat", "huggingface"


@dataclass(frozen=True)
class Box:
    label: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "xmin": self.xmin, "ymin": self.ymin,
                "xmax": self.xmax, "ymax": self.ymax}


@dataclass
class PlannedImage:
    key: str  # where the file is in the source
    class_name: str
    split: str | None = None
    boxes: list[Box] | None = None  # VOC annotation, when there is one
    crop_boxes: bool = False  # import each box as its own cropped image
    data: bytes | None = None  # already in memory (Hugging Face rows)
    extra: dict[str, Any] | None = None


@dataclass
class Plan:
    layout: str
    images: list[PlannedImage] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def is_image_name(key: str) -> bool:
    return PurePosixPath(key).suffix.lower() in IMAGE_EXTENSIONS


def class_from_filename(stem: str) -> str | None:
    """``apple_12`` -> ``apple``, ``Red Apple (3)`` -> ``Red Apple``; None if no letters."""
    prefix = re.sub(r"[\W_]*\(?\d+\)?[\W_]*$", "", stem)
    prefix = re.sub(r"[\W_]+$", "", prefix)
    return prefix if re.search(r"[A-Za-z]", prefix or "") else None


def _strip_wrappers(keys: list[str]) -> tuple[str, list[str]]:
    """Drop leading folders shared by every file, as long as something below is a folder.

    A single folder that holds only files is kept: it is a class folder, not a wrapper.
    """
    prefix: list[str] = []
    parts = [PurePosixPath(k).parts for k in keys]
    while parts and all(len(p) > 2 for p in parts) and len({p[0] for p in parts}) == 1 \
            and SPLIT_NAMES.get(parts[0][0].lower()) is None:
        prefix.append(parts[0][0])
        parts = [p[1:] for p in parts]
    return "/".join(prefix), ["/".join(p) for p in parts]


def parse_voc(data: bytes) -> list[Box]:
    """Boxes of a Pascal VOC annotation; ``ValueError`` with a reason when unusable."""
    if len(data) > MAX_XML_BYTES:
        raise ValueError("annotation file too large")
    if b"<!ENTITY" in data or b"<!DOCTYPE" in data:
        raise ValueError("annotation uses DTD/entities (refused)")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise ValueError(f"unreadable VOC annotation: {exc}") from exc
    boxes = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bndbox = obj.find("bndbox")
        if not name or bndbox is None:
            continue
        try:
            coords = [int(round(float(bndbox.findtext(tag) or "")))
                      for tag in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            continue
        boxes.append(Box(name, *coords))
    return boxes


def plan_import(entries: list[Entry], *, read: Callable[[str], bytes],
                force_class: str | None = None, crop_boxes: bool = False) -> Plan:
    """Which files become which images, for any of the supported layouts."""
    image_keys = [e.key for e in entries if is_image_name(e.key)]
    xml_keys = {e.key[:-4].lower(): e.key for e in entries if e.key.lower().endswith(".xml")}
    other = [e.key for e in entries if not is_image_name(e.key) and not e.key.lower().endswith(".xml")]
    plan = Plan(layout=IMAGEFOLDER)
    plan.rejected.extend(Rejection(k, f"not an image file type ({PurePosixPath(k).suffix or 'no extension'})")
                         for k in other)
    if not image_keys:
        return plan
    _wrapper, stripped = _strip_wrappers(image_keys)
    layouts: Counter[str] = Counter()
    has_split_folders = any(len(PurePosixPath(s).parts) >= 3
                            and SPLIT_NAMES.get(PurePosixPath(s).parts[0].lower())
                            for s in stripped)
    for key, rel in zip(image_keys, stripped, strict=True):
        parts = PurePosixPath(rel).parts
        folders = parts[:-1]
        stem = PurePosixPath(parts[-1]).stem
        split = SPLIT_NAMES.get(folders[0].lower()) if folders else None
        xml_key = xml_keys.get(key[: -len(PurePosixPath(key).suffix)].lower())
        # Files directly in the root or in a split folder carry their class in their name.
        flat = not folders or folders[-1].lower() in SPLIT_NAMES or xml_key is not None
        if flat and split is None:
            # Kaggle's zips nest the split one level down: train_zip/train/apple_1.jpg.
            split = next((SPLIT_NAMES[f.lower()] for f in reversed(folders)
                          if f.lower() in SPLIT_NAMES), None)
        if force_class and (flat or not folders):
            class_name, layout = force_class, FLAT
        elif flat:
            class_name, layout = class_from_filename(stem), FLAT
            if class_name is None:
                plan.rejected.append(Rejection(key, (
                    "cannot tell the class from the file name (expected e.g. apple_12.jpg); "
                    "put it in a class folder or force one class")))
                continue
        elif split is not None and len(folders) >= 2:
            class_name, layout = folders[1], FRUITS360
        elif has_split_folders:
            plan.rejected.append(Rejection(key, "outside the Training/Test class folders"))
            continue
        else:
            class_name, layout, split = folders[0], IMAGEFOLDER, None
        layouts[layout] += 1
        boxes = None
        if xml_key is not None:
            try:
                boxes = parse_voc(read(xml_key))
            except (ValueError, OSError) as exc:
                plan.rejected.append(Rejection(xml_key, f"annotation ignored: {exc}"))
        plan.images.append(PlannedImage(
            key=key, class_name=force_class or class_name, split=split, boxes=boxes,
            crop_boxes=bool(crop_boxes and boxes)))
    if layouts:
        plan.layout = layouts.most_common(1)[0][0]
    return plan
