"""Images per second fed to training: the preprocessed cache vs the naive loader.

    python bench/preprocess_cache.py [--images 2000] [--epochs 3] [--size 64] [--workers N]

Builds a throw-away data folder with half real photos (JPEG, 4:3 / 3:4 / 3:2 shapes around
640x480) and half synthetic images (PNG, 512x512, as a diffusion model writes them), then
feeds every image to "training" for a few epochs in two ways, alternating epoch by epoch
so both see the same load on a shared machine:

* naive: decode each file and run the whole pipeline, every epoch (``load_uncached``);
* cache: ``PreprocessedCache.load`` after a one-time build in ``--workers`` processes
  (timed separately): it reads the cached arrays and applies only the random suffix (the
  synthetic pipeline's random margin, letterbox and resize).

Both use the default ``real`` and ``synthetic`` pipelines and must give identical arrays
(checked). Prints images/s for each and the ratio.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REAL_SHAPES = [(640, 480), (480, 640), (600, 400), (512, 384), (400, 600)]


def _picture(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth background with a few shapes and mild noise (compresses like a photo)."""
    xx = np.arange(width, dtype=np.float32)[None, :]
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-60, 60, 3)
    noise = rng.integers(-4, 5, (height, width, 3), dtype=np.int16)
    pixels = base + slope * (xx[..., None] / width) + noise
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = int(rng.integers(width)), int(rng.integers(height))
        r = int(rng.integers(20, min(width, height) // 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image


def populate(settings, count: int, seed: int = 0) -> tuple[list, list]:  # noqa: ANN001
    from core.catalog import add_image, get_or_create_class, get_or_create_dataset
    from core.db.engine import session_scope
    from core.imageio import decode_image
    from core.store import ImageStore

    rng = np.random.default_rng(seed)
    store = ImageStore(settings)
    real, synthetic = [], []
    for start in range(0, count, 200):
        with session_scope(settings, write=True) as session:
            image_class = get_or_create_class(session, "thing")
            datasets = {s: get_or_create_dataset(session, f"bench-{s}", source=s) for s in ("real", "synthetic")}
            for index in range(start, min(count, start + 200)):
                source = "real" if index % 2 == 0 else "synthetic"
                buffer = io.BytesIO()
                if source == "real":
                    width, height = REAL_SHAPES[index % len(REAL_SHAPES)]
                    _picture(rng, width, height).save(buffer, format="JPEG", quality=90)
                else:
                    _picture(rng, 512, 512).save(buffer, format="PNG", compress_level=1)
                decoded = decode_image(buffer.getvalue())
                row = add_image(session, store, decoded, raw=buffer.getvalue(), source=source,
                                image_class=image_class, dataset=datasets[source]).image
                (real if source == "real" else synthetic).append((row.sha256, row.path))
    return real, synthetic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="default: SYNTHLAB_PREPROCESS_WORKERS")
    parser.add_argument("--keep", action="store_true", help="keep the data folder afterwards")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="synthlab-bench-")
    os.environ["SYNTHLAB_HOME"] = home
    os.environ["SYNTHLAB_AUTOSTART_WORKER"] = "0"
    from core.config import get_settings
    from core.db.engine import init_db
    from core.preprocess import PreprocessedCache, default_pipeline, load_uncached

    settings = get_settings()
    init_db(settings)
    started = time.perf_counter()
    real, synthetic = populate(settings, args.images)
    print(f"data: {len(real)} real JPEG + {len(synthetic)} synthetic PNG in {home} "
          f"({time.perf_counter() - started:.1f}s to create)")
    pipelines = {"real": default_pipeline("real", args.size), "synthetic": default_pipeline("synthetic", args.size)}
    refs = {"real": real, "synthetic": synthetic}
    total = len(real) + len(synthetic)

    cache = PreprocessedCache(settings, workers=args.workers)
    tick = time.perf_counter()
    for source in ("real", "synthetic"):
        cache.build(refs[source], pipelines[source])
    build_s = time.perf_counter() - tick
    # Naive and cached epochs alternate, so both see the same load on a shared machine.
    naive, cached = [], []
    for epoch in range(args.epochs):
        for loader, times in ((lambda r, p, e: load_uncached(r, p, seed=1, epoch=e, settings=settings), naive),
                              (lambda r, p, e: cache.load(r, p, seed=1, epoch=e), cached)):
            tick = time.perf_counter()
            for source in ("real", "synthetic"):
                loader(refs[source], pipelines[source], epoch)
            times.append(time.perf_counter() - tick)
    for source in ("real", "synthetic"):
        assert np.array_equal(cache.load(refs[source], pipelines[source], seed=1, epoch=2),
                              load_uncached(refs[source], pipelines[source], seed=1, epoch=2, settings=settings))
    naive_rate = total * args.epochs / sum(naive)
    cached_rate = total * args.epochs / sum(cached)
    with_build = total * args.epochs / (sum(cached) + build_s)
    print(f"images: {total}, epochs: {args.epochs}, size: {args.size}, cache workers: {cache.workers}, "
          f"cpus: {os.cpu_count()}, load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"naive loader (decode + preprocess every epoch): {naive_rate:8.0f} images/s  "
          f"(epochs: {', '.join(f'{t:.2f}s' for t in naive)})")
    print(f"cache (random suffix applied on the fly):       {cached_rate:8.0f} images/s  "
          f"(epochs: {', '.join(f'{t:.2f}s' for t in cached)})")
    print(f"one-time cache build ({cache.workers} process{'es' if cache.workers > 1 else ''}): {build_s:.2f}s "
          f"= {total / build_s:.0f} images/s")
    print(f"ratio cache/naive per epoch: {cached_rate / naive_rate:.1f}x; over {args.epochs} epochs "
          f"including the build: {with_build / naive_rate:.1f}x")
    print("arrays identical to the naive loader: yes")
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
