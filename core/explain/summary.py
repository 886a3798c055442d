"""Numbers over many cached attributions: does a run's model look at the margins?

The margin mass of one map is the share of its absolute attribution on the letterbox
padding. Averaged per run and image source it answers "does the model cheat on
margins?": compare it with the share of the *area* that is margin (what a model that
looks everywhere equally would give). Images without margins are left out of both means.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import select

from core.config import Settings, get_settings
from core.db.engine import session_scope
from core.explain.attribution import AttributionConfig
from core.explain.models import Attribution


def margin_summary(run_id: int, *, method: str | None = None, config: AttributionConfig | None = None,
                   settings: Settings | None = None) -> list[dict[str, Any]]:
    """Per source: cached maps, how many have margins, mean margin mass and area share.

    ``config``: only maps made with exactly these method parameters (any target class);
    else every map of ``method`` (or of every method).
    """
    settings = settings or get_settings()
    if config is not None:
        method = config.method
    with session_scope(settings) as session:
        query = (select(Attribution.source, Attribution.params, Attribution.margin_mass,
                        Attribution.margin_area)
                 .where(Attribution.run_id == int(run_id)).order_by(Attribution.id))
        if method:
            query = query.where(Attribution.method == method)
        rows = session.execute(query).all()
    wanted = config.key_params() if config is not None else None
    groups: dict[str, list[tuple[float | None, float | None]]] = defaultdict(list)
    for source, params, mass, area in rows:
        if wanted is not None and {k: (params or {}).get(k) for k in wanted} != wanted:
            continue
        groups[source].append((mass, area))
    out = []
    for source in sorted(groups):
        with_margins = [(m, a) for m, a in groups[source] if m is not None and a is not None]
        mass = float(np.mean([m for m, _ in with_margins])) if with_margins else None
        area = float(np.mean([a for _, a in with_margins])) if with_margins else None
        out.append({
            "source": source, "maps": len(groups[source]), "with_margins": len(with_margins),
            "mean_margin_mass": mass, "mean_margin_area": area,
            # > 1: the model puts more weight on the margins than their size explains.
            "ratio": None if not mass or not area else mass / area,
        })
    return out


def margin_table(run_ids: list[int], *, method: str | None = None,
                 config: AttributionConfig | None = None,
                 settings: Settings | None = None) -> list[dict[str, Any]]:
    """``margin_summary`` of several runs as flat rows (one per run and source)."""
    rows = []
    for run_id in run_ids:
        for row in margin_summary(run_id, method=method, config=config, settings=settings):
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
