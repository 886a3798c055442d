"""The ``quiz-judge`` job: train the machine judge and judge the rounds players answered.

Cross-fitting keeps it honest: images are split into folds by a hash of their pixels, and
each image is scored by the judge trained on the other folds, so the judge never decides
a round from an image it learned from. Each fold's weights are saved as soon as they are
trained, so an interrupted job resumes with the folds it already has.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Settings, get_settings
from core.db.engine import run_write, session_scope
from core.db.models import SOURCE_REAL, SOURCE_SYNTHETIC, Image
from core.device import detect_device
from core.jobs import JobContext, register_handler, submit
from core.quiz.judge import JudgeConfig, RealSyntheticJudge, pixels_from_image
from core.quiz.models import (MODE_SINGLE, VIEW_MODEL, VIEW_ORIGINAL, QuizAnswer, QuizJudgeRun,
                              QuizJudgeVerdict, QuizRound, QuizRoundImage)
from core.quiz.answers import SKIPPED, judge_answer
from core.quiz.delivery import image_seed
from core.quiz.serving import content_px, model_view_status, render_pixels
from core.store import ImageStore, atomic_write

JOB_KIND = "quiz-judge"
# Training renderings use this fixed preprocessing seed; rounds use their recorded seeds.
TRAINING_RENDER_SEED = 0
MAX_TRAINING_VIEWS = 3


def submit_judge(config: JudgeConfig | None = None, *, created_by: str | None = None,
                 settings: Settings | None = None) -> int:
    """Queue a judge training; it judges every round answered up to now."""
    settings = settings or get_settings()
    config = config or JudgeConfig()
    with session_scope(settings) as session:
        last_answer = session.scalar(select(QuizAnswer.id).order_by(QuizAnswer.id.desc()).limit(1))
    params = {"config": config.to_dict(), "max_answer_id": last_answer or 0}
    return submit(JOB_KIND, params, title="Train the quiz's machine judge", created_by=created_by,
                  total=config.folds * config.epochs + 1, unit="steps", settings=settings)


@dataclass
class _PoolImage:
    image_id: int
    sha256: str
    path: str
    source: str


@dataclass
class _RoundToJudge:
    round_id: int
    mode: str
    view: str
    seed: int
    px: int
    pipelines: dict[str, Any] | None
    images: list[tuple[int, int, bool]]  # (position, image id, is real)


def _fold(sha256: str, folds: int, seed: int) -> int:
    return int(hashlib.sha256(f"{seed}:{sha256}".encode()).hexdigest()[:8], 16) % folds


def _load_inputs(settings: Settings, max_answer_id: int) -> tuple[list[_PoolImage], list[_RoundToJudge]]:
    with session_scope(settings) as session:
        pool = [_PoolImage(*row) for row in session.execute(
            select(Image.id, Image.sha256, Image.path, Image.source)
            .where(Image.excluded.is_(False), Image.source.in_((SOURCE_REAL, SOURCE_SYNTHETIC)))
            .order_by(Image.id))]
        rounds = {}
        for rnd in session.scalars(
                select(QuizRound).join(QuizAnswer, QuizAnswer.round_id == QuizRound.id)
                .where(QuizAnswer.id <= max_answer_id,
                       QuizAnswer.guess.is_(None) | (QuizAnswer.guess != SKIPPED))
                .order_by(QuizRound.id)):
            # Skipped rounds have no human answer to compare with: not judged.
            rounds[rnd.id] = _RoundToJudge(rnd.id, rnd.mode, rnd.view, rnd.seed, rnd.served_px,
                                           rnd.pipelines, [])
        for round_id, position, image_id, is_real in session.execute(
                select(QuizRoundImage.round_id, QuizRoundImage.position, QuizRoundImage.image_id,
                       QuizRoundImage.is_real).where(QuizRoundImage.round_id.in_(list(rounds)))):
            rounds[round_id].images.append((position, image_id, is_real))
    return pool, list(rounds.values())


def _training_sample(pool: list[_PoolImage], config: JudgeConfig) -> list[_PoolImage]:
    rng = np.random.default_rng(config.random_state)
    chosen = []
    for source in (SOURCE_REAL, SOURCE_SYNTHETIC):
        items = [p for p in pool if p.source == source]
        if len(items) > config.max_train_per_source:
            keep = rng.choice(len(items), config.max_train_per_source, replace=False)
            items = [items[i] for i in sorted(keep)]
        chosen.extend(items)
    return chosen


@register_handler(JOB_KIND)
def run_judge(ctx: JobContext) -> dict[str, Any]:
    settings = ctx.settings
    known = {f.name for f in fields(JudgeConfig)}
    config = JudgeConfig(**{k: v for k, v in (ctx.params.get("config") or {}).items() if k in known})
    with session_scope(settings) as session:
        done = session.scalar(select(QuizJudgeRun).where(QuizJudgeRun.job_id == ctx.job_id))
        if done is not None:  # resumed after the verdicts were already saved
            return {"run_id": done.id, "accuracy": done.accuracy, "rounds": done.n_rounds}
    pool, rounds = _load_inputs(settings, int(ctx.params.get("max_answer_id") or 0))
    by_id = {p.image_id: p for p in pool}
    store = ImageStore(settings)
    # The judge learns every way the rounds showed images: originals, and each
    # preprocessing setting that was played (newest few).
    views: list[tuple[str, dict[str, Any] | None]] = [(VIEW_ORIGINAL, None)]
    if model_view_status() is None:
        for rnd in reversed(rounds):
            if rnd.view == VIEW_MODEL and (VIEW_MODEL, rnd.pipelines) not in views \
                    and len(views) <= MAX_TRAINING_VIEWS:
                views.append((VIEW_MODEL, rnd.pipelines))
    sample = _training_sample(pool, config)
    ctx.log(f"{len(sample)} images to learn from in {len(views)} view(s), "
            f"{len(rounds)} answered rounds to judge, {config.folds} folds")

    def render(image: _PoolImage, view: str, seed: int, px: int,
               pipelines: dict[str, Any] | None) -> np.ndarray:
        # The served picture before its sharp enlargement and lossless encoding: the
        # same pixels the players see, without the cost of writing them.
        picture = render_pixels(store, image.path, image.source, view, seed,
                                content_px(view, px, settings), settings, pipelines)
        return pixels_from_image(picture, config.image_px)

    pixels, labels, folds = [], [], []
    for index, image in enumerate(sample):
        for view, pipelines in views:
            pixels.append(render(image, view, TRAINING_RENDER_SEED, settings.quiz_image_px,
                                 pipelines))
            labels.append(1 if image.source == SOURCE_REAL else 0)
            folds.append(_fold(image.sha256, config.folds, config.random_state))
        if index % 50 == 0:
            ctx.check_cancelled()
    X, y, fold_of = np.stack(pixels), np.asarray(labels), np.asarray(folds)
    if len(set(labels)) < 2:
        raise ValueError("the judge needs both real and synthetic images; import or generate some")

    device = detect_device(settings).torch_device
    run_folder = settings.runs_dir / "quiz-judge" / f"job-{ctx.job_id}"
    judges: list[RealSyntheticJudge] = []
    out_of_fold = np.full(len(y), np.nan)
    for k in range(config.folds):
        train = fold_of != k
        if len(set(y[train].tolist())) < 2:
            raise ValueError(f"fold {k}: too few images of one kind to train on; add images or "
                             "use fewer folds")
        checkpoint = run_folder / f"fold-{k}.safetensors"
        judge = RealSyntheticJudge(config, device=device)
        if checkpoint.is_file():
            judge.load_state_bytes(checkpoint.read_bytes())
            ctx.log(f"fold {k + 1}/{config.folds}: loaded the weights saved before the interruption")
        else:
            base = k * config.epochs
            judge.fit(X[train], y[train], progress=lambda e, total, base=base: ctx.progress(
                base + e, message=f"fold {k + 1}/{config.folds}, epoch {e}/{total}"))
            atomic_write(checkpoint, judge.state_bytes(), settings.tmp_dir)
        if (~train).any():
            out_of_fold[~train] = judge.predict_proba(X[~train])[:, 1]
        judges.append(judge)
    scored = ~np.isnan(out_of_fold)
    image_accuracy = float(((out_of_fold[scored] >= 0.5) == (y[scored] == 1)).mean()) if scored.any() else None

    verdicts = []
    for rnd in rounds:
        probabilities = []
        for position, image_id, _is_real in sorted(rnd.images):
            image = by_id.get(image_id)
            if image is None:  # excluded since the round was played
                break
            data = render(image, rnd.view, image_seed(rnd.seed, position), rnd.px, rnd.pipelines)
            judge = judges[_fold(image.sha256, config.folds, config.random_state)]
            probabilities.append(float(judge.predict_proba(data[None])[0, 1]))
        else:
            truth = [(position, is_real) for position, _i, is_real in sorted(rnd.images)]
            if rnd.mode == MODE_SINGLE:
                guess = "real" if probabilities[0] >= 0.5 else "synthetic"
                correct, fooled = judge_answer(rnd.mode, truth, guess=guess)
                verdicts.append((rnd.round_id, None, guess, correct, fooled))
            else:
                position = truth[int(np.argmax(probabilities))][0]
                correct, fooled = judge_answer(rnd.mode, truth, position=position)
                verdicts.append((rnd.round_id, position, None, correct, fooled))
    accuracy = float(np.mean([v[3] for v in verdicts])) if verdicts else None

    def write(session: Session) -> int:
        run = QuizJudgeRun(job_id=ctx.job_id, config=config.to_dict(), n_train_images=len(sample),
                           n_rounds=len(verdicts), accuracy=accuracy)
        session.add(run)
        session.flush()
        session.add_all([QuizJudgeVerdict(run_id=run.id, round_id=round_id, chosen_position=position,
                                          guess=guess, correct=correct, fooled=fooled)
                         for round_id, position, guess, correct, fooled in verdicts])
        return run.id

    run_id = run_write(write, settings)
    ctx.progress(config.folds * config.epochs + 1, message="done", force=True)
    ctx.log(f"judge accuracy on {len(verdicts)} answered rounds: "
            + ("-" if accuracy is None else f"{accuracy:.1%}")
            + (f"; held-out image accuracy {image_accuracy:.1%}" if image_accuracy is not None else ""))
    return {"run_id": run_id, "accuracy": accuracy, "rounds": len(verdicts),
            "image_accuracy": image_accuracy, "train_images": len(sample)}
