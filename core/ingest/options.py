"""What an import is asked to do (``ImportOptions``) and what it reports (``ImportReport``):
the import's interface, apart from how it runs (core.ingest.importer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImportOptions:
    dataset: str | None = None  # default: the folder's or archive's name
    source: str = "real"  # real | synthetic
    force_class: str | None = None  # every image gets this class (a flat folder of one fruit)
    crop_boxes: bool = False  # import each VOC box as a cropped object image
    added_by: str | None = None
    workers: int | None = None  # default: Settings.ingest_workers
    # The source must be a Hugging Face Hub id, never a path on this machine: set for the
    # Import page's Hub field, whose users may not read server folders.
    hub_only: bool = False
    batch_size: int = 200


@dataclass
class ImportReport:
    dataset: str
    dataset_id: int | None
    layout: str
    origin: str
    added: int = 0
    duplicates: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    duplicate_files: list[dict[str, Any]] = field(default_factory=list)
    added_files: list[dict[str, Any]] = field(default_factory=list)
    per_class: dict[str, int] = field(default_factory=dict)
    per_split: dict[str, int] = field(default_factory=dict)
    # Pairs (added image, any indexed image) that are near-duplicates (core.neardup),
    # within this import or against older images: closest first, the count is complete.
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    near_duplicate_pairs: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "dataset_id": self.dataset_id, "layout": self.layout,
                "origin": self.origin, "added": self.added, "duplicates": self.duplicates,
                "rejected": self.rejected, "added_files": self.added_files,
                "duplicate_files": self.duplicate_files,
                "per_class": self.per_class, "per_split": self.per_split,
                "near_duplicates": self.near_duplicates,
                "near_duplicate_pairs": self.near_duplicate_pairs,
                "seconds": round(self.seconds, 3)}

    @property
    def summary(self) -> str:
        return (f"{self.added} added, {self.duplicates} duplicates, "
                f"{len(self.rejected)} rejected ({self.layout} layout)")
