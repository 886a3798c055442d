"""Near-duplicate search: how long grouping N random perceptual hashes takes.

    python bench/near_duplicates.py                    # 20,000 and 100,000 hashes
    python bench/near_duplicates.py --sizes 5000 50000 --distance 10

For each size: random 64-bit hashes with 1% planted copies (a few bits flipped, so the
result is checked, not just timed), then

- ``pairs_within``: every pair within the distance, all against all (the worst case: the
  import of N images into an empty index, or one class of N images in a split);
- ``group_labels`` with 10 class keys: what a split does (only same-class pairs);
- ``pairs_between`` of 1 hash against N: the Gallery's detail view.

Prints seconds and pairs found; every planted copy must be found.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import neardup  # noqa: E402


def _hashes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random hashes whose last 1% are copies of ``source[k]`` with 1-3 bits flipped."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    planted = n // 100
    source = rng.choice(n - planted, size=planted, replace=False)
    flips = np.zeros(planted, dtype=np.uint64)
    for _ in range(3):  # up to 3 bits flipped: well within any sensible distance
        flips |= np.left_shift(np.uint64(1), rng.integers(0, 64, size=planted).astype(np.uint64))
    values[n - planted:] = values[source] ^ flips
    return values, source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--distance", type=int, default=10)
    args = parser.parse_args()
    print(f"{'hashes':>9} {'all pairs s':>12} {'pairs':>7} {'10 classes s':>13} "
          f"{'1 vs all ms':>12}")
    for n in args.sizes:
        values, source = _hashes(n, seed=n)
        started = time.perf_counter()
        pairs = neardup.pairs_within(values, args.distance)
        all_pairs = time.perf_counter() - started
        found = set(zip(pairs.left.tolist(), pairs.right.tolist(), strict=True))
        first_copy = n - source.size
        missed = [k for k, original in enumerate(source.tolist())
                  if (original, first_copy + k) not in found]
        assert not missed, f"{len(missed)} planted copies were missed"
        keys = np.arange(n) % 10
        started = time.perf_counter()
        neardup.group_labels(values, args.distance, keys=keys.tolist())
        grouped = time.perf_counter() - started
        started = time.perf_counter()
        neardup.pairs_between(values[:1], values, args.distance)
        one = (time.perf_counter() - started) * 1000
        print(f"{n:>9,} {all_pairs:>12.2f} {len(pairs):>7,} {grouped:>13.2f} {one:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
