"""What a user last typed into a page's form, kept across reloads and new sessions.

One small JSON file per user and form under ``<home>/forms/``; the file name is a hash of
the user's name, so any name (spaces, slashes, non-Latin letters) is a safe file name.
Values are plain JSON (numbers, strings, lists); the page checks each one against its
widget's current options and bounds before it uses it, since models, classes and limits
may have changed since it was saved.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from core.config import Settings, get_settings
from core.store import atomic_write

_FORM_NAME = re.compile(r"[a-z][a-z0-9_-]{0,40}")
# A form is a handful of fields: anything bigger was not written by us.
MAX_FORM_BYTES = 64_000


def _path(user: str, form: str, settings: Settings) -> Path:
    if not _FORM_NAME.fullmatch(form):
        raise ValueError(f"not a form name: {form!r}")
    digest = hashlib.sha256(user.encode("utf-8")).hexdigest()[:32]
    return settings.home_path / "forms" / form / f"{digest}.json"


def load_form(user: str, form: str, settings: Settings | None = None) -> dict[str, Any]:
    """The values ``user`` last left in ``form``; empty when none (or unreadable)."""
    path = _path(user, form, settings or get_settings())
    try:
        if path.stat().st_size > MAX_FORM_BYTES:
            return {}
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def save_form(user: str, form: str, values: dict[str, Any],
              settings: Settings | None = None) -> bool:
    """Remember ``values`` for ``user``; False when nothing changed (no write)."""
    settings = settings or get_settings()
    data = json.dumps(values, sort_keys=True, default=str).encode("utf-8")
    if len(data) > MAX_FORM_BYTES:
        raise ValueError(f"form {form!r} is too big to remember ({len(data)} bytes)")
    path = _path(user, form, settings)
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    # No fsync: losing the last form values in a power cut costs a few clicks.
    atomic_write(path, data, settings.tmp_dir, fsync=False)
    return True
