"""The machine judge: trained as a job, scored on the very rounds the players answered."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.test_quiz_helpers import add_pool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _play_rounds(settings, player: str, count: int, mode: str = "pair") -> None:  # noqa: ANN001
    from core.quiz import rounds

    for index in range(count):
        view = rounds.new_round(player, rounds.RoundRequest(mode=mode, seed=index), settings)
        if mode == "single":
            rounds.answer_round(player, view.token, guess="real", settings=settings)
        else:
            rounds.answer_round(player, view.token, position=index % 2, settings=settings)


def test_judge_separates_real_from_tinted_synthetic_on_the_played_rounds(settings, monkeypatch):
    from core.config import get_settings
    from core.jobs import get_job
    from core.quiz import stats
    from core.quiz.jobs import submit_judge
    from core.quiz.judge import JudgeConfig
    from core.worker import run_worker

    monkeypatch.setenv("SYNTHLAB_QUIZ_IMAGE_PX", "64")
    settings = get_settings()
    add_pool(settings, classes=("apple", "lime"), real_per_class=14, synthetic={"sd-turbo": 14},
             tint=True)
    _play_rounds(settings, "lea", 10)
    _play_rounds(settings, "max", 4, mode="single")
    job_id = submit_judge(JudgeConfig(epochs=8, folds=2, random_state=3), created_by="lea",
                          settings=settings)
    run_worker(settings, once=True)
    job = get_job(job_id, settings)
    assert job.status == "done", job.error
    assert job.result["rounds"] == 14 and job.result["train_images"] == 56
    assert job.result["image_accuracy"] >= 0.8
    assert job.result["accuracy"] >= 0.85  # humans here were at chance level

    result = stats.analysis(settings)
    assert result["judge_run"]["job_id"] == job_id
    assert result["overall"]["judged_rounds"] == 14
    assert result["overall"]["judge_accuracy"] == pytest.approx(job.result["accuracy"])
    by_class = {row["class"]: row for row in result["by_class"]}
    assert set(by_class) == {"Apple", "Lime"}
    assert all(row["judged_rounds"] >= 1 and row["judge_fool_rate"] is not None
               for row in by_class.values())
    table = stats.fool_rates(stats.answers_frame(settings), "class",
                             stats.judge_frame(result["judge_run"]["id"], settings))
    figure = stats.fool_rate_figure(table, "class")
    assert [trace.name for trace in figure.data] == ["Humans", "Machine judge (same rounds)", "Chance"]
    # Each fold's weights were saved, so an interrupted job would resume from them.
    folder = settings.runs_dir / "quiz-judge" / f"job-{job_id}"
    assert sorted(p.name for p in folder.iterdir()) == ["fold-0.safetensors", "fold-1.safetensors"]


def test_judge_job_resumes_from_saved_folds(settings):
    from core.jobs import INTERRUPTED, finish, get_job, job_events
    from core.quiz.jobs import submit_judge
    from core.quiz.judge import JudgeConfig
    from core.worker import run_worker

    add_pool(settings, real_per_class=6, synthetic={"sd-turbo": 6}, tint=True)
    _play_rounds(settings, "ned", 3)
    first = submit_judge(JudgeConfig(epochs=2, image_px=16), settings=settings)
    run_worker(settings, once=True)
    # Pretend the worker died after the folds were saved: copy them to a second job.
    second = submit_judge(JudgeConfig(epochs=2, image_px=16), settings=settings)
    source = settings.runs_dir / "quiz-judge" / f"job-{first}"
    target = settings.runs_dir / "quiz-judge" / f"job-{second}"
    target.mkdir(parents=True)
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    finish(second, INTERRUPTED, settings=settings)
    run_worker(settings, once=True)
    assert get_job(second, settings).status == "done"
    messages = [e.message for e in job_events(second, settings=settings)]
    assert sum("loaded the weights saved" in m for m in messages) == 2
    assert get_job(second, settings).result["accuracy"] == get_job(first, settings).result["accuracy"]


def _cli(capsys, *args: str) -> tuple[int, str]:  # noqa: ANN001
    from core.cli import main

    capsys.readouterr()
    code = main(["quiz", *args])
    return code, capsys.readouterr().out


def test_cli_stats_and_judge(settings, capsys):
    code, out = _cli(capsys, "stats")
    assert code == 0 and "no answers yet" in out.lower()
    add_pool(settings, real_per_class=6, synthetic={"sd-turbo": 6}, tint=True)
    _play_rounds(settings, "oli", 4)
    code, out = _cli(capsys, "judge", "--epochs", "2", "--image-px", "16", "--json")
    assert code == 0 and json.loads(out)["status"] == "done"
    code, out = _cli(capsys, "stats")
    assert code == 0 and "sd-turbo" in out and "machine judge (run 1)" in out
    code, out = _cli(capsys, "leaderboard")
    assert code == 0 and "oli" in out
    assert _cli(capsys, "judge", "--folds", "1")[0] == 2
    with pytest.raises(SystemExit):
        _cli(capsys, "stats", "--mode", "triple")
    # The real entry point, in its own process, reads the same database.
    result = subprocess.run([sys.executable, "-m", "core", "quiz", "stats", "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["overall"]["rounds"] == 4 and data["overall"]["judged_rounds"] == 4
    assert data["by_model"][0]["model"] == "sd-turbo"
