"""Quiz rounds: fair serving, no repeats, answers once, statistics, concurrent players."""

from __future__ import annotations

import io
import multiprocessing
import struct
import threading

import pytest
from PIL import Image
from sqlalchemy import func, select

from tests.test_quiz_helpers import add_pool


def _png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunks.append(kind)
        offset += 12 + length
    return chunks


def _truth(round_token: str, settings) -> dict[int, bool]:  # noqa: ANN001
    from core.db.engine import session_scope
    from core.quiz.models import QuizRound, QuizRoundImage

    with session_scope(settings) as session:
        rows = session.execute(select(QuizRoundImage.position, QuizRoundImage.is_real)
                               .join(QuizRound, QuizRound.id == QuizRoundImage.round_id)
                               .where(QuizRound.token == round_token))
        return dict(rows.all())


def test_served_images_carry_no_metadata_and_match(settings, monkeypatch):
    import numpy as np

    from core.config import get_settings
    from core.db.engine import session_scope
    from core.db.models import Image as ImageRow
    from core.quiz import rounds
    from core.store import ImageStore

    monkeypatch.setenv("SYNTHLAB_QUIZ_IMAGE_PX", "128")  # the cap
    settings = get_settings()
    add_pool(settings)
    store = ImageStore(settings)
    with session_scope(settings) as session:
        stored = {row.source: store.read_bytes(row.path) for row in session.scalars(select(ImageRow))}
    # The stored files do carry what would give the answer away...
    assert b"parameters" in stored["synthetic"] and b"Seed: 1234" in stored["synthetic"]
    assert Image.open(io.BytesIO(stored["real"])).getexif().get(0x010F) == "CameraMaker"

    view = rounds.new_round("alice", rounds.RoundRequest(mode="pair"), settings)
    served = rounds.round_images(view.token, settings)
    assert len(served) == 2
    for data in served:
        # ...the served bytes do not: no text chunks, no EXIF, one format and size for both.
        assert b"parameters" not in data and b"Seed" not in data and b"sd-turbo" not in data
        assert b"Exif" not in data and b"CameraMaker" not in data and b"PhoneCamera" not in data
        with Image.open(io.BytesIO(data)) as image:
            # 128 asked, but the smallest image (64 px synthetic) is not enlarged by
            # resampling: both are 64 px pictures, shown 4x bigger with nearest-neighbour.
            assert image.format == "PNG" and image.size == (256, 256) and image.mode == "RGB"
            assert not image.getexif() and "parameters" not in image.info
            assert "icc_profile" not in image.info and "exif" not in image.info
            pixels = np.asarray(image)
        blocks = pixels.reshape(64, 4, 64, 4, 3)
        assert (blocks == blocks[:, :1, :, :1]).all()  # every 4x4 block one picture pixel
        # Only the image and a 16-byte random nonce: the same chunks, in the same order.
        assert _png_chunks(data) == [b"IHDR", b"raNd", b"IDAT", b"IEND"]
    assert len({len(data) for data in served}) == 1
    # Tokens are random: they name neither the image id, its hash, nor its file.
    with session_scope(settings) as session:
        rows = list(session.scalars(select(ImageRow)))
    secrets_of_rows = {str(r.id) for r in rows} | {r.sha256[:12] for r in rows} | \
        {r.original_name for r in rows} | {r.path for r in rows}
    for token in [view.token, *view.image_tokens]:
        assert len(token) >= 20 and not any(s in token for s in secrets_of_rows if len(s) > 3)
    assert rounds.reveal_round(view.token, settings) is None  # nothing revealed before answering
    # Single-image rounds: the size does not depend on which side is shown.
    sizes = {}
    for _ in range(6):
        single = rounds.new_round("bea", rounds.RoundRequest(mode="single"), settings)
        data = rounds.round_images(single.token, settings)[0]
        sizes.setdefault(_truth(single.token, settings)[0], set()).add(
            (Image.open(io.BytesIO(data)).size, len(data)))
    assert sizes == {True: {((256, 256), len(served[0]))}, False: {((256, 256), len(served[0]))}}


def test_positions_are_seeded_and_recorded(settings):
    from core.db.engine import session_scope
    from core.quiz import rounds
    from core.quiz.models import QuizRound

    add_pool(settings, real_per_class=20, synthetic={"sd-turbo": 20})
    first = rounds.new_round("ann", rounds.RoundRequest(seed=42), settings)
    again = rounds.new_round("ben", rounds.RoundRequest(seed=42), settings)
    # Same seed, same (fresh) history: same images in the same places.
    assert list(_truth(first.token, settings).values()) == list(_truth(again.token, settings).values())
    with session_scope(settings) as session:
        assert session.scalar(select(QuizRound.seed).where(QuizRound.token == first.token)) == 42
    real_positions = set()
    for _ in range(12):
        view = rounds.new_round("cid", rounds.RoundRequest(mode="quad"), settings)
        truth = _truth(view.token, settings)
        assert sorted(truth) == [0, 1, 2, 3] and sum(truth.values()) == 1
        real_positions.add(next(p for p, real in truth.items() if real))
    assert len(real_positions) >= 3  # the real image moves around


