"""Numbers over many cached attributions: does a run's model look at the margins?

The margin mass of one map is the share of its absolute attribution on the letterbox
padding. Averaged per run and image source it answers "does the model cheat on
margins?": compare it with the share of the *area* that is margin (what a model that
looks everywhere equally would give). Images without margins are left out of both means.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from core.config import Settings, get_settings
from core.db.engine import session_scope
from core.explain.models import Attribution


def margin_summary(run_id: int, *, method: str | None = None,
                   settings: Settings | None = None) -> list[dict[str, Any]]:
    """Per source: cached maps, how many have margins, mean margin mass and area share."""
    settings = settings or get_settings()
    with session_scope(settings) as session:
        query = (select(Attribution.source, func.count(Attribution.id),
                        func.count(Attribution.margin_mass), func.avg(Attribution.margin_mass),
                        func.avg(Attribution.margin_area))
                 .where(Attribution.run_id == int(run_id))
                 .group_by(Attribution.source).order_by(Attribution.source))
        if method:
            query = query.where(Attribution.method == method)
        rows = session.execute(query).all()
    out = []
    for source, count, with_margins, mass, area in rows:
        out.append({
            "source": source, "maps": int(count), "with_margins": int(with_margins),
            "mean_margin_mass": None if mass is None else float(mass),
            "mean_margin_area": None if area is None else float(area),
            # > 1: the model puts more weight on the margins than their size explains.
            "ratio": None if not mass or not area else float(mass) / float(area),
        })
    return out


def margin_table(run_ids: list[int], *, method: str | None = None,
                 settings: Settings | None = None) -> list[dict[str, Any]]:
    """``margin_summary`` of several runs as flat rows (one per run and source)."""
    rows = []
    for run_id in run_ids:
        for row in margin_summary(run_id, method=method, settings=settings):
            rows.append({"run_id": int(run_id), **row})
    return rows


def cached_for_run(run_id: int, *, method: str | None = None, source: str | None = None,
                   settings: Settings | None = None, limit: int = 500) -> list[Attribution]:
    settings = settings or get_settings()
    with session_scope(settings) as session:
        query = (select(Attribution).where(Attribution.run_id == int(run_id))
                 .order_by(Attribution.id.desc()).limit(limit))
        if method:
            query = query.where(Attribution.method == method)
        if source:
            query = query.where(Attribution.source == source)
        return list(session.scalars(query))
