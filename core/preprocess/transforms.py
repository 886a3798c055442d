"""Composable image transforms (PIL + numpy), each a small frozen dataclass.

Every transform is serialisable (``to_dict`` / ``transform_from_dict`` with a ``"type"``
key) and has a stable content hash of that JSON, so a pipeline's parameters identify its
cache entries. Random transforms draw from the ``np.random.Generator`` they are handed;
the pipeline makes that generator from an explicit seed, so the same seed gives
byte-identical output.

Besides ``apply``, each transform describes what it does to the geometry of the picture
(``geometry``): the canvas size and the size of the original content inside it. The
Compare page uses that to draw aspect-ratio histograms "after the pipeline" for thousands
of images without decoding any of them.
"""

from core.preprocess.augment import (ColouredMargins, ColourJitter, Cutout, GaussianNoise, Grayscale,
                                     HorizontalFlip, Rotate)
from core.preprocess.geometric import (Downscale, Letterbox, RandomCrop, RandomMargin,
                                       RandomResizedCrop, Resize, TrimToLandscape)
from core.preprocess.transform_base import (LETTERBOX_FILLS, RESAMPLING, Geometry, Transform,
                                            TransformError, stable_hash, transform_from_dict,
                                            transform_types)

__all__ = [
    "Geometry", "Transform", "TransformError", "transform_from_dict", "transform_types",
    "stable_hash", "Letterbox", "Resize", "RandomMargin", "RandomCrop", "RandomResizedCrop",
    "HorizontalFlip", "Rotate", "Grayscale", "GaussianNoise", "Cutout", "ColouredMargins",
    "ColourJitter", "Downscale", "TrimToLandscape", "LETTERBOX_FILLS", "RESAMPLING",
]
