"""Batched generation vs a naive one-image-per-call loop, tiny Stable Diffusion on the CPU.

    python bench/generate_cpu.py                       # 32 images, 32 px, 2 steps, batch 8
    python bench/generate_cpu.py --images 64 --size 64 --steps 4 --batch-size 16

Both sides make the same images (same prompts, same per-image seeds) with the same
pipeline, loaded through the product's loader from a tiny random-weight Stable Diffusion
folder (``tests/tiny_sd.py``). The batched side is ``core.generation.generator.PipelineRunner``
(the code a job runs); the naive side calls the pipeline once per image. Each side runs
once to warm up, then ``--repeats`` times; the median is reported with the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    from core.config import Settings
    from core.generation.generator import GenerationConfig, PipelineRunner, WorkItem
    from core.generation.loading import load_pipeline
    from core.generation.prompts import default_prompt_config, prompt_for
    from core.generation.seeds import image_seed
    from tests.tiny_sd import build_tiny_sd

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_sd(Path(tmp) / "tiny-sd")
        settings = Settings(home=Path(tmp) / "home", device="cpu")
        loaded = load_pipeline(str(model), settings, device="cpu")
        config = GenerationConfig(model=str(model), classes=["apple"], per_class=args.images,
                                  steps=args.steps, guidance=args.guidance, size=args.size,
                                  batch_size=args.batch_size)
        prompts = default_prompt_config("apple")
        items = [WorkItem("apple", i, image_seed(0, "apple", i),
                          prompt_for(prompts, i, base_seed=0, class_key="apple"),
                          prompts.negative_prompt) for i in range(args.images)]

        class Quiet:
            def progress(self, *a, **k): pass
            def log(self, *a, **k): pass
            def check_cancelled(self, refresh: bool = True): pass

        def batched() -> int:
            images = PipelineRunner(loaded, config).generate(items, Quiet())
            return len(images)

        def naive() -> int:
            count = 0
            for item in items:
                out = loaded.pipe(prompt=item.prompt, negative_prompt=item.negative_prompt,
                                  num_inference_steps=args.steps, guidance_scale=args.guidance,
                                  height=args.size, width=args.size,
                                  generator=torch.Generator("cpu").manual_seed(item.seed))
                count += len(out.images)
            return count

        results = {}
        for name, fn in (("naive loop (1 image per call)", naive),
                         (f"batched (batch {args.batch_size})", batched)):
            assert fn() == args.images  # warm-up
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                fn()
                times.append(time.perf_counter() - started)
            results[name] = args.images / statistics.median(times)
    print(f"tiny SD on CPU ({torch.get_num_threads()} threads), {args.images} images, "
          f"{args.size} px, {args.steps} steps, guidance {args.guidance}")
    for name, rate in results.items():
        print(f"  {name:<32} {rate:8.1f} images/s")
    naive_rate, batched_rate = results.values()
    print(f"  ratio batched / naive: {batched_rate / naive_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