def test_no_image_repeats_until_the_pool_is_used_up(settings):
    from core.db.engine import session_scope
    from core.quiz import rounds
    from core.quiz.models import QuizRound, QuizRoundImage

    add_pool(settings, real_per_class=3, synthetic={"sd-turbo": 6})

    def shown(player: str) -> list[int]:
        with session_scope(settings) as session:
            return list(session.scalars(
                select(QuizRoundImage.image_id).join(QuizRound).where(QuizRound.player == player)
                .order_by(QuizRound.id, QuizRoundImage.position)))

    for _ in range(3):  # 3 pair rounds use every real image once and 3 of 6 synthetic ones
        rounds.new_round("dee", rounds.RoundRequest(mode="pair"), settings)
    assert len(set(shown("dee"))) == 6
    rounds.new_round("dee", rounds.RoundRequest(mode="pair"), settings)
    ids = shown("dee")
    # Real pool used up: a real image comes back, but the synthetic one is still new.
    assert len(ids) == 8 and len(set(ids)) == 7
    for _ in range(2):
        rounds.new_round("dee", rounds.RoundRequest(mode="pair"), settings)
    assert len(set(shown("dee"))) == 9  # every synthetic image shown once before any repeat
    # Single-image rounds use up both sides before anything repeats.
    for _ in range(9):
        rounds.new_round("fin", rounds.RoundRequest(mode="single"), settings)
    assert sorted(shown("fin")) == sorted(set(shown("dee")))
    # Another player starts afresh.
    rounds.new_round("eve", rounds.RoundRequest(mode="pair"), settings)
    assert len(set(shown("eve"))) == 2


def test_answer_once_reveal_and_errors(settings):
    from core.quiz import rounds, stats

    add_pool(settings)
    view = rounds.new_round("fay", rounds.RoundRequest(mode="pair"), settings)
    truth = _truth(view.token, settings)
    wrong = next(p for p, real in truth.items() if not real)
    with pytest.raises(rounds.QuizError, match="another player"):
        rounds.answer_round("gus", view.token, position=wrong, settings=settings)
    with pytest.raises(rounds.QuizError, match="positions"):
        rounds.answer_round("fay", view.token, position=7, settings=settings)
    reveal = rounds.answer_round("fay", view.token, position=wrong, settings=settings)
    assert not reveal.correct and reveal.fooled and reveal.chosen_position == wrong
    assert reveal.real_position == next(p for p, real in truth.items() if real)
    synthetic = next(i for i in reveal.images if not i.is_real)
    assert synthetic.model == "sd-turbo" and synthetic.prompt == "a photo of a apple"
    assert next(i for i in reveal.images if i.is_real).prompt is None
    with pytest.raises(rounds.AlreadyAnswered):
        rounds.answer_round("fay", view.token, position=wrong, settings=settings)
    assert rounds.reveal_round(view.token, settings).correct is False
    assert stats.player_score("fay", settings).answered == 1

    single = rounds.new_round("fay", rounds.RoundRequest(mode="single"), settings)
    assert len(single.image_tokens) == 1
    with pytest.raises(rounds.QuizError, match="real"):
        rounds.answer_round("fay", single.token, guess="maybe", settings=settings)
    is_real = _truth(single.token, settings)[0]
    reveal = rounds.answer_round("fay", single.token, guess="real" if is_real else "synthetic",
                                 settings=settings)
    assert reveal.correct and reveal.fooled is (None if is_real else False)

    with pytest.raises(rounds.QuizError, match="no class"):
        rounds.new_round("fay", rounds.RoundRequest(class_name="durian"), settings)
    with pytest.raises(rounds.QuizError, match="at least 3 synthetic"):
        rounds.new_round("fay", rounds.RoundRequest(mode="quad", model="nope"), settings)
    with pytest.raises(rounds.QuizError, match="player name"):
        rounds.new_round("  ", rounds.RoundRequest(), settings)


def _play(settings, player: str, mode: str, correct: bool, **filters) -> None:  # noqa: ANN001
    from core.quiz import rounds

    view = rounds.new_round(player, rounds.RoundRequest(mode=mode, **filters), settings)
    truth = _truth(view.token, settings)
    if mode == "single":
        is_real = truth[0]
        guess = ("real" if is_real else "synthetic") if correct else ("synthetic" if is_real else "real")
        rounds.answer_round(player, view.token, guess=guess, settings=settings)
    else:
        position = next(p for p, real in truth.items() if real is correct)
        rounds.answer_round(player, view.token, position=position, settings=settings)


