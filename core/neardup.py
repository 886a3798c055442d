"""Near-duplicate images: a perceptual hash per image and a fast Hamming search.

Exact copies share a ``sha256`` (of the decoded pixels), but a resized, re-encoded or
slightly cropped copy does not, so without this it could sit in the training set while
its original is in the test set. Every image gets two small signatures when it is
indexed:

* ``phash``: the 64-bit perceptual hash of ``imagehash.phash`` (8x8 DCT signs of the
  grayscale image). Copies stay within a few bits of their original.
* ``colour_sig``: the mean RGB colour of each quarter of the image (12 bytes, as hex).
  pHash sees only grayscale structure, so two different pictures of one centred object on
  a plain background (a Fruits-360 style dataset) can be as close in pHash as a copy; their
  colours tell them apart, while a copy keeps its colours.

Two images are near-duplicates when their pHashes differ in at most
``Settings.near_duplicate_distance`` bits *and* no quarter's mean colour differs by more
than ``Settings.near_duplicate_colour`` (of 255) in any channel.

Hashes are stored as *signed* 64-bit integers (``BIGINT`` on PostgreSQL, ``INTEGER`` on
SQLite: both signed) and searched as ``uint64`` views of the same bits. The search is a
tiled brute force (XOR + ``np.bitwise_count``): tiles small enough to stay in the CPU
cache make it several times faster than one big broadcast, and there is no index that could
go stale. The colour check only runs on the few pHash hits. Rows indexed before signatures
existed are filled in by ``backfill`` (``python -m core rehash``, ``python -m core check
--repair``, and lazily for the images of an experiment before it is split).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image as PILImage

from core.childproc import die_with_parent
from core.config import Settings, get_settings

HASH_BITS = 64
COLOUR_BYTES = 12  # 2 x 2 quarters x RGB
_MASK = (1 << HASH_BITS) - 1
# Tile of the pairwise search: 64 x 2048 uint64 = 1 MiB, which stays in a core's L2 cache.
_TILE_ROWS = 64
_TILE_COLS = 2048


# --- signatures ---------------------------------------------------------------------------

def phash(image: PILImage.Image) -> int:
    """The 64-bit pHash of a decoded image, as a signed integer (the stored form)."""
    import imagehash  # brings scipy: loaded only by code that hashes

    bits = np.asarray(imagehash.phash(image, hash_size=8).hash, dtype=bool).reshape(-1)
    # Big-endian bit order, so ``to_hex`` prints what ``str(imagehash.phash(...))`` prints.
    return int.from_bytes(np.packbits(bits).tobytes(), "big", signed=True)


def colour_signature(image: PILImage.Image) -> str:
    """Mean RGB of the image's four quarters: 24 hex digits."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return rgb.resize((2, 2), PILImage.Resampling.BOX).tobytes().hex()


def fingerprint(image: PILImage.Image) -> tuple[int, str]:
    """``(phash, colour_sig)`` of a decoded RGB image, as stored on its row."""
    return phash(image), colour_signature(image)


def to_hex(value: int | None) -> str:
    """16 hex digits of a stored hash (``""`` for none), for people and reports."""
    return "" if value is None else f"{value & _MASK:016x}"


def distance(a: int, b: int) -> int:
    """Hamming distance of two hashes (signed or unsigned)."""
    return ((a ^ b) & _MASK).bit_count()


def colour_difference(a: str, b: str) -> int:
    """The largest difference of one channel of one quarter's mean colour (0-255)."""
    left = np.frombuffer(bytes.fromhex(a), dtype=np.uint8).astype(np.int16)
    right = np.frombuffer(bytes.fromhex(b), dtype=np.uint8).astype(np.int16)
    return int(np.abs(left - right).max())


def as_uint64(hashes: Sequence[int] | np.ndarray) -> np.ndarray:
    """Stored (signed) hashes as a contiguous ``uint64`` array with the same bits."""
    if isinstance(hashes, np.ndarray) and hashes.dtype == np.uint64:
        return np.ascontiguousarray(hashes)
    if isinstance(hashes, np.ndarray):
        return np.ascontiguousarray(hashes.astype(np.int64, copy=False)).view(np.uint64)
    signed = [h - (1 << HASH_BITS) if h > (_MASK >> 1) else h for h in hashes]
    return np.asarray(signed, dtype=np.int64).reshape(-1).view(np.uint64)


