"""``generate`` and ``models``: make synthetic images from the command line, list models.

``generate`` runs in the foreground with a progress bar (the job is still a DB row, so the
dashboard shows it live). Under ``accelerate launch -m core generate ...`` every process
takes its share of the job's batches (accelerate's ``PartialState``) on its own GPU, all
writing to the same image store and database.
"""

from __future__ import annotations

import argparse
from typing import Any

from core.cli import CliError, emit, print_json
from core.jobs import JobContext


def register(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser(
        "generate", help="generate synthetic images per class with a diffusion model",
        description="Generate images per class and add them to the index. Runs in the "
                    "foreground; under `accelerate launch -m core generate ...` the images "
                    "are split across the processes (GPUs).")
    gen.add_argument("--model", help="Hugging Face id, preset key (sd15, sd-turbo, sdxl-turbo, "
                                     "flux-schnell) or a local diffusers folder "
                                     "(default: SYNTHLAB_DEFAULT_MODEL)")
    gen.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME",
                     help="a class to generate (repeatable); created if it does not exist")
    gen.add_argument("--per-class", type=int, help="images per class")
    gen.add_argument("--steps", type=int, help="denoising steps (default: the model's preset)")
    gen.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    gen.add_argument("--size", type=int, help="width and height in pixels (multiple of 8)")
    gen.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    gen.add_argument("--batch-size", type=int, help="images per pipeline call")
    gen.add_argument("--scheduler", default="default", help="default, euler, euler_a, ddim, "
                                                            "dpm++, unipc, pndm")
    gen.add_argument("--prompt-template", help="template for every class, e.g. "
                                               "'a photo of {a_name}, {background}' ({a_name}: the name with its article)")
    gen.add_argument("--negative-prompt", help="negative prompt for every class")
    gen.add_argument("--dataset", help="dataset name (default generated-job-<id>)")
    gen.add_argument("--extend", type=int, metavar="JOB_ID",
                     help="make --per-class more images of each class of this earlier job")
    gen.add_argument("--queue", action="store_true",
                     help="queue the job for the background worker instead of running it here")
    gen.add_argument("--user", default="cli", help="recorded as the job's creator")
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    gen.set_defaults(func=_generate)

    models = subparsers.add_parser("models", help="list model presets and which are on this machine")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.add_argument("--add", metavar="SOURCE",
                        help="add a Hub id (owner/name) or a diffusers folder to everyone's list")
    models.add_argument("--remove", metavar="SOURCE",
                        help="take a user-added model off the list (its files stay)")
    models.add_argument("--user", default="cli", help="recorded in the audit log")
    models.set_defaults(func=_models)


def _config_from_args(args: argparse.Namespace, settings: Any):  # noqa: ANN202
    from core.generation.generator import GenerationConfig, GenerationError
    from core.generation.jobs import extension_config

    if args.per_class is None:
        raise CliError("--per-class is required")
    try:
        if args.extend is not None:
            return extension_config(args.extend, args.per_class, settings)
        if not args.model and not settings.default_model:
            raise CliError("--model is required (see `python -m core models`)")
        if not args.classes:
            raise CliError("give at least one --class")
        config = GenerationConfig(
            model=args.model or settings.default_model, classes=args.classes,
            per_class=args.per_class, steps=args.steps,
            guidance=args.guidance, size=args.size, seed=args.seed,
            batch_size=args.batch_size or settings.generation_batch_size,
            scheduler=args.scheduler, dataset_name=args.dataset,
            prompt_template=args.prompt_template, negative_prompt=args.negative_prompt)
        config.validate()
        return config
    except (GenerationError, ValueError) as exc:
        raise CliError(str(exc)) from exc


def _generate(args: argparse.Namespace) -> int:
    from core.config import get_settings
    from core.db.engine import init_db
    from core.generation.generator import GenerationError
    from core.generation.jobs import create_running_job, job_title, submit_generation
    from core.generation.loading import ModelNotAvailable, ModelLoadError
    from core.generation.prompts import PromptError

    settings = get_settings()
    init_db(settings)
    config = _config_from_args(args, settings)
    state = _partial_state()
    is_main = state is None or state.is_main_process
    job_id = None
    try:
        if args.queue:
            job_id = submit_generation(config, created_by=args.user, settings=settings)
            emit({"job_id": job_id, "status": "queued", "total": config.total}, args.json,
                 f"queued job {job_id} ({config.total} images); a worker will run it")
            return 0
        if is_main:
            title = f"{job_title(config)} (extends #{args.extend})" if args.extend else None
            job_id = create_running_job(config, created_by=args.user, title=title,
                                        settings=settings)
    except (ModelNotAvailable, ModelLoadError, GenerationError, PromptError) as exc:
        raise CliError(str(exc)) from exc
    if state is not None and state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        job_id = broadcast_object_list([job_id])[0]
    return _run_foreground(job_id, config, settings, state, args)