def test_statistics_scores_streaks_and_fool_rates(settings):
    from core.quiz import stats

    add_pool(settings, classes=("apple", "lime"), real_per_class=6,
             synthetic={"sd-turbo": 6, "tiny-sd": 6})
    # hal: apple/sd-turbo fooled 2 of 4; lime/tiny-sd fooled 0 of 2 -> 6 answers, 4 correct.
    for correct in (True, False, True, False):
        _play(settings, "hal", "pair", correct, class_name="apple", model="sd-turbo")
    for correct in (True, True):
        _play(settings, "hal", "pair", correct, class_name="lime", model="tiny-sd")
    # ivy: 3 quad rounds of apple/tiny-sd, all fooled.
    for _ in range(3):
        _play(settings, "ivy", "quad", False, class_name="apple", model="tiny-sd")

    hal = stats.player_score("hal", settings)
    assert (hal.answered, hal.correct, hal.streak, hal.best_streak) == (6, 4, 2, 2)
    assert hal.accuracy == pytest.approx(4 / 6)
    board = stats.leaderboard(settings)
    assert [s.player for s in board] == ["hal", "ivy"] and board[1].score == 0

    result = stats.analysis(settings)
    by_class = {row["class"]: row for row in result["by_class"]}
    assert by_class["Apple"]["rounds"] == 7
    assert by_class["Apple"]["human_fool_rate"] == pytest.approx(5 / 7)
    assert by_class["Lime"]["human_fool_rate"] == 0.0
    by_model = {row["model"]: row for row in result["by_model"]}
    assert by_model["sd-turbo"]["human_fool_rate"] == pytest.approx(0.5)
    assert by_model["tiny-sd"]["human_fool_rate"] == pytest.approx(3 / 5)
    assert by_model["tiny-sd"]["chance_fool_rate"] == pytest.approx((2 * 0.5 + 3 * 0.75) / 5)
    assert [row["preprocessing"] for row in result["by_preprocessing"]] == ["original"]
    assert result["overall"]["human_accuracy"] == pytest.approx(4 / 9)
    pair_only = stats.analysis(settings, mode="pair")
    assert pair_only["overall"]["rounds"] == 6
    figure = stats.fool_rate_figure(stats.fool_rates(stats.answers_frame(settings), "model"), "model")
    assert [trace.name for trace in figure.data] == ["Humans", "Chance"]
    assert list(figure.data[0].y) == pytest.approx([0.5, 0.6])


def test_concurrent_answers_from_threads_lose_nothing(settings):
    from core.db.engine import session_scope
    from core.quiz import rounds
    from core.quiz.models import QuizAnswer

    add_pool(settings, real_per_class=8, synthetic={"sd-turbo": 8})
    players = [f"p{i}" for i in range(6)]
    own = {p: rounds.new_round(p, rounds.RoundRequest(), settings).token for p in players}
    shared = rounds.new_round("p0", rounds.RoundRequest(), settings).token
    outcomes: list[str] = []
    barrier = threading.Barrier(len(players) * 2)

    def answer(player: str, token: str) -> None:
        barrier.wait()
        try:
            rounds.answer_round(player, token, position=0, settings=settings)
            outcomes.append("ok")
        except rounds.AlreadyAnswered:
            outcomes.append("already")

    threads = [threading.Thread(target=answer, args=(p, own[p])) for p in players]
    threads += [threading.Thread(target=answer, args=("p0", shared)) for _ in players]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes).count("ok") == len(players) + 1
    assert outcomes.count("already") == len(players) - 1
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(QuizAnswer)) == len(players) + 1


def _answer_in_process(home: str, player: str, tokens: list[str], queue) -> None:  # noqa: ANN001
    import os

    os.environ["SYNTHLAB_HOME"] = home
    os.environ["SYNTHLAB_AUTOSTART_WORKER"] = "0"
    from core.quiz import rounds

    results = []
    for token in tokens:
        try:
            rounds.answer_round(player, token, position=1)
            results.append("ok")
        except rounds.AlreadyAnswered:
            results.append("already")
    queue.put(results)


def test_concurrent_answers_from_processes(settings):
    from core.quiz import stats, rounds

    add_pool(settings, real_per_class=8, synthetic={"sd-turbo": 8})
    shared = [rounds.new_round("zed", rounds.RoundRequest(), settings).token for _ in range(4)]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_answer_in_process,
                               args=(str(settings.home_path), "zed", shared, queue)) for _ in range(3)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(60)
    # Every round answered exactly once across the three processes.
    assert [sum(r[i] == "ok" for r in results) for i in range(4)] == [1, 1, 1, 1]
    assert stats.player_score("zed", settings).answered == 4