def as_colours(signatures: Sequence[str] | np.ndarray) -> np.ndarray:
    """Colour signatures as an ``(N, 12)`` uint8 array."""
    if isinstance(signatures, np.ndarray):
        return signatures.astype(np.uint8, copy=False).reshape(-1, COLOUR_BYTES)
    raw = bytes.fromhex("".join(signatures))
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, COLOUR_BYTES)


@dataclass
class Limits:
    """What counts as a near-duplicate; ``max_distance < 0`` turns detection off."""

    max_distance: int
    max_colour: int | None = None  # None: pHash alone decides

    @classmethod
    def of(cls, settings: Settings, max_distance: int | None = None) -> "Limits":
        return cls(settings.near_duplicate_distance if max_distance is None else max_distance,
                   settings.near_duplicate_colour)

    @property
    def enabled(self) -> bool:
        return self.max_distance >= 0


# --- search -------------------------------------------------------------------------------

@dataclass
class NearPairs:
    """Index pairs ``(left[k], right[k])`` at Hamming distance ``distance[k]``."""

    left: np.ndarray
    right: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return int(self.left.size)

    @classmethod
    def empty(cls) -> "NearPairs":
        none = np.zeros(0, dtype=np.int64)
        return cls(none, none.copy(), np.zeros(0, dtype=np.uint8))


def _search(query: np.ndarray, reference: np.ndarray, limits: Limits, upper_only: bool,
            query_colours: np.ndarray | None, reference_colours: np.ndarray | None) -> NearPairs:
    n, m = query.size, reference.size
    if not limits.enabled or n == 0 or m == 0:
        return NearPairs.empty()
    check_colour = (limits.max_colour is not None and query_colours is not None
                    and reference_colours is not None)
    xor = np.empty((_TILE_ROWS, _TILE_COLS), dtype=np.uint64)
    bits = np.empty((_TILE_ROWS, _TILE_COLS), dtype=np.uint8)
    hit = np.empty((_TILE_ROWS, _TILE_COLS), dtype=bool)
    lefts, rights, dists = [], [], []
    for r0 in range(0, n, _TILE_ROWS):
        r1 = min(n, r0 + _TILE_ROWS)
        rows = query[r0:r1, None]
        # Within one set only the upper triangle is searched: each pair once, no self-pairs.
        c_start = r0 if upper_only else 0
        for c0 in range(c_start, m, _TILE_COLS):
            c1 = min(m, c0 + _TILE_COLS)
            x, b, h = xor[:r1 - r0, :c1 - c0], bits[:r1 - r0, :c1 - c0], hit[:r1 - r0, :c1 - c0]
            np.bitwise_xor(rows, reference[None, c0:c1], out=x)
            np.bitwise_count(x, out=b)
            np.less_equal(b, limits.max_distance, out=h)
            if not h.any():
                continue
            i, j = np.nonzero(h)
            d = b[i, j]
            i, j = i + r0, j + c0
            keep = j > i if upper_only else np.ones(i.size, dtype=bool)
            if check_colour:
                diff = np.abs(query_colours[i].astype(np.int16) - reference_colours[j].astype(np.int16))
                keep &= diff.max(axis=1) <= limits.max_colour
            lefts.append(i[keep])
            rights.append(j[keep])
            dists.append(d[keep])
    if not lefts:
        return NearPairs.empty()
    return NearPairs(np.concatenate(lefts).astype(np.int64), np.concatenate(rights).astype(np.int64),
                     np.concatenate(dists).astype(np.uint8))


def pairs_within(hashes: Sequence[int] | np.ndarray, limits: Limits | int, *,
                 colours: Sequence[str] | np.ndarray | None = None) -> NearPairs:
    """Every pair ``i < j`` of ``hashes`` that are near-duplicates.

    ``limits`` as a plain number is a pHash distance alone (no colour check).
    """
    limits = limits if isinstance(limits, Limits) else Limits(limits)
    values = as_uint64(hashes)
    tone = None if colours is None else as_colours(colours)
    return _search(values, values, limits, True, tone, tone)


