"""Who may leave files in the server's memory through Streamlit's upload endpoint.

Streamlit 1.67 accepts ``PUT /_stcore/upload_file/<session id>/<file id>`` from any
connected browser session - including one that shows only the sign-in form - and keeps
the bytes in its ``MemoryUploadedFileManager`` until the session ends. It offers no
setting or hook that runs before a body is read: its handler reads the body (capped by
``server.maxUploadSize``) and then calls the runtime's ``uploaded_file_mgr.add_file``.
That call is where a decision can live, so this module wraps it on the runtime's own
manager (the object the upload route holds), once per server process:

* a file for a session that has not passed the sign-in gate is refused (403) and dropped;
* a file over ``max_upload_mb``, or one that would take the session past
  ``max_session_upload_mb``, is refused (413) and dropped;
* every page run of a signed-out session discards whatever files it still holds (closes
  the gap before the wrapper is installed by the first page run after a server start);
* the import page releases its files as soon as it has written them to disk.

A body is still read into memory while its request lasts (up to ``server.maxUploadSize``):
only a reverse proxy can refuse before reading (README, "Behind a reverse proxy").
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from core.config import get_settings

_LOCK = threading.Lock()
# Streamlit session ids whose latest page run passed the sign-in gate (or sign-in is off).
_ALLOWED: set[str] = set()
_MB = 2**20


def _runtime() -> Any | None:
    """The running Streamlit runtime, or None (AppTest, a bare script run)."""
    from streamlit.runtime import Runtime

    return Runtime.instance() if Runtime.exists() else None


def _session_id() -> str | None:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def _held_bytes(manager: Any, session_id: str, except_file: str) -> int:
    """What the session keeps now (MemoryUploadedFileManager.file_storage), ``except_file``
    not counted (a re-sent file replaces itself)."""
    files = dict(getattr(manager, "file_storage", {}).get(session_id, {}))
    return sum(len(rec.data) for file_id, rec in files.items() if file_id != except_file)


def _install(runtime: Any) -> Any:
    """Wrap ``add_file`` of the runtime's upload manager (idempotent); returns the manager."""
    manager = runtime.uploaded_file_mgr
    if getattr(manager, "_synthlab_guarded", False):
        return manager
    original_add = manager.add_file

    def guarded_add_file(session_id: str, file: Any) -> None:
        # Raised inside the upload route: Starlette answers with this status, and the
        # bytes, never stored, go with the request.
        from starlette.exceptions import HTTPException

        settings = get_settings()
        size = len(file.data)
        with _LOCK:
            if session_id not in _ALLOWED:
                raise HTTPException(status_code=403, detail="sign in before uploading")
            if size > settings.max_upload_mb * _MB:
                raise HTTPException(status_code=413, detail="file too large")
            if _held_bytes(manager, session_id, file.file_id) + size > (
                    settings.max_session_upload_mb * _MB):
                raise HTTPException(status_code=413, detail="too much uploaded at once")
            original_add(session_id, file)

    manager.add_file = guarded_add_file
    manager._synthlab_guarded = True
    return manager


def set_uploads_allowed(allowed: bool) -> None:
    """Record whether this browser session passed the sign-in gate on this page run; a
    session that did not loses every file it holds."""
    runtime = _runtime()
    session_id = _session_id()
    if runtime is None or session_id is None:
        return
    manager = _install(runtime)
    with _LOCK:
        # Forget sessions that have ended, so the set stays as small as the live ones.
        _ALLOWED.intersection_update(
            {sid for sid in _ALLOWED if runtime.is_active_session(sid)})
        if allowed:
            _ALLOWED.add(session_id)
        else:
            _ALLOWED.discard(session_id)
    if not allowed:
        manager.remove_session_files(session_id)


def release_uploads(files: Iterable[Any]) -> None:
    """Drop uploaded files (``st.file_uploader``'s values) from memory once read."""
    runtime = _runtime()
    session_id = _session_id()
    if runtime is None or session_id is None:
        return
    for file in files:
        file_id = getattr(file, "file_id", None)
        if file_id:
            runtime.uploaded_file_mgr.remove_file(session_id, file_id)
