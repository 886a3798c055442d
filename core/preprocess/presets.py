"""Pipelines saved by name in the database, shared by every user of the server, and
``load_pipeline``, which resolves a name (saved preset first, then the built-ins)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.engine import run_write, session_scope
from core.db.models import utcnow
from core.preprocess.models import PreprocessPreset
from core.preprocess.pipeline import DEFAULT_NAMES, Pipeline, PipelineError, default_pipeline
from core.users import audit
from core.users.identity import Identity
from core.users.permissions import actor_name, refusals_audited, require_current

MAX_NAME_LENGTH = 120


class PresetExists(PipelineError):
    """A preset of that name exists and overwriting was not asked for."""


def _clean_name(name: str) -> str:
    cleaned = (name or "").strip()
    if not cleaned:
        raise PipelineError("a preset needs a name")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise PipelineError(f"preset names are at most {MAX_NAME_LENGTH} characters")
    return cleaned


def _authorise(session: Session, identity: Identity | None, name: str,
               row: PreprocessPreset | None, what: str) -> None:
    """With sign-in on: the acting user still exists, only an admin overrides a built-in
    preset (it changes every user's later runs), and only a preset's maker or an admin
    replaces or deletes it. ``identity=None`` (CLI, scripts) is trusted."""
    if identity is None:
        return
    fresh = require_current(identity, None, None, what, session=session)
    if name in DEFAULT_NAMES:
        require_current(fresh, None, "override_builtin_preset", what, session=session)
    if row is not None:
        require_current(fresh, row.created_by, "delete", what, session=session)


def save_preset(name: str, pipeline: Pipeline, user: "str | Identity | None" = None, *,
                settings: Settings | None = None, notes: str | None = None,
                overwrite: bool = True) -> PreprocessPreset:
    """Save ``pipeline`` as ``name`` (replacing an existing preset unless ``overwrite`` is
    False). Saving as ``real`` or ``synthetic`` edits that default.

    ``user`` is a name (trusted) or an ``Identity`` (pages), checked now (see
    ``_authorise``); the save is audited, a refusal too.
    """
    cleaned = _clean_name(name)
    identity = user if isinstance(user, Identity) else None
    user = identity.name if identity is not None else user
    # Round-trip first: a spec that cannot be read back is refused before it is stored.
    spec = Pipeline.from_dict(pipeline.to_dict()).to_dict()
    spec.pop("name", None)

    def write(session: Session) -> PreprocessPreset:
        row = session.scalar(select(PreprocessPreset).where(PreprocessPreset.name == cleaned))
        if row is not None and not overwrite:
            raise PresetExists(f"a preset named {cleaned!r} already exists")
        _authorise(session, identity, cleaned, row, f"preset {cleaned!r}")
        audit.record(session, user, "preset_save", target_kind="preset", target_id=cleaned,
                     detail={"hash": pipeline.hash(), "replaced": row is not None})
        if row is None:
            row = PreprocessPreset(name=cleaned, created_by=user, spec=spec)
            session.add(row)
        row.spec = spec
        row.pipeline_hash = pipeline.hash()
        row.notes = notes if notes is not None else row.notes
        row.updated_by = user
        row.updated_at = utcnow()
        session.flush()
        return row

    with refusals_audited(settings):
        return run_write(write, settings)


def get_preset(name: str, settings: Settings | None = None) -> PreprocessPreset | None:
    with session_scope(settings) as session:
        return session.scalar(select(PreprocessPreset).where(PreprocessPreset.name == name.strip()))


def list_presets(settings: Settings | None = None) -> list[PreprocessPreset]:
    with session_scope(settings) as session:
        return list(session.scalars(select(PreprocessPreset).order_by(PreprocessPreset.name)))


def delete_preset(name: str, settings: Settings | None = None, *,
                  actor: "str | Identity | None" = None) -> bool:
    """Delete a preset; deleting ``real`` or ``synthetic`` restores the built-in default.

    ``actor`` as ``user`` in ``save_preset``: an identity is checked now; audited."""
    cleaned = name.strip()
    identity = actor if isinstance(actor, Identity) else None

    def delete(session: Session) -> bool:
        row = session.scalar(select(PreprocessPreset).where(PreprocessPreset.name == cleaned))
        if row is None:
            return False
        _authorise(session, identity, cleaned, row, f"preset {cleaned!r}")
        session.delete(row)
        audit.record(session, actor_name(actor), "preset_delete", target_kind="preset",
                     target_id=cleaned)
        return True

    with refusals_audited(settings):
        return run_write(delete, settings)


def load_pipeline(spec: "str | dict[str, Any] | Pipeline | Any", settings: Any = None, *,
                  size: int | None = None) -> Pipeline:
    """A pipeline from a preset name (DB first, then the built-in defaults), a spec dict,
    a ``PreprocessPreset`` row or a ``Pipeline``; ``size`` changes its output size."""
    if isinstance(spec, Pipeline):
        pipeline = spec
    elif isinstance(spec, dict):
        pipeline = Pipeline.from_dict(spec)
    elif isinstance(spec, str):
        preset = get_preset(spec, settings)
        if preset is not None:
            pipeline = Pipeline.from_dict({**preset.spec, "name": preset.name})
        elif spec in DEFAULT_NAMES:
            pipeline = default_pipeline(spec, _default_size(settings))
        else:
            known = sorted(set(DEFAULT_NAMES) | {p.name for p in list_presets(settings)})
            raise PipelineError(f"no pipeline preset named {spec!r}; available: {', '.join(known)}")
    elif hasattr(spec, "spec") and hasattr(spec, "name"):
        pipeline = Pipeline.from_dict({**spec.spec, "name": spec.name})
    else:
        raise PipelineError(f"cannot make a pipeline from {type(spec).__name__}")
    return pipeline.with_size(size) if size else pipeline


def _default_size(settings: Any) -> int:
    if settings is None:
        from core.config import get_settings

        settings = get_settings()
    return int(settings.image_size)
