"""Explaining images with a trained run: the product path vs a naive per-request path.

    python bench/explain_cache.py                    # 16 images, 64 px input, every method
    python bench/explain_cache.py --images 64 --size 32 --methods occlusion gradcam --threads 2

A temporary data folder gets fruit images and one run trained through the training code.
For each method, the same images are explained three ways, in this one run:

* naive: what a page would do without this module's care: per image, load the run's
  checkpoint from disk, build the model, run captum with its defaults (occlusion scores one
  perturbation per forward pass), nothing stored;
* product, first visit: ``core.explain.service.explain`` (model kept per process, occlusion
  batched 16 perturbations per pass), writing each map to the attribution cache;
* product, revisit: the same calls again, answered from the cache (what the page does on
  every rerun, and after a batch job).

Prints seconds per image and the naive / product ratios. Both sides use ``--threads`` torch
threads (default 1: on a small shared CPU box, extra threads mostly spin against each other).
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


def naive_explain(run_id: int, image_id: int, method: str, settings) -> float:  # noqa: ANN001
    """Everything from scratch, captum defaults; returns the map's sum (to use the result)."""
    import numpy as np
    from captum.attr import (IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion,
                             Saliency)
    from torch import nn

    from core.explain.service import pipeline_for, subject_from_image_id
    from core.training.checkpoint import load_trained_model
    from core.training.model import to_input

    model, class_names, pipelines, size = load_trained_model(run_id, settings)
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    subject = subject_from_image_id(image_id, settings)

    class _Run:  # just what pipeline_for reads
        pass
    fake = _Run()
    fake.run_id, fake.pipelines, fake.image_size = run_id, pipelines, size
    _, pipeline = pipeline_for(fake, subject.source, "by-source")
    pixels = np.array(pipeline.apply(subject.image, seed=0))
    inputs = to_input(pixels)
    target = int(model(inputs).argmax())
    if method == "saliency":
        out = Saliency(model).attribute(inputs.requires_grad_(True), target=target)
    elif method == "integrated-gradients":
        out = IntegratedGradients(model).attribute(inputs, baselines=to_input(np.zeros_like(pixels)),
                                                   target=target, n_steps=32)
    elif method == "gradcam":
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        layer_map = LayerGradCam(model, convs[-1]).attribute(inputs, target=target, relu_attributions=True)
        out = LayerAttribution.interpolate(layer_map, (size, size), interpolate_mode="bilinear")
    else:
        out = Occlusion(model).attribute(inputs, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4),
                                         baselines=to_input(np.zeros_like(pixels)), target=target)
    return float(out.detach().sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="model input side")
    parser.add_argument("--methods", nargs="+",
                        default=["saliency", "integrated-gradients", "gradcam", "occlusion"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="synthlab-bench-explain-"))
    os.environ["SYNTHLAB_HOME"] = str(home)
    os.environ["SYNTHLAB_AUTOSTART_WORKER"] = "0"
    try:
        import torch

        torch.set_num_threads(args.threads)
        from core.config import get_settings
        from core.db.engine import init_db
        from core.explain.attribution import AttributionConfig
        from core.explain.service import explain, load_run, subject_from_image_id
        from core.training.data import DataSpec
        from core.training.experiments import ExperimentRequest, create_runs, execute_run
        from core.training.trainer import TrainConfig
        from test_explain_fixtures import add_fruits

        settings = get_settings()
        init_db(settings)
        per_class = max(8, args.images // 2 + 4)
        add_fruits(settings, "bench-real", per_class=per_class, size=(96, 72))
        (run_id,) = create_runs(ExperimentRequest(
            data=DataSpec(mode="real"), train=TrainConfig(epochs=1, image_size=args.size, seed=0)),
            settings=settings)
        execute_run(run_id, settings)
        image_ids = list(range(1, args.images + 1))
        print(f"{args.images} images, {args.size}x{args.size} input, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
        print(f"{'method':<22}{'naive s/img':>12}{'first s/img':>12}{'cached s/img':>13}"
              f"{'naive/first':>12}{'naive/cached':>13}")
        for method in dict.fromkeys(args.methods):  # a repeated method would time cache hits
            naive_explain(run_id, image_ids[0], method, settings)  # warm up
            started = time.perf_counter()
            for image_id in image_ids:
                naive_explain(run_id, image_id, method, settings)
            naive = (time.perf_counter() - started) / len(image_ids)

            config = AttributionConfig(method=method, baseline="black")  # the naive side's baseline
            run = load_run(run_id, settings)
            # Warm up (engines, captum, a first cache write) on an image outside the timed set.
            explain(run, subject_from_image_id(len(image_ids) + 1, settings), config, settings=settings)
            timings = []
            for _visit in range(2):
                started = time.perf_counter()
                for image_id in image_ids:
                    explain(load_run(run_id, settings), subject_from_image_id(image_id, settings),
                            config, settings=settings)
                timings.append((time.perf_counter() - started) / len(image_ids))
            first, cached = timings
            print(f"{method:<22}{naive:>12.4f}{first:>12.4f}{cached:>13.4f}"
                  f"{naive / first:>11.1f}x{naive / cached:>12.1f}x")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
