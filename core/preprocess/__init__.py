"""Preprocessing: transforms, pipelines (with DB presets) and the cache that feeds training.

Training uses::

    from core.preprocess import PreprocessedCache, load_pipeline
    pipeline = load_pipeline("synthetic", settings, size=64)   # or a preset name
    x = PreprocessedCache(settings).load([(img.sha256, img.path), ...], pipeline, seed, epoch)
    # x: (N, size, size, 3) uint8, equal to pipeline.apply(image_i, item_seed(seed, epoch, i))
"""

from core.preprocess.cache import CacheError, PreprocessedCache, load_uncached
from core.preprocess.pipeline import (BUILTIN_DESCRIPTIONS, DEFAULT_NAMES, Pipeline, PipelineError,
                                      default_pipeline, item_seed)
from core.preprocess.presets import (delete_preset, get_preset, list_presets, load_pipeline,
                                     save_preset)

__all__ = [
    "BUILTIN_DESCRIPTIONS", "CacheError", "DEFAULT_NAMES", "Pipeline", "PipelineError", "PreprocessedCache",
    "default_pipeline", "delete_preset", "get_preset", "item_seed", "list_presets",
    "load_pipeline", "load_uncached", "save_preset",
]
