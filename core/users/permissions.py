"""Who may change what on a shared server.

In auth mode ``none`` (one person's laptop) everyone may do everything. With real sign-in
(``password``, ``oidc``) a user may delete, relabel or cancel only what they made; the
admin role may do it to anyone's. Creating things (import, generate, train, answer the
quiz) is open to every signed-in user.
"""

from __future__ import annotations

from core.users.identity import AUTH_NONE, Identity

# Actions on somebody's data that need ownership or the admin role.
OWNER_ACTIONS = ("delete", "relabel", "cancel", "exclude")
# Actions that only an admin may take, whoever owns the target.
# Reading a server path exposes the server's files, so with sign-in on it is an admin's call.
ADMIN_ACTIONS = ("manage_users", "repair", "restart_worker", "import_server_path")


class PermissionDenied(PermissionError):
    """The acting user may not do this; the message says why, for the user."""


def can_modify(user: Identity, owner: str | None, action: str) -> bool:
    """May ``user`` take ``action`` on something made by ``owner``?"""
    if action not in OWNER_ACTIONS and action not in ADMIN_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if user.auth_mode == AUTH_NONE:
        return True
    if user.is_admin:
        return True
    if action in ADMIN_ACTIONS:
        return False
    return bool(owner) and owner == user.name


def require(user: Identity, owner: str | None, action: str, what: str = "this") -> None:
    """Raise ``PermissionDenied`` with a readable reason unless ``can_modify`` allows it."""
    if can_modify(user, owner, action):
        return
    if action in ADMIN_ACTIONS:
        raise PermissionDenied(f"only an admin may {action.replace('_', ' ')}")
    raise PermissionDenied(
        f"{user.name} may not {action} {what}: it belongs to {owner or 'nobody'}; "
        "ask an admin")


def is_admin(user: Identity) -> bool:
    """Admin powers: everyone's in auth mode ``none``, the admin role's otherwise."""
    return user.auth_mode == AUTH_NONE or user.is_admin


def cancel_job_as(user: Identity, job_id: int, settings=None) -> bool:  # noqa: ANN001
    """Cancel a job on ``user``'s behalf, if they may; the cancel is audited under their name."""
    from core import jobs

    job = jobs.get_job(job_id, settings)
    if job is None:
        raise LookupError(f"no job with id {job_id}")
    require(user, job.created_by, "cancel", f"job #{job_id}")
    return jobs.request_cancel(job_id, by=user.name, settings=settings)
