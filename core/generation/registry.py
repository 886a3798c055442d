"""Which text-to-image models SynthLab knows, and which of them are on this machine.

Presets carry sensible defaults per model family. A model is *available* when it can be
loaded with no network: a folder with a ``model_index.json`` (in
``Settings.local_models_dir``, in ``SYNTHLAB_HOME/models``, or any path the user gave),
or a Hugging Face id already in the local Hugging Face cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from core.config import Settings, get_settings

if TYPE_CHECKING:
    from core.users.identity import Identity


@dataclass(frozen=True)
class ModelPreset:
    key: str
    label: str
    repo_id: str
    size: int  # default width and height in pixels
    steps: int
    guidance: float
    min_steps: int
    max_steps: int
    download_gb: float  # rough download size (fp16 weights where offered)
    notes: str = ""
    gated: bool = False  # the Hub asks you to accept a licence and log in first


PRESETS: tuple[ModelPreset, ...] = (
    ModelPreset("sd15", "Stable Diffusion 1.5", "stable-diffusion-v1-5/stable-diffusion-v1-5",
                size=512, steps=25, guidance=7.5, min_steps=10, max_steps=100, download_gb=5.2,
                notes="the classic; good variety, needs ~25 steps"),
    ModelPreset("sd-turbo", "SD-Turbo", "stabilityai/sd-turbo", size=512, steps=2, guidance=0.0,
                min_steps=1, max_steps=4, download_gb=5.2,
                notes="distilled SD 2.1: 1-4 steps, no guidance; fastest"),
    ModelPreset("sdxl-turbo", "SDXL-Turbo", "stabilityai/sdxl-turbo", size=512, steps=2,
                guidance=0.0, min_steps=1, max_steps=4, download_gb=14.0,
                notes="distilled SDXL: 1-4 steps at 512 px, no guidance"),
    ModelPreset("flux-schnell", "FLUX.1-schnell", "black-forest-labs/FLUX.1-schnell", size=1024,
                steps=4, guidance=0.0, min_steps=1, max_steps=8, download_gb=34.0,
                notes="best quality, needs a 24 GB+ GPU; 1-4 steps", gated=True),
)

FALLBACK_DEFAULTS = {"size": 512, "steps": 25, "guidance": 7.5}


def preset_for(source: str) -> ModelPreset | None:
    """The preset of a key or Hub id (case-insensitive), or None for other models."""
    wanted = source.strip().lower()
    for preset in PRESETS:
        if wanted in (preset.key, preset.repo_id.lower()):
            return preset
    return None


def download_command(repo_id: str) -> str:
    return f"hf download {repo_id}"


@dataclass
class ModelEntry:
    """One row of the model list (a preset, a user-added id/path, or a local folder)."""

    source: str  # what to pass to the loader: a Hub id or a folder path
    label: str
    kind: str  # preset | custom | cached (in the HF cache) | local (a folder)
    available: bool
    location: str | None = None  # the folder it loads from, when available
    preset: ModelPreset | None = None
    how_to_get: str | None = None  # the exact command or step when not available
    tags: list[str] = field(default_factory=list)

    def defaults(self) -> dict[str, float]:
        if self.preset:
            return {"size": self.preset.size, "steps": self.preset.steps,
                    "guidance": self.preset.guidance}
        return dict(FALLBACK_DEFAULTS)


def local_model_dirs(settings: Settings) -> list[Path]:
    folders = [settings.home_path / "models"]
    if settings.local_models_dir:
        folders.insert(0, Path(settings.local_models_dir).expanduser())
    return folders


def is_model_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def looks_like_path(source: str) -> bool:
    """A folder path rather than a Hub id (``owner/name``)."""
    text = source.strip()
    return text.startswith(("/", ".", "~", os.sep)) or Path(text).expanduser().is_dir()


def cached_snapshot(repo_id: str) -> Path | None:
    """The folder of ``repo_id`` in the local Hugging Face cache, or None."""
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        return None
    if isinstance(found, str) and Path(found).is_file():
        return Path(found).parent
    return None


def find_local_folder(source: str, settings: Settings) -> Path | None:
    """A model folder for ``source``: the path itself, or a folder of that name in the model dirs."""
    direct = Path(source).expanduser()
    if is_model_folder(direct):
        return direct.resolve()
    if not looks_like_path(source):
        for folder in local_model_dirs(settings):
            candidate = folder / source.replace("/", "--")
            if is_model_folder(candidate):
                return candidate.resolve()
            candidate = folder / source.rsplit("/", 1)[-1]
            if is_model_folder(candidate):
                return candidate.resolve()
    return None


def locate(source: str, settings: Settings | None = None) -> Path | None:
    """Where ``source`` loads from with no network, or None when it is not on this machine."""
    settings = settings or get_settings()
    folder = find_local_folder(source, settings)
    if folder is not None:
        return folder
    if looks_like_path(source):
        return None
    preset = preset_for(source)
    return cached_snapshot(preset.repo_id if preset else source)


def _scan_local_folders(settings: Settings) -> list[Path]:
    found = []
    for folder in local_model_dirs(settings):
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            if child.is_dir() and is_model_folder(child):
                found.append(child.resolve())
    return found


def _scan_hf_cache() -> list[tuple[str, Path]]:
    """(repo id, snapshot folder) of every diffusers pipeline in the local Hugging Face cache."""
    from huggingface_hub import constants, scan_cache_dir

    try:
        cache = scan_cache_dir(constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001 - no cache folder yet, or an unreadable one
        return []
    found = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            if is_model_folder(Path(revision.snapshot_path)):
                found.append((repo.repo_id, Path(revision.snapshot_path)))
                break
    return found


def _default_label(source: str) -> str:
    """A Hub id names itself; a folder is known by its last part (the full path would
    crowd the menu; the page says where a model loads from)."""
    if looks_like_path(source):
        return f"{Path(source).expanduser().name or source} (folder)"
    return source


def custom_sources(settings: Settings) -> list[tuple[str, str | None]]:
    from core.db.engine import session_scope
    from core.generation.models import CustomModel

    with session_scope(settings) as session:
        return [(row.source, row.label) for row in
                session.scalars(select(CustomModel).order_by(CustomModel.id))]


def add_custom_model(source: str, *, label: str | None = None, added_by: str | None = None,
                     settings: Settings | None = None) -> None:
    """Remember a Hub id or a folder so it shows in the model list (idempotent)."""
    from core.db.engine import run_write
    from core.generation.models import CustomModel

    source = source.strip()
    if not source:
        raise ValueError("give a Hugging Face model id (owner/name) or a folder path")
    if looks_like_path(source):
        if not is_model_folder(Path(source).expanduser()):
            raise ValueError(f"{source} is not a diffusers model folder (no model_index.json in it)")
    else:
        from core.ingest.huggingface import is_hub_id

        if not is_hub_id(source):  # it would sit in everyone's model menu, never loadable
            raise ValueError(f"not a Hugging Face model id (owner/name) nor a folder path "
                             f"(starting with / or ~): {source!r}")

    def write(session) -> None:  # noqa: ANN001
        if session.scalar(select(CustomModel).where(CustomModel.source == source)) is None:
            session.add(CustomModel(source=source, label=label, added_by=added_by))
    run_write(write, settings)


def remove_custom_model(source: str, *, by: "Identity | str | None" = None,
                        settings: Settings | None = None) -> bool:
    """Take a user-added model off everyone's list; its files stay where they are (a Hub
    download stays in the Hugging Face cache, a folder is not touched) and jobs that used it
    keep their records. Only the user who added it or an admin may, in the sign-in modes;
    audited. False when no such user-added model is listed."""
    from core.db.engine import run_write
    from core.generation.models import CustomModel
    from core.users import audit
    from core.users.identity import Identity  # noqa: F811 - the runtime isinstance needs it
    from core.users.permissions import actor_name, refusals_audited, require_current

    source = source.strip()
    identity = by if isinstance(by, Identity) else None

    def delete(session) -> bool:  # noqa: ANN001
        row = session.scalar(select(CustomModel).where(CustomModel.source == source))
        if row is None:
            return False
        if identity is not None:
            added = f" added by {row.added_by}" if row.added_by else ""
            require_current(identity, row.added_by, "delete", f"the model {source}{added}",
                            session=session)
        session.delete(row)
        audit.record(session, actor_name(by), "model_remove", target_kind="model",
                     target_id=source, detail={"label": row.label, "added_by": row.added_by})
        return True

    with refusals_audited(settings):
        return run_write(delete, settings)


def list_models(settings: Settings | None = None) -> list[ModelEntry]:
    """Presets, user-added models and local folders, each marked available or not."""
    settings = settings or get_settings()
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    for preset in PRESETS:
        where = locate(preset.repo_id, settings)
        how = None
        if where is None:
            how = download_command(preset.repo_id)
            if preset.gated:
                how = (f"accept the licence on https://huggingface.co/{preset.repo_id}, run "
                       f"`hf auth login`, then `{how}`")
        entries.append(ModelEntry(preset.repo_id, preset.label, "preset", where is not None,
                                  str(where) if where else None, preset, how,
                                  tags=[f"~{preset.download_gb:g} GB"]))
        seen.add(str(where) if where else preset.repo_id)
    for source, label in custom_sources(settings):
        where = locate(source, settings)
        how = None if where else (download_command(source) if not looks_like_path(source)
                                  else f"the folder {source} is missing or has no model_index.json")
        entries.append(ModelEntry(source, label or _default_label(source), "custom",
                                  where is not None,
                                  str(where) if where else None, preset_for(source), how))
        seen.add(str(where) if where else source)
    known_ids = {e.source.lower() for e in entries}
    for repo_id, folder in _scan_hf_cache():
        if repo_id.lower() in known_ids:
            continue
        entries.append(ModelEntry(repo_id, repo_id, "cached", True, str(folder), preset_for(repo_id)))
    for folder in _scan_local_folders(settings):
        if str(folder) in seen:
            continue
        entries.append(ModelEntry(str(folder), folder.name, "local", True, str(folder)))
    return entries


def models_available(settings: Settings | None = None) -> list[ModelEntry]:
    """The models that load on this machine with no network (for the Home page)."""
    return [entry for entry in list_models(settings) if entry.available]