def _partial_state():  # noqa: ANN202 - accelerate.PartialState | None
    """accelerate's process state when launched by ``accelerate launch``, else None."""
    import os

    if "ACCELERATE_PROCESS_ID" not in os.environ and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    # Without CUDA, accelerate only forms a process group when told it is on CPUs (gloo).
    return PartialState(cpu=not torch.cuda.is_available())


def _run_foreground(job_id: int, config: Any, settings: Any, state: Any,
                    args: argparse.Namespace) -> int:
    from core.generation.generator import GenerationError, Generator
    from core.generation.jobs import finish_foreground, heartbeat_while_running, job_image_ids
    from core.generation.loading import ModelLoadError, ModelNotAvailable, load_pipeline
    from core.jobs import JobCancelled, get_job, worker_identity

    is_main = state is None or state.is_main_process
    reporter = _ProgressContext(job_id=job_id, kind="generate", params=config.to_params(),
                                settings=settings, worker_id=worker_identity(),
                                created_by=args.user)
    reporter.show_bar = is_main and not args.json
    error: BaseException | None = None
    generator = Generator(config, settings, job_id=job_id, created_by=args.user)
    try:
        with heartbeat_while_running(job_id, settings):
            device = str(state.device) if state is not None and state.num_processes > 1 else None
            generator.use_pipeline(load_pipeline(config.model, settings, device=device,
                                                 scheduler=config.scheduler))
            batches = generator.pending_batches()
            if state is not None and state.num_processes > 1:
                # Every process must plan from the same stored state: none starts before all
                # have listed the pending batches (and the dataset exists, made once).
                if is_main:
                    generator.ensure_dataset()
                state.wait_for_everyone()
                # Whole batches per process keep each image's batch (and pixels) as planned.
                with state.split_between_processes(batches) as mine:
                    reporter.log(f"process {state.process_index + 1} of {state.num_processes} "
                                 f"({state.device}): {len(mine)} of {len(batches)} batches")
                    generator.run(reporter, batches=list(mine))
                state.wait_for_everyone()
            else:
                generator.run(reporter, batches=batches)
    except BaseException as exc:  # noqa: BLE001 - recorded on the job, then reported
        error = exc
    finally:
        reporter.close()
    if not is_main:
        if error is not None and not isinstance(error, (KeyboardInterrupt, JobCancelled)):
            raise CliError(f"{type(error).__name__}: {error}")
        return 0
    image_ids = job_image_ids(job_id, settings)
    result = {"image_ids": image_ids, "images": len(image_ids), "dataset": generator.dataset_name()}
    status = finish_foreground(job_id, settings, error=error, result=result)
    job = get_job(job_id, settings)
    payload = {"job_id": job_id, "status": status, "dataset": generator.dataset_name(),
               "images": len(image_ids), "image_ids": image_ids, "error": job.error if job else None}
    if isinstance(error, (ModelNotAvailable, ModelLoadError, GenerationError)):
        raise CliError(str(error))
    if isinstance(error, KeyboardInterrupt):
        raise error
    emit(payload, args.json, f"job {job_id}: {status}, {len(image_ids)} images in dataset "
                             f"{generator.dataset_name()!r}" + (f" ({job.error})" if job and job.error else ""))
    return 0 if status == "done" else 1


class _ProgressContext(JobContext):
    """A ``JobContext`` that also draws a tqdm bar in the terminal."""

    show_bar: bool = False
    _bar: Any = None

    def progress(self, done: int, total: int | None = None, message: str | None = None,
                 *, force: bool = False) -> None:
        if self.show_bar:
            from tqdm import tqdm

            if self._bar is None and total:
                self._bar = tqdm(total=total, unit="img", desc=f"job {self.job_id}")
            if self._bar is not None:
                self._bar.n = done
                self._bar.refresh()
        super().progress(done, total, message, force=force)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _models(args: argparse.Namespace) -> int:
    from core.config import get_settings
    from core.db.engine import init_db
    from core.generation.registry import add_custom_model, list_models, remove_custom_model

    settings = get_settings()
    init_db(settings)
    if args.add:
        try:
            add_custom_model(args.add, added_by=args.user, settings=settings)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        print(f"added {args.add.strip()} to the model list")
        return 0
    if args.remove:
        if not remove_custom_model(args.remove, by=args.user, settings=settings):
            raise CliError(f"{args.remove.strip()} is not a user-added model (see `python -m core "
                           "models`: presets, the Hugging Face cache and the models folder are "
                           "listed by themselves)")
        print(f"removed {args.remove.strip()} from the model list (its files are untouched)")
        return 0
    entries = list_models(settings)
    if args.json:
        print_json([{"source": e.source, "label": e.label, "kind": e.kind,
                     "available": e.available, "location": e.location,
                     "how_to_get": e.how_to_get, "defaults": e.defaults()} for e in entries])
        return 0
    for e in entries:
        mark = "available" if e.available else "missing  "
        print(f"{mark}  {e.label:<22} {e.source}")
        if not e.available and e.how_to_get:
            print(f"           get it: {e.how_to_get}")
    if not any(e.available for e in entries):
        print("\nNo model on this machine yet. The quickest start: hf download stabilityai/sd-turbo")
    return 0
