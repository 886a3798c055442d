"""Who may change what on a shared server.

In auth mode ``none`` (one person's laptop) everyone may do everything. With real sign-in
(``password``, ``oidc``) a user may delete, relabel or cancel only what they made; the
admin role may do it to anyone's. Creating things (import, generate, train, answer the
quiz) is open to every signed-in user.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from core.users.identity import AUTH_NONE, AUTH_PASSWORD, Identity

# Actions on somebody's data that need ownership or the admin role.
OWNER_ACTIONS = ("delete", "relabel", "cancel", "exclude")
# Actions that only an admin may take, whoever owns the target.
# Reading a server path exposes the server's files, so with sign-in on it is an admin's call.
# A built-in preprocessing preset (real, synthetic, ...) saved under its own name changes
# every later run of every user, so overriding (or restoring) one is an admin's call too.
ADMIN_ACTIONS = ("manage_users", "repair", "restart_worker", "import_server_path",
                 "override_builtin_preset")


class PermissionDenied(PermissionError):
    """The acting user may not do this; the message says why, for the user.

    ``actor``, ``action`` and ``target`` are filled in by the guards below so that
    ``refusals_audited`` can write the refusal to the audit log.
    """

    def __init__(self, message: str, *, actor: str | None = None, action: str | None = None,
                 target: str | None = None) -> None:
        super().__init__(message)
        self.actor = actor
        self.action = action
        self.target = target


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
    # Said once: a ``what`` that already names the owner ("images added by ann") is not
    # followed by "it belongs to ann".
    whose = "" if owner and owner in what else f": it belongs to {owner or 'nobody'}"
    raise PermissionDenied(f"User {user.name} may not {action} {what}{whose}; ask an admin")


def current(user: Identity, session: Any = None, settings: Any = None) -> Identity:
    """``user`` as the database knows them *now*.

    A browser session keeps the identity it signed in with, and a click inside a fragment
    reruns only the fragment, not the page's sign-in check; so every state-changing core
    function calls this at the moment of the action. With sign-in off (auth mode ``none``)
    nothing is looked up. In mode ``password`` an account that is gone (or has lost its
    password) may do nothing; in ``oidc`` the provider vouches for the person, and only the
    admin role comes from the local account, so a missing account means a plain user.
    Pass the caller's write ``session`` to read in the same transaction as the change.
    """
    if user.auth_mode == AUTH_NONE:
        return user
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.db.models import User

    def read(s: Any) -> tuple[bool, bool, bool] | None:
        row = s.execute(select(User.is_admin, User.password_hash)
                        .where(User.name == user.name)).first()
        return None if row is None else (True, bool(row[0]), bool(row[1]))

    if session is not None:
        found = read(session)
    else:
        with session_scope(settings) as s:
            found = read(s)
    if user.auth_mode == AUTH_PASSWORD and (found is None or not found[2]):
        raise PermissionDenied(f"{user.name} no longer has an account here; sign in again",
                               actor=user.name)
    admin = bool(found and found[1])
    if admin == user.is_admin:
        return user
    return Identity(user.name, admin, user.auth_mode, verified=user.verified)


def require_current(user: Identity, owner: str | None, action: str | None, what: str = "this",
                    *, session: Any = None, settings: Any = None) -> Identity:
    """Re-read ``user`` (``current``), then ``require`` ``action`` on ``owner``'s thing.

    ``action=None`` only checks that the user still exists (creating things, such as
    queueing a job, is open to every signed-in user). Returns the fresh identity; raises
    ``PermissionDenied`` tagged with actor, action and target for the audit log.
    """
    try:
        fresh = current(user, session, settings)
        if action is not None:
            require(fresh, owner, action, what)
        return fresh
    except PermissionDenied as exc:
        exc.actor, exc.action, exc.target = user.name, exc.action or action, exc.target or what
        raise


@contextlib.contextmanager
def refusals_audited(settings: Any = None) -> Iterator[None]:
    """Write every ``PermissionDenied`` raised inside to the audit log, then re-raise.

    Wrap it around the write transaction, not inside it: the refused transaction rolls
    back, so its refusal is recorded in a transaction of its own, after it (inside, a
    second writer would also wait on SQLite's lock held by the first).
    """
    try:
        yield
    except PermissionDenied as exc:
        from core.users import audit

        audit.record_now(exc.actor, "refused", target_kind=exc.action,
                         target_id=exc.target, detail={"reason": str(exc)}, settings=settings)
        raise


def actor_name(actor: Identity | str | None) -> str | None:
    """The name to record for an actor given as an identity or (CLI, scripts) a name."""
    return actor.name if isinstance(actor, Identity) else actor


def is_admin(user: Identity) -> bool:
    """Admin powers: everyone's in auth mode ``none``, the admin role's otherwise."""
    return user.auth_mode == AUTH_NONE or user.is_admin


def cancel_job_as(user: Identity, job_id: int, settings=None) -> bool:  # noqa: ANN001
    """Cancel a job on ``user``'s behalf, if they may; the cancel is audited under their name."""
    from core import jobs

    job = jobs.get_job(job_id, settings)
    if job is None:
        raise LookupError(f"no job with id {job_id}")
    # request_cancel re-checks the user's current role inside its transaction.
    return jobs.request_cancel(job_id, by=user, settings=settings)