def test_empty_pool_says_what_to_do(settings):
    from core.quiz import rounds

    with pytest.raises(rounds.QuizError, match="Import real images, generate synthetic"):
        rounds.new_round("amy", rounds.RoundRequest(), settings)


def test_model_view_serves_preprocessed_pixels_and_is_its_own_setting(settings):
    import numpy as np

    from core.preprocess import load_pipeline
    from core.quiz import rounds, stats

    add_pool(settings)
    view = rounds.new_round("kim", rounds.RoundRequest(mode="pair", view="model", seed=5), settings)
    served = rounds.serve_round(view.token, settings)
    # The served picture is the training pipeline's output (the model's input size),
    # blown up by a whole factor with NEAREST: every block is exactly one model pixel.
    size, block = settings.image_size, served.scale
    assert served.content_px == size and size * block >= 256
    assert "nearest-neighbour" in served.note() and f"{size} x {size} px model input" in served.note()
    for image in served.images:
        assert Image.open(io.BytesIO(image.data)).size == (size * block, size * block)
        pixels = np.asarray(Image.open(io.BytesIO(image.data)), dtype=np.int16)
        blocks = pixels.reshape(size, block, size, block, 3)
        assert (blocks == blocks[:, :1, :, :1]).all()
    assert load_pipeline("real", settings).describe()  # the defaults resolved
    truth = _truth(view.token, settings)
    rounds.answer_round("kim", view.token, position=next(p for p, r in truth.items() if r),
                        settings=settings)
    _play(settings, "kim", "pair", False)
    labels = {row["preprocessing"]: row for row in stats.analysis(settings)["by_preprocessing"]}
    assert set(labels) == {"original", "model view (real: real, synthetic: synthetic)"}
    assert labels["original"]["human_fool_rate"] == 1.0
    with pytest.raises(rounds.QuizError, match="no pipeline preset"):
        rounds.new_round("kim", rounds.RoundRequest(view="model", real_pipeline="nope"), settings)


def test_deleted_image_keeps_answers_and_blocks_nothing(settings):
    from sqlalchemy import delete

    from core.db.engine import session_scope
    from core.db.models import Image as ImageRow
    from core.quiz import rounds, stats
    from core.quiz.models import QuizRoundImage

    add_pool(settings, real_per_class=2, synthetic={"sd-turbo": 2})
    answered = rounds.new_round("lou", rounds.RoundRequest(), settings)
    rounds.answer_round("lou", answered.token, position=0, settings=settings)
    pending = rounds.new_round("lou", rounds.RoundRequest(), settings)
    with session_scope(settings) as session:
        image_id = session.scalar(select(QuizRoundImage.image_id)
                                  .where(QuizRoundImage.token == pending.image_tokens[0]))
    with session_scope(settings, write=True) as session:  # as the gallery deletes
        session.execute(delete(ImageRow).where(ImageRow.id == image_id))
    assert rounds.get_round(pending.token, settings).missing_images
    assert rounds.open_round("lou", settings) is None  # a fresh round is dealt instead
    with pytest.raises(rounds.QuizError, match="deleted"):
        rounds.answer_round("lou", pending.token, position=0, settings=settings)
    with pytest.raises(rounds.QuizError, match="deleted"):
        rounds.served_image(pending.image_tokens[0], settings)
    assert stats.player_score("lou", settings).answered == 1
    assert rounds.reveal_round(answered.token, settings) is not None


def test_served_length_depends_on_size_only_and_is_lossless():
    import numpy as np

    from core.quiz.serving import NONCE_BYTES, encode_fixed_png, enlarge_sharp

    rng = np.random.default_rng(0)
    for side in (64, 100, 256):
        yy, xx = np.mgrid[0:side, 0:side]
        pictures = {
            "black": np.zeros((side, side, 3), np.uint8),
            "white": np.full((side, side, 3), 255, np.uint8),
            "gradient": np.stack([xx * 255 // side, yy * 255 // side, (xx + yy) % 256], -1),
            "noise": rng.integers(0, 256, (side, side, 3)),
        }
        lengths = set()
        for name, pixels in pictures.items():
            data = encode_fixed_png(Image.fromarray(pixels.astype(np.uint8), "RGB"),
                                    bytes(NONCE_BYTES) if name == "black" else
                                    rng.bytes(NONCE_BYTES))
            lengths.add(len(data))
            with Image.open(io.BytesIO(data)) as decoded:  # lossless: the very same pixels
                assert np.array_equal(np.asarray(decoded), pixels.astype(np.uint8)), name
        assert len(lengths) == 1, (side, lengths)
    # Small pictures are enlarged by a whole factor to at least 256 px, never resampled.
    assert enlarge_sharp(Image.new("RGB", (64, 64))).size == (256, 256)
    assert enlarge_sharp(Image.new("RGB", (100, 100))).size == (300, 300)
    assert enlarge_sharp(Image.new("RGB", (300, 300))).size == (300, 300)
