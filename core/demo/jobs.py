"""The ``demo`` job: the Home page's "Build the demo" runs ``build_demo`` in the worker, so
the page never waits for the drawing, the import and the model (the CLI runs it in the
foreground). Resumable for free: building the demo again adds nothing twice."""

from __future__ import annotations

from typing import Any

from core.config import Settings
from core.jobs import ACTIVE_STATUSES, JobContext, register_handler, submit

KIND = "demo"
STEPS = 4  # the messages build_demo reports: draw and import, training, the model, the jobs


def active_build_job(settings: Settings | None = None) -> int | None:
    """The id of a demo build that is queued or running, if any."""
    from core.demo.build import demo_job_ids

    for job_id, (kind, status) in sorted(demo_job_ids(settings).items()):
        if kind == KIND and status in ACTIVE_STATUSES:
            return job_id
    return None


def submit_demo_build(*, seed: int = 0, created_by: str | None = None,
                      settings: Settings | None = None) -> int:
    """Queue the demo's build (once: a second click finds the queued one)."""
    existing = active_build_job(settings)
    if existing is not None:
        return existing
    return submit(KIND, {"demo": True, "seed": int(seed)},
                  title="Build the demo: drawn fruit, the demo model and three jobs",
                  created_by=created_by, total=STEPS, unit="steps", settings=settings)


@register_handler(KIND)
def run_demo_build(ctx: JobContext) -> dict[str, Any]:
    from core.demo.build import build_demo

    done = 0

    def progress(message: str) -> None:
        nonlocal done
        ctx.progress(done, STEPS, message, force=True)  # also where a cancel is noticed
        ctx.log(message)
        done += 1
    report = build_demo(ctx.settings, seed=int(ctx.params.get("seed", 0)),
                        created_by=ctx.created_by, progress=progress)
    return report.to_dict()
