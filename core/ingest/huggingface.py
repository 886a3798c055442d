"""Hugging Face image-classification datasets through the ``datasets`` library.

Accepted: a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a
Hub id (``user/name``) when the machine has a network. The image column is an ``Image``
feature, a binary column of encoded image bytes (found by its name or by the bytes' image
signature), or a ``{"bytes", "path"}`` struct; it is read undecoded, so our own safe
decoder sees the original bytes. The label column's names (a ``ClassLabel``) become
classes, and each split's name its split tag.

Some datasets have no label column and one split per class instead (the study's synthetic
set, DiegoP-S/DatasetSynthesis: splits ``Apple``, ``Banana``, ...). A split without a label
column whose name is not a split name (train, test, ...) is read as a class: its images
get that class and no split tag, so training treats them as an ordinary untagged pool.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse
from typing import Any

from core.ingest.layouts import HUGGINGFACE, SPLIT_NAMES, Plan, PlannedImage
from core.ingest.sources import Rejection, SourceError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LABEL_COLUMNS = ("label", "labels", "class", "fine_label", "category")
# Binary columns with these names hold images even when their first rows are unreadable.
IMAGE_COLUMN_NAMES = ("image", "images", "img", "image_bytes", "img_bytes", "bytes",
                      "picture", "photo", "jpg", "jpeg", "png", "webp", "file", "content")
# Split names that never name a class: SPLIT_NAMES plus the Hub's other customary ones. A
# split called "unlabeled" without labels must not become a class called "unlabeled".
NON_CLASS_SPLITS = frozenset(SPLIT_NAMES) | {
    "dev", "eval", "evaluation", "holdout", "unlabeled", "unlabelled", "unsupervised",
    "extra", "all", "full", "default", "data", "dataset", "samples", "images"}
# Leading bytes of the formats the decoder accepts, to recognise an unnamed image column.
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a",
                    b"II*\x00", b"MM\x00*", b"BM")
SNIFF_ROWS = 8


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in
                                 ("dataset_dict.json", "state.json", "dataset_info.json"))


def looks_like_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text)) and not Path(text).exists()


OFFLINE_HINT = (" (download it on a connected machine with "
                "`datasets.load_dataset(ID).save_to_disk(DIR)`, copy DIR here and import DIR)")


def hub_reachable(timeout_s: float = 3.0) -> str | None:
    """None when the Hub can be reached; otherwise why not (fast, no retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
            os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "offline mode is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as exc:
        return f"no network: cannot reach {host} ({exc.strerror or exc})"
    return None


def is_hub_id(text: str) -> bool:
    """The Hub id pattern alone (``owner/name``), whatever exists on this machine."""
    return bool(HUB_ID.match(text))


def check_hub_id(text: str) -> None:
    """Raise ``SourceError`` unless ``text`` can only mean a Hub dataset.

    ``datasets.load_dataset`` reads a local folder of the same name before the Hub, so an
    id that also names something on this machine is refused too: a Hub id field must never
    read server files (those go through the admin-only server-path import).
    """
    if not is_hub_id(text):
        raise SourceError(f"not a Hugging Face Hub id (owner/name): {text!r}; a folder on the "
                          "server is imported as a server path (admins only)")
    if Path(text).expanduser().exists():
        raise SourceError(f"{text!r} also names a file or folder on the server; a Hub id "
                          "import never reads server files")


def _load(path_or_id: str, hub_only: bool = False) -> Any:
    import datasets

    path = Path(path_or_id).expanduser()
    if hub_only:
        check_hub_id(path_or_id)
    if not is_saved_dataset(path):
        why = hub_reachable()
        if why:
            raise SourceError(f"cannot load Hugging Face dataset {path_or_id!r}: {why}{OFFLINE_HINT}")
    try:
        if is_saved_dataset(path):
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(path_or_id)
    except FileNotFoundError as exc:
        raise SourceError(f"no Hugging Face dataset at {path_or_id}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - offline hub, bad repo, ... all end here
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(f"cannot load Hugging Face dataset {path_or_id!r}: {message}"
                          f"{OFFLINE_HINT}") from exc


class HuggingFaceSource:
    """Rows of every split, addressed by ``<split>/<row index>``."""

    kind = "huggingface"
    spec = None  # rows are read by the importing process and handed to the decoders

    def __init__(self, path_or_id: str, *, hub_only: bool = False) -> None:
        import datasets

        loaded = _load(path_or_id, hub_only)
        self.origin = path_or_id
        if isinstance(loaded, datasets.DatasetDict):
            self.splits = dict(loaded)
        else:
            self.splits = {"": loaded}
        self.columns: dict[str, tuple[str, str | None, Any]] = {}
        for split, table in self.splits.items():
            image_col = find_image_column(table)
            if image_col is None:
                raise SourceError(f"dataset split {split or 'default'!r} has no image column "
                                  f"(columns: {', '.join(table.column_names)}; expected an "
                                  "Image feature or a binary column of image bytes)")
            label_col = next((name for name, feature in table.features.items()
                              if isinstance(feature, datasets.ClassLabel)), None)
            if label_col is None:
                label_col = next((c for c in LABEL_COLUMNS if c in table.column_names), None)
            names = table.features[label_col].names if label_col and isinstance(
                table.features[label_col], datasets.ClassLabel) else None
            if isinstance(table.features[image_col], datasets.Image):
                self.splits[split] = table.cast_column(image_col, datasets.Image(decode=False))
            self.columns[split] = (image_col, label_col, names)

    def plan(self) -> Plan:
        plan = Plan(layout=HUGGINGFACE)
        for split, table in self.splits.items():
            _image_col, label_col, names = self.columns[split]
            split_class = class_of_split(split) if label_col is None else None
            if split_class is not None:
                for row in range(len(table)):
                    plan.images.append(PlannedImage(
                        key=f"{split}/{row}", class_name=split_class, split=None,
                        extra={"hf_split": split, "hf_row": row}))
                continue
            labels = table[label_col] if label_col else [None] * len(table)
            tag = SPLIT_NAMES.get(split.lower(), split) if split else None
            reason = "row has no usable label" if label_col else (
                f"split {split or 'default'!r} has no label column"
                + (f" and {split!r} is a split name, not a class" if split else ""))
            for row, label in enumerate(labels):
                key = f"{split or 'data'}/{row}"
                if label is None or (names is not None and not 0 <= int(label) < len(names)):
                    plan.rejected.append(Rejection(key, reason))
                    continue
                class_name = names[int(label)] if names is not None else str(label)
                plan.images.append(PlannedImage(key=key, class_name=class_name, split=tag,
                                                extra={"hf_split": split, "hf_row": row}))
        return plan

    def read(self, key: str) -> bytes:
        split, row = key.rsplit("/", 1)
        split = "" if split == "data" and "" in self.splits else split
        image_col = self.columns[split][0]
        value = self.splits[split][int(row)][image_col]
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)  # empty bytes too: the decoder rejects them as "empty file"
        if isinstance(value, dict):
            if value.get("bytes"):
                return value["bytes"]
            if value.get("path"):
                return Path(value["path"]).read_bytes()
        raise OSError("row has no image data")

    def close(self) -> None:
        pass


def class_of_split(split: str) -> str | None:
    """The class a split without labels stands for (``"Red_Apple"`` -> ``"Red Apple"``), or
    None when its name is a split name (train, test, ...) or no usable class.

    Split names cannot hold spaces, so underscores are read as spaces: the class key stays
    ``red_apple`` (``catalog.class_key`` lower-cases it) and the display name reads well.
    """
    if not split or split.strip().lower() in NON_CLASS_SPLITS:
        return None
    name = re.sub(r"[_\s]+", " ", split).strip()
    return name if re.search(r"[0-9A-Za-z]", name) else None


def looks_like_image(value: Any) -> bool:
    """Whether a cell's bytes start like an encoded image (only a hint: decoding decides)."""
    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, (bytes, bytearray)):
        return False
    head = bytes(data[:12])
    return head.startswith(IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def find_image_column(table: Any) -> str | None:
    """The column that holds the images: an ``Image`` feature; else a binary column (or a
    ``{"bytes", "path"}`` struct) named like one; else the first whose bytes are an image."""
    import datasets

    features = table.features
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name

    def holds_bytes(feature: Any) -> bool:
        if isinstance(feature, datasets.Value):
            return feature.dtype in ("binary", "large_binary")
        return isinstance(feature, dict) and "bytes" in feature and holds_bytes(feature["bytes"])
    candidates = [name for name, feature in features.items() if holds_bytes(feature)]
    for name in candidates:
        if name.lower() in IMAGE_COLUMN_NAMES:
            return name
    if not candidates or len(table) == 0:
        return None
    sample = table[:SNIFF_ROWS]
    return next((name for name in candidates
                 if any(looks_like_image(value) for value in sample[name])), None)

