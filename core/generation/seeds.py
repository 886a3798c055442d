"""Per-image seeds: image ``i`` of class ``c`` in a job with base seed ``s``.

The seed is a stable hash of (s, c, i), not a counter, so the same job run twice makes
the same images, a job extended to more indices never repeats an image, and images of
different classes never share a seed. Seeds fit a signed 32-bit column (PostgreSQL INTEGER).
"""

from __future__ import annotations

import hashlib

MAX_SEED = 2**31 - 1


def image_seed(base_seed: int, class_key: str, index: int) -> int:
    """The torch seed of image ``index`` of class ``class_key``."""
    return _stable_int(f"image:{int(base_seed)}:{class_key}:{int(index)}")


def prompt_seed(base_seed: int, class_key: str, index: int) -> int:
    """The seed of the random prompt draw for one image (independent of the image seed)."""
    return _stable_int(f"prompt:{int(base_seed)}:{class_key}:{int(index)}")


def _stable_int(text: str) -> int:
    # sha256, unlike hash(), is the same in every process and Python version.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % (MAX_SEED + 1)
