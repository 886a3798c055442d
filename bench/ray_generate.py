"""A generation job through a local Ray cluster vs the local backend, tiny Stable Diffusion.

    python bench/ray_generate.py                         # 48 images, 32 px, 2 steps, batch 4
    python bench/ray_generate.py --images 96 --size 64 --steps 4 --repeats 3

Every side runs the product's own job handler (``run_generation_job``) on the same config
(same prompts, seeds and indices; each side in its own data folder), so it includes
storing every image in the store and the database:

* local, one worker: the local backend in this process, one torch thread (one core);
* Ray, 1 actor and Ray, 2 actors: ``SYNTHLAB_EXECUTION_BACKEND=ray`` on a private Ray
  instance with 2 CPUs (``ray.init(num_cpus=2)``), one CPU and one torch thread per actor.

A Ray job starts its actors (a Python process each that imports torch and diffusers and
loads the pipeline), so it is timed twice: the whole job, and its steady part (from its
first stored batch to its last). The per-image Ray overhead is the steady time per image
with 1 actor minus the local time per image: what shipping a batch to an actor and its
PNGs back costs on top of the same computation. Medians over ``--repeats``; the load
average is printed before and after (the box is shared: compare ratios, not seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store-px", type=int, default=512,
                        help="size of the images whose storing by the worker is timed")
    args = parser.parse_args()

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray
    import torch

    from core.config import Settings
    from core.db.engine import init_db
    from core.generation.generator import GenerationConfig
    from core.generation.jobs import create_running_job, run_generation_job
    from core.jobs import JobContext
    from tests.tiny_sd import build_tiny_sd

    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_sd(Path(tmp) / "tiny-sd")
        base = Settings(home=Path(tmp) / "home", device="cpu", ray_address="local")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=200 * 1024 * 1024)

        class Timed(JobContext):
            first_stored: float | None = None

            def progress(self, done, total=None, message=None, *, force=False):  # noqa: ANN001
                if done and self.first_stored is None:
                    self.first_stored = time.perf_counter()
                super().progress(done, total, message, force=force)

        counter = iter(range(10_000))

        def one_job(backend: str, actors: int) -> tuple[float, float]:
            """(whole job seconds, steady seconds per image after the first batch)."""
            settings = dataclasses.replace(base, home=Path(tmp) / f"home-{next(counter)}",
                                           execution_backend=backend, ray_actors=actors)
            init_db(settings)
            config = GenerationConfig(model=str(model), classes=["apple"], per_class=args.images,
                                      steps=args.steps, guidance=7.5, size=args.size,
                                      batch_size=args.batch_size, seed=1)
            job_id = create_running_job(config, settings=settings)
            ctx = Timed(job_id=job_id, kind="generate", params=config.to_params(),
                        settings=settings, worker_id="bench")
            started = time.perf_counter()
            ctx.first_stored = None
            # The first progress call reports 0 stored; start the steady clock at the first
            # stored batch.
            run_generation_job(ctx)
            ended = time.perf_counter()
            steady_images = args.images - args.batch_size
            return ended - started, (ended - ctx.first_stored) / max(1, steady_images)

        store_ms = worker_store_ms(base, model, tmp, args.store_px)
        one_job("local", 0)  # warm-up: loads the pipeline into this process once
        sides = {"local, one worker": ("local", 0), "Ray, 1 actor": ("ray", 1),
                 "Ray, 2 actors": ("ray", 2)}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name, (backend, actors) in sides.items():
                results[name].append(one_job(backend, actors))
        round_trip_ms = ray_round_trip_ms(ray, base, model, args)
        ray.shutdown()

    print(f"\n{args.images} images, {args.size} px, {args.steps} steps, batch {args.batch_size}; "
          f"medians of {args.repeats}")
    medians = {name: (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows))
               for name, rows in results.items()}
    local_whole, local_per_image = medians["local, one worker"]
    for name, (whole, per_image) in medians.items():
        print(f"  {name:<18} job {whole:6.2f} s = {args.images / whole:6.1f} images/s "
              f"(x{local_whole / whole:.2f} of local); steady {1 / per_image:6.1f} images/s "
              f"(x{local_per_image / per_image:.2f} of local)")
    overhead = medians["Ray, 1 actor"][1] - local_per_image
    startup = medians["Ray, 2 actors"][0] - args.images * medians["Ray, 2 actors"][1]
    print(f"  steady time per image, Ray 1 actor - local: {overhead * 1000:.1f} ms (negative: "
          f"the actor computes the next batch while the worker stores)")
    print(f"  per-image Ray overhead, one batch at a time (round trip - actor compute, PNG "
          f"encode there and decode here included): {round_trip_ms:.1f} ms")
    print(f"  actor start-up and job set-up (2 actors): about {startup:.1f} s per job")
    print(f"  worker's part per {args.store_px} px image (PNG decode + store + index): "
          f"{store_ms:.1f} ms -> one worker stores at most {1000 / store_ms:.0f} images/s")
    print(f"load average after: {os.getloadavg()}")
    return 0


def ray_round_trip_ms(ray, base, model, args, calls: int = 10) -> float:  # noqa: ANN001
    """Median ms per image a batch spends outside the pipeline on its trip to an actor
    and back: one batch at a time, driver round trip minus the actor's own compute time."""
    from core.generation.distributed import GenerationActor
    from core.generation.generator import GenerationConfig, WorkItem
    from core.generation.prompts import default_prompt_config, prompt_for
    from core.generation.runner import decode_png
    from core.generation.seeds import image_seed

    config = GenerationConfig(model=str(model), classes=["apple"], per_class=args.batch_size,
                              steps=args.steps, guidance=7.5, size=args.size,
                              batch_size=args.batch_size, seed=1)
    prompts = default_prompt_config("apple")
    batch = [WorkItem("apple", i, image_seed(1, "apple", i),
                      prompt_for(prompts, i, base_seed=1, class_key="apple"),
                      prompts.negative_prompt) for i in range(args.batch_size)]
    actor = ray.remote(GenerationActor).options(num_cpus=1).remote(config.to_params(), base)
    ray.get(actor.generate.remote(batch))  # start-up and warm-up
    overheads = []
    for _ in range(calls):
        started = time.perf_counter()
        out = ray.get(actor.generate.remote(batch))
        [decode_png(data) for data in out["images"]]
        overheads.append((time.perf_counter() - started - out["seconds"]) / len(batch))
    ray.kill(actor)
    return statistics.median(overheads) * 1000


def worker_store_ms(base, model, tmp, size: int, count: int = 12) -> float:  # noqa: ANN001
    """Median ms the worker spends per received image: decode the PNG, store, index."""
    import dataclasses as dc

    import numpy as np
    from PIL import Image

    from core.db.engine import init_db
    from core.generation.generator import GenerationConfig, Generator
    from core.generation.jobs import create_running_job
    from core.generation.runner import decode_png, encode_png

    settings = dc.replace(base, home=Path(tmp) / "home-store")
    init_db(settings)
    config = GenerationConfig(model=str(model), classes=["apple"], per_class=count, steps=2,
                              size=size, batch_size=1)
    job_id = create_running_job(config, settings=settings)
    generator = Generator(config, settings, job_id=job_id)
    generator.ensure_dataset()
    rng = np.random.default_rng(0)
    times = []
    for [item] in generator.plan():
        # Smooth noise: a PNG about as large as a generated picture's (not white noise).
        small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        data = encode_png(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))
        started = time.perf_counter()
        generator._store([item], [decode_png(data)], host={"hostname": "bench", "ip": ""},
                         raw=[data])
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


if __name__ == "__main__":
    raise SystemExit(main())
