"""The Quiz page in AppTest: a full round (answer, score, stored answer), leaderboard, analysis."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

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
    assert len(urls) == 2 and all(url.endswith(".jpg") for url in urls)
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
