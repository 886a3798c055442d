"""Dealing a quiz round from a large pool: SQL counts and lookups vs loading the pool.

    python bench/quiz_deal.py                 # 50,000 image rows, 500 rounds of history
    python bench/quiz_deal.py --rows 10000 --history 200

Rows are bulk-inserted (no image files: dealing only reads the index, it renders nothing).
Measured: choosing a round's images for a player with a history (the no-repeat rule needs
how often each image was shown to them). ``core.quiz.choosing`` counts the pool per class
and model and the player's history in SQL, then looks up each chosen image by its rank
among the unseen ones; the baseline is how dealing worked before: every allowed image's
columns loaded into Python and the pool sorted with random tie-breaks. Both follow the same
rules (checked: one class, one real, nothing seen before); median of several repeats, the
ratio and the load average are printed."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
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


def pool_in_python(settings, player, request, seed):  # noqa: ANN001, ANN201
    """How dealing worked before: every allowed image's columns into Python, the player's
    history counted per image, the pool sorted with random tie-breaks (the same rules)."""
    from collections import Counter, defaultdict

    import numpy as np
    from sqlalchemy import func, select

    from core.db.engine import session_scope
    from core.db.models import SOURCE_REAL, Image
    from core.quiz.choosing import Choice, model_key
    from core.quiz.models import QuizRound, QuizRoundImage

    rng = np.random.default_rng(seed)
    with session_scope(settings) as session:
        pool = list(session.execute(select(Image.id, Image.class_id, Image.source, Image.model,
                                           Image.width, Image.height)
                                    .where(Image.excluded.is_(False))))
        shown = Counter(dict(session.execute(
            select(QuizRoundImage.image_id, func.count())
            .join(QuizRound, QuizRound.id == QuizRoundImage.round_id)
            .where(QuizRound.player == player).group_by(QuizRoundImage.image_id)).all()))
    real, synthetic, short = defaultdict(list), defaultdict(list), {}
    for image_id, class_id, source, model, width, height in pool:
        key = class_id if source == SOURCE_REAL else (class_id, model_key(model))
        (real if source == SOURCE_REAL else synthetic)[key].append(image_id)
        short[key] = min(short.get(key, 10**9), width, height)
    need = 3 if request.mode == "quad" else 1

    def freshness(ids, k):  # noqa: ANN001, ANN202
        return sorted(shown[i] for i in ids)[k - 1]

    def least_shown(ids, k):  # noqa: ANN001, ANN202
        tie = rng.random(len(ids))
        return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (shown[ids[i]], tie[i]))[:k]]

    combos = sorted(c for c, ids in synthetic.items() if len(ids) >= need and real.get(c[0]))
    levels = [max(freshness(real[c[0]], 1), freshness(synthetic[c], need)) for c in combos]
    freshest = [c for c, lvl in zip(combos, levels) if lvl == min(levels)]
    class_id, model = freshest[int(rng.integers(len(freshest)))]
    images = [(least_shown(real[class_id], 1)[0], True)]
    images += [(i, False) for i in least_shown(synthetic[(class_id, model)], need)]
    return Choice(class_id, model, images, min(short[class_id], short[(class_id, model)]))


def ours_choose(settings, player, request, seed):  # noqa: ANN001, ANN201
    import numpy as np

    from core.db.engine import session_scope
    from core.quiz.choosing import choose_images

    with session_scope(settings) as session:
        return choose_images(session, request, player, np.random.default_rng(seed))


def _check(choice, settings, player) -> None:  # noqa: ANN001
    """A fair pair: one real and one synthetic image of one class, neither seen before."""
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import Image
    from core.quiz.models import QuizRound, QuizRoundImage

    ids = [image_id for image_id, _real in choice.images]
    with session_scope(settings) as session:
        rows = list(session.execute(select(Image.class_id, Image.source).where(Image.id.in_(ids))))
        seen = set(session.scalars(select(QuizRoundImage.image_id).join(QuizRound)
                                   .where(QuizRound.player == player)))
    assert {c for c, _s in rows} == {choice.class_id} and sorted(s for _c, s in rows) == ["real", "synthetic"]
    assert not seen & set(ids), "an image came back before the pool was used up"


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
        for seed in range(3):  # both deal by the same rules (their random draws differ)
            _check(ours_choose(settings, "bench", request, seed), settings, "bench")
            _check(pool_in_python(settings, "bench", request, seed), settings, "bench")
        ours = median_seconds(lambda i: ours_choose(settings, "bench", request, i), args.repeats)
        naive = median_seconds(lambda i: pool_in_python(settings, "bench", request, i), args.repeats)
        full = median_seconds(lambda i: new_round("bench", RoundRequest(mode="pair", seed=10_000 + i),
                                                  settings), args.repeats)
        print(f"pool {args.rows:,} images, player history {args.history} rounds "
              f"(dealt in {history_seconds:.1f} s, {history_seconds / max(1, args.history) * 1000:.0f} ms each)")
        print(f"choose images, pool loaded in Python (before): {naive * 1000:8.1f} ms")
        print(f"choose images, core.quiz.choosing (SQL counts): {ours * 1000:7.1f} ms")
        print(f"ratio before / now                            : {naive / ours:8.2f}x")
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"whole new_round (choose + write): {full * 1000:8.1f} ms")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
