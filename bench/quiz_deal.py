"""Dealing a quiz round from a large pool: SQL columns + GROUP BY vs loading ORM objects.

    python bench/quiz_deal.py                 # 50,000 image rows, 500 rounds of history
    python bench/quiz_deal.py --rows 10000 --history 200

Rows are bulk-inserted (no image files: dealing only reads the index, it renders nothing).
Measured: choosing a round's images for a player with a history (the no-repeat rule needs
how often each image was shown to them). ``core.quiz.choosing`` reads only the columns it
needs and counts the history in SQL; the naive baseline loads every Image as an ORM object
and the player's round images through relationships, counting in Python. Both then apply
the same choice. Median of several repeats; the ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLASSES = ["apple", "banana", "lime", "plum", "pear", "kiwi", "mango", "cherry", "grape", "fig"]
MODELS = ["stabilityai/sd-turbo", "segmind/tiny-sd"]


def _placeholder_file(index: int, synthetic: bool) -> tuple[str, int, int, str]:
    """Rows only (the deal never opens a file): a path, width, height and format."""
    return f"{index % 256:02x}/{index:064x}.png", 512, 512, "PNG"


def populate(settings, rows: int, file_of=_placeholder_file) -> None:  # noqa: ANN001
    """``rows`` index rows, alternately real and synthetic, over 10 classes and 2 models;
    ``file_of(index, synthetic) -> (path, width, height, format)`` says where each one's
    file is (bench/quiz_browser.py points them at real files it wrote)."""
    from sqlalchemy import insert

    from core.db.engine import session_scope
    from core.db.models import Dataset, Image, ImageClass, utcnow

    with session_scope(settings, write=True) as session:
        session.execute(insert(ImageClass), [{"name": c, "display_name": c.title(),
                                              "prompt_name": c, "created_at": utcnow()}
                                             for c in CLASSES])
        session.execute(insert(Dataset), [
            {"name": "photos", "source": "real", "created_at": utcnow()},
            {"name": "generated", "source": "synthetic", "created_at": utcnow()}])
        batch = []
        for i in range(rows):
            synthetic = i % 2 == 1
            path, width, height, fmt = file_of(i, synthetic)
            batch.append({
                "sha256": f"{i:064x}", "path": path,
                "class_id": 1 + (i // 2) % len(CLASSES), "source": "synthetic" if synthetic else "real",
                "dataset_id": 2 if synthetic else 1, "width": width, "height": height, "format": fmt,
                "added_at": utcnow(), "excluded": False,
                "model": MODELS[(i // 20) % 2] if synthetic else None,
                "prompt": "a photo of a fruit" if synthetic else None})
            if len(batch) == 5000:
                session.execute(insert(Image), batch)
                batch = []
        if batch:
            session.execute(insert(Image), batch)


def naive_choose(settings, player, request, seed):  # noqa: ANN001, ANN201
    import numpy as np
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import Image
    from core.quiz.models import QuizRound
    from core.quiz.choosing import Candidate, choose_images, model_key

    with session_scope(settings) as session:
        images = list(session.scalars(select(Image).where(Image.excluded.is_(False))))
        candidates = [Candidate(i.id, i.class_id, i.source, model_key(i.model), min(i.width, i.height))
                      for i in images]
        shown: Counter = Counter()
        for rnd in session.scalars(select(QuizRound).where(QuizRound.player == player)):
            for round_image in rnd.images:
                shown[round_image.image_id] += 1
        return choose_images(candidates, request.mode, shown, np.random.default_rng(seed))


def ours_choose(settings, player, request, seed):  # noqa: ANN001, ANN201
    import numpy as np

    from core.db.engine import session_scope
    from core.quiz.choosing import candidates, choose_images, times_shown

    with session_scope(settings) as session:
        return choose_images(candidates(session, request), request.mode,
                             times_shown(session, player), np.random.default_rng(seed))


def median_seconds(fn, repeats: int) -> float:  # noqa: ANN001
    times = []
    for index in range(repeats):
        start = time.perf_counter()
        fn(index)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--history", type=int, default=500, help="rounds already dealt to the player")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="synthlab-bench-quiz-"))
    os.environ["SYNTHLAB_HOME"] = str(home)
    os.environ["SYNTHLAB_AUTOSTART_WORKER"] = "0"
    try:
        from core.config import get_settings
        from core.db.engine import init_db
        from core.quiz.rounds import RoundRequest, new_round

        settings = get_settings()
        init_db(settings)
        populate(settings, args.rows)
        start = time.perf_counter()
        for index in range(args.history):
            new_round("bench", RoundRequest(mode="quad", seed=index), settings)
        history_seconds = time.perf_counter() - start
        request = RoundRequest(mode="pair")
        # Same seed, same history: both must choose the same images.
        assert ours_choose(settings, "bench", request, 1) == naive_choose(settings, "bench", request, 1)
        ours = median_seconds(lambda i: ours_choose(settings, "bench", request, i), args.repeats)
        naive = median_seconds(lambda i: naive_choose(settings, "bench", request, i), args.repeats)
        full = median_seconds(lambda i: new_round("bench", RoundRequest(mode="pair", seed=10_000 + i),
                                                  settings), args.repeats)
        print(f"pool {args.rows:,} images, player history {args.history} rounds "
              f"(dealt in {history_seconds:.1f} s, {history_seconds / max(1, args.history) * 1000:.0f} ms each)")
        print(f"choose images, naive ORM objects: {naive * 1000:8.1f} ms")
        print(f"choose images, core.quiz.choosing: {ours * 1000:7.1f} ms")
        print(f"ratio naive / ours              : {naive / ours:8.2f}x")
        print(f"whole new_round (choose + write): {full * 1000:8.1f} ms")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
