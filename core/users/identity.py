"""Who is acting: a name, a role, and how we know."""

from __future__ import annotations

from dataclasses import dataclass

AUTH_NONE, AUTH_PASSWORD, AUTH_OIDC = "none", "password", "oidc"
AUTH_MODES = (AUTH_NONE, AUTH_PASSWORD, AUTH_OIDC)
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Identity:
    """The person behind a browser session or a command.

    ``verified`` is False in auth mode ``none``, where the name is whatever was typed in
    the sidebar: good for recording who did what on a laptop, not for authorisation.
    """

    name: str
    is_admin: bool = False
    auth_mode: str = AUTH_NONE
    verified: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} (admin)" if self.is_admin else self.name


def unverified(name: str | None) -> Identity:
    """An identity in auth mode ``none``."""
    return Identity(name=(name or "").strip() or ANONYMOUS, auth_mode=AUTH_NONE)
