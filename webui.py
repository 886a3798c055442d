"""Streamlit helpers shared by the pages: start-up, the current user, the sidebar.

Pages stay thin: widgets here and in ``pages/``, logic in ``core/``.
"""

from __future__ import annotations

import streamlit as st

from core.config import Settings, get_settings
from core.db.engine import init_db


@st.cache_resource(show_spinner=False)
def _device_info():  # noqa: ANN202 - cached across sessions: the hardware does not change
    from core.device import detect_device

    return detect_device()


def boot() -> Settings:
    """Run once per script run: migrate the DB (once per process) and keep a worker alive."""
    settings = get_settings()
    init_db(settings)
    if not st.session_state.get("_worker_checked"):
        from core.worker import ensure_worker

        ensure_worker(settings)
        st.session_state["_worker_checked"] = True
    return settings


def current_user() -> str:
    """Who is using this browser session (auth mode ``none``: a name picked in the sidebar)."""
    return st.session_state.get("user_name") or "anonymous"


def sidebar(settings: Settings) -> None:
    with st.sidebar:
        st.text_input("Your name", key="user_name", placeholder="anonymous",
                      help="Recorded on every import, job and quiz answer you make.")
        device = _device_info()
        st.caption(f"Device: {device.label}")
        st.caption(f"Data: `{settings.home_path}`")


def device_info():  # noqa: ANN201
    return _device_info()
