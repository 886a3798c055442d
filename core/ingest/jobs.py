"""Imports as background jobs (kind ``import``), so the dashboard never decodes in its own thread.

Uploaded files are first staged under ``SYNTHLAB_HOME/uploads/<token>/`` (names made
safe: relative, no ``..``; a folder upload keeps its sub-folders; written atomically); the job imports that folder or archive and
removes the staging folder when it ends. A resumed job simply imports again: images
already indexed count as duplicates, so nothing is added twice.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from core import jobs
from core.config import Settings, get_settings
from core.ingest.huggingface import check_hub_id
from core.ingest.importer import ImportOptions, import_dataset
from core.store import atomic_write

KIND = "import"
MAX_REJECTIONS_IN_RESULT = 5000


def uploads_dir(settings: Settings) -> Path:
    return settings.home_path / "uploads"


def safe_upload_path(name: str) -> PurePosixPath:
    """A browser-supplied name (``photo.jpg``, or ``fruit/apple/1.jpg`` from a folder upload)
    as a harmless relative path: no absolute part, no ``..``, no odd characters."""
    parts = []
    for part in re.split(r"[\\/]+", name):
        part = re.sub(r"[^\w.\- ()]+", "_", part.strip()).lstrip(".")
        if part and part not in (".", ".."):
            parts.append(part)
    return PurePosixPath(*parts) if parts else PurePosixPath("upload")


def stage_uploads(files: list[tuple[str, bytes]], settings: Settings | None = None) -> Path:
    """Write uploaded files (keeping a folder upload's sub-folders) to a fresh staging
    folder; a single zip is returned as itself."""
    settings = settings or get_settings()
    limit = settings.max_upload_mb * 2**20
    if sum(len(data) for _name, data in files) > limit:
        raise ValueError(f"upload larger than {settings.max_upload_mb} MB (SYNTHLAB_MAX_UPLOAD_MB)")
    folder = uploads_dir(settings) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    used: set[str] = set()
    paths = []
    for name, data in files:
        relative = safe_upload_path(name)
        candidate, n = relative, 1
        while str(candidate).lower() in used:
            candidate = relative.with_name(f"{relative.stem}-{n}{relative.suffix}")
            n += 1
        used.add(str(candidate).lower())
        path = folder / candidate
        if folder.resolve() not in path.resolve().parents:  # pragma: no cover - sanitised above
            raise ValueError(f"unsafe upload name: {name!r}")
        atomic_write(path, data, settings.tmp_dir)
        paths.append(path)
    if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
        return paths[0]
    return folder


def submit_import(path: str, *, dataset: str | None = None, source: str = "real",
                  force_class: str | None = None, crop_boxes: bool = False,
                  user: str | None = None, settings: Settings | None = None,
                  hub_only: bool = False) -> int:
    """Queue an import. ``hub_only``: ``path`` must be a Hugging Face Hub id (checked now and
    again when the job runs), so a Hub id field can never import a folder on the server."""
    if hub_only:
        check_hub_id(str(path))
    else:
        _require_server_path_right(path, user, settings)
    params = {"path": str(path), "dataset": dataset, "source": source,
              "force_class": force_class, "crop_boxes": crop_boxes, "hub_only": hub_only}
    title = f"Import {dataset or Path(str(path)).name}"
    return jobs.submit(KIND, params, title=title, created_by=user, unit="files",
                       settings=settings)


def _require_server_path_right(path: str, user: Any, settings: Settings | None) -> None:  # noqa: ANN401
    """Reading a folder on the server is an admin's call when sign-in is on; files a user
    uploaded (staged under the uploads folder) and Hub ids are everyone's. Checked here,
    not only on the page, with the account as it is now (a demoted admin is refused)."""
    from core.config import get_settings
    from core.users.identity import Identity
    from core.users.permissions import refusals_audited, require_current

    if not isinstance(user, Identity):
        return  # the CLI and scripts: the person at the server's shell
    settings = settings or get_settings()
    local = Path(str(path)).expanduser()
    if not local.exists() or _staged_folder(settings, local) is not None:
        return  # a Hub id, or the user's own upload
    with refusals_audited(settings):
        require_current(user, None, "import_server_path", "a folder on the server",
                        settings=settings)


def _staged_folder(settings: Settings, path: Path) -> Path | None:
    root = uploads_dir(settings).resolve()
    resolved = path.resolve()
    for parent in (resolved, *resolved.parents):
        if parent.parent == root:
            return parent
    return None


def _remove_staged(staged: Path | None) -> None:
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)


@jobs.register_handler(KIND)
def run_import(ctx: jobs.JobContext) -> dict[str, Any]:
    params = ctx.params
    options = ImportOptions(dataset=params.get("dataset"), source=params.get("source") or "real",
                            force_class=params.get("force_class") or None,
                            crop_boxes=bool(params.get("crop_boxes")), added_by=ctx.created_by,
                            hub_only=bool(params.get("hub_only")))
    path = Path(params["path"])
    staged = _staged_folder(ctx.settings, path)
    try:
        report = import_dataset(params["path"], ctx.settings, options,
                                progress=lambda done, total, message: ctx.progress(
                                    done, total, message, force=done in (0, total)))
    except KeyboardInterrupt:
        raise  # the worker is stopping: keep the staged files for the resumed job
    except BaseException:
        _remove_staged(staged)
        raise
    _remove_staged(staged)
    ctx.log(report.summary)
    result = report.to_dict()
    if len(result["rejected"]) > MAX_REJECTIONS_IN_RESULT:
        result["rejected_truncated"] = len(result["rejected"])
        result["rejected"] = result["rejected"][:MAX_REJECTIONS_IN_RESULT]
    return result
