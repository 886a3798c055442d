"""Nothing but the pixels tells a served real image from a generated one (issue 12).

For every image of a round the browser receives: a URL (Streamlit's media file name), the
bytes (their length is the Content-Length), a Content-Type, the image's place on the page
and the moment it arrives. ``test_metadata_classifier_does_no_better_than_chance`` serves
280 rounds (200 "which is real?" pairs, 80 single images) from a pool where real and
synthetic files differ as much as they can (small smooth JPEG photos vs large noisy PNG
generations), exactly as the Quiz page serves them, and gives all of that except the
pixels to a classifier, cross-validated by round. It passes when the classifier's score
is below the binomial critical value for chance at alpha = 1e-4 (pairs: accuracy of
picking the real image, limit 0.63 for 200 rounds; singles: balanced accuracy of real vs
generated, limit 0.70 for 80). It scores about 0.5 now. On the serving before issue 12
it scored 1.00 on both: byte size alone separated the sources (photos 1.4-1.8 KB,
generations 7.6-7.9 KB), names repeated, and arrival time alone gave 0.99.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from tests.test_quiz_helpers import add_contrast_pool

PAIR_ROUNDS, SINGLE_ROUNDS = 200, 80
ALPHA = 1e-4


@dataclass
class Seen:
    """One served image as the browser sees it, without its pixels (and the truth)."""

    round_index: int
    mode: str
    position: int
    url: str
    length: int
    content_type: str
    arrival_s: float  # from the request for the round to this image's bytes being ready
    is_real: bool


def streamlit_url(data: bytes, output_format: str, width: int | str) -> str:
    """The URL ``st.image(data, output_format=..., width=...)`` gives these bytes: Streamlit's
    own format check, size check and media file naming (``MemoryMediaFileStorage``)."""
    from streamlit.elements.lib.image_utils import (_ensure_image_size_and_format,
                                                    _validate_image_format_string)
    from streamlit.elements.lib.layout_utils import LayoutConfig
    from streamlit.runtime.media_file_storage import MediaFileKind
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    fmt = _validate_image_format_string(data, output_format)
    sent = _ensure_image_size_and_format(data, LayoutConfig(width=width), fmt)
    assert sent == data, "Streamlit re-encoded the image: what we measured is not what is served"
    storage = MemoryMediaFileStorage("/media")
    return storage.get_url(storage.load_and_get_id(sent, f"image/{fmt.lower()}", MediaFileKind.MEDIA))


def serve_like_the_page(round_token: str, settings) -> list[tuple[int, bytes, str, str, float]]:  # noqa: ANN001
    """(position, bytes, URL, content type, arrival seconds) of a round, as pages/quiz.py
    serves it: the whole round is rendered before any image is shown."""
    from core.quiz.delivery import serve_round

    start = time.perf_counter()
    served = serve_round(round_token, settings)
    arrival = time.perf_counter() - start
    return [(image.position, image.data, streamlit_url(image.data, "PNG", image.px),
             image.mimetype, arrival) for image in served.images]


def _truth(round_token: str, settings) -> dict[int, bool]:  # noqa: ANN001
    from core.db.engine import session_scope
    from core.quiz.models import QuizRound, QuizRoundImage

    with session_scope(settings) as session:
        return dict(session.execute(
            select(QuizRoundImage.position, QuizRoundImage.is_real)
            .join(QuizRound, QuizRound.id == QuizRoundImage.round_id)
            .where(QuizRound.token == round_token)).all())


def _serve_rounds(settings) -> list[Seen]:  # noqa: ANN001
    from core.quiz import rounds

    seen = []
    plan = [("pair", "ann" if i % 2 else "bob") for i in range(PAIR_ROUNDS)]
    plan += [("single", "cat" if i % 2 else "dan") for i in range(SINGLE_ROUNDS)]
    for index, (mode, player) in enumerate(plan):
        # Seeded dealing: where the real image lands is random but the same every run, so the
        # only randomness left to the classifier is in what is served (names, timing).
        view = rounds.new_round(player, rounds.RoundRequest(mode=mode, seed=7_000 + index),
                                settings)
        truth = _truth(view.token, settings)
        for position, data, url, content_type, arrival in serve_like_the_page(view.token, settings):
            seen.append(Seen(index, mode, position, url, len(data), content_type, arrival,
                             truth[position]))
        # Answered like a player who always picks position 0 / says "real": the reveal
        # tells the player (and the classifier, through the labels) which was which.
        if mode == "pair":
            rounds.answer_round(player, view.token, position=0, settings=settings)
        else:
            rounds.answer_round(player, view.token, guess="real", settings=settings)
    return seen


def _name(row: Seen) -> str:
    return row.url.rsplit("/", 1)[-1]


def _features(rows: list[Seen], memory: list[tuple[float, int]]) -> np.ndarray:
    """Everything but pixels: the name (its hash as numbers, its extension, and how often and
    as what the same name was revealed before), byte size, content type, place, arrival."""
    out = []
    for row, (revealed_real, times_seen) in zip(rows, memory):
        stem, _, extension = _name(row).partition(".")
        out.append([int(stem[:8], 16) / 2**32, int(stem[-8:], 16) / 2**32, len(extension),
                    sum(extension.encode()), revealed_real, times_seen, row.length,
                    sum(row.content_type.encode()), row.position, row.arrival_s * 1000])
    return np.asarray(out, dtype=float)


def metadata_classifier_scores(seen: list[Seen], folds: int = 5) -> dict[str, float]:
    """Cross-validated by round: a random forest (with a memory of the names revealed in the
    training rounds) trained on the other rounds' metadata decides each held-out round."""
    from sklearn.ensemble import RandomForestClassifier

    by_round: dict[int, list[Seen]] = defaultdict(list)
    for row in seen:
        by_round[row.round_index].append(row)
    round_ids = np.random.default_rng(0).permutation(sorted(by_round))
    results: dict[str, list[tuple[bool, bool]]] = {"pair": [], "single": []}
    for k in range(folds):
        test_ids = set(round_ids[k::folds].tolist())
        train = [r for i in by_round if i not in test_ids for r in by_round[i]]
        revealed: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # name -> [real, shown]
        for row in train:
            revealed[_name(row)][0] += int(row.is_real)
            revealed[_name(row)][1] += 1

        def memory(rows: list[Seen], own: bool) -> list[tuple[float, int]]:
            out = []
            for row in rows:
                real, shown = revealed.get(_name(row), (0, 0))
                if own:  # a training row must not see its own label through the memory
                    real, shown = real - int(row.is_real), shown - 1
                out.append((real / shown if shown else 0.5, shown))
            return out

        model = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1)
        model.fit(_features(train, memory(train, own=True)), [r.is_real for r in train])
        real_column = list(model.classes_).index(True)
        for index in sorted(test_ids):
            rows = by_round[index]
            p_real = model.predict_proba(_features(rows, memory(rows, own=False)))[:, real_column]
            if rows[0].mode == "pair":
                results["pair"].append((bool(rows[int(np.argmax(p_real))].is_real), True))
            else:
                results["single"].append((bool(p_real[0] >= 0.5), rows[0].is_real))
    pair_accuracy = float(np.mean([ok for ok, _ in results["pair"]]))
    # Balanced accuracy: chance is 1/2 even when the dealer showed one side more often.
    recall = [np.mean([said == truth for said, truth in results["single"] if truth is side])
              for side in (True, False) if any(truth is side for _, truth in results["single"])]
    return {"pair_accuracy": pair_accuracy, "single_balanced_accuracy": float(np.mean(recall)),
            "pair_rounds": len(results["pair"]), "single_rounds": len(results["single"])}


