"""Hugging Face image-classification datasets through the ``datasets`` library.

Accepted: a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a
Hub id (``user/name``) when the machine has a network. The image column (an ``Image``
feature) is read undecoded, so our own safe decoder sees the original bytes; the label
column's names (a ``ClassLabel``) become classes, and each split's name its split tag.
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


def _load(path_or_id: str) -> Any:
    import datasets

    path = Path(path_or_id).expanduser()
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

    def __init__(self, path_or_id: str) -> None:
        import datasets

        loaded = _load(path_or_id)
        self.origin = path_or_id
        if isinstance(loaded, datasets.DatasetDict):
            self.splits = dict(loaded)
        else:
            self.splits = {"": loaded}
        self.columns: dict[str, tuple[str, str | None, Any]] = {}
        for split, table in self.splits.items():
            image_col = next((name for name, feature in table.features.items()
                              if isinstance(feature, datasets.Image)), None)
            if image_col is None:
                raise SourceError(f"dataset split {split or 'default'!r} has no image column "
                                  f"(columns: {', '.join(table.column_names)})")
            label_col = next((name for name, feature in table.features.items()
                              if isinstance(feature, datasets.ClassLabel)), None)
            if label_col is None:
                label_col = next((c for c in LABEL_COLUMNS if c in table.column_names), None)
            names = table.features[label_col].names if label_col and isinstance(
                table.features[label_col], datasets.ClassLabel) else None
            self.splits[split] = table.cast_column(image_col, datasets.Image(decode=False))
            self.columns[split] = (image_col, label_col, names)

    def plan(self) -> Plan:
        plan = Plan(layout=HUGGINGFACE)
        for split, table in self.splits.items():
            _image_col, label_col, names = self.columns[split]
            labels = table[label_col] if label_col else [None] * len(table)
            tag = SPLIT_NAMES.get(split.lower(), split) if split else None
            for row, label in enumerate(labels):
                key = f"{split or 'data'}/{row}"
                if label is None or (names is not None and not 0 <= int(label) < len(names)):
                    plan.rejected.append(Rejection(key, "row has no usable label"))
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
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path"):
            return Path(value["path"]).read_bytes()
        raise OSError("row has no image data")

    def close(self) -> None:
        pass
