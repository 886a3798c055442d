"""Near-duplicates in experiment splits: one family for copies of one picture.

``family_key`` groups images by exact pixels, (prompt, seed) or an import group. A
resized or re-encoded copy has none of these in common with its original, so here the
families of near-duplicate images (``core.neardup``: perceptual hashes within
``Settings.near_duplicate_distance`` bits and alike in colour) are merged, transitively,
over all real and synthetic records of an experiment. ``_group_split`` keeps a family on one
side, so copies can no longer straddle train and test.

Only images of the same class are merged: the split is stratified per class, and a family
spanning two classes could not be kept on one side. A copy filed under another class is a
labelling error, shown by the import report and the Gallery rather than fixed here.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from core import neardup
from core.config import Settings

if TYPE_CHECKING:
    from core.training.data import ImageRecord


def _has_signatures(record: ImageRecord) -> bool:
    return record.phash is not None and record.colour_sig is not None


def with_signatures(records: list[ImageRecord], settings: Settings) -> list[ImageRecord]:
    """``records`` with their signatures filled in, computing (and storing) missing ones.

    Images indexed before signatures existed have none; computing them here, once, means a
    split never silently skips the check. Unreadable files stay without and are not compared.
    """
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import Image

    missing = [r.id for r in records if not _has_signatures(r)]
    if not missing or settings.near_duplicate_distance < 0:
        return records
    neardup.backfill(settings, image_ids=missing)
    found: dict[int, tuple[int, str]] = {}
    with session_scope(settings) as session:
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            found.update((i, (h, c)) for i, h, c in session.execute(
                select(Image.id, Image.phash, Image.colour_sig).where(
                    Image.id.in_(chunk), Image.phash.is_not(None), Image.colour_sig.is_not(None))))
    return [dataclasses.replace(r, phash=found[r.id][0], colour_sig=found[r.id][1])
            if r.id in found else r for r in records]


def merge_near_duplicate_families(real: list[ImageRecord], synthetic: list[ImageRecord],
                                  settings: Settings, class_names: list[str],
                                  ) -> tuple[list[ImageRecord], list[ImageRecord], list[str]]:
    """``(real, synthetic, notes)`` with the families of near-duplicates merged.

    A merged family is named after the smallest of its members' family keys, so families
    without near-duplicates keep their names (and their place in the seeded shuffle).
    Raises ``DataError`` when one group of copies holds most of a class's real images.
    """
    limits = neardup.Limits.of(settings)
    if not limits.enabled:
        return real, synthetic, []
    real, synthetic = with_signatures(real, settings), with_signatures(synthetic, settings)
    records = real + synthetic
    hashed = [k for k, r in enumerate(records) if _has_signatures(r)]
    if len(hashed) < 2:
        return real, synthetic, []
    labels = neardup.group_labels([records[k].phash for k in hashed], limits,
                                  colours=[records[k].colour_sig for k in hashed],
                                  keys=[records[k].label for k in hashed])
    # Union-find over family keys: near-duplicate edges join families, and a family's
    # other members follow it even when they are not copies themselves.
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    first_of: dict[int, str] = {}
    for k, component in zip(hashed, labels.tolist(), strict=True):
        family = records[k].family
        if component not in first_of:
            first_of[component] = family
            continue
        a, b = find(first_of[component]), find(family)
        if a != b:
            parent[max(a, b)] = min(a, b)
    joined: dict[str, int] = defaultdict(int)  # root -> how many families it joined
    for family in list(parent):
        joined[find(family)] += 1
    roots = {root for root, n in joined.items() if n > 1}
    if not roots:
        return real, synthetic, []
    merged = [dataclasses.replace(r, family=find(r.family)) if r.family in parent else r
              for r in records]
    _refuse_swallowed_classes(merged[:len(real)], roots, class_names, limits)
    images = sum(r.family in roots for r in merged)
    notes = [f"near-duplicates: {images} images in {len(roots)} groups of copies (perceptual "
             f"hash within {limits.max_distance} bits) are each kept on one side of every split"]
    return merged[:len(real)], merged[len(real):], notes


def _refuse_swallowed_classes(real: list[ImageRecord], roots: set[str], class_names: list[str],
                              limits: neardup.Limits) -> None:
    """A group holding most of a class would put nearly all of it on one side of the split
    (or, with a tagged test set, take it out of training): say so instead of training on
    that. It happens with many copies of one picture, or with a long chain of look-alikes."""
    per_class = Counter(r.label for r in real)
    grouped = Counter((r.label, r.family) for r in real if r.family in roots)
    for (label, _family), count in grouped.items():
        total = per_class[label]
        if total >= 4 and count * 2 > total:
            from core.training.data import DataError

            raise DataError(
                f"{count} of the {total} real images of class {class_names[label]} are one group "
                "of near-duplicates (copies of one another, perceptual hashes within "
                f"{limits.max_distance} bits), so no split can keep them on one side and still "
                "test on that class. Exclude the copies in the Gallery, or lower "
                "SYNTHLAB_NEAR_DUPLICATE_DISTANCE (-1 turns the grouping off).")


def pin_to_real_split(synthetic: list[ImageRecord], test_real: list[ImageRecord],
                      fitting_real: list[ImageRecord],
                      ) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    """``(free, to_test, to_fit)``: synthetic records whose family (after merging) already
    sits on one side of the real split must follow it; the synthetic split draws the rest."""
    test_families = {r.family for r in test_real}
    fit_families = {r.family for r in fitting_real}
    free, to_test, to_fit = [], [], []
    for record in synthetic:
        if record.family in test_families:
            to_test.append(record)
        elif record.family in fit_families:
            to_fit.append(record)
        else:
            free.append(record)
    return free, to_test, to_fit


def near_duplicates_across(fitting: list[ImageRecord], held: list[ImageRecord],
                           limits: neardup.Limits,
                           ) -> list[tuple[ImageRecord, ImageRecord, int]]:
    """``(fitting record, held record, pHash distance)`` for same-class near-duplicates."""
    if not limits.enabled:
        return []
    by_label: dict[int, tuple[list[ImageRecord], list[ImageRecord]]] = defaultdict(lambda: ([], []))
    for record in fitting:
        if _has_signatures(record):
            by_label[record.label][0].append(record)
    for record in held:
        if _has_signatures(record):
            by_label[record.label][1].append(record)
    found = []
    for label in sorted(by_label):
        left, right = by_label[label]
        if not left or not right:
            continue
        pairs = neardup.pairs_between([r.phash for r in left], [r.phash for r in right], limits,
                                      query_colours=[r.colour_sig for r in left],
                                      reference_colours=[r.colour_sig for r in right])
        found.extend((left[i], right[j], d) for i, j, d in
                     zip(pairs.left.tolist(), pairs.right.tolist(), pairs.distance.tolist(),
                         strict=True))
    return found


def without_near_duplicates_of(records: list[ImageRecord], reference: list[ImageRecord],
                               settings: Settings) -> tuple[list[ImageRecord], int]:
    """``(kept, dropped count)``: ``records`` less the near-duplicates of ``reference``."""
    limits = neardup.Limits.of(settings)
    if not limits.enabled or not records:
        return records, 0
    records = with_signatures(records, settings)
    close = {held.id for _fit, held, _d in near_duplicates_across(reference, records, limits)}
    kept = [r for r in records if r.id not in close]
    return kept, len(records) - len(kept)
