"""The ``train`` job: executes a list of runs on the worker, one after another.

Params: ``{"run_ids": [...]}``. Resumable: finished runs are skipped, a half-trained run
continues from its last checkpoint. Progress counts training images (so the job panel's
rate is images per second); per-epoch history is written to the run row, which the
Train page reads for live curves.
"""

from __future__ import annotations

from typing import Any

from core.jobs import JobCancelled, JobContext, register_handler
from core.training.execution import STAGE_EVALUATING, execute_run, training_units
from core.training.experiments import get_run, mark_runs, plan_for_run
from core.training.models import RUN_CANCELLED, RUN_DONE, RUN_FAILED

JOB_KIND = "train"


def submit_training(run_ids: list[int], *, title: str, created_by: str | None = None,
                    settings: Any = None) -> int:
    from core.jobs import submit
    from core.training.experiments import attach_job

    # Progress counts images pushed through the model, every epoch over (training_units).
    job_id = submit(JOB_KIND, {"run_ids": list(run_ids)}, title=title, created_by=created_by,
                    unit="samples", settings=settings)
    attach_job(run_ids, job_id, settings)
    return job_id


def stage_text(stage: str) -> str:
    if stage == STAGE_EVALUATING:
        return "evaluating the trained model (validation, test sets, saving)"
    return stage


@register_handler(JOB_KIND)
def run_training_job(ctx: JobContext) -> dict[str, Any]:
    run_ids = [int(i) for i in ctx.params.get("run_ids", [])]
    if not run_ids:
        raise ValueError("a train job needs run_ids")
    units: dict[int, int] = {}
    plans: dict[int, Any] = {}
    for run_id in run_ids:
        run = get_run(run_id, ctx.settings)
        if run is None:
            raise ValueError(f"run {run_id} no longer exists")
        if run.status in (RUN_DONE, RUN_FAILED, RUN_CANCELLED):
            units[run_id] = 0
            continue
        plans[run_id] = plan_for_run(run, ctx.settings)
        units[run_id] = training_units(plans[run_id][1], plans[run_id][2])
    total = sum(units.values())
    done_units = 0
    results: dict[str, Any] = {}
    ctx.progress(0, total, f"{len(run_ids)} run(s)", force=True)
    from core.cluster import uses_ray

    if uses_ray(ctx.settings):
        return _run_on_ray(ctx, run_ids, units, total)
    for position, run_id in enumerate(run_ids):
        run = get_run(run_id, ctx.settings)
        if run is None or run.status in (RUN_FAILED, RUN_CANCELLED):
            continue
        if run.status != RUN_DONE:
            ctx.log(f"run {run_id} ({position + 1}/{len(run_ids)}): {run.name}")

            last_done = [done_units]

            def report(done: int, _total: int, name: str) -> None:
                last_done[0] = done
                ctx.progress(done, total, f"run {run_id}: {name}")

            def stage(name: str) -> None:
                # Seconds with no batch to count: the panel shows the stage, not "0:00:00 left".
                ctx.progress(last_done[0], total, f"run {run_id}: {stage_text(name)}", force=True)
                ctx.set_result({"runs": results, "stage": name})
                ctx.log(f"run {run_id}: {stage_text(name)}")
            try:
                execute_run(run_id, ctx.settings, on_progress=report, progress_offset=done_units,
                            progress_total=total, on_stage=stage, planned=plans.pop(run_id, None))
            except JobCancelled:
                mark_runs(run_ids[position:], RUN_CANCELLED, ctx.settings, error="cancelled")
                raise
            except Exception as exc:
                mark_runs([run_id], RUN_FAILED, ctx.settings, error=f"{type(exc).__name__}: {exc}")
                raise
            run = get_run(run_id, ctx.settings)
        done_units += units[run_id]
        real = (run.metrics or {}).get("real_test", {})
        results[str(run_id)] = {"accuracy": real.get("accuracy"), "f1_macro": real.get("f1"),
                                "f1_weighted": real.get("f1_weighted")}
        accuracy = real.get("accuracy")
        ctx.log(f"run {run_id} done: " + (f"real-test accuracy {accuracy:.1%}" if accuracy is not None
                                          else "no real test images to score it on"))
        ctx.set_result({"runs": results})
    ctx.progress(total, total, "done", force=True)
    return {"runs": results, "run_ids": run_ids}


def _run_on_ray(ctx: JobContext, run_ids: list[int], units: dict[int, int],
                total: int) -> dict[str, Any]:
    """All unfinished runs at once, as Ray tasks (core.training.distributed)."""
    from core.training.distributed import run_training_on_ray

    pending, done_units, results = [], 0, {}
    for run_id in run_ids:
        run = get_run(run_id, ctx.settings)
        if run is None or run.status in (RUN_FAILED, RUN_CANCELLED):
            continue
        if run.status == RUN_DONE:
            done_units += units[run_id]
            real = (run.metrics or {}).get("real_test", {})
            results[str(run_id)] = {"accuracy": real.get("accuracy"), "f1_macro": real.get("f1"),
                                    "f1_weighted": real.get("f1_weighted")}
        else:
            pending.append(run_id)
    if pending:
        results.update(run_training_on_ray(ctx, pending, done_units, total))
    ctx.progress(total, total, "done", force=True)
    return {"runs": {key: results[key] for key in map(str, run_ids) if key in results},
            "run_ids": run_ids}
