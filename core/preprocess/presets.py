"""Pipelines saved by name in the database, shared by every user of the server."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.engine import run_write, session_scope
from core.db.models import utcnow
from core.preprocess.models import PreprocessPreset
from core.preprocess.pipeline import Pipeline, PipelineError

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


def save_preset(name: str, pipeline: Pipeline, user: str | None = None, *,
                settings: Settings | None = None, notes: str | None = None,
                overwrite: bool = True) -> PreprocessPreset:
    """Save ``pipeline`` as ``name`` (replacing an existing preset unless ``overwrite`` is
    False). Saving as ``real`` or ``synthetic`` edits that default."""
    cleaned = _clean_name(name)
    # Round-trip first: a spec that cannot be read back is refused before it is stored.
    spec = Pipeline.from_dict(pipeline.to_dict()).to_dict()
    spec.pop("name", None)

    def write(session: Session) -> PreprocessPreset:
        row = session.scalar(select(PreprocessPreset).where(PreprocessPreset.name == cleaned))
        if row is not None and not overwrite:
            raise PresetExists(f"a preset named {cleaned!r} already exists")
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

    return run_write(write, settings)


def get_preset(name: str, settings: Settings | None = None) -> PreprocessPreset | None:
    with session_scope(settings) as session:
        return session.scalar(select(PreprocessPreset).where(PreprocessPreset.name == name.strip()))


def list_presets(settings: Settings | None = None) -> list[PreprocessPreset]:
    with session_scope(settings) as session:
        return list(session.scalars(select(PreprocessPreset).order_by(PreprocessPreset.name)))


def delete_preset(name: str, settings: Settings | None = None) -> bool:
    """Delete a preset; deleting ``real`` or ``synthetic`` restores the built-in default."""
    def delete(session: Session) -> bool:
        row = session.scalar(select(PreprocessPreset).where(PreprocessPreset.name == name.strip()))
        if row is None:
            return False
        session.delete(row)
        return True

    return run_write(delete, settings)
