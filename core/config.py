"""Every SynthLab setting in one object, read from ``SYNTHLAB_*`` environment variables.

``Settings.from_env()`` is the only place that reads the environment; everything else
receives a ``Settings`` (or calls ``get_settings()``), so tests can point the whole app
at a temporary folder by setting ``SYNTHLAB_HOME``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "SYNTHLAB_"


def _env_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """All settings. Each field ``foo`` can be overridden by ``SYNTHLAB_FOO``."""

    home: Path = Path("./data")
    db_url: str = ""  # empty: SQLite file inside ``home``
    # Import safety: images above this many pixels are refused (decompression bombs).
    max_image_pixels: int = 50_000_000
    max_upload_mb: int = 2048
    # Browser uploads wait in the server's memory until the import has read them: at most
    # this many MB per browser session (all its files together); a signed-out browser may
    # hold none (webui.uploads). The largest single file is ``max_upload_mb``.
    max_session_upload_mb: int = 2048
    # Import (core.ingest): decoding processes, and the largest single file accepted.
    ingest_workers: int = 2
    max_import_file_mb: int = 256
    thumbnail_px: int = 192
    # Background jobs.
    worker_poll_seconds: float = 1.0
    worker_heartbeat_seconds: float = 5.0
    # A running job whose worker has not beaten for this long is considered dead.
    worker_stale_seconds: float = 30.0
    autostart_worker: bool = True
    # The worker's log has one line per job event, progress included every this many
    # percent (0: start and end only).
    worker_log_progress_percent: int = 10
    # Generation.
    default_model: str = "stabilityai/sd-turbo"
    local_models_dir: Path | None = None  # extra folder scanned for local diffusers models
    safety_checker: bool = False
    generation_batch_size: int = 4
    device: str = "auto"  # auto | cuda | mps | cpu
    # Preprocessing / training.
    image_size: int = 64
    preprocess_workers: int = 2
    # torch threads while training (SYNTHLAB_TORCH_THREADS, ``train --threads``). 0 picks
    # them per run from the cores really free: usable cores minus the 1-minute load
    # average (on a busy 2-core host 2 threads ran at 0.4x the speed of 1).
    torch_threads: int = 0
    # Near-duplicates (core.neardup): images whose 64-bit perceptual hashes differ in at
    # most this many bits, and whose quarters' mean colours differ by at most
    # ``near_duplicate_colour`` (of 255), are copies of one picture; splits keep them on one
    # side. -1 turns detection off. How the defaults were measured: docs/NEAR_DUPLICATES.md.
    near_duplicate_distance: int = 10
    near_duplicate_colour: int = 12
    # Users.
    auth_mode: str = "none"  # none | password | oidc
    # Password sign-in: after this many failures for one name within the window, that
    # name is refused until the window has passed (slows password guessing).
    login_max_failures: int = 5
    login_window_seconds: int = 300
    # A password sign-in is remembered in the browser (a cookie) for this many days, so a
    # reload or a new tab needs no new sign-in; 0 signs in for the browser tab only.
    session_days: int = 14
    # Quiz: every served image is re-encoded to an uncompressed PNG of this square size,
    # real and synthetic alike, so neither the file nor its byte size gives the answer (a
    # compressed format would: its size follows the picture's entropy).
    quiz_image_px: int = 256
    # The offline demo (python -m core demo, the Home page's button): drawn pictures per
    # class, images per class its generation job makes, and its training epochs.
    demo_images_per_class: int = 200
    demo_generated_per_class: int = 8
    demo_epochs: int = 2
    # Where heavy work runs (core.cluster): "local" (worker processes on this host, the
    # default) or "ray" (a Ray cluster; this host's worker still does every write).
    execution_backend: str = "local"
    # With "ray": "auto" joins the cluster started on this host with `ray start`,
    # "ray://host:10001" a remote head (Ray Client), "local" starts a private Ray instance.
    ray_address: str = "auto"
    # Generation actors per job; 0: one per GPU of the cluster (one per CPU without GPUs).
    ray_actors: int = 0
    # Object store size of a private Ray instance (ray_address=local), MB.
    ray_object_store_mb: int = 200
    # Dealing a round counts the index per class and model once and keeps the counts while
    # no image is curated (new images are added to them); at most this many seconds.
    quiz_census_seconds: float = 60.0
    # Pages: the longest a cached count or list of choices (Home's totals, the Gallery's
    # splits) is reused; any write to the database renews it sooner (core.db.changes).
    page_cache_seconds: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    @property
    def images_dir(self) -> Path:
        return self.home_path / "images"

    @property
    def thumbs_dir(self) -> Path:
        return self.home_path / "thumbs"

    @property
    def tmp_dir(self) -> Path:
        # Inside ``home`` so that the final ``os.replace`` never crosses a filesystem.
        return self.home_path / "tmp"

    @property
    def cache_dir(self) -> Path:
        return self.home_path / "cache"

    @property
    def runs_dir(self) -> Path:
        return self.home_path / "runs"

    @property
    def logs_dir(self) -> Path:
        return self.home_path / "logs"

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{self.home_path / 'synthlab.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_dirs(self) -> None:
        for folder in (self.home_path, self.images_dir, self.thumbs_dir, self.tmp_dir,
                       self.cache_dir, self.runs_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _coerce(f.type, raw)
        values.update(overrides)
        return cls(**values)

    def to_public_dict(self) -> dict[str, Any]:
        """Settings as shown to users (the DB password, if any, is masked)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["db_url"] = _mask_password(self.database_url)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


def _coerce(type_name: Any, raw: str) -> Any:
    text = str(type_name)
    if "bool" in text:
        return _env_bool(raw)
    if "int" in text and "float" not in text:
        return int(raw)
    if "float" in text:
        return float(raw)
    if "Path" in text:
        return Path(raw) if raw else None
    return raw


def _mask_password(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"


_cached: Settings | None = None
_cached_env: tuple | None = None


def get_settings() -> Settings:
    """Settings from the current environment, re-read when ``SYNTHLAB_*`` variables change."""
    global _cached, _cached_env
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    if _cached is None or key != _cached_env:
        _cached = Settings.from_env()
        _cached_env = key
    return _cached
