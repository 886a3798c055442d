"""An explain job's attribution maps computed in batches on Ray (``execution_backend = ray``).

The worker does what needs the store and the database: it prepares each image's input
(the run's pipeline), predicts, resolves the target and looks in the attribution cache.
Only the maps still missing go to the cluster, in batches: each Ray task gets the run's
model (sent once through the object store) and the batch's input pixels and targets,
runs captum there (on a GPU when the task has one) and returns the arrays. The worker
stores each batch's maps as they arrive, with the local path's own ``_store``, so a
resumed job finds them in the cache.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from core.cluster import connect, worker_resources
from core.explain.attribution import AttributionConfig, attribute
from core.explain.service import (ExplainError, LoadedRun, _cached_map, _explanation, _store,
                                  attributions_dir, cache_key, prepare_input, resolve_target,
                                  subject_from_image_id)
from core.jobs import JobContext

BATCH_IMAGES = 16


def attribute_batch(model: Any, num_classes: int, config: AttributionConfig,  # noqa: ANN401
                    items: list[tuple[np.ndarray, int]]) -> list[np.ndarray]:
    """The Ray task: one attribution map per (pixels, target), on this host's best device."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device)
    return [attribute(model, pixels, target, config, prepared=True, num_classes=num_classes)
            for pixels, target in items]


def explain_on_ray(ctx: JobContext, run: LoadedRun, image_ids: list[int],
                   config: AttributionConfig, *, target: str, input_mode: str,
                   input_seed: int) -> dict[str, int]:
    """Attribution maps of ``image_ids``: cache hits here, the rest on the cluster."""
    from core.explain.attribution import predict_probabilities

    settings = ctx.settings
    folder = attributions_dir(settings)
    total = len(image_ids)
    counts = {"computed": 0, "cached": 0, "failed": 0}
    todo: list[tuple[Any, Any, np.ndarray, int, int, str]] = []
    for image_id in image_ids:
        try:
            subject = subject_from_image_id(image_id, settings)
            prepared = prepare_input(run, subject, input_mode=input_mode, input_seed=input_seed)
            probabilities = predict_probabilities(run.model, prepared.pixels)
            predicted = int(np.argmax(probabilities))
            target_index = resolve_target(run, subject, target, predicted)
        except ExplainError as exc:
            counts["failed"] += 1
            ctx.log(f"image {image_id}: {exc}", level="warning")
            continue
        key = cache_key(config, target_index, input_mode, input_seed)
        hit = _cached_map(run.run_id, subject.sha256, config.method, key, folder, settings)
        if hit is not None and hit[1].shape == prepared.pixels.shape[:2]:
            counts["cached"] += 1
        else:
            todo.append((subject, prepared, probabilities, predicted, target_index, key))
    done = counts["cached"] + counts["failed"]
    ctx.progress(done, total, f"{done}/{total} images ({counts['cached']} from the cache)",
                 force=True)
    if not todo:
        return counts
    ray = connect(settings)
    task = ray.remote(attribute_batch).options(**worker_resources(ray), max_retries=3)
    model_ref = ray.put(run.model.cpu())
    batches = [todo[i:i + BATCH_IMAGES] for i in range(0, len(todo), BATCH_IMAGES)]
    pending = {task.remote(model_ref, len(run.class_names), config,
                           [(item[1].pixels, item[4]) for item in batch]): batch
               for batch in batches}
    ctx.log(f"Ray: {len(todo)} map(s) in {len(batches)} batch(es)")
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            ctx.check_cancelled()
            for ref in ready:
                batch = pending.pop(ref)
                started = time.perf_counter()
                maps = ray.get(ref)
                for (subject, prepared, probabilities, predicted, target_index, key), attribution \
                        in zip(batch, maps):
                    result = _explanation(run, subject, prepared, config, probabilities,
                                          predicted, target_index, attribution, cached=False,
                                          seconds=time.perf_counter() - started)
                    _store(result, key, input_mode, input_seed, folder, settings)
                counts["computed"] += len(batch)
                done += len(batch)
                ctx.progress(done, total, f"{done}/{total} images "
                                          f"({counts['cached']} from the cache)")
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return counts