def chance_threshold(n: int, alpha: float = ALPHA) -> float:
    """The score a chance-level guesser exceeds with probability < alpha over n rounds."""
    from scipy.stats import binom

    return float(binom.ppf(1 - alpha, n, 0.5)) / n


def test_metadata_classifier_does_no_better_than_chance(settings):
    add_contrast_pool(settings, real=12, synthetic=12)
    seen = _serve_rounds(settings)
    assert len({row.round_index for row in seen}) == PAIR_ROUNDS + SINGLE_ROUNDS >= 200
    assert {row.is_real for row in seen if row.mode == "single"} == {True, False}
    scores = metadata_classifier_scores(seen)
    pair_limit = chance_threshold(scores["pair_rounds"])
    single_limit = chance_threshold(scores["single_rounds"])
    print(f"metadata classifier: {scores}; limits pair {pair_limit:.3f}, single {single_limit:.3f}")
    lengths = Counter((row.is_real, row.length) for row in seen)
    print(f"byte sizes (is_real, bytes): {sorted(lengths.items())}")
    assert scores["pair_accuracy"] < pair_limit, scores
    assert scores["single_balanced_accuracy"] < single_limit, scores
    # And the plain facts behind it: no name is ever served twice, and one length for all.
    urls = [row.url for row in seen]
    assert len(set(urls)) == len(urls)
    assert len({row.length for row in seen}) == 1 and len({row.content_type for row in seen}) == 1
