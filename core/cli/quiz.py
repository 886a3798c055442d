"""``quiz``: the quiz's statistics and leaderboard, and training of the machine judge."""

from __future__ import annotations

import argparse
import time

from core.cli import CliError, positive_int, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    from core.quiz.models import MODES

    quiz = subparsers.add_parser("quiz", help="'Which image is real?' quiz: stats, leaderboard, judge")
    commands = quiz.add_subparsers(dest="quiz_command", metavar="QUIZ_COMMAND", required=True)

    stats = commands.add_parser("stats", help="human fool rate per class, model and preprocessing, "
                                              "beside the machine judge's")
    stats.add_argument("--mode", choices=MODES, help="only rounds of this kind")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(func=_stats)

    board = commands.add_parser("leaderboard", help="players by score, accuracy and best streak")
    board.add_argument("--limit", type=positive_int, default=20,
                       help="show the top N players (default: 20)")
    board.add_argument("--json", action="store_true", help="machine-readable output")
    board.set_defaults(func=_leaderboard)

    judge = commands.add_parser("judge", help="train the real-vs-synthetic machine judge (a job) "
                                              "and judge every answered round")
    judge.add_argument("--epochs", type=int, default=10)
    judge.add_argument("--folds", type=int, default=2, help="cross-fitting folds (>= 2)")
    judge.add_argument("--image-px", type=int, default=32, help="judge input size (multiple of 4)")
    judge.add_argument("--seed", type=int, default=0)
    judge.add_argument("--no-wait", action="store_true", help="queue the job and return")
    judge.add_argument("--json", action="store_true", help="machine-readable output")
    judge.set_defaults(func=_judge)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _stats(args: argparse.Namespace) -> int:
    from core.quiz.stats import analysis

    result = analysis(mode=args.mode)
    if args.json:
        print_json(result)
        return 0
    overall = result["overall"]
    if not overall["rounds"]:
        print("No answers yet: play a few rounds on the dashboard's Quiz page.")
        return 0
    print(f"{overall['rounds']} answered rounds by {overall['players']} player(s) "
          f"(mode: {result['mode']}): human accuracy {_percent(overall['human_accuracy'])}, "
          f"fooled {_percent(overall['human_fool_rate'])}")
    if result["judge_run"]:
        print(f"machine judge (run {result['judge_run']['id']}): accuracy "
              f"{_percent(overall.get('judge_accuracy'))} on {overall.get('judged_rounds', 0)} of "
              f"these rounds (humans on the same: {_percent(overall.get('human_accuracy_same_rounds'))})")
    else:
        print("machine judge: not trained yet (python -m core quiz judge)")
    for by in ("class", "model", "preprocessing"):
        print(f"\nfool rate by {by}:")
        for row in result[f"by_{by}"]:
            judge = f"  judge {_percent(row.get('judge_fool_rate'))}" if "judge_fool_rate" in row else ""
            print(f"  {str(row[by]):<40} humans {_percent(row['human_fool_rate']):>5} "
                  f"(n={row['with_synthetic']}, chance {_percent(row['chance_fool_rate'])}){judge}")
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from core.quiz.stats import leaderboard

    rows = leaderboard(limit=args.limit)
    if args.json:
        print_json([{"player": s.player, "score": s.score, "answered": s.answered,
                     "accuracy": s.accuracy, "streak": s.streak, "best_streak": s.best_streak}
                    for s in rows])
        return 0
    if not rows:
        print("No answers yet.")
    for rank, s in enumerate(rows, 1):
        print(f"{rank:>3}. {s.player:<24} score {s.score:>4}  accuracy {_percent(s.accuracy):>5}  "
              f"best streak {s.best_streak}")
    return 0


def _judge(args: argparse.Namespace) -> int:
    from core import jobs
    from core.quiz.jobs import JOB_KIND, submit_judge
    from core.quiz.judge import JudgeConfig
    from core.worker import run_worker, worker_alive

    if args.folds < 2:
        raise CliError("--folds must be at least 2 (each image is judged by a model that never saw it)")
    if args.image_px < 8 or args.image_px % 4:
        raise CliError("--image-px must be a multiple of 4, at least 8")
    if args.epochs < 1:
        raise CliError("--epochs must be at least 1")
    config = JudgeConfig(epochs=args.epochs, folds=args.folds, image_px=args.image_px,
                         random_state=args.seed)
    job_id = submit_judge(config, created_by="cli")
    if not args.no_wait:
        if not worker_alive():
            run_worker(kinds=[JOB_KIND], once=True)  # no worker running: do it here
        while (job := jobs.get_job(job_id)).status in jobs.ACTIVE_STATUSES:
            time.sleep(1.0)
    job = jobs.get_job(job_id)
    payload = {"job_id": job_id, "status": job.status, "result": job.result, "error": job.error}
    if args.json:
        print_json(payload)
    elif job.status == jobs.QUEUED:
        print(f"queued as job {job_id}; follow it with: python -m core jobs")
    elif job.status == jobs.DONE:
        result = job.result or {}
        print(f"job {job_id} done: judge accuracy {_percent(result.get('accuracy'))} on "
              f"{result.get('rounds', 0)} answered rounds; held-out image accuracy "
              f"{_percent(result.get('image_accuracy'))}")
    else:
        print(f"job {job_id} {job.status}: {job.error or ''}")
    return 0 if job.status in (jobs.DONE, jobs.QUEUED, jobs.RUNNING) else 1
