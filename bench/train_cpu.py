"""Training throughput on the CPU: the cached loader vs a naive per-epoch file loader,
and the wall time of a full 10-epoch run of the reference CNN on 4,400 images.

    python bench/train_cpu.py                   # 4,400 images, 256 px sources, 64 px input
    python bench/train_cpu.py --images 800 --full-epochs 3     # quicker

Both loaders feed the same ``Classifier`` (reference CNN, batch 32, seed 0) in the same
process, same run:

* naive: every epoch decodes every file and applies the whole preprocessing pipeline
  (``core.preprocess.load_uncached``), the way a plain ``Dataset.__getitem__`` would;
* cached: ``PreprocessedCache`` decodes and shrinks each image once, then every epoch only
  applies the pipeline's random steps (none for the ``real`` pipeline).

Images per second = training images processed / wall time of ``--epochs`` epochs,
including loading. The cache's one-off build is timed and reported on its own (and
included in the 10-epoch run). Images are JPEGs made by ``tests/imagemaker.fruit_image``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CLASSES = ["apple", "banana", "lime", "plum"]


def populate(settings, count: int, side: int) -> list[tuple[str, str, int]]:  # noqa: ANN001
    """``count`` JPEG images in the index; returns (sha256, relpath, label)."""
    import io

    from core.catalog import add_image, get_or_create_class, get_or_create_dataset
    from core.db.engine import session_scope
    from core.imageio import decode_image
    from core.store import ImageStore
    from imagemaker import fruit_image

    store = ImageStore(settings)
    refs = []
    with session_scope(settings, write=True) as session:
        dataset = get_or_create_dataset(session, "bench")
        classes = [get_or_create_class(session, c) for c in CLASSES]
        for i in range(count):
            label = i % len(CLASSES)
            buffer = io.BytesIO()
            fruit_image(CLASSES[label], i, (side, side)).save(buffer, format="JPEG", quality=90)
            raw = buffer.getvalue()
            result = add_image(session, store, decode_image(raw), image_class=classes[label],
                               dataset=dataset, raw=raw)
            refs.append((result.image.sha256, result.image.path, label))
    return refs


def train(pixel_source, labels, epochs: int, image_size: int, threads: int):  # noqa: ANN001, ANN201
    import torch

    from core.training.trainer import Classifier, TrainConfig

    torch.set_num_threads(threads)
    config = TrainConfig(model="small", epochs=epochs, batch_size=32, seed=0, patience=0,
                         device="cpu", image_size=image_size)
    started = time.perf_counter()
    model = Classifier(config, class_names=CLASSES).fit(pixel_source, labels)
    return time.perf_counter() - started, model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4400)
    parser.add_argument("--source-size", type=int, default=256, help="side of the JPEGs (px)")
    parser.add_argument("--image-size", type=int, default=64, help="model input side (px)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per loader")
    parser.add_argument("--full-epochs", type=int, default=10, help="epochs of the full run")
    parser.add_argument("--pipeline", default="real", choices=("real", "synthetic"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    parser.add_argument("--home", help="data folder to use (default: a new temporary one)")
    args = parser.parse_args()

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="train-cpu-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["SYNTHLAB_HOME"] = str(home)
    os.environ["SYNTHLAB_AUTOSTART_WORKER"] = "0"
    import numpy as np
    import torch

    from core.config import get_settings
    from core.db.engine import init_db
    from core.preprocess import PreprocessedCache, load_pipeline, load_uncached

    settings = get_settings()
    init_db(settings)
    try:
        started = time.perf_counter()
        refs = populate(settings, args.images, args.source_size)
        print(f"made {len(refs)} JPEGs of {args.source_size}px in {time.perf_counter() - started:.1f}s")
        images = [(sha, path) for sha, path, _ in refs]
        labels = np.array([label for _, _, label in refs])
        pipeline = load_pipeline(args.pipeline, settings, size=args.image_size)
        print(f"torch {torch.__version__}, {args.threads} thread(s), pipeline {args.pipeline!r}, "
              f"input {args.image_size}px, reference CNN, batch 32")

        def naive(epoch: int) -> np.ndarray:
            return load_uncached(images, pipeline, seed=0, epoch=epoch, settings=settings)

        naive_seconds, _ = train(naive, labels, args.epochs, args.image_size, args.threads)
        naive_rate = args.images * args.epochs / naive_seconds

        cache = PreprocessedCache(settings)
        started = time.perf_counter()
        cache.build(images, pipeline)
        build_seconds = time.perf_counter() - started
        if pipeline.is_random:
            def cached(epoch: int) -> np.ndarray:
                return cache.load(images, pipeline, seed=0, epoch=epoch)
            source = cached
        else:
            source = cache.load(images, pipeline, seed=0)  # identical every epoch
        cached_seconds, _ = train(source, labels, args.epochs, args.image_size, args.threads)
        cached_rate = args.images * args.epochs / cached_seconds

        print(f"naive per-epoch file loader: {naive_rate:8.1f} images/s "
              f"({naive_seconds:.1f}s for {args.epochs} epochs)")
        print(f"cached loader:               {cached_rate:8.1f} images/s "
              f"({cached_seconds:.1f}s for {args.epochs} epochs; one-off cache build {build_seconds:.1f}s)")
        print(f"ratio cached / naive: {cached_rate / naive_rate:.2f}x")

        # The full run: a fresh cache, so its build is part of the wall time.
        shutil.rmtree(settings.cache_dir / "preprocess", ignore_errors=True)
        started = time.perf_counter()
        cache = PreprocessedCache(settings)
        if pipeline.is_random:
            full_source = lambda epoch: cache.load(images, pipeline, seed=0, epoch=epoch)  # noqa: E731
        else:
            full_source = cache.load(images, pipeline, seed=0)
        _, model = train(full_source, labels, args.full_epochs, args.image_size, args.threads)
        full_seconds = time.perf_counter() - started
        print(f"full run: {args.full_epochs} epochs on {args.images} images (cache build included): "
              f"{full_seconds:.1f}s wall, final train accuracy {model.history_[-1]['acc']:.3f}")
    finally:
        if not args.keep and not args.home:  # never delete a folder the user named
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
