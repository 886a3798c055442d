"""Which sign-in a server uses: settings (``SYNTHLAB_AUTH_MODE``) or ``secrets.toml``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.config import Settings
from core.users.identity import AUTH_MODES, AUTH_NONE


class AuthConfigError(ValueError):
    """The configured auth mode is unknown or incomplete; the server must not open up."""


def resolve_auth_mode(settings: Settings, secrets: Mapping[str, Any] | None = None) -> str:
    """The auth mode in force.

    ``SYNTHLAB_AUTH_MODE`` wins when it asks for sign-in; otherwise ``[synthlab] auth_mode``
    in ``.streamlit/secrets.toml``; otherwise ``none``. An unknown value is an error rather
    than a silent fallback to no sign-in.
    """
    mode = (settings.auth_mode or AUTH_NONE).strip().lower()
    if mode == AUTH_NONE and secrets:
        section = secrets.get("synthlab") or {}
        mode = str(section.get("auth_mode", AUTH_NONE)).strip().lower()
    if mode not in AUTH_MODES:
        raise AuthConfigError(f"unknown auth_mode {mode!r}; use one of {', '.join(AUTH_MODES)}")
    if mode == "oidc" and secrets is not None and not (secrets.get("auth") or {}):
        raise AuthConfigError(
            "auth_mode is oidc but .streamlit/secrets.toml has no [auth] section with the "
            "provider (redirect_uri, cookie_secret, client_id, client_secret, "
            "server_metadata_url); see the README, 'Running on a shared lab server'")
    return mode
