"""The ``explain`` job: attribution maps for a set of images, computed in the worker.

Resumable for free: every finished map is in the attribution cache, so a resumed job
finds the ones already done and only computes the rest.
"""

from __future__ import annotations

import time
from typing import Any

from core.config import Settings, get_settings
from core.explain.attribution import AttributionConfig, AttributionError
from core.explain.service import (INPUT_MODES, TARGET_MODES, ExplainError, explain, load_run,
                                  subject_from_image_id)
from core.explain.summary import margin_summary
from core.jobs import DONE, FINAL_STATUSES, JobContext, get_job, register_handler, submit

JOB_KIND = "explain"
MAX_IMAGES_PER_JOB = 5000
AFTER_JOB_POLL_SECONDS = 1.0


def submit_explain_job(run_id: int, image_ids: list[int], config: AttributionConfig, *,
                       target: str = "predicted", input_mode: str = "by-source", input_seed: int = 0,
                       created_by: str | None = None, title: str | None = None,
                       settings: Settings | None = None, after_job: int | None = None) -> int:
    """Queue attributions of ``image_ids`` with run ``run_id``; returns the job id.

    ``target``: the predicted or the true class, or one of the run's classes by name (the
    Explain page's comparison runs as such a job, with the page's own target).
    ``after_job``: the id of the job that trains the run (queued, not finished yet). The
    explain job then waits for it when it starts, and checks the run's model only then.
    """
    settings = settings or get_settings()
    ids = list(dict.fromkeys(int(i) for i in image_ids))
    if not ids:
        raise ExplainError("choose at least one image to explain")
    if len(ids) > MAX_IMAGES_PER_JOB:
        raise ExplainError(f"at most {MAX_IMAGES_PER_JOB} images per job (got {len(ids)}); split the set")
    if input_mode not in INPUT_MODES:
        raise ExplainError(f"input mode must be one of {INPUT_MODES}")
    if after_job is None:
        run = load_run(run_id, settings)  # fails now, with a clear message, if the run has no model
        if target not in TARGET_MODES and target not in run.class_names:
            raise ExplainError(f"a batch job explains the {' or the '.join(TARGET_MODES)} class or "
                               f"one of the run's classes ({', '.join(run.class_names)}), not {target!r}")
    elif get_job(after_job, settings) is None:
        raise ExplainError(f"no job {after_job} to wait for")
    elif target not in TARGET_MODES:
        raise ExplainError(f"a job that waits for its run explains the {' or the '.join(TARGET_MODES)} "
                           f"class, not {target!r}")
    params = {"run_id": int(run_id), "image_ids": ids, "config": config.to_dict(),
              "target": target, "input_mode": input_mode, "input_seed": int(input_seed)}
    if after_job is not None:
        params["after_job"] = int(after_job)
    title = title or f"Explain {len(ids)} images of run #{run_id} ({config.describe()})"
    return submit(JOB_KIND, params, title=title, created_by=created_by, total=len(ids),
                  unit="images", settings=settings)


@register_handler(JOB_KIND)
def run_explain_job(ctx: JobContext) -> dict[str, Any]:
    params = ctx.params
    try:
        config = AttributionConfig.from_dict(params.get("config") or {})
    except AttributionError as exc:
        raise ExplainError(f"bad attribution settings: {exc}") from exc
    if params.get("after_job") is not None:
        _wait_for_job(ctx, int(params["after_job"]), total=len(params.get("image_ids", [])))
    from core.device import detect_device

    device = detect_device(ctx.settings)
    run = load_run(int(params["run_id"]), ctx.settings, device=device.torch_device)
    ctx.log(f"explaining on {device.label}")
    image_ids = [int(i) for i in params.get("image_ids", [])]
    total = len(image_ids)
    computed = cached = failed = 0
    ctx.progress(0, total, f"explaining {total} images with {config.describe()}", force=True)
    from core.cluster import uses_ray

    if uses_ray(ctx.settings):
        from core.explain.distributed import explain_on_ray

        counts = explain_on_ray(ctx, run, image_ids, config,
                                target=params.get("target", "predicted"),
                                input_mode=params.get("input_mode", "by-source"),
                                input_seed=int(params.get("input_seed", 0)))
        computed, cached, failed = counts["computed"], counts["cached"], counts["failed"]
        image_ids = []  # all done on the cluster
    for done, image_id in enumerate(image_ids, start=1):
        try:
            subject = subject_from_image_id(image_id, ctx.settings)
            result = explain(run, subject, config, target=params.get("target", "predicted"),
                             input_mode=params.get("input_mode", "by-source"),
                             input_seed=int(params.get("input_seed", 0)), settings=ctx.settings)
        except ExplainError as exc:
            failed += 1
            ctx.log(f"image {image_id}: {exc}", level="warning")
        else:
            cached += int(result.cached)
            computed += int(not result.cached)
        ctx.progress(done, total, f"{done}/{total} images ({cached} from the cache)")
    summary = margin_summary(run.run_id, config=config, settings=ctx.settings)
    ctx.log(f"{computed} computed, {cached} from the cache, {failed} failed")
    return {"run_id": run.run_id, "method": config.method, "computed": computed,
            "cached": cached, "failed": failed, "margins": summary}


def _wait_for_job(ctx: JobContext, job_id: int, *, total: int) -> None:
    """Wait (beating, cancellable) until job ``job_id`` has finished; it must be done."""
    announced = False
    while True:
        job = get_job(job_id, ctx.settings)
        if job is None:
            raise ExplainError(f"job {job_id}, which trains the model to explain, no longer exists")
        if job.status in FINAL_STATUSES:
            break
        if not announced:
            ctx.log(f"waiting for job {job_id} ({job.title}) to finish")
            announced = True
        ctx.progress(0, total, f"waiting for job {job_id} to finish", force=True)
        time.sleep(AFTER_JOB_POLL_SECONDS)
    if job.status != DONE:
        raise ExplainError(f"job {job_id}, which trains the model to explain, ended {job.status}")
