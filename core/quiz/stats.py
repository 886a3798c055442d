"""Scores, streaks, the leaderboard, and fool rates of humans and of the machine judge.

A player is *fooled* when they take a synthetic image for the real one (pair/quad: a wrong
pick; single: "real" said to a synthetic image). The fool rate is counted over rounds that
showed a synthetic image; a player guessing at random is fooled at the mode's chance rate
(pair 1/2, quad 3/4, single 1/2), shown beside every rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sqlalchemy import func, select

from core.config import Settings
from core.db.engine import session_scope
from core.db.models import ImageClass
from core.quiz.answers import SKIPPED
from core.quiz.models import (MODE_PAIR, MODE_QUAD, MODE_SINGLE, QuizAnswer, QuizJudgeRun,
                              QuizJudgeVerdict, QuizRound)

CHANCE_FOOL_RATE = {MODE_PAIR: 1 / 2, MODE_QUAD: 3 / 4, MODE_SINGLE: 1 / 2}
GROUPINGS = {"class": "class_name", "model": "model", "preprocessing": "view"}
ANSWER_COLUMNS = ["round_id", "player", "mode", "view", "class_name", "model", "correct", "fooled",
                  "seconds_to_answer", "answered_at"]


@dataclass
class PlayerScore:
    player: str
    answered: int
    correct: int
    streak: int  # current run of correct answers
    best_streak: int
    mean_seconds: float | None
    skipped: int = 0  # rounds skipped: recorded, never scored

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.answered if self.answered else None

    @property
    def score(self) -> int:
        return self.correct


def _streaks(results: list[bool]) -> tuple[int, int]:
    best = run = 0
    for correct in results:
        run = run + 1 if correct else 0
        best = max(best, run)
    return run, best


def answers_frame(settings: Settings | None = None, *, mode: str | None = None,
                  player: str | None = None) -> pd.DataFrame:
    """One row per answer, with what the round showed (oldest first); skips are left out."""
    with session_scope(settings) as session:
        query = (select(QuizAnswer.round_id, QuizAnswer.player, QuizRound.mode, QuizRound.view_label,
                        ImageClass.display_name, QuizRound.model, QuizAnswer.correct,
                        QuizAnswer.fooled, QuizAnswer.seconds_to_answer, QuizAnswer.answered_at)
                 .join(QuizRound, QuizRound.id == QuizAnswer.round_id)
                 .join(ImageClass, ImageClass.id == QuizRound.class_id)
                 .where(_not_skipped())
                 .order_by(QuizAnswer.id))
        if mode:
            query = query.where(QuizRound.mode == mode)
        if player is not None:
            query = query.where(QuizAnswer.player == player)
        rows = [tuple(r) for r in session.execute(query)]
    return pd.DataFrame(rows, columns=ANSWER_COLUMNS)


def _not_skipped():  # noqa: ANN202 - a SQLAlchemy condition
    return QuizAnswer.guess.is_(None) | (QuizAnswer.guess != SKIPPED)


def skips(settings: Settings | None = None) -> dict[str, int]:
    """Skipped rounds per player."""
    with session_scope(settings) as session:
        return dict(session.execute(select(QuizAnswer.player, func.count())
                                    .where(QuizAnswer.guess == SKIPPED)
                                    .group_by(QuizAnswer.player)).all())


def player_score(player: str, settings: Settings | None = None) -> PlayerScore:
    score = _score_of(player, answers_frame(settings, player=player))
    score.skipped = skips(settings).get(player, 0)
    return score


def _score_of(player: str, frame: pd.DataFrame) -> PlayerScore:
    results = [bool(x) for x in frame["correct"]]
    streak, best = _streaks(results)
    mean = float(frame["seconds_to_answer"].mean()) if len(frame) else None
    return PlayerScore(player=player, answered=len(results), correct=sum(results), streak=streak,
                       best_streak=best, mean_seconds=mean)


def leaderboard(settings: Settings | None = None, *, limit: int = 50) -> list[PlayerScore]:
    """Players by score (correct answers), then accuracy, then best streak."""
    frame = answers_frame(settings)
    skipped = skips(settings)
    scores = [_score_of(player, group) for player, group in frame.groupby("player", sort=True)]
    for score in scores:
        score.skipped = skipped.get(score.player, 0)
    scores.sort(key=lambda s: (-s.score, -(s.accuracy or 0.0), -s.best_streak, s.player))
    return scores[:limit]


def latest_judge_run(settings: Settings | None = None) -> QuizJudgeRun | None:
    with session_scope(settings) as session:
        return session.scalar(select(QuizJudgeRun).order_by(QuizJudgeRun.id.desc()).limit(1))


def judge_frame(run_id: int, settings: Settings | None = None) -> pd.DataFrame:
    with session_scope(settings) as session:
        rows = [tuple(r) for r in session.execute(
            select(QuizJudgeVerdict.round_id, QuizJudgeVerdict.correct, QuizJudgeVerdict.fooled)
            .where(QuizJudgeVerdict.run_id == run_id))]
    return pd.DataFrame(rows, columns=["round_id", "judge_correct", "judge_fooled"])


def _rate(series: pd.Series) -> float | None:
    values = series.dropna()
    return float(values.astype(float).mean()) if len(values) else None


def fool_rates(frame: pd.DataFrame, by: str, judge: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per value of ``by`` (class, model or preprocessing): rounds, human fool rate and accuracy,
    chance, and - where a judge run exists - the judge's rates on the same rounds."""
    column = GROUPINGS[by]
    columns = [by, "rounds", "with_synthetic", "human_fool_rate", "human_accuracy", "chance_fool_rate"]
    if judge is not None:
        columns += ["judged_rounds", "judge_fool_rate", "judge_accuracy",
                    "human_fool_rate_same_rounds"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    data = frame.copy()
    if judge is not None:
        data = data.merge(judge, on="round_id", how="left")
    out = []
    # A single round showing a real image has no model: it joins no per-model group.
    grouped = data[data[column].notna()] if column == "model" else data
    for value, group in grouped.groupby(column, sort=True):
        synthetic = group[group["fooled"].notna()]
        chance = (synthetic["mode"].map(CHANCE_FOOL_RATE).mean() if len(synthetic) else None)
        row = {by: value, "rounds": len(group), "with_synthetic": len(synthetic),
               "human_fool_rate": _rate(group["fooled"]), "human_accuracy": _rate(group["correct"]),
               "chance_fool_rate": None if chance is None else float(chance)}
        if judge is not None:
            judged = group[group["judge_correct"].notna()]
            row.update(judged_rounds=len(judged), judge_fool_rate=_rate(judged["judge_fooled"]),
                       judge_accuracy=_rate(judged["judge_correct"]),
                       human_fool_rate_same_rounds=_rate(judged["fooled"]))
        out.append(row)
    return pd.DataFrame(out, columns=columns)


def analysis(settings: Settings | None = None, *, mode: str | None = None) -> dict:
    """Everything the analysis view and ``quiz stats --json`` show, as plain data."""
    frame = answers_frame(settings, mode=mode)
    run = latest_judge_run(settings)
    judge = judge_frame(run.id, settings) if run is not None else None
    overall = {"rounds": len(frame), "players": int(frame["player"].nunique()) if len(frame) else 0,
               "human_accuracy": _rate(frame["correct"]) if len(frame) else None,
               "human_fool_rate": _rate(frame["fooled"]) if len(frame) else None}
    if judge is not None and len(frame):
        merged = frame.merge(judge, on="round_id", how="inner")
        overall.update(judged_rounds=len(merged),
                       judge_accuracy=_rate(merged["judge_correct"]) if len(merged) else None,
                       judge_fool_rate=_rate(merged["judge_fooled"]) if len(merged) else None,
                       human_accuracy_same_rounds=_rate(merged["correct"]) if len(merged) else None)
    return {
        "mode": mode or "all",
        "overall": overall,
        "judge_run": None if run is None else {
            "id": run.id, "job_id": run.job_id, "accuracy": run.accuracy, "rounds": run.n_rounds,
            "train_images": run.n_train_images, "created_at": run.created_at, "config": run.config},
        **{f"by_{by}": fool_rates(frame, by, judge).to_dict(orient="records") for by in GROUPINGS},
    }


def fool_rate_figure(table: pd.DataFrame, by: str):  # noqa: ANN201 - plotly Figure
    """Grouped bars: human (and judge) fool rate per group, with the chance rate marked."""
    import plotly.graph_objects as go

    from core.figure_layout import readable

    figure = go.Figure()
    if table.empty:
        return readable(figure, "No answers yet")
    # The answer counts go under each group's name, not on the bars: there the chance
    # markers (at 50 % or 75 %) hid them whenever a bar ended near chance (issue 15).
    judged = "judge_fool_rate" in table
    labels = [f"{value}<br>n={humans}" + (f", judge n={machine}" if judged else "")
              for value, humans, machine in zip(
                  table[by], table["with_synthetic"],
                  table["judged_rounds"] if judged else table["with_synthetic"])]
    figure.add_bar(name="Humans", x=labels, y=table["human_fool_rate"],
                   hovertemplate="%{x}: %{y:.0%}<extra>Humans</extra>")
    if judged:
        figure.add_bar(name="Machine judge (same rounds)", x=labels, y=table["judge_fool_rate"],
                       hovertemplate="%{x}: %{y:.0%}<extra>Machine judge</extra>")
    figure.add_scatter(name="Chance", x=labels, y=table["chance_fool_rate"], mode="markers",
                       marker={"symbol": "line-ew-open", "size": 30, "line": {"width": 3},
                               "color": "#222222"})  # dark: visible on the bars
    figure.update_layout(barmode="group", yaxis={"title": "fool rate", "range": [0, 1.1]},
                         xaxis={"title": by}, legend={"orientation": "h", "y": -0.3})
    # Full page width, but the page may be narrow: wrap for ~500 px.
    readable(figure, f"How often a synthetic image passed as real, by {by}", width_px=500,
             margin={"l": 50, "b": 60})
    return figure
    labels = [str(v) for v in table[by]]
    figure.add_bar(name="Humans", x=labels, y=table["human_fool_rate"],
                   text=[f"n={n}" for n in table["with_synthetic"]], textposition="outside")
    if "judge_fool_rate" in table:
        figure.add_bar(name="Machine judge (same rounds)", x=labels, y=table["judge_fool_rate"],
                       text=[f"n={n}" for n in table["judged_rounds"]], textposition="outside")
    figure.add_scatter(name="Chance", x=labels, y=table["chance_fool_rate"], mode="markers",
                       marker={"symbol": "line-ew-open", "size": 30, "line": {"width": 3}})
    figure.update_layout(barmode="group", yaxis={"title": "fool rate", "range": [0, 1.1]},
                         xaxis={"title": by}, title=f"How often a synthetic image passed as real, by {by}",
                         legend={"orientation": "h"})
    return figure
