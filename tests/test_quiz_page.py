"""The Quiz page in AppTest: a full round (answer, score, stored answer), leaderboard, analysis."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from tests.test_quiz_fairness import streamlit_url
from tests.test_quiz_helpers import add_pool

TIMEOUT = 60
PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "quiz.py")


def _app(player: str | None = "alice"):  # noqa: ANN202
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    if player:
        at.session_state["user_name"] = player
    return at.run()


def _metric(at, label: str) -> str:  # noqa: ANN001
    return next(m.value for m in at.metric if m.label == label)


def _stored_round(settings):  # noqa: ANN001, ANN202
    from core.db.engine import session_scope
    from core.quiz.models import QuizRound

    with session_scope(settings) as session:
        rnd = session.scalar(select(QuizRound).order_by(QuizRound.id.desc()).limit(1))
        return rnd, {img.position: img.is_real for img in rnd.images}, rnd.answer


def test_full_round_answer_score_and_storage(settings):
    from core.db.models import Image as ImageRow
    from core.db.engine import session_scope

    add_pool(settings, real_per_class=4, synthetic={"sd-turbo": 4})
    at = _app()
    assert not at.exception
    assert _metric(at, "Score") == "0"
    at.button(key="quiz_deal").click().run()
    assert not at.exception
    rnd, truth, answer = _stored_round(settings)
    assert answer is None and rnd.player == "alice" and len(truth) == 2
    # Images reach the browser as bytes under content-hash URLs: no id, path or token in them.
    urls = [url for element in at.image for url in element.value]
    assert len(urls) == 2 and all(url.endswith(".png") for url in urls)
    # ...and they are exactly the names Streamlit gives the bytes core.quiz.delivery served
    # (what tests/test_quiz_fairness.py measures, 280 rounds over).
    served = at.session_state["quiz_served"]
    assert [u.rsplit("/", 1)[-1] for u in urls] == [
        streamlit_url(image.data, "PNG", image.px).rsplit("/", 1)[-1] for image in served.images]
    assert any("Keys: **1**-**4** pick the real image" in c.value for c in at.caption)
    with session_scope(settings) as session:
        names = [n for row in session.scalars(select(ImageRow))
                 for n in (row.path, row.sha256[:16], row.original_name)]
    assert not any(name in url for url in urls for name in names)
    assert not any(img.token in url for img in rnd.images for url in urls)

    real_position = next(p for p, real in truth.items() if real)
    at.button(key=f"quiz_pick_{real_position}").click().run()
    assert not at.exception
    assert at.success and "Right" in at.success[0].value
    assert _metric(at, "Score") == "1" and _metric(at, "Streak") == "1"
    assert any("Generated" in m.value and "sd-turbo" in m.value for m in at.markdown)
    # The reveal shows the very same served images (no new download, no new names).
    assert [url for element in at.image for url in element.value] == urls
    assert any("a photo of a apple" in t.value for t in at.text)
    _rnd, _truth, answer = _stored_round(settings)
    assert answer is not None and answer.correct and answer.player == "alice"
    assert answer.chosen_position == real_position and answer.seconds_to_answer >= 0

    # Next round: pick a synthetic image this time.
    at.button(key="quiz_next").click().run()
    rnd2, truth2, _ = _stored_round(settings)
    assert rnd2.id != rnd.id
    wrong = next(p for p, real in truth2.items() if not real)
    at.button(key=f"quiz_pick_{wrong}").click().run()
    assert at.error and "Fooled" in at.error[0].value
    assert _metric(at, "Score") == "1" and _metric(at, "Streak") == "0"
    assert _metric(at, "Accuracy") == "50%"
    board = at.dataframe[0].value
    assert list(board["player"]) == ["alice"] and list(board["score"]) == [1]
    assert at.get("plotly_chart"), "the analysis tab draws the fool-rate charts"


def test_reload_keeps_the_dealt_round_and_single_mode(settings):
    add_pool(settings, real_per_class=4, synthetic={"sd-turbo": 4})
    at = _app("bob")
    at.radio(key="quiz_mode").set_value("single").run()
    at.button(key="quiz_deal").click().run()
    rnd, truth, _ = _stored_round(settings)
    assert rnd.mode == "single" and len(truth) == 1
    # A new browser session (a reload) shows the same unanswered round, not a new one.
    again = _app("bob")
    assert not again.exception and len(again.image) == 1
    guess = "real" if truth[0] else "synthetic"
    again.button(key=f"quiz_guess_{guess}").click().run()
    assert again.success and _stored_round(settings)[2].guess == guess
    # Someone else takes over the browser: they get their own round, not bob's.
    again.session_state["user_name"] = "ben"
    again.run()
    assert not again.image and again.button(key="quiz_deal")


def test_page_without_name_or_images_explains(settings):
    at = _app(None)
    assert not at.exception and "Enter your name" in at.info[0].value
    at = _app("cat")
    assert any("No class has both real and synthetic" in w.value for w in at.warning)
    at = _app("x" * 200)
    assert not at.exception and "at most 120 characters" in at.warning[0].value


def test_train_judge_button_queues_a_job(settings):
    from core import jobs

    add_pool(settings, real_per_class=3, synthetic={"sd-turbo": 3})
    at = _app("dan")
    at.button(key="quiz_deal").click().run()
    at.button(key="quiz_pick_0").click().run()
    submit = next(b for b in at.button if b.label == "Train the judge")
    submit.click().run()
    assert not at.exception
    queued = jobs.list_jobs(kind="quiz-judge", settings=settings)
    assert len(queued) == 1 and queued[0].created_by == "dan"
    assert queued[0].params["max_answer_id"] == 1
    assert any("Queued as job" in s.value for s in at.success)


@pytest.mark.parametrize("mode", ["quad"])
def test_quad_round_from_settings_panel(settings, mode):
    add_pool(settings, real_per_class=2, synthetic={"sd-turbo": 4, "tiny-sd": 1})
    at = _app("eva")
    at.radio(key="quiz_mode").set_value(mode).run()
    at.button(key="quiz_deal").click().run()
    rnd, truth, _ = _stored_round(settings)
    assert rnd.mode == "quad" and rnd.model == "sd-turbo" and sorted(truth) == [0, 1, 2, 3]
    assert len([url for element in at.image for url in element.value]) == 4


def _urls(at) -> list[str]:  # noqa: ANN001
    return [url for element in at.image for url in element.value]


def test_same_images_get_new_names_for_every_serve_and_player(settings):
    # One real and one synthetic image: every pair round shows the very same two pictures.
    add_pool(settings, real_per_class=1, synthetic={"sd-turbo": 1})
    seen: list[str] = []
    for player in ("amy", "ben"):
        at = _app(player)
        for _round in range(2):
            at.button(key="quiz_deal" if not at.image else "quiz_next").click().run()
            urls = _urls(at)
            assert len(urls) == 2
            at.run()  # a rerun of the same page is the same serve: nothing reloads
            assert _urls(at) == urls
            seen += urls
            at.button(key="quiz_pick_0").click().run()
        # A reload (a new session) of an unanswered round serves it anew.
        at.button(key="quiz_next").click().run()
        before = _urls(at)
        again = _app(player)
        assert len(_urls(again)) == 2 and not set(_urls(again)) & set(before)
        seen += before + _urls(again)
    assert len(seen) == len(set(seen)) == 16


def test_skip_is_recorded_not_scored_and_reveals_nothing(settings):
    from core.db.engine import session_scope
    from core.quiz import rounds, stats
    from core.quiz.models import QuizAnswer

    add_pool(settings, real_per_class=3, synthetic={"sd-turbo": 3})
    at = _app("sam")
    at.button(key="quiz_deal").click().run()
    first, _truth, _ = _stored_round(settings)
    at.button(key="quiz_skip").click().run()
    assert not at.exception and not at.success and not at.error  # no reveal after a skip
    second, _truth, _ = _stored_round(settings)
    assert second.id != first.id and len(_urls(at)) == 2  # straight to the next round
    with session_scope(settings) as session:
        skip = session.scalar(select(QuizAnswer).where(QuizAnswer.round_id == first.id))
        assert skip.guess == "skip" and skip.chosen_position is None and skip.fooled is None
    assert rounds.reveal_round(first.token, settings) is None
    assert _metric(at, "Skipped") == "1" and _metric(at, "Score") == "0"
    assert _metric(at, "Accuracy") == "-"  # a skip is not a wrong answer
    score = stats.player_score("sam", settings)
    assert (score.answered, score.skipped) == (0, 1)
    assert stats.analysis(settings)["overall"]["rounds"] == 0
    with pytest.raises(rounds.AlreadyAnswered):
        rounds.skip_round("sam", first.token, settings)
    assert rounds.open_round("sam", settings).token == second.token


def test_rounds_for_one_class_model_or_preprocessing(settings):
    add_pool(settings, classes=("apple", "lime"), real_per_class=3,
             synthetic={"sd-turbo": 3, "tiny-sd": 3})
    at = _app("uma")
    at.selectbox(key="quiz_class").set_value("lime")
    at.selectbox(key="quiz_model").set_value("tiny-sd").run()
    for _ in range(3):
        at.button(key="quiz_deal" if not _urls(at) else "quiz_next").click().run()
        rnd, _truth, _ = _stored_round(settings)
        assert rnd.model == "tiny-sd" and rnd.filters["class_name"] == "lime"
        assert any(c.value.startswith("Quizzed on:") and "class Lime" in c.value
                   and "model tiny-sd" in c.value for c in at.caption)
        at.button(key="quiz_pick_1").click().run()
    at.radio(key="quiz_view").set_value("model").run()
    at.button(key="quiz_next").click().run()
    rnd, _truth, _ = _stored_round(settings)
    assert rnd.view == "model" and rnd.view_label.startswith("model view")
    assert any("As the model sees them: the 64 x 64 px model input, enlarged 4x with "
               "nearest-neighbour" in c.value for c in at.caption)