def pairs_between(query: Sequence[int] | np.ndarray, reference: Sequence[int] | np.ndarray,
                  limits: Limits | int, *, query_colours: Sequence[str] | np.ndarray | None = None,
                  reference_colours: Sequence[str] | np.ndarray | None = None) -> NearPairs:
    """Every ``(i, j)`` where ``query[i]`` and ``reference[j]`` are near-duplicates."""
    limits = limits if isinstance(limits, Limits) else Limits(limits)
    return _search(as_uint64(query), as_uint64(reference), limits, False,
                   None if query_colours is None else as_colours(query_colours),
                   None if reference_colours is None else as_colours(reference_colours))


def group_labels(hashes: Sequence[int] | np.ndarray, limits: Limits | int, *,
                 colours: Sequence[str] | np.ndarray | None = None,
                 keys: Sequence[Any] | None = None) -> np.ndarray:
    """A component number per hash: near-duplicates, directly or through a chain, share one.

    With ``keys`` (a class label per hash) only hashes with equal keys are compared, which
    is also much less work than comparing everything with everything.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    values = as_uint64(hashes)
    tone = None if colours is None else as_colours(colours)
    n = values.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    groups = [np.arange(n)]
    if keys is not None:
        by_key: dict[Any, list[int]] = {}
        for index, key in enumerate(keys):
            by_key.setdefault(key, []).append(index)
        groups = [np.asarray(members, dtype=np.int64) for members in by_key.values()]
    lefts, rights = [], []
    for idx in groups:
        pairs = pairs_within(values[idx], limits, colours=None if tone is None else tone[idx])
        lefts.append(idx[pairs.left])
        rights.append(idx[pairs.right])
    left, right = np.concatenate(lefts), np.concatenate(rights)
    graph = coo_matrix((np.ones(left.size, dtype=np.int8), (left, right)), shape=(n, n))
    _count, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


# --- stored signatures --------------------------------------------------------------------
# Database imports stay inside the functions: decoding processes import this module only
# for ``fingerprint`` and should start quickly.

@dataclass
class Stored:
    """Signatures of indexed images, in id order."""

    ids: np.ndarray
    hashes: np.ndarray  # uint64
    colours: np.ndarray  # (N, 12) uint8

    def __len__(self) -> int:
        return int(self.ids.size)


def stored_signatures(settings: Settings | None = None) -> Stored:
    """Every indexed image that has its signatures."""
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import Image

    query = (select(Image.id, Image.phash, Image.colour_sig)
             .where(Image.phash.is_not(None), Image.colour_sig.is_not(None)).order_by(Image.id))
    with session_scope(settings) as session:
        rows = session.execute(query).all()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    hashes = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)).view(np.uint64)
    colours = as_colours([r[2] for r in rows]) if rows else np.zeros((0, COLOUR_BYTES), np.uint8)
    return Stored(ids, hashes, colours)


def missing_count(settings: Settings | None = None) -> int:
    """How many indexed images have no signatures yet (indexed before they existed)."""
    from sqlalchemy import func, or_, select

    from core.db.engine import session_scope
    from core.db.models import Image

    with session_scope(settings) as session:
        return session.scalar(select(func.count(Image.id)).where(
            or_(Image.phash.is_(None), Image.colour_sig.is_(None)))) or 0


@dataclass
class BackfillReport:
    hashed: int = 0
    unreadable: list[dict[str, Any]] = field(default_factory=list)  # {"id", "path", "reason"}
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"hashed": self.hashed, "unreadable": self.unreadable,
                "seconds": round(self.seconds, 3)}


def _fingerprint_stored(item: tuple[int, str], root: str, max_pixels: int,
                        ) -> tuple[int, tuple[int, str] | None, str]:
    """``(id, (phash, colour) or None, reason)`` of one stored file; runs in pool processes."""
    from pathlib import Path

    from core.imageio import ImageRejected, decode_image

    image_id, relpath = item
    base = Path(root).resolve()
    path = (base / relpath).resolve()
    if base not in path.parents:
        return image_id, None, "path escapes the image store"
    try:
        # The same decoding as an import (EXIF rotation, mode conversion), so a backfilled
        # signature equals the one a fresh import of the file would get.
        decoded = decode_image(path, max_pixels=max_pixels)
    except ImageRejected as exc:
        return image_id, None, str(exc)
    return image_id, fingerprint(decoded.image), ""


def backfill(settings: Settings | None = None, *, image_ids: Iterable[int] | None = None,
             workers: int = 1, batch_size: int = 500,
             progress: Callable[[int, int], None] | None = None) -> BackfillReport:
    """Compute and store the signatures of every image that lacks them (or of ``image_ids``).

    Files that are missing or undecodable are listed and stay without (``check --repair``
    deals with missing files); they are simply not compared. Safe beside running imports:
    it only fills rows that are still empty.
    """
    from sqlalchemy import bindparam, or_, select, update

    from core.db.engine import run_write, session_scope
    from core.db.models import Image

    settings = settings or get_settings()
    started = time.perf_counter()
    report = BackfillReport()
    lacking = or_(Image.phash.is_(None), Image.colour_sig.is_(None))
    query = select(Image.id, Image.path).where(lacking).order_by(Image.id)
    wanted = None if image_ids is None else sorted(set(image_ids))
    with session_scope(settings) as session:
        if wanted is None:
            todo = [(r[0], r[1]) for r in session.execute(query)]
        else:
            todo = []
            for start in range(0, len(wanted), 500):  # well under SQLite's bound-parameter limit
                chunk = wanted[start:start + 500]
                todo.extend((r[0], r[1]) for r in session.execute(query.where(Image.id.in_(chunk))))
    paths = dict(todo)
    root, max_pixels = str(settings.images_dir), settings.max_image_pixels
    table = Image.__table__
    statement = (update(table).where(table.c.id == bindparam("image_id"))
                 .values(phash=bindparam("hash_value"), colour_sig=bindparam("colour_value")))
    done = 0

    def store(results: list[tuple[int, tuple[int, str] | None, str]]) -> None:
        nonlocal done
        values = [{"image_id": i, "hash_value": fp[0], "colour_value": fp[1]}
                  for i, fp, _ in results if fp is not None]
        report.unreadable.extend({"id": i, "path": paths[i], "reason": why}
                                 for i, fp, why in results if fp is None)
        if values:
            run_write(lambda session: session.connection().execute(statement, values), settings)
        report.hashed += len(values)
        done += len(results)
        if progress is not None:
            progress(done, len(todo))

    if workers <= 1 or len(todo) < 64:
        batch: list[tuple[int, tuple[int, str] | None, str]] = []
        for item in todo:
            batch.append(_fingerprint_stored(item, root, max_pixels))
            if len(batch) >= batch_size:
                store(batch)
                batch = []
        if batch:
            store(batch)
    else:
        # fork, as the importer does: children start at once and only read files. They
        # die with this process (it may be a worker that gets SIGKILLed).
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(max_workers=workers,
                                 mp_context=multiprocessing.get_context(method),
                                 initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                store(list(pool.map(_fingerprint_stored, chunk, [root] * len(chunk),
                                    [max_pixels] * len(chunk), chunksize=16)))
    report.seconds = time.perf_counter() - started
    return report


def signature_of(image_id: int, settings: Settings | None = None) -> tuple[int, str] | None:
    """The stored ``(phash, colour_sig)`` of one image, computed (and stored) if missing."""
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import Image

    def read() -> tuple[int, str] | None:
        with session_scope(settings) as session:
            row = session.execute(select(Image.phash, Image.colour_sig)
                                  .where(Image.id == image_id)).first()
        return (row[0], row[1]) if row is not None and None not in tuple(row) else None

    found = read()
    if found is None:
        with contextlib.suppress(OSError, ValueError):
            backfill(settings, image_ids=[image_id])
        found = read()
    return found


def near_images(image_id: int, settings: Settings | None = None, *,
                max_distance: int | None = None, limit: int = 50) -> list[tuple[int, int]]:
    """``(other id, pHash distance)`` of the near-duplicates of ``image_id``, closest first."""
    settings = settings or get_settings()
    limits = Limits.of(settings, max_distance)
    own = signature_of(image_id, settings) if limits.enabled else None
    if own is None:
        return []
    stored = stored_signatures(settings)
    pairs = pairs_between([own[0]], stored.hashes, limits, query_colours=[own[1]],
                          reference_colours=stored.colours)
    found = [(int(stored.ids[j]), int(d)) for j, d in zip(pairs.right.tolist(),
                                                          pairs.distance.tolist(), strict=True)
             if int(stored.ids[j]) != image_id]
    found.sort(key=lambda item: (item[1], item[0]))
    return found[:limit]
