"""Dealing from counts (core.quiz.choosing's census) stays right when the index changes
behind the counts' back: a change with no audit entry, new images, and filters."""

from __future__ import annotations

from sqlalchemy import select, update

from tests.test_postgres import pg_settings, postgres_server  # noqa: F401 - fixtures
from tests.test_quiz_helpers import add_pool


def _round_images(token: str, settings) -> list[int]:  # noqa: ANN001
    from core.db.engine import session_scope
    from core.quiz.models import QuizRound, QuizRoundImage

    with session_scope(settings) as session:
        return list(session.scalars(select(QuizRoundImage.image_id).join(QuizRound)
                                    .where(QuizRound.token == token)))


def test_deal_follows_unaudited_exclusions_and_new_images(settings):
    from core.db.engine import session_scope
    from core.db.models import Image
    from core.quiz import rounds

    add_pool(settings, real_per_class=4, synthetic={"sd-turbo": 4})
    first = rounds.new_round("ann", rounds.RoundRequest(mode="pair", seed=1), settings)
    seen = set(_round_images(first.token, settings))
    # Exclude every unseen image but one per side straight in SQL (as `check --repair`
    # may, with no audit entry): the counts kept from the first deal are now too high.
    with session_scope(settings, write=True) as session:
        unseen = {source: [i for i in session.scalars(
            select(Image.id).where(Image.source == source).order_by(Image.id)) if i not in seen]
            for source in ("real", "synthetic")}
        hidden = [i for ids in unseen.values() for i in ids[1:]]
        session.execute(update(Image).where(Image.id.in_(hidden)).values(excluded=True))
    for seed in range(2, 8):
        token = rounds.new_round("ben", rounds.RoundRequest(mode="pair", seed=seed), settings).token
        assert not set(_round_images(token, settings)) & set(hidden), "an excluded image was dealt"
    second = rounds.new_round("ann", rounds.RoundRequest(mode="pair", seed=9), settings)
    # The one unseen image left on each side comes before any repeat.
    assert sorted(_round_images(second.token, settings)) == sorted(
        ids[0] for ids in unseen.values())

    add_pool(settings, classes=("lime",), real_per_class=2, synthetic={"sd-turbo": 2})
    lime = rounds.new_round("ann", rounds.RoundRequest(mode="pair", class_name="lime"), settings)
    assert lime.class_name == "lime"  # new images are dealt at once


def test_deal_and_change_marker_on_postgres(pg_settings):
    from core import gallery
    from core.db.changes import change_marker
    from core.quiz import rounds

    from core.db.engine import init_db

    settings = pg_settings
    init_db(settings)
    before = change_marker(settings)
    add_pool(settings, real_per_class=2, synthetic={"sd-turbo": 2})
    assert change_marker(settings) != before
    dealt = [_round_images(rounds.new_round("ann", rounds.RoundRequest(mode="pair"), settings).token,
                           settings) for _ in range(2)]
    assert len(set(dealt[0]) | set(dealt[1])) == 4  # no repeat until the pool is used up
    marker = change_marker(settings)
    gallery.set_excluded(dealt[0][:1], True, actor="ann", settings=settings)
    assert change_marker(settings) != marker  # a curation is seen too
    for _ in range(2):
        token = rounds.new_round("ben", rounds.RoundRequest(mode="pair"), settings).token
        assert dealt[0][0] not in _round_images(token, settings)
