"""Answering a round once, skipping it, and the reveal that follows an answer."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.engine import run_write, session_scope
from core.db.models import Dataset, Image, utcnow
from core.quiz.choosing import model_key
from core.quiz.errors import AlreadyAnswered, QuizError, check_player_name
from core.quiz.models import MODE_SINGLE, QuizAnswer, QuizRound

GUESSES = ("real", "synthetic")
# A skip is stored as an answer row with this guess (so the round is closed and never
# dealt again as "open"), but it is neither right nor wrong: statistics leave it out.
SKIPPED = "skip"


@dataclass
class RevealedImage:
    position: int
    token: str
    is_real: bool
    dataset: str
    prompt: str | None
    model: str | None
    seed: int | None


@dataclass
class Reveal:
    round_token: str
    correct: bool
    fooled: bool | None
    real_position: int | None  # None in a single round showing a synthetic image
    chosen_position: int | None
    guess: str | None
    seconds_to_answer: float
    images: list[RevealedImage]


def _reveal(session: Session, rnd: QuizRound, answer: QuizAnswer) -> Reveal:
    images = []
    real_position = None
    for round_image in sorted(rnd.images, key=lambda i: i.position):
        if round_image.is_real:
            real_position = round_image.position
        image = session.get(Image, round_image.image_id) if round_image.image_id else None
        if image is None:  # deleted from the index since; the answer still counts
            images.append(RevealedImage(position=round_image.position, token=round_image.token,
                                        is_real=round_image.is_real, dataset="(deleted)",
                                        prompt=None, model=None if round_image.is_real else rnd.model,
                                        seed=None))
            continue
        dataset = session.get(Dataset, image.dataset_id)
        images.append(RevealedImage(
            position=round_image.position, token=round_image.token, is_real=round_image.is_real,
            dataset=dataset.name if dataset else "",
            prompt=None if round_image.is_real else image.prompt,
            model=None if round_image.is_real else model_key(image.model),
            seed=None if round_image.is_real else image.seed))
    return Reveal(round_token=rnd.token, correct=answer.correct, fooled=answer.fooled,
                  real_position=real_position, chosen_position=answer.chosen_position,
                  guess=answer.guess, seconds_to_answer=answer.seconds_to_answer, images=images)


def judge_answer(mode: str, images: list[tuple[int, bool]], *, position: int | None = None,
                 guess: str | None = None) -> tuple[bool, bool | None]:
    """(correct, fooled) of an answer; ``images`` are (position, is_real). Used for humans
    and for the machine judge alike."""
    if mode == MODE_SINGLE:
        if guess not in GUESSES:
            raise QuizError("answer 'real' or 'synthetic'")
        is_real = images[0][1]
        correct = (guess == "real") == is_real
        return correct, (None if is_real else guess == "real")
    positions = {p: real for p, real in images}
    if position not in positions:
        raise QuizError(f"choose one of the positions {sorted(positions)}")
    correct = positions[position]
    return correct, not correct


def _open_round_for(session: Session, player: str, round_token: str) -> QuizRound:
    """The player's round, still unanswered and complete; else ``QuizError``."""
    rnd = session.scalar(select(QuizRound).where(QuizRound.token == round_token))
    if rnd is None:
        raise QuizError("unknown round")
    if rnd.player != player:
        raise QuizError("this round was dealt to another player")
    if session.scalar(select(QuizAnswer.id).where(QuizAnswer.round_id == rnd.id)) is not None:
        raise AlreadyAnswered("this round is already answered")
    return rnd


def answer_round(player: str, round_token: str, *, position: int | None = None,
                 guess: str | None = None, settings: Settings | None = None) -> Reveal:
    """Record the player's answer once and reveal the round; raises ``AlreadyAnswered``."""
    player = check_player_name(player)

    def write(session: Session) -> Reveal:
        rnd = _open_round_for(session, player, round_token)
        if any(img.image_id is None for img in rnd.images):
            raise QuizError("an image of this round was deleted since it was dealt; deal a new round")
        correct, fooled = judge_answer(rnd.mode, [(i.position, i.is_real) for i in rnd.images],
                                       position=position, guess=guess)
        now = utcnow()
        answer = QuizAnswer(round_id=rnd.id, player=player,
                            chosen_position=None if rnd.mode == MODE_SINGLE else position,
                            guess=guess if rnd.mode == MODE_SINGLE else None,
                            correct=correct, fooled=fooled, answered_at=now,
                            seconds_to_answer=max(0.0, (now - rnd.created_at).total_seconds()))
        session.add(answer)
        session.flush()  # the unique round_id turns a lost race into IntegrityError here
        return _reveal(session, rnd, answer)

    try:
        return run_write(write, settings)
    except IntegrityError as exc:
        raise AlreadyAnswered("this round is already answered") from exc


def skip_round(player: str, round_token: str, settings: Settings | None = None) -> None:
    """Close the round unanswered: recorded (when, how long it was looked at), not scored,
    and nothing revealed. Raises ``AlreadyAnswered`` when it was answered or skipped."""
    player = check_player_name(player)

    def write(session: Session) -> None:
        rnd = _open_round_for(session, player, round_token)
        now = utcnow()
        session.add(QuizAnswer(round_id=rnd.id, player=player, chosen_position=None,
                               guess=SKIPPED, correct=False, fooled=None, answered_at=now,
                               seconds_to_answer=max(0.0, (now - rnd.created_at).total_seconds())))
        session.flush()

    try:
        run_write(write, settings)
    except IntegrityError as exc:
        raise AlreadyAnswered("this round is already answered") from exc


def reveal_round(round_token: str, settings: Settings | None = None) -> Reveal | None:
    """The reveal of an answered round (None while unanswered or when skipped: nothing leaks)."""
    with session_scope(settings) as session:
        rnd = session.scalar(select(QuizRound).where(QuizRound.token == round_token))
        if rnd is None:
            raise QuizError("unknown round")
        answer = session.scalar(select(QuizAnswer).where(QuizAnswer.round_id == rnd.id))
        if answer is None or answer.guess == SKIPPED:
            return None
        return _reveal(session, rnd, answer)
